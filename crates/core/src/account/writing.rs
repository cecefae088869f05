//! Writes made on this device — a home reading, an appointment request, a message to the
//! care team — go to the outbox first: shown at once as pending, sent at the next sync.

use serde_json::json;
use time::format_description::well_known::Rfc3339;

use super::Account;
use crate::store::{OutboxEntry, PendingWrite, Resolution, SetAside, WriteMethod, patient_reference};
use crate::{Error, Result};

/// A reading taken at home.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HomeReading {
    /// Blood pressure in mmHg.
    BloodPressure {
        /// Systolic.
        systolic: u16,
        /// Diastolic.
        diastolic: u16,
    },
    /// Blood glucose in mmol/L.
    Glucose {
        /// The value.
        mmol_per_l: f64,
    },
}

impl Account {
    /// Queues any write (checked as a FHIR resource first).
    pub fn queue_write(&mut self, write: &PendingWrite) -> Result<OutboxEntry> {
        let now = self.clock.now_unix();
        self.store()?.outbox().enqueue(write, now)
    }

    /// Queues a home reading as an Observation: LOINC-coded, in the vital signs (so it shows
    /// beside the clinic's) and marked patient-reported — a patient authors readings, never
    /// laboratory results (the server refuses those).
    pub fn record_reading(&mut self, patient: &str, reading: HomeReading, taken_at_unix: i64) -> Result<OutboxEntry> {
        let when = instant(taken_at_unix)?;
        let subject = json!({"reference": patient_reference(patient)});
        let body = match reading {
            HomeReading::BloodPressure { systolic, diastolic } => json!({
                "resourceType": "Observation",
                "status": "final",
                "category": [category("vital-signs"), patient_reported()],
                "code": loinc("85354-9", "Blood pressure panel"),
                "subject": subject,
                "effectiveDateTime": when,
                "component": [
                    {"code": loinc("8480-6", "Systolic blood pressure"), "valueQuantity": mm_hg(systolic)},
                    {"code": loinc("8462-4", "Diastolic blood pressure"), "valueQuantity": mm_hg(diastolic)}
                ]
            }),
            HomeReading::Glucose { mmol_per_l } => json!({
                "resourceType": "Observation",
                "status": "final",
                "category": [category("vital-signs"), patient_reported()],
                "code": loinc("15074-8", "Glucose [Moles/volume] in Blood"),
                "subject": subject,
                "effectiveDateTime": when,
                "valueQuantity": {"value": mmol_per_l, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}
            }),
        };
        self.queue_create(&body)
    }

    /// Queues a request for an appointment (status `proposed`: the practice books it).
    pub fn request_appointment(
        &mut self,
        patient: &str,
        reason: &str,
        preferred_start_unix: i64,
    ) -> Result<OutboxEntry> {
        let start = instant(preferred_start_unix)?;
        let end = instant(preferred_start_unix + 30 * 60)?;
        self.queue_create(&json!({
            "resourceType": "Appointment",
            "status": "proposed",
            "description": reason,
            "requestedPeriod": [{"start": start, "end": end}],
            "participant": [{"actor": {"reference": patient_reference(patient)}, "status": "accepted"}]
        }))
    }

    /// Queues a message to the care team (a Communication).
    pub fn message_care_team(&mut self, patient: &str, text: &str, sent_unix: i64) -> Result<OutboxEntry> {
        if text.trim().is_empty() {
            return Err(Error::InvalidArgument { what: "message", problem: "it is empty" });
        }
        let sent = instant(sent_unix)?;
        self.queue_create(&json!({
            "resourceType": "Communication",
            "status": "completed",
            "subject": {"reference": patient_reference(patient)},
            "sender": {"reference": patient_reference(patient)},
            "sent": sent,
            "payload": [{"contentString": text}]
        }))
    }

    /// Writes waiting to be sent, oldest first, to show as pending: without narrative (an
    /// update's body began as the server's resource).
    pub fn pending_writes(&mut self) -> Result<Vec<OutboxEntry>> {
        let mut pending = self.store()?.outbox().peek(usize::MAX)?;
        for write in &mut pending {
            write.body = super::reading::shown(&write.body)?;
        }
        Ok(pending)
    }

    /// Writes the server refused or found in conflict, with its version or reason, to show:
    /// without narrative (the server's version is the server's resource).
    pub fn set_aside_writes(&mut self) -> Result<Vec<SetAside>> {
        let mut aside = self.store()?.set_aside_writes()?;
        for write in &mut aside {
            write.write.body = super::reading::shown(&write.write.body)?;
            write.server_version = write.server_version.as_deref().map(super::reading::shown).transpose()?;
        }
        Ok(aside)
    }

    /// Settles a set-aside write as the person decided.
    pub fn resolve(&mut self, seq: i64, resolution: Resolution) -> Result<()> {
        let now = self.clock.now_unix();
        self.store()?.resolve(seq, resolution, now)
    }

    fn queue_create(&mut self, body: &serde_json::Value) -> Result<OutboxEntry> {
        self.queue_write(&PendingWrite { method: WriteMethod::Create, body: body.to_string(), if_match: None })
    }
}

fn instant(unix: i64) -> Result<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or(Error::InvalidArgument { what: "time", problem: "out of range" })
}

fn loinc(code: &str, display: &str) -> serde_json::Value {
    json!({"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": display})
}

fn category(code: &str) -> serde_json::Value {
    json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": code}]})
}

/// Carekeep's category for data a person generated themselves (the server's rule for what a
/// patient may author accepts it).
fn patient_reported() -> serde_json::Value {
    json!({"coding": [{"system": "urn:carekeep:observation-category", "code": "patient-reported"}]})
}

fn mm_hg(value: u16) -> serde_json::Value {
    json!({"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"})
}

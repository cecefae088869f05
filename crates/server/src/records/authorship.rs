//! What a patient (or a proxy) may write: decided by the resource's content and its author,
//! not by its type alone. Observation, Appointment and Communication hold both what a
//! patient records at home and what the care team records, so the type says too little: a
//! patient may create their own home readings, appointment requests and messages, and
//! change or delete only what they wrote themselves ([`super::Access::may_change`]). A
//! laboratory result, a booking or a clinician's message is never theirs to write.

use serde_json::Value;

use super::{Checked, Problem, RecordError};

/// The HL7 observation-category code system.
pub const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
/// Carekeep's own category code system, for data a person generated themselves.
pub const CAREKEEP_CATEGORY: &str = "urn:carekeep:observation-category";
/// The Carekeep category of a reading a patient took themselves (home glucose, weight, …).
pub const PATIENT_REPORTED: &str = "patient-reported";

/// The categories a patient's own reading may carry: HL7's vital signs, activity and survey
/// (what people measure or answer at home), and Carekeep's `patient-reported`. Laboratory,
/// imaging, procedure, exam, therapy and social history come from the care team.
const PATIENT_CATEGORIES: [(&str, &str); 4] = [
    (OBSERVATION_CATEGORY, "vital-signs"),
    (OBSERVATION_CATEGORY, "activity"),
    (OBSERVATION_CATEGORY, "survey"),
    (CAREKEEP_CATEGORY, PATIENT_REPORTED),
];

/// Appointment states a patient may write: a request, or its withdrawal.
const PATIENT_APPOINTMENT_STATUSES: [&str; 2] = ["proposed", "cancelled"];

impl Checked {
    /// Whether a patient (or proxy) may author this content for the patient it names.
    /// Refusals name the element and the rule, never a value.
    pub fn check_patient_authored(&self) -> Result<(), RecordError> {
        let Some(patient) = self.patient.as_deref() else {
            return Err(refused(&self.resource_type, "subject", "must name your own record"));
        };
        let own = format!("Patient/{patient}");
        let v = &self.value;
        match self.resource_type.as_str() {
            "Observation" => {
                let categories = codings(v.get("category"));
                if categories.is_empty()
                    || !categories.iter().all(|(system, code)| PATIENT_CATEGORIES.contains(&(*system, *code)))
                {
                    return Err(refused(
                        "Observation",
                        "category",
                        "a reading you record yourself is vital-signs or patient-reported; results come from your \
                         care team",
                    ));
                }
                if !references(v.get("performer")).iter().all(|r| *r == own) {
                    return Err(refused(
                        "Observation",
                        "performer",
                        "a reading you record names only you as performer",
                    ));
                }
            }
            "Appointment" => {
                let status = v.get("status").and_then(Value::as_str).unwrap_or_default();
                if !PATIENT_APPOINTMENT_STATUSES.contains(&status) {
                    return Err(refused(
                        "Appointment",
                        "status",
                        "you may request an appointment (proposed) or withdraw your request (cancelled); the \
                         practice books it",
                    ));
                }
                let actors: Vec<&str> = v
                    .get("participant")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.pointer("/actor/reference").and_then(Value::as_str))
                    .collect();
                if actors.iter().any(|a| *a != own) {
                    return Err(refused(
                        "Appointment",
                        "participant",
                        "a request you make names only you; the practice adds who will see you",
                    ));
                }
            }
            "Communication" => {
                if v.pointer("/sender/reference").and_then(Value::as_str) != Some(own.as_str()) {
                    return Err(refused("Communication", "sender", "a message you send is sent as you"));
                }
            }
            other => return Err(refused(other, "resourceType", "is written by your care team")),
        }
        Ok(())
    }
}

fn refused(resource_type: &str, element: &str, rule: &str) -> RecordError {
    let path = format!("{resource_type}.{element}");
    RecordError::Invalid(vec![Problem { message: format!("{path}: {rule}"), path, code: "business-rule" }])
}

/// Every (system, code) of a list of CodeableConcepts.
fn codings(concepts: Option<&Value>) -> Vec<(&str, &str)> {
    concepts
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c.get("coding").and_then(Value::as_array).into_iter().flatten())
        .map(|c| {
            (
                c.get("system").and_then(Value::as_str).unwrap_or_default(),
                c.get("code").and_then(Value::as_str).unwrap_or_default(),
            )
        })
        .collect()
}

/// Every `reference` of a list of References.
fn references(list: Option<&Value>) -> Vec<&str> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| r.get("reference").and_then(Value::as_str).unwrap_or_default())
        .collect()
}

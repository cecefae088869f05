//! What a patient (or a proxy) may write: decided by the resource's content and its author,
//! not by its type alone. Observation, Appointment and Communication hold both what a
//! patient records at home and what the care team records, so the type says too little: a
//! patient may create their own home readings, appointment requests and messages, and
//! change or delete only what they wrote themselves ([`super::Access::may_change`]). A
//! laboratory result, a booking or a clinician's message is never theirs to write, nor can
//! their own resource dress as one. The rules are allow-lists, down to each element's
//! parts: each kind names the elements it may carry (anything else — an extension, an
//! order it answers, a contained resource, a note's author — is refused), a reading is one
//! of the [`readings::HOME_READINGS`] in its own units and named as the server names it,
//! people are named by reference alone, and the server marks what a patient wrote and
//! strips that mark from what anyone else sends ([`provenance`]).

pub mod provenance;
pub mod readings;

use serde_json::Value;

use super::{Checked, Problem, RecordError};

pub use provenance::PATIENT_AUTHORED_TAG;

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

/// The elements a home reading may carry. (`text`, the narrative, is accepted and dropped:
/// the server's copy of what a patient wrote has none.)
const READING_ELEMENTS: [&str; 15] = [
    "resourceType",
    "id",
    "meta",
    "text",
    "status",
    "category",
    "code",
    "subject",
    "effectiveDateTime",
    "effectiveInstant",
    "effectivePeriod",
    "valueQuantity",
    "component",
    "note",
    "performer",
];

/// The elements of a reading's component (one half of a blood pressure).
const COMPONENT_ELEMENTS: [&str; 2] = ["code", "valueQuantity"];

/// The elements of a note a patient adds: words and when, never an author (the note is
/// theirs).
const NOTE_ELEMENTS: [&str; 2] = ["text", "time"];

/// The elements of a period.
const PERIOD_ELEMENTS: [&str; 2] = ["start", "end"];

/// The elements an appointment request may carry: when the patient would like to come and
/// why, in their words.
const REQUEST_ELEMENTS: [&str; 12] = [
    "resourceType",
    "id",
    "meta",
    "text",
    "status",
    "description",
    "start",
    "end",
    "minutesDuration",
    "requestedPeriod",
    "participant",
    "comment",
];

/// The elements of the request's one participant: the patient.
const PARTICIPANT_ELEMENTS: [&str; 3] = ["actor", "status", "required"];

/// Appointment states a patient may write: a request, or its withdrawal.
const PATIENT_APPOINTMENT_STATUSES: [&str; 2] = ["proposed", "cancelled"];

/// The elements a message may carry.
const MESSAGE_ELEMENTS: [&str; 11] = [
    "resourceType",
    "id",
    "meta",
    "text",
    "status",
    "subject",
    "sender",
    "recipient",
    "sent",
    "payload",
    "inResponseTo",
];

/// Who a patient's message may go to: the care team and the practice, never a person
/// outside it.
const RECIPIENT_TYPES: [&str; 4] = ["Practitioner", "PractitionerRole", "Organization", "CareTeam"];

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
            "Observation" => check_reading(v, &own),
            "Appointment" => check_request(v, &own),
            "Communication" => check_message(v, &own),
            other => Err(refused(other, "resourceType", "is written by your care team")),
        }
    }

    /// Marks this as written by a patient or proxy: their `meta` is replaced by the server's
    /// tag (versions and times are the server's to set anyway), their narrative dropped, and
    /// a reading's names and unit labels set to the standard ones.
    pub fn mark_patient_authored(&mut self) {
        if let Some(object) = self.value.as_object_mut() {
            object.insert("meta".into(), provenance::patient_meta());
            object.remove("text");
        }
        if self.resource_type == "Observation" {
            let components = self.value.get_mut("component").and_then(Value::as_array_mut);
            for component in components.into_iter().flatten() {
                let (code, value) = code_and_value(component);
                readings::relabel(code, value);
            }
            let (code, value) = code_and_value(&mut self.value);
            readings::relabel(code, value);
        }
    }
}

/// A reading's (or component's) code and value, both borrowed mutably.
fn code_and_value(v: &mut Value) -> (Option<&mut Value>, Option<&mut Value>) {
    let Some(fields) = v.as_object_mut() else { return (None, None) };
    let mut code = None;
    let mut value = None;
    for (key, field) in fields.iter_mut() {
        match key.as_str() {
            "code" => code = Some(field),
            "valueQuantity" => value = Some(field),
            _ => {}
        }
    }
    (code, value)
}

/// A home reading: only the reading elements, one of the home readings in its own units,
/// in patient categories, about and performed by no one but the patient.
fn check_reading(v: &Value, own: &str) -> Result<(), RecordError> {
    only_elements("Observation", v, &READING_ELEMENTS, "is not part of a reading you record; leave it out")?;
    if !v.get("subject").is_some_and(|s| only_reference_to(s, own)) {
        return Err(refused("Observation", "subject", "names your record by reference alone"));
    }
    let concepts = v
        .get("category")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let coded_only = concepts
        .iter()
        .all(|c| has_only(c, &["coding"]) && codings_of(c).iter().all(|coding| has_only(coding, &["system", "code"])));
    let categories = codings(v.get("category"));
    if categories.is_empty()
        || !coded_only
        || !categories
            .iter()
            .all(|(system, code)| PATIENT_CATEGORIES.contains(&(*system, *code)))
    {
        return Err(refused(
            "Observation",
            "category",
            "a reading you record yourself is coded vital-signs or patient-reported, nothing else; results come \
             from your care team",
        ));
    }
    let Some(reading) = readings::coded_as(v.get("code")) else {
        return Err(refused(
            "Observation",
            "code",
            "a reading you record is one of the home readings (blood pressure, heart rate, weight, glucose, …) \
             coded in LOINC alone; results come from your care team",
        ));
    };
    if !v.get("valueQuantity").is_none_or(|q| readings::measures(reading, q)) {
        return Err(refused("Observation", "valueQuantity", "is a number in a unit this reading is measured in"));
    }
    let components = v
        .get("component")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let plain = |c: &Value| {
        has_only(c, &COMPONENT_ELEMENTS)
            && readings::coded_as(c.get("code"))
                .is_some_and(|part| c.get("valueQuantity").is_none_or(|q| readings::measures(part, q)))
    };
    if !components.iter().all(plain) {
        return Err(refused(
            "Observation",
            "component",
            "each part of a reading is a home reading's code and its value, nothing else",
        ));
    }
    if !v.get("effectivePeriod").is_none_or(|p| has_only(p, &PERIOD_ELEMENTS)) {
        return Err(refused("Observation", "effectivePeriod", "is a start and an end, nothing else"));
    }
    let notes = v.get("note").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if !notes.iter().all(|n| has_only(n, &NOTE_ELEMENTS)) {
        return Err(refused("Observation", "note", "a note you add is your words and a time; it names no author"));
    }
    let performers = v
        .get("performer")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !performers.iter().all(|p| only_reference_to(p, own)) {
        return Err(refused("Observation", "performer", "a reading you record names only you as performer"));
    }
    Ok(())
}

/// An appointment request: proposed (or withdrawn), naming only the patient.
fn check_request(v: &Value, own: &str) -> Result<(), RecordError> {
    only_elements("Appointment", v, &REQUEST_ELEMENTS, "is the practice's to fill in; leave it out")?;
    let status = v.get("status").and_then(Value::as_str).unwrap_or_default();
    if !PATIENT_APPOINTMENT_STATUSES.contains(&status) {
        return Err(refused(
            "Appointment",
            "status",
            "you may request an appointment (proposed) or withdraw your request (cancelled); the practice books it",
        ));
    }
    let participants = v
        .get("participant")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let only_you =
        |p: &Value| has_only(p, &PARTICIPANT_ELEMENTS) && p.get("actor").is_some_and(|a| only_reference_to(a, own));
    if !participants.iter().all(only_you) {
        return Err(refused(
            "Appointment",
            "participant",
            "a request you make names only you; the practice adds who will see you",
        ));
    }
    let periods = v
        .get("requestedPeriod")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !periods.iter().all(|p| has_only(p, &PERIOD_ELEMENTS)) {
        return Err(refused("Appointment", "requestedPeriod", "is a start and an end, nothing else"));
    }
    Ok(())
}

/// A message: about and sent as the patient, in words, to the care team (never to another
/// patient).
fn check_message(v: &Value, own: &str) -> Result<(), RecordError> {
    only_elements("Communication", v, &MESSAGE_ELEMENTS, "is not part of a message you send; leave it out")?;
    if !v.get("subject").is_some_and(|s| only_reference_to(s, own)) {
        return Err(refused("Communication", "subject", "names your record by reference alone"));
    }
    if !v.get("sender").is_some_and(|s| only_reference_to(s, own)) {
        return Err(refused("Communication", "sender", "a message you send is sent as you"));
    }
    let recipients = v
        .get("recipient")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !recipients.iter().all(|r| {
        only_reference(r)
            .and_then(local_reference)
            .is_some_and(|(t, _)| RECIPIENT_TYPES.contains(&t))
    }) {
        return Err(refused(
            "Communication",
            "recipient",
            "a message you send goes to your care team (a practitioner, the practice or the care team), named \
             by reference alone",
        ));
    }
    let payload = v
        .get("payload")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !payload
        .iter()
        .all(|p| has_only(p, &["contentString"]) && p.get("contentString").is_some())
    {
        return Err(refused("Communication", "payload", "a message you send is text; attach documents separately"));
    }
    let replies = v
        .get("inResponseTo")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !replies.iter().all(|r| {
        only_reference(r)
            .and_then(local_reference)
            .is_some_and(|(t, _)| t == "Communication")
    }) {
        return Err(refused("Communication", "inResponseTo", "answers another message, by reference alone"));
    }
    Ok(())
}

/// Refuses the first element of `v` not in `allowed`, naming it (element names are FHIR's;
/// anything else has already failed validation, but is not echoed regardless).
fn only_elements(resource_type: &str, v: &Value, allowed: &[&str], rule: &str) -> Result<(), RecordError> {
    let Some(extra) = v.as_object().and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str()))) else {
        return Ok(());
    };
    let named = extra.len() <= 64 && extra.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    Err(refused(resource_type, if named { extra } else { "element" }, rule))
}

/// Whether `v` is an object carrying only the `allowed` elements (no extension, id or
/// `_`-prefixed sibling to hide a meaning in).
fn has_only(v: &Value, allowed: &[&str]) -> bool {
    v.as_object().is_some_and(|o| o.keys().all(|k| allowed.contains(&k.as_str())))
}

/// A Reference that is exactly `{"reference": own}`: no display or identifier that could
/// name someone else beside it.
fn only_reference_to(reference: &Value, own: &str) -> bool {
    only_reference(reference) == Some(own)
}

/// The target of a Reference that carries nothing but its `reference`.
fn only_reference(reference: &Value) -> Option<&str> {
    reference
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("reference"))
        .and_then(Value::as_str)
}

/// A reference's type and id when it is exactly `Type/id` on this server (a FHIR id: 1–64
/// letters, digits, `-` and `.`, and not `.` or `..`), so `Practitioner/../Patient/x`
/// cannot pass for a practitioner.
fn local_reference(reference: &str) -> Option<(&str, &str)> {
    let (resource_type, id) = reference.split_once('/')?;
    let type_ok = !resource_type.is_empty() && resource_type.chars().all(|c| c.is_ascii_alphabetic());
    let id_ok = (1..=64).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && id != "."
        && id != "..";
    (type_ok && id_ok).then_some((resource_type, id))
}

fn codings_of(concept: &Value) -> Vec<&Value> {
    concept
        .get("coding")
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default()
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

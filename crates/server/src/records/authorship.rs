//! What a patient (or a proxy) may write: decided by the resource's content and its author,
//! not by its type alone. Observation, Appointment and Communication hold both what a
//! patient records at home and what the care team records, so the type says too little: a
//! patient may create their own home readings, appointment requests and messages, and
//! change or delete only what they wrote themselves ([`super::Access::may_change`]). A
//! laboratory result, a booking or a clinician's message is never theirs to write, nor can
//! their own resource dress as one: the rules look at every element that could (coded
//! categories only, no contained resources, no links to orders, specimens or other
//! results, people named only by reference), and the server marks what a patient wrote
//! ([`PATIENT_AUTHORED_TAG`]) so staff can tell it apart.

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

/// The `meta.tag` the server puts on everything a patient or proxy writes (any `meta` they
/// sent — source, tags, profiles — is replaced): system and code.
pub const PATIENT_AUTHORED_TAG: (&str, &str) = ("urn:carekeep:provenance", "patient-authored");

/// Observation elements that tie a reading to orders, specimens, interpretations or other
/// results: the care team's, never a patient's.
const CLINICAL_OBSERVATION_ELEMENTS: [&str; 8] =
    ["basedOn", "partOf", "hasMember", "derivedFrom", "specimen", "interpretation", "focus", "encounter"];

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
        let rt = self.resource_type.as_str();
        if v.get("contained").is_some() {
            return Err(refused(rt, "contained", "a record you write holds no other resources"));
        }
        match rt {
            "Observation" => check_reading(v, &own),
            "Appointment" => check_request(v, &own),
            "Communication" => check_message(v, &own),
            other => Err(refused(other, "resourceType", "is written by your care team")),
        }
    }

    /// Marks this as written by a patient or proxy: their `meta` is replaced by the server's
    /// tag (versions and times are the server's to set anyway).
    pub fn mark_patient_authored(&mut self) {
        let (system, code) = PATIENT_AUTHORED_TAG;
        if let Some(object) = self.value.as_object_mut() {
            object.insert(
                "meta".into(),
                serde_json::json!({"tag": [{"system": system, "code": code, "display": "Recorded by the patient"}]}),
            );
        }
    }
}

/// A home reading: coded patient categories only, performed by no one but the patient, tied
/// to no order, specimen or other result.
fn check_reading(v: &Value, own: &str) -> Result<(), RecordError> {
    let concepts = v.get("category").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let coded_only = concepts
        .iter()
        .all(|c| c.get("text").is_none() && codings_of(c).iter().all(|coding| coding.get("display").is_none()));
    let categories = codings(v.get("category"));
    if categories.is_empty()
        || !coded_only
        || !categories.iter().all(|(system, code)| PATIENT_CATEGORIES.contains(&(*system, *code)))
    {
        return Err(refused(
            "Observation",
            "category",
            "a reading you record yourself is coded vital-signs or patient-reported, nothing else; results come \
             from your care team",
        ));
    }
    if let Some(element) = CLINICAL_OBSERVATION_ELEMENTS.iter().find(|e| v.get(**e).is_some()) {
        return Err(refused("Observation", element, "links a reading to the care team's work; leave it out"));
    }
    let performers = v.get("performer").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if !performers.iter().all(|p| only_reference_to(p, own)) {
        return Err(refused("Observation", "performer", "a reading you record names only you as performer"));
    }
    Ok(())
}

/// An appointment request: proposed (or withdrawn), naming only the patient.
fn check_request(v: &Value, own: &str) -> Result<(), RecordError> {
    let status = v.get("status").and_then(Value::as_str).unwrap_or_default();
    if !PATIENT_APPOINTMENT_STATUSES.contains(&status) {
        return Err(refused(
            "Appointment",
            "status",
            "you may request an appointment (proposed) or withdraw your request (cancelled); the practice books it",
        ));
    }
    let participants = v.get("participant").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if !participants.iter().all(|p| p.get("actor").is_some_and(|a| only_reference_to(a, own))) {
        return Err(refused(
            "Appointment",
            "participant",
            "a request you make names only you; the practice adds who will see you",
        ));
    }
    Ok(())
}

/// A message: sent as the patient, to the care team (never to another patient).
fn check_message(v: &Value, own: &str) -> Result<(), RecordError> {
    if !v.get("sender").is_some_and(|s| only_reference_to(s, own)) {
        return Err(refused("Communication", "sender", "a message you send is sent as you"));
    }
    if references(v.get("recipient")).iter().any(|r| r.contains("Patient/") || r.contains("RelatedPerson/")) {
        return Err(refused("Communication", "recipient", "a message you send goes to your care team"));
    }
    Ok(())
}

/// A Reference that is exactly `{"reference": own}`: no display or identifier that could
/// name someone else beside it.
fn only_reference_to(reference: &Value, own: &str) -> bool {
    reference.as_object().is_some_and(|o| o.len() == 1 && o.get("reference").and_then(Value::as_str) == Some(own))
}

fn codings_of(concept: &Value) -> Vec<&Value> {
    concept.get("coding").and_then(Value::as_array).map(|c| c.iter().collect()).unwrap_or_default()
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

//! What a patient (or a proxy) may write: decided by the resource's content and its author,
//! not by its type alone. Observation, Appointment and Communication hold both what a
//! patient records at home and what the care team records, so the type says too little: a
//! patient may create their own home readings, appointment requests and messages, and
//! change or delete only what they wrote themselves ([`super::Access::may_change`]). A
//! laboratory result, a booking or a clinician's message is never theirs to write, nor can
//! their own resource dress as one. The rules are allow-lists, not deny-lists: each kind
//! names the elements it may carry (anything else — an extension, a narrative, an order
//! it answers, a contained resource — is refused), a reading is coded with one of the
//! [`HOME_READINGS`] and nothing else, people are named by reference alone, and the server
//! marks what a patient wrote ([`PATIENT_AUTHORED_TAG`]) and strips that mark from what
//! anyone else sends ([`strip_provenance`]) so staff can tell the two apart.

use serde_json::{Map, Value};

use super::{Checked, Problem, RecordError};

/// The HL7 observation-category code system.
pub const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
/// Carekeep's own category code system, for data a person generated themselves.
pub const CAREKEEP_CATEGORY: &str = "urn:carekeep:observation-category";
/// The Carekeep category of a reading a patient took themselves (home glucose, weight, …).
pub const PATIENT_REPORTED: &str = "patient-reported";
/// LOINC, the only code system a home reading is coded in.
pub const LOINC: &str = "http://loinc.org";

/// The categories a patient's own reading may carry: HL7's vital signs, activity and survey
/// (what people measure or answer at home), and Carekeep's `patient-reported`. Laboratory,
/// imaging, procedure, exam, therapy and social history come from the care team.
const PATIENT_CATEGORIES: [(&str, &str); 4] = [
    (OBSERVATION_CATEGORY, "vital-signs"),
    (OBSERVATION_CATEGORY, "activity"),
    (OBSERVATION_CATEGORY, "survey"),
    (CAREKEEP_CATEGORY, PATIENT_REPORTED),
];

/// What a patient measures at home, by LOINC code, with the display the server stores
/// (whatever display or text the patient sent is replaced, so a weight cannot be labelled
/// as an HbA1c). Laboratory panels are not here: those are the care team's.
pub const HOME_READINGS: [(&str, &str); 15] = [
    ("85354-9", "Blood pressure panel with all children optional"),
    ("8480-6", "Systolic blood pressure"),
    ("8462-4", "Diastolic blood pressure"),
    ("8867-4", "Heart rate"),
    ("9279-1", "Respiratory rate"),
    ("8310-5", "Body temperature"),
    ("29463-7", "Body weight"),
    ("8302-2", "Body height"),
    ("39156-5", "Body mass index (BMI) [Ratio]"),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
    ("2708-6", "Oxygen saturation in Arterial blood"),
    ("15074-8", "Glucose [Moles/volume] in Blood"),
    ("41653-7", "Glucose [Mass/volume] in Capillary blood by Glucometer"),
    ("55423-8", "Number of steps in unspecified time Pedometer"),
    ("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported"),
];

/// The `meta.tag` the server puts on everything a patient or proxy writes (any `meta` they
/// sent — source, tags, profiles — is replaced): system and code.
pub const PATIENT_AUTHORED_TAG: (&str, &str) = ("urn:carekeep:provenance", "patient-authored");

/// The elements a home reading may carry.
const READING_ELEMENTS: [&str; 14] = [
    "resourceType",
    "id",
    "meta",
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

/// The elements of a measured value.
const QUANTITY_ELEMENTS: [&str; 5] = ["value", "comparator", "unit", "system", "code"];

/// The elements an appointment request may carry: when the patient would like to come and
/// why, in their words.
const REQUEST_ELEMENTS: [&str; 11] = [
    "resourceType",
    "id",
    "meta",
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
const MESSAGE_ELEMENTS: [&str; 10] =
    ["resourceType", "id", "meta", "status", "subject", "sender", "recipient", "sent", "payload", "inResponseTo"];

/// Who a patient's message may go to: the care team and the practice, never a person
/// outside it.
const RECIPIENT_TYPES: [&str; 4] = ["Practitioner/", "PractitionerRole/", "Organization/", "CareTeam/"];

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
    /// tag (versions and times are the server's to set anyway), and the displays of a
    /// reading's codes by the standard ones.
    pub fn mark_patient_authored(&mut self) {
        let (system, code) = PATIENT_AUTHORED_TAG;
        if let Some(object) = self.value.as_object_mut() {
            object.insert(
                "meta".into(),
                serde_json::json!({"tag": [{"system": system, "code": code, "display": "Recorded by the patient"}]}),
            );
        }
        if self.resource_type == "Observation" {
            let components = self.value.get_mut("component").and_then(Value::as_array_mut);
            for component in components.into_iter().flatten() {
                standard_displays(component.get_mut("code"));
            }
            standard_displays(self.value.get_mut("code"));
        }
    }
}

/// Removes the patient-authored mark from a resource anyone sends: only the server sets it,
/// on what a patient or proxy wrote ([`Checked::mark_patient_authored`]), so a clinician's
/// note or an import cannot pass as the patient's own words.
pub fn strip_provenance(resource: &mut Value) {
    let (system, _) = PATIENT_AUTHORED_TAG;
    let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) else { return };
    if let Some(tags) = meta.get_mut("tag").and_then(Value::as_array_mut) {
        tags.retain(|tag| tag.get("system").and_then(Value::as_str) != Some(system));
        if tags.is_empty() {
            meta.remove("tag");
        }
    }
}

/// A home reading: only the reading elements, coded with one of the [`HOME_READINGS`] in
/// patient categories, performed by no one but the patient.
fn check_reading(v: &Value, own: &str) -> Result<(), RecordError> {
    only_elements("Observation", v, &READING_ELEMENTS, "is not part of a reading you record; leave it out")?;
    let concepts = v.get("category").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let coded_only = concepts.iter().all(|c| {
        c.as_object().is_some_and(|o| o.keys().all(|k| k == "coding"))
            && codings_of(c).iter().all(|coding| coding_elements(coding, &["system", "code"]))
    });
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
    if !is_home_reading(v.get("code")) {
        return Err(refused(
            "Observation",
            "code",
            "a reading you record is one of the home readings (blood pressure, heart rate, weight, glucose, …) \
             coded in LOINC alone; results come from your care team",
        ));
    }
    if !v.get("valueQuantity").is_none_or(is_quantity) {
        return Err(refused("Observation", "valueQuantity", "is a number with its unit, nothing else"));
    }
    let components = v.get("component").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let plain = |c: &Value| {
        c.as_object().is_some_and(|o| o.keys().all(|k| COMPONENT_ELEMENTS.contains(&k.as_str())))
            && is_home_reading(c.get("code"))
            && c.get("valueQuantity").is_none_or(is_quantity)
    };
    if !components.iter().all(plain) {
        return Err(refused(
            "Observation",
            "component",
            "each part of a reading is a home reading's code and its value, nothing else",
        ));
    }
    let performers = v.get("performer").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
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
    let participants = v.get("participant").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let only_you = |p: &Value| {
        p.as_object().is_some_and(|o| o.keys().all(|k| PARTICIPANT_ELEMENTS.contains(&k.as_str())))
            && p.get("actor").is_some_and(|a| only_reference_to(a, own))
    };
    if !participants.iter().all(only_you) {
        return Err(refused(
            "Appointment",
            "participant",
            "a request you make names only you; the practice adds who will see you",
        ));
    }
    Ok(())
}

/// A message: sent as the patient, in words, to the care team (never to another patient).
fn check_message(v: &Value, own: &str) -> Result<(), RecordError> {
    only_elements("Communication", v, &MESSAGE_ELEMENTS, "is not part of a message you send; leave it out")?;
    if !v.get("sender").is_some_and(|s| only_reference_to(s, own)) {
        return Err(refused("Communication", "sender", "a message you send is sent as you"));
    }
    let recipients = v.get("recipient").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let to_the_team = |r: &Value| only_reference(r).is_some_and(|to| RECIPIENT_TYPES.iter().any(|t| to.starts_with(t)));
    if !recipients.iter().all(to_the_team) {
        return Err(refused(
            "Communication",
            "recipient",
            "a message you send goes to your care team (a practitioner, the practice or the care team), named \
             by reference alone",
        ));
    }
    let payload = v.get("payload").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if !payload.iter().all(|p| p.as_object().is_some_and(|o| o.len() == 1 && o.contains_key("contentString"))) {
        return Err(refused("Communication", "payload", "a message you send is text; attach documents separately"));
    }
    let replies = v.get("inResponseTo").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if !replies.iter().all(|r| only_reference(r).is_some_and(|to| to.starts_with("Communication/"))) {
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

/// A CodeableConcept coded with home readings alone: LOINC codings from [`HOME_READINGS`]
/// (and a text, which the server replaces with the standard display).
fn is_home_reading(concept: Option<&Value>) -> bool {
    let Some(concept) = concept.and_then(Value::as_object) else { return false };
    let codings = concept.get("coding").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    concept.keys().all(|k| k == "coding" || k == "text")
        && !codings.is_empty()
        && codings.iter().all(|c| {
            coding_elements(c, &["system", "code", "display"])
                && c.get("system").and_then(Value::as_str) == Some(LOINC)
                && c.get("code").and_then(Value::as_str).is_some_and(|code| home_display(code).is_some())
        })
}

/// The standard display of a home reading's LOINC code.
fn home_display(code: &str) -> Option<&'static str> {
    HOME_READINGS.iter().find(|(c, _)| *c == code).map(|(_, display)| *display)
}

/// Replaces each coding's display, and the concept's text, by the standard display of its
/// (first) code: what a reading is called is the code's to say, not the sender's.
fn standard_displays(concept: Option<&mut Value>) {
    let Some(concept) = concept.and_then(Value::as_object_mut) else { return };
    let mut first = None;
    let codings = concept.get_mut("coding").and_then(Value::as_array_mut);
    for coding in codings.into_iter().flatten() {
        let display = coding.get("code").and_then(Value::as_str).and_then(home_display);
        if let (Some(display), Some(object)) = (display, coding.as_object_mut()) {
            object.insert("display".into(), Value::String(display.into()));
            first = first.or(Some(display));
        }
    }
    if let (Some(display), true) = (first, concept.contains_key("text")) {
        concept.insert("text".into(), Value::String(display.into()));
    }
}

/// A Quantity with nothing but a value and its unit.
fn is_quantity(quantity: &Value) -> bool {
    quantity.as_object().is_some_and(|o| o.keys().all(|k| QUANTITY_ELEMENTS.contains(&k.as_str())))
}

/// Whether a Coding carries only the `allowed` elements (no extension, version or
/// user-selected flag to hide a meaning in).
fn coding_elements(coding: &Value, allowed: &[&str]) -> bool {
    coding.as_object().is_some_and(|o: &Map<String, Value>| o.keys().all(|k| allowed.contains(&k.as_str())))
}

/// A Reference that is exactly `{"reference": own}`: no display or identifier that could
/// name someone else beside it.
fn only_reference_to(reference: &Value, own: &str) -> bool {
    only_reference(reference) == Some(own)
}

/// The target of a Reference that carries nothing but its `reference`.
fn only_reference(reference: &Value) -> Option<&str> {
    reference.as_object().filter(|o| o.len() == 1).and_then(|o| o.get("reference")).and_then(Value::as_str)
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

//! Checking a resource and pulling out the fields the store indexes.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{is_r4_resource_type, is_valid_id, is_valid_instant, sortable_date_time};
use crate::Invalid;

type Result<T> = std::result::Result<T, Invalid>;

/// A checked resource, its raw JSON unchanged, and what the store indexes it by.
#[derive(Debug, Clone)]
pub struct IndexedResource<'a> {
    /// The FHIR resource type.
    pub resource_type: String,
    /// Its logical id (from `id`, or the Bundle entry's `urn:uuid:` full URL).
    pub id: String,
    /// `meta.versionId`, if present.
    pub version_id: Option<String>,
    /// `meta.lastUpdated` in sortable form.
    pub last_updated: Option<String>,
    /// `Patient/<id>` of the patient whose compartment holds the resource.
    pub patient: Option<String>,
    /// Sortable form of the clinically relevant date (see [`sortable_date_time`]).
    pub effective: Option<String>,
    /// The first category code (e.g. `laboratory`, `vital-signs`): what list it belongs in.
    pub category: Option<String>,
    /// Every coding it can be searched by.
    pub codes: Vec<CodeEntry>,
    /// The resource's JSON text, unchanged.
    pub json: &'a str,
}

/// One coding a resource can be found by, with the quantity it carries (for trends).
#[derive(Debug, Clone, PartialEq)]
pub struct CodeEntry {
    /// The code system URI.
    pub system: Option<String>,
    /// The code.
    pub code: String,
    /// The quantity's value, for trends.
    pub value: Option<f64>,
    /// The quantity's unit.
    pub unit: Option<String>,
}

/// Resolves references inside a Bundle: `urn:uuid:` full URLs to the `Type/id` they stand for.
#[derive(Debug, Default)]
pub struct References {
    full_urls: HashMap<String, String>,
}

impl References {
    /// Records that `full_url` names `Type/id`.
    pub fn insert(&mut self, full_url: &str, resource_type: &str, id: &str) {
        self.full_urls.insert(full_url.to_owned(), format!("{resource_type}/{id}"));
    }

    /// `Type/id` for a relative, absolute or bundle-local reference; `None` for anything else
    /// (contained `#refs`, logical references).
    pub fn resolve(&self, reference: &str) -> Option<String> {
        if let Some(local) = self.full_urls.get(reference) {
            return Some(local.clone());
        }
        let path = reference.split("/_history/").next().unwrap_or(reference);
        let mut segments = path.rsplit('/');
        let id = segments.next()?;
        let resource_type = segments.next()?;
        (is_r4_resource_type(resource_type) && is_valid_id(id)).then(|| format!("{resource_type}/{id}"))
    }
}

/// The id a Bundle entry without `resource.id` goes by: the UUID of a `urn:uuid:` full URL.
pub fn id_from_full_url(full_url: &str) -> Option<&str> {
    full_url.strip_prefix("urn:uuid:").filter(|id| is_valid_id(id))
}

/// Checks `value` (whose text is `raw`) is a FHIR R4 resource and extracts its index fields.
/// `path` names it in errors; `fallback_id` is used when it has no `id`.
pub fn index_resource<'a>(
    value: &Value,
    raw: &'a str,
    path: &str,
    fallback_id: Option<&str>,
    refs: &References,
) -> Result<IndexedResource<'a>> {
    let obj = value.as_object().ok_or_else(|| Invalid::new(path, "expected a JSON object"))?;
    let resource_type = obj
        .get("resourceType")
        .and_then(Value::as_str)
        .filter(|t| is_r4_resource_type(t))
        .ok_or_else(|| Invalid::new(format!("{path}.resourceType"), "missing, or not a FHIR R4 resource type"))?;
    let id = match obj.get("id") {
        None => {
            fallback_id.ok_or_else(|| Invalid::new(format!("{path}.id"), "missing: a stored resource needs an id"))?
        }
        Some(Value::String(id)) if is_valid_id(id) => id.as_str(),
        Some(_) => return Err(Invalid::new(format!("{path}.id"), "not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)")),
    };
    let (version_id, last_updated) = meta(obj, path)?;
    Ok(IndexedResource {
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        version_id,
        last_updated,
        patient: patient(resource_type, id, obj, refs),
        effective: effective(resource_type, obj, path)?,
        category: category(obj),
        codes: codes(resource_type, obj),
        json: raw,
    })
}

fn meta(obj: &Map<String, Value>, path: &str) -> Result<(Option<String>, Option<String>)> {
    let Some(meta) = obj.get("meta") else { return Ok((None, None)) };
    let meta = meta
        .as_object()
        .ok_or_else(|| Invalid::new(format!("{path}.meta"), "expected a JSON object"))?;
    let version_id = match meta.get("versionId") {
        None => None,
        Some(Value::String(v)) if is_valid_id(v) => Some(v.clone()),
        Some(_) => return Err(Invalid::new(format!("{path}.meta.versionId"), "not a valid FHIR id")),
    };
    let last_updated = match meta.get("lastUpdated") {
        None => None,
        Some(Value::String(v)) if is_valid_instant(v) => sortable_date_time(v),
        Some(_) => return Err(Invalid::new(format!("{path}.meta.lastUpdated"), "not a valid FHIR instant")),
    };
    Ok((version_id, last_updated))
}

fn patient(resource_type: &str, id: &str, obj: &Map<String, Value>, refs: &References) -> Option<String> {
    if resource_type == "Patient" {
        return Some(format!("Patient/{id}"));
    }
    let is_patient = |r: &String| r.starts_with("Patient/");
    let direct = patient_fields(resource_type)
        .iter()
        .filter_map(|field| obj.get(*field)?.get("reference")?.as_str())
        .filter_map(|r| refs.resolve(r))
        .find(is_patient);
    if resource_type == "Provenance" {
        // A record of where other records came from belongs to the patient it names among
        // its targets (an export's Provenance lists the patient beside their records).
        return direct.or_else(|| {
            obj.get("target")?
                .as_array()?
                .iter()
                .filter_map(|t| t.get("reference")?.as_str())
                .filter_map(|r| refs.resolve(r))
                .find(is_patient)
        });
    }
    direct.or_else(|| {
        // Appointment: the patient is one of the participants.
        obj.get("participant")?
            .as_array()?
            .iter()
            .filter_map(|p| p.get("actor")?.get("reference")?.as_str())
            .filter_map(|r| refs.resolve(r))
            .find(is_patient)
    })
}

/// The elements that name a resource's patient, by type (FHIR R4's patient compartment,
/// first match wins; Appointment's participants and Provenance's targets are searched apart).
pub fn patient_fields(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "Coverage" => &["beneficiary"],
        _ => &["subject", "patient"],
    }
}

/// Where each type keeps the date a timeline or trend orders it by, first match wins.
fn effective_paths(resource_type: &str) -> &'static [&'static [&'static str]] {
    match resource_type {
        "Observation" => &[&["effectiveDateTime"], &["effectivePeriod", "start"], &["effectiveInstant"], &["issued"]],
        "DiagnosticReport" => &[&["effectiveDateTime"], &["effectivePeriod", "start"], &["issued"]],
        "Condition" => &[&["onsetDateTime"], &["onsetPeriod", "start"], &["recordedDate"]],
        "AllergyIntolerance" => &[&["onsetDateTime"], &["recordedDate"]],
        "MedicationRequest" | "ServiceRequest" => &[&["authoredOn"]],
        "Immunization" => &[&["occurrenceDateTime"], &["recorded"]],
        "Encounter" | "CarePlan" | "CareTeam" | "Coverage" => &[&["period", "start"]],
        "Appointment" => &[&["start"]],
        "DocumentReference" => &[&["date"]],
        "Procedure" => &[&["performedDateTime"], &["performedPeriod", "start"]],
        "Communication" => &[&["sent"]],
        "Goal" => &[&["startDate"], &["statusDate"]],
        "Claim" | "ExplanationOfBenefit" => &[&["billablePeriod", "start"], &["created"]],
        "ImagingStudy" => &[&["started"]],
        "MedicationAdministration" => &[&["effectiveDateTime"], &["effectivePeriod", "start"]],
        "MedicationStatement" => &[&["effectiveDateTime"], &["effectivePeriod", "start"], &["dateAsserted"]],
        "QuestionnaireResponse" => &[&["authored"]],
        "Consent" => &[&["dateTime"]],
        "SupplyDelivery" => &[&["occurrenceDateTime"], &["occurrencePeriod", "start"]],
        "Provenance" => &[&["recorded"]],
        _ => &[],
    }
}

fn effective(resource_type: &str, obj: &Map<String, Value>, path: &str) -> Result<Option<String>> {
    for fields in effective_paths(resource_type) {
        let mut node = obj.get(fields[0]);
        for field in &fields[1..] {
            node = node.and_then(|n| n.get(*field));
        }
        let Some(node) = node else { continue };
        return node
            .as_str()
            .and_then(sortable_date_time)
            .map(Some)
            .ok_or_else(|| Invalid::new(format!("{path}.{}", fields.join(".")), "not a valid FHIR date/dateTime"));
    }
    Ok(None)
}

/// The CodeableConcept that says what a resource of this type is about.
fn code_field(resource_type: &str) -> Option<&'static str> {
    match resource_type {
        "Observation" | "DiagnosticReport" | "Condition" | "AllergyIntolerance" | "Procedure" | "ServiceRequest"
        | "Medication" => Some("code"),
        "MedicationRequest" | "MedicationStatement" | "MedicationAdministration" => Some("medicationCodeableConcept"),
        "Goal" => Some("description"),
        "DocumentReference" | "Device" | "Coverage" | "Claim" | "ExplanationOfBenefit" => Some("type"),
        "Immunization" => Some("vaccineCode"),
        _ => None,
    }
}

fn codes(resource_type: &str, obj: &Map<String, Value>) -> Vec<CodeEntry> {
    let mut out = Vec::new();
    if let Some(field) = code_field(resource_type) {
        let (value, unit) = quantity(obj.get("valueQuantity"));
        push_codings(&mut out, obj.get(field), value, unit.as_deref());
    }
    // Observation components (blood pressure's systolic and diastolic) trend on their own codes.
    for component in obj.get("component").and_then(Value::as_array).into_iter().flatten() {
        let (value, unit) = quantity(component.get("valueQuantity"));
        push_codings(&mut out, component.get("code"), value, unit.as_deref());
    }
    out
}

/// The first coded category, whether `category` is one CodeableConcept or a list of them.
fn category(obj: &Map<String, Value>) -> Option<String> {
    let category = obj.get("category")?;
    let concepts = category
        .as_array()
        .map_or_else(|| std::slice::from_ref(category), Vec::as_slice);
    concepts
        .iter()
        .filter_map(|c| c.get("coding")?.as_array())
        .flatten()
        .find_map(|coding| coding.get("code")?.as_str())
        .map(str::to_owned)
}

fn push_codings(out: &mut Vec<CodeEntry>, concept: Option<&Value>, value: Option<f64>, unit: Option<&str>) {
    let codings = concept.and_then(|c| c.get("coding")).and_then(Value::as_array);
    for coding in codings.into_iter().flatten() {
        let Some(code) = coding.get("code").and_then(Value::as_str) else { continue };
        out.push(CodeEntry {
            system: coding.get("system").and_then(Value::as_str).map(str::to_owned),
            code: code.to_owned(),
            value,
            unit: unit.map(str::to_owned),
        });
    }
}

fn quantity(node: Option<&Value>) -> (Option<f64>, Option<String>) {
    let Some(q) = node else { return (None, None) };
    let value = q.get("value").and_then(Value::as_f64);
    let unit = q
        .get("unit")
        .or_else(|| q.get("code"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    (value, unit)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn index(v: &Value) -> Result<IndexedResource<'static>> {
        let raw: &'static str = Box::leak(v.to_string().into_boxed_str());
        index_resource(v, raw, "resource", None, &References::default())
    }

    #[test]
    fn observation_is_indexed_by_patient_date_code_category_and_value() {
        let obs = json!({
            "resourceType": "Observation", "id": "o1", "meta": {"versionId": "3", "lastUpdated": "2024-01-02T03:04:05Z"},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-01-01T10:00:00+01:00",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}, {"code": "GLU"}]},
            "valueQuantity": {"value": 5.4, "unit": "mmol/L"}
        });
        let r = index(&obs).unwrap();
        assert_eq!((r.resource_type.as_str(), r.id.as_str()), ("Observation", "o1"));
        assert_eq!(r.version_id.as_deref(), Some("3"));
        assert_eq!(r.patient.as_deref(), Some("Patient/p1"));
        assert_eq!(r.effective.as_deref(), Some("2024-01-01T09:00:00.000000Z"));
        assert_eq!(r.codes.len(), 2);
        assert_eq!(r.codes[0].value, Some(5.4));
        assert_eq!(r.codes[0].unit.as_deref(), Some("mmol/L"));
        assert_eq!(r.category.as_deref(), Some("laboratory"));
    }

    #[test]
    fn export_types_are_filed_under_their_patient_and_dated() {
        let p = |v: Value| index(&v).unwrap();
        let coverage = p(json!({"resourceType": "Coverage", "id": "c", "beneficiary": {"reference": "Patient/p1"},
            "period": {"start": "2020-01-01"}}));
        assert_eq!(coverage.patient.as_deref(), Some("Patient/p1"));
        assert_eq!(coverage.effective.as_deref(), Some("2020-01-01"));
        let provenance = p(json!({"resourceType": "Provenance", "id": "v", "recorded": "2021-05-06T07:08:09Z",
            "target": [{"reference": "Encounter/e1"}, {"reference": "Patient/p2"}]}));
        assert_eq!(provenance.patient.as_deref(), Some("Patient/p2"));
        let elsewhere = p(json!({"resourceType": "Provenance", "id": "w", "target": [{"reference": "Encounter/e1"}]}));
        assert_eq!(elsewhere.patient, None);
        let claim = p(json!({"resourceType": "Claim", "id": "k", "patient": {"reference": "Patient/p3"},
            "billablePeriod": {"start": "2022-02-02"}, "type": {"coding": [{"code": "professional"}]}}));
        assert_eq!((claim.patient.as_deref(), claim.codes.len()), (Some("Patient/p3"), 1));
        let goal = p(json!({"resourceType": "Goal", "id": "g", "subject": {"reference": "Patient/p4"},
            "description": {"coding": [{"code": "281004"}]}, "startDate": "2023-03-03"}));
        assert_eq!((goal.patient.as_deref(), goal.codes[0].code.as_str()), (Some("Patient/p4"), "281004"));
    }

    #[test]
    fn errors_name_the_path_and_never_the_value() {
        let cases = [
            (json!([]), "resource"),
            (json!({"resourceType": "Patinet", "id": "x"}), "resource.resourceType"),
            (json!({"resourceType": "Patient", "id": "has space"}), "resource.id"),
            (json!({"resourceType": "Patient"}), "resource.id"),
            (
                json!({"resourceType": "Patient", "id": "p", "meta": {"lastUpdated": "SENTINEL-2024"}}),
                "resource.meta.lastUpdated",
            ),
            (
                json!({"resourceType": "Observation", "id": "o", "effectiveDateTime": "2024-02-30"}),
                "resource.effectiveDateTime",
            ),
            (json!({"resourceType": "Encounter", "id": "e", "period": {"start": 7}}), "resource.period.start"),
        ];
        for (value, expected) in cases {
            match index(&value) {
                Err(Invalid { path, .. }) => assert_eq!(path, expected),
                other => panic!("{value}: {other:?}"),
            }
        }
        let err = index(&json!({"resourceType": "Patient", "id": "p", "meta": {"lastUpdated": "SENTINEL-2024"}}))
            .unwrap_err();
        assert!(!err.to_string().contains("SENTINEL"));
    }

    #[test]
    fn references_resolve_relative_absolute_and_bundle_local() {
        let mut refs = References::default();
        refs.insert("urn:uuid:abc", "Patient", "abc");
        assert_eq!(refs.resolve("urn:uuid:abc").as_deref(), Some("Patient/abc"));
        assert_eq!(refs.resolve("Patient/1").as_deref(), Some("Patient/1"));
        assert_eq!(refs.resolve("https://ehr.example/fhir/Patient/1/_history/2").as_deref(), Some("Patient/1"));
        assert_eq!(refs.resolve("#contained"), None);
        assert_eq!(refs.resolve("urn:uuid:unknown"), None);
    }

    #[test]
    fn appointment_patient_comes_from_participants() {
        let appt = json!({"resourceType": "Appointment", "id": "a", "start": "2024-05-01T09:00:00Z",
            "participant": [{"actor": {"reference": "Practitioner/d"}}, {"actor": {"reference": "Patient/p"}}]});
        assert_eq!(index(&appt).unwrap().patient.as_deref(), Some("Patient/p"));
    }
}

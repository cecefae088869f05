//! Is this a valid FHIR R4 resource? Checked against HL7's official R4 JSON schema (the
//! definition for its resource type), plus the two rules a JSON schema cannot express: dates
//! must exist on the calendar (no 30 February), and a choice element (`value[x]`) takes one
//! type only. Problems name the element path and the rule, never the value.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use serde_json::Value;

/// HL7's FHIR R4 JSON schema (see `fhir-schema/README.md`).
const SCHEMA: &str = include_str!("../../fhir-schema/fhir.schema.json");

/// One thing wrong with a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a FHIRPath-like element path such as `Patient.name[0].given`.
    pub path: String,
    /// The OperationOutcome issue code: `required`, `value`, `structure` or `invalid`.
    pub code: &'static str,
    /// What is wrong, without quoting the data.
    pub message: String,
}

/// Compiled schema validators, one per resource type, built the first time a type is seen
/// (building one takes a moment; most servers see a dozen types).
#[derive(Default)]
pub struct Validator {
    definitions: OnceLock<Value>,
    compiled: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl Validator {
    /// Checks `resource`; every problem found, or none. Blocking: compiles on first use.
    pub fn check(&self, resource: &Value) -> Vec<Problem> {
        let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
            return vec![problem("", "required", "resourceType: missing; every resource names its type".into())];
        };
        let Some(validator) = self.for_type(resource_type) else {
            return vec![problem("", "value", "resourceType: not a FHIR R4 resource type".into())];
        };
        let mut problems: Vec<Problem> = validator.iter_errors(resource).map(|e| describe(resource_type, &e)).collect();
        walk(resource, resource_type, &mut problems);
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        problems.dedup();
        problems
    }

    fn for_type(&self, resource_type: &str) -> Option<Arc<jsonschema::Validator>> {
        if !carekeep_fhir::is_r4_resource_type(resource_type) {
            return None;
        }
        let mut compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = compiled.get(resource_type) {
            return Some(found.clone());
        }
        let definitions = self.definitions.get_or_init(|| {
            let mut schema: Value = serde_json::from_str(SCHEMA).expect("the bundled FHIR schema is valid JSON");
            let mut definitions = schema["definitions"].take();
            // HL7's schema describes each complex type by its properties alone, which JSON
            // Schema applies only to objects: a string where a Quantity belongs would pass.
            for definition in definitions.as_object_mut().into_iter().flat_map(|d| d.values_mut()) {
                if let Some(definition) = definition.as_object_mut()
                    && definition.contains_key("properties")
                    && !definition.contains_key("type")
                {
                    definition.insert("type".into(), Value::String("object".into()));
                }
            }
            definitions
        });
        let schema = serde_json::json!({
            "$schema": "http://json-schema.org/draft-06/schema#",
            "$ref": format!("#/definitions/{resource_type}"),
            "definitions": definitions,
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft6)
            .build(&schema)
            .ok()?;
        let validator = Arc::new(validator);
        compiled.insert(resource_type.to_owned(), validator.clone());
        Some(validator)
    }
}

fn problem(path: &str, code: &'static str, message: String) -> Problem {
    Problem { path: path.to_owned(), code, message }
}

/// `Patient.name[0].given` from the schema error's JSON pointer.
fn element_path(resource_type: &str, error: &jsonschema::ValidationError<'_>) -> String {
    let mut path = resource_type.to_owned();
    for segment in error.instance_path() {
        match segment {
            LocationSegment::Property(name) => {
                path.push('.');
                path.push_str(&safe_name(&name));
            }
            LocationSegment::Index(i) => {
                let _ = write!(path, "[{i}]");
            }
        }
    }
    path
}

/// Element names are echoed only when they look like element names: a key is client input and
/// must not smuggle data into an error.
fn safe_name(name: &str) -> String {
    let plausible = (1..=64).contains(&name.len())
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphabetic() || b == b'_' || (i > 0 && b.is_ascii_digit()));
    if plausible { name.to_owned() } else { "(unnamed element)".to_owned() }
}

fn describe(resource_type: &str, error: &jsonschema::ValidationError<'_>) -> Problem {
    let path = element_path(resource_type, error);
    let (code, message) = match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().map_or_else(|| "(element)".to_owned(), safe_name);
            return Problem {
                path: format!("{path}.{name}"),
                code: "required",
                message: format!("{path}.{name}: missing, and {resource_type} requires it"),
            };
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let names: Vec<String> = unexpected.iter().map(|n| safe_name(n)).collect();
            ("structure", format!("{path}: {} is not an element here in FHIR R4", names.join(", ")))
        }
        ValidationErrorKind::Enum { .. } => ("value", format!("{path}: not one of the codes FHIR R4 allows here")),
        ValidationErrorKind::Pattern { .. } => (
            "value",
            format!(
                "{path}: not in the format its FHIR type requires (a date as YYYY-MM-DD, an id as 1-64 of A-Z a-z 0-9 - .)"
            ),
        ),
        ValidationErrorKind::Type { kind } => {
            ("structure", format!("{path}: wrong JSON type, expected {}", type_name(kind)))
        }
        ValidationErrorKind::Constant { .. } => {
            ("value", format!("{path}: must be exactly the value FHIR R4 fixes here"))
        }
        ValidationErrorKind::MinItems { .. } => ("required", format!("{path}: must not be empty")),
        _ => ("invalid", format!("{path}: does not conform to the FHIR R4 definition")),
    };
    Problem { path, code, message }
}

fn type_name(kind: &jsonschema::error::TypeKind) -> String {
    match kind {
        jsonschema::error::TypeKind::Single(t) => t.to_string(),
        jsonschema::error::TypeKind::Multiple(ts) => ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or "),
    }
}

/// FHIR data type names: a key `<name><Type>` with one of these is a choice element.
const CHOICE_SUFFIXES: &[&str] = &[
    "Base64Binary",
    "Boolean",
    "Canonical",
    "Code",
    "Date",
    "DateTime",
    "Decimal",
    "Id",
    "Instant",
    "Integer",
    "Markdown",
    "Oid",
    "PositiveInt",
    "String",
    "Time",
    "UnsignedInt",
    "Uri",
    "Url",
    "Uuid",
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "CodeableConcept",
    "Coding",
    "ContactPoint",
    "Count",
    "Distance",
    "Duration",
    "HumanName",
    "Identifier",
    "Money",
    "Period",
    "Quantity",
    "Range",
    "Ratio",
    "Reference",
    "SampledData",
    "Signature",
    "Timing",
    "ContactDetail",
    "Contributor",
    "DataRequirement",
    "Expression",
    "ParameterDefinition",
    "RelatedArtifact",
    "TriggerDefinition",
    "UsageContext",
    "Dosage",
    "Meta",
];

/// The checks beyond the schema, over every object and string in the resource.
fn walk(value: &Value, path: &str, problems: &mut Vec<Problem>) {
    match value {
        Value::Object(map) => {
            let mut choices: HashMap<&str, usize> = HashMap::new();
            for key in map.keys() {
                if let Some(base) = choice_base(key) {
                    *choices.entry(base).or_default() += 1;
                }
            }
            for (base, count) in choices {
                if count > 1 {
                    problems.push(problem(
                        &format!("{path}.{base}[x]"),
                        "structure",
                        format!("{path}.{base}[x]: {count} types given; a choice element takes exactly one"),
                    ));
                }
            }
            for (key, child) in map {
                walk(child, &format!("{path}.{}", safe_name(key)), problems);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), problems);
            }
        }
        Value::String(text) if looks_like_date(text) && carekeep_fhir::sortable_date_time(text).is_none() => {
            problems.push(problem(path, "value", format!("{path}: not a real calendar date or time")));
        }
        _ => {}
    }
}

/// `valueQuantity` → `value`, for keys that are a lower-case name followed by a type name.
fn choice_base(key: &str) -> Option<&str> {
    CHOICE_SUFFIXES.iter().find_map(|suffix| {
        let base = key.strip_suffix(suffix)?;
        (!base.is_empty() && base.starts_with(|c: char| c.is_ascii_lowercase())).then_some(base)
    })
}

/// Strings shaped like a FHIR date or dateTime (`YYYY-MM` and longer), which the schema's
/// pattern accepts even when the day does not exist.
fn looks_like_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 7
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && (b.len() == 7
            || (b.len() >= 10
                && b[7] == b'-'
                && b[8..10].iter().all(u8::is_ascii_digit)
                && (b.len() == 10 || b[10] == b'T')))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dates_are_recognised_by_shape() {
        assert!(looks_like_date("2024-02"));
        assert!(looks_like_date("2024-02-30"));
        assert!(looks_like_date("2024-02-01T10:00:00Z"));
        assert!(!looks_like_date("2024"));
        assert!(!looks_like_date("2024-02-01 note"));
        assert!(!looks_like_date("mmol/L"));
    }

    #[test]
    fn choice_elements_are_found_by_type_suffix() {
        assert_eq!(choice_base("valueQuantity"), Some("value"));
        assert_eq!(choice_base("effectiveDateTime"), Some("effective"));
        assert_eq!(choice_base("status"), None);
        assert_eq!(choice_base("Quantity"), None);
    }

    #[test]
    fn a_minimal_patient_is_valid_and_bad_values_are_named_without_quoting_them() {
        let validator = Validator::default();
        assert!(
            validator
                .check(&json!({"resourceType": "Patient", "gender": "female"}))
                .is_empty()
        );
        let problems = validator.check(&json!({"resourceType": "Patient", "gender": "SENTINEL"}));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "Patient.gender");
        assert!(!problems[0].message.contains("SENTINEL"));
    }

    #[test]
    fn a_complex_element_must_be_an_object() {
        let validator = Validator::default();
        let reading = |value: Value| {
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "glucose"},
                "valueQuantity": value})
        };
        assert!(validator.check(&reading(json!({"value": 5.4, "unit": "mmol/L"}))).is_empty());
        for wrong in [json!("SENTINEL 5.4"), json!(5.4), json!(["SENTINEL"])] {
            let problems = validator.check(&reading(wrong));
            assert_eq!(problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(), ["Observation.valueQuantity"]);
            assert!(!format!("{problems:?}").contains("SENTINEL"));
        }
    }
}

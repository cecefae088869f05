//! FHIR narrative (`text.div`) is XHTML written by whoever wrote the resource: to an app it
//! is untrusted markup. Views of records carry none of it; the structured fields are shown
//! as text instead.

use serde_json::Value;

/// `resource` without its narrative: the resource's own `text` and those of the resources it
/// contains. Other fields named `text` (a CodeableConcept's, an Annotation's) are data and
/// stay. `None` if `json` is not a JSON object.
pub fn without_narrative(json: &str) -> Option<String> {
    let mut value: Value = serde_json::from_str(json).ok()?;
    let object = value.as_object_mut()?;
    let mut removed = object.remove("text").is_some();
    if let Some(Value::Array(contained)) = object.get_mut("contained") {
        for inner in contained.iter_mut().filter_map(Value::as_object_mut) {
            removed |= inner.remove("text").is_some();
        }
    }
    Some(if removed { value.to_string() } else { json.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::without_narrative;

    #[test]
    fn narratives_go_and_data_named_text_stays() {
        let hostile = serde_json::json!({
            "resourceType": "Observation",
            "text": {"status": "generated", "div": "<div><img src=x onerror=alert(1)><script>alert(2)</script></div>"},
            "contained": [{"resourceType": "Patient", "text": {"div": "<script>alert(3)</script>"}}],
            "code": {"text": "Glucose"},
            "status": "final"
        });
        let shown = without_narrative(&hostile.to_string()).unwrap();
        assert!(!shown.contains("onerror") && !shown.contains("<script>"), "{shown}");
        assert!(shown.contains("\"status\":\"final\"") && shown.contains("\"text\":\"Glucose\""));
        let plain = r#"{"resourceType":"Patient","id":"p"}"#;
        assert_eq!(without_narrative(plain).as_deref(), Some(plain), "unchanged when there is none");
        assert_eq!(without_narrative("[1]"), None);
    }
}

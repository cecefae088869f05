//! The mark the server puts on what a patient or proxy wrote, and on nothing else. Staff
//! and the app tell a home reading from the clinic's measurement by it, so nobody but the
//! server may set it: it is removed from whatever anyone sends, in any spelling a FHIR
//! consumer might still read as the same tag.

use serde_json::{Value, json};

/// The `meta.tag` on everything a patient or proxy writes: system and code.
pub const PATIENT_AUTHORED_TAG: (&str, &str) = ("urn:carekeep:provenance", "patient-authored");

/// The tag's display.
const DISPLAY: &str = "Recorded by the patient";

/// The server's `meta` for a patient's write: the tag alone.
pub fn patient_meta() -> Value {
    let (system, code) = PATIENT_AUTHORED_TAG;
    json!({"tag": [{"system": system, "code": code, "display": DISPLAY}]})
}

/// Removes anything that looks like the patient-authored mark from `resource`'s tags and
/// security labels, and from those of resources it contains: the exact tag, its system or
/// code in another case or with invisible characters, or its display without either.
pub fn strip(resource: &mut Value) {
    let contained = resource.get_mut("contained").and_then(Value::as_array_mut);
    for inner in contained.into_iter().flatten() {
        strip(inner);
    }
    let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) else { return };
    for labels in ["tag", "security"] {
        if let Some(list) = meta.get_mut(labels).and_then(Value::as_array_mut) {
            list.retain(|label| !looks_like_the_mark(label));
            if list.is_empty() {
                meta.remove(labels);
            }
        }
    }
}

/// Whether a Coding could be read as the patient-authored mark.
fn looks_like_the_mark(coding: &Value) -> bool {
    let (system, code) = PATIENT_AUTHORED_TAG;
    let field = |name: &str| folded(coding.get(name).and_then(Value::as_str).unwrap_or_default());
    field("system") == folded(system) || field("code") == folded(code) || field("display") == folded(DISPLAY)
}

/// Lower case, letters, digits and `:` only: `URN:Carekeep:Provenance\u{200b}` and
/// `urn:carekeep:provenance` fold alike.
fn folded(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric() || *c == ':')
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_of_the_mark_are_removed_and_other_tags_kept() {
        let mut resource = json!({
            "meta": {
                "tag": [
                    {"system": "URN:Carekeep:Provenance\u{200b}", "code": "x"},
                    {"code": "Patient-Authored"},
                    {"display": "recorded by the patient"},
                    {"system": "urn:other", "code": "kept"}
                ],
                "security": [{"system": "urn:carekeep:provenance", "code": "patient-authored"}]
            },
            "contained": [{"meta": {"tag": [{"system": "urn:carekeep:provenance", "code": "patient-authored"}]}}]
        });
        strip(&mut resource);
        assert_eq!(resource["meta"], json!({"tag": [{"system": "urn:other", "code": "kept"}]}));
        assert_eq!(resource["contained"][0]["meta"], json!({}));
    }
}

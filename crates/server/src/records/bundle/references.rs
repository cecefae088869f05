//! References between the entries of a Bundle, and to records already stored: a `urn:uuid:`
//! (or any entry's `fullUrl`) becomes the `Type/id` the server gave that entry; `Type/id`
//! relative to an entry's absolute `fullUrl` follows that entry to its new id; a conditional
//! reference (`Practitioner?identifier=system|value`, as Synthea writes them) becomes the one
//! record it matches. A reference to a `urn:` no entry defines is refused: stored, it would
//! point nowhere.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::plan::Identifier;
use crate::records::Problem;

/// Where each entry's `fullUrl` (and the `Type/id` an absolute one ends in) now points.
#[derive(Debug, Default, Clone)]
pub struct Targets {
    by_url: HashMap<String, String>,
    /// The identifiers of the resources this Bundle creates: a conditional reference may name
    /// one of them (Synthea's Location names the Organization created beside it).
    by_identifier: HashMap<(String, String), Vec<(String, String)>>,
}

impl Targets {
    /// Records that the entry sent as `full_url` is stored as `resource_type/id`.
    pub fn insert(&mut self, full_url: &str, resource_type: &str, id: &str) {
        let target = format!("{resource_type}/{id}");
        // `https://ehr.example/fhir/Patient/123` is also what `Patient/123` means inside
        // the same export (references relative to the entry's base).
        if !full_url.starts_with("urn:")
            && let Some(local) = carekeep_fhir::References::default().resolve(full_url)
            && full_url.ends_with(&local)
            && local.split('/').next() == Some(resource_type)
        {
            self.by_url.insert(local, target.clone());
        }
        self.by_url.insert(full_url.to_owned(), target);
    }

    /// Records that the resource stored as `resource_type/id` carries the identifiers of
    /// `resource` (one `Identifier` or a list).
    pub fn insert_identifiers(&mut self, resource_type: &str, id: &str, resource: &Value) {
        let identifiers = match resource.get("identifier") {
            Some(Value::Array(list)) => list.iter().collect(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => Vec::new(),
        };
        for identifier in identifiers {
            let Some(value) = identifier.get("value").and_then(Value::as_str) else { continue };
            let system = identifier.get("system").and_then(Value::as_str).unwrap_or_default();
            self.by_identifier
                .entry((resource_type.to_owned(), value.to_owned()))
                .or_default()
                .push((system.to_owned(), id.to_owned()));
        }
    }

    /// Where a reference to an entry (its `fullUrl`, or `Type/id` an import was given) now
    /// points.
    pub fn resolve(&self, reference: &str) -> Option<&String> {
        self.by_url.get(reference)
    }

    /// The ids of this Bundle's resources of `resource_type` carrying `wanted`.
    fn created_with(&self, resource_type: &str, wanted: &Identifier) -> Vec<&str> {
        let found = self.by_identifier.get(&(resource_type.to_owned(), wanted.value.clone()));
        let mut ids: Vec<&str> = found
            .into_iter()
            .flatten()
            .filter(|(system, _)| wanted.system.is_empty() || *system == wanted.system)
            .map(|(_, id)| id.as_str())
            .collect();
        ids.dedup();
        ids
    }
}

/// Resolves a conditional reference: `Ok(id)` of the one record of `resource_type` the
/// caller may see with that identifier, or the rule that failed.
pub type Conditional<'a> = dyn FnMut(&str, &Identifier) -> Result<String, &'static str> + 'a;

/// Rewrites every `reference` in `resource` (the resource of entry `index`), and returns a
/// problem per reference that cannot be resolved, naming its element.
pub fn rewrite(
    resource: &mut Value,
    index: usize,
    targets: &Targets,
    conditional: &mut Conditional<'_>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut path = format!("Bundle.entry[{index}].resource");
    walk(resource, &mut path, targets, conditional, &mut problems);
    problems
}

fn walk(
    value: &mut Value,
    path: &mut String,
    targets: &Targets,
    conditional: &mut Conditional<'_>,
    problems: &mut Vec<Problem>,
) {
    let len = path.len();
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                path.push('.');
                path.push_str(if plausible_name(key) { key } else { "(unnamed element)" });
                if key == "reference"
                    && let Value::String(reference) = child
                {
                    match resolve(reference, targets, conditional) {
                        Ok(Some(resolved)) => *reference = resolved,
                        Ok(None) => {}
                        Err(rule) => problems.push(Problem {
                            message: format!("{path}: {rule}"),
                            path: path.clone(),
                            code: "not-found",
                        }),
                    }
                } else if key != "text" {
                    // The narrative's links are display, not references.
                    walk(child, path, targets, conditional, problems);
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let _ = write!(path, "[{i}]");
                walk(item, path, targets, conditional, problems);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The new text of one reference, `None` to leave it as it is.
fn resolve(
    reference: &str,
    targets: &Targets,
    conditional: &mut Conditional<'_>,
) -> Result<Option<String>, &'static str> {
    if let Some(target) = targets.resolve(reference) {
        return Ok(Some(target.clone()));
    }
    if reference.starts_with("urn:uuid:") || reference.starts_with("urn:oid:") {
        return Err("refers to an entry this Bundle does not hold");
    }
    if let Some((resource_type, query)) = reference.split_once('?') {
        if !carekeep_fhir::is_r4_resource_type(resource_type) {
            return Err("a conditional reference must name a FHIR resource type");
        }
        let wanted =
            Identifier::from_query(query).ok_or("a conditional reference may only name identifier=system|value")?;
        return match targets.created_with(resource_type, &wanted).as_slice() {
            [] => conditional(resource_type, &wanted).map(|id| Some(format!("{resource_type}/{id}"))),
            [id] => Ok(Some(format!("{resource_type}/{id}"))),
            _ => Err("matches more than one record"),
        };
    }
    Ok(None)
}

fn plausible_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphabetic() || b == b'_' || (i > 0 && b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bundle_local_relative_and_conditional_references_are_resolved() {
        let mut targets = Targets::default();
        targets.insert("urn:uuid:p", "Patient", "new-p");
        targets.insert("https://ehr.example/fhir/Encounter/e7", "Encounter", "new-e");
        let mut resource = json!({
            "resourceType": "Observation",
            "subject": {"reference": "urn:uuid:p"},
            "encounter": {"reference": "Encounter/e7"},
            "performer": [{"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi%7C99"},
                          {"reference": "Organization/already-here"}],
            "text": {"div": "<a href=\"urn:uuid:nowhere\">x</a>"}
        });
        let mut asked = Vec::new();
        let problems = rewrite(&mut resource, 0, &targets, &mut |t: &str, i: &Identifier| {
            asked.push((t.to_owned(), i.clone()));
            Ok("pr-1".to_owned())
        });
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(resource["subject"]["reference"], "Patient/new-p");
        assert_eq!(resource["encounter"]["reference"], "Encounter/new-e");
        assert_eq!(resource["performer"][0]["reference"], "Practitioner/pr-1");
        assert_eq!(resource["performer"][1]["reference"], "Organization/already-here");
        let npi = Identifier { system: "http://hl7.org/fhir/sid/us-npi".into(), value: "99".into() };
        assert_eq!(asked, [("Practitioner".to_owned(), npi)]);
    }

    #[test]
    fn a_reference_that_resolves_nowhere_is_named_by_its_element() {
        let mut resource = json!({"resourceType": "Observation", "subject": {"reference": "urn:uuid:SENTINEL"},
            "performer": [{"reference": "Practitioner?name=SENTINEL"}, {"reference": "Organization?identifier=x"}]});
        let problems = rewrite(&mut resource, 4, &Targets::default(), &mut |_: &str, _: &Identifier| {
            Err("matches no record you can see")
        });
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "Bundle.entry[4].resource.performer[0].reference",
                "Bundle.entry[4].resource.performer[1].reference",
                "Bundle.entry[4].resource.subject.reference",
            ]
        );
        assert!(!format!("{problems:?}").contains("SENTINEL"));
    }
}

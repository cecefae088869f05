//! Reading a `transaction` or `batch` Bundle into a plan of entries: what each asks (create,
//! update, delete, read), of which type and id, under which conditions. Only the shape is
//! checked here; each resource is checked later exactly as the single-resource routes check
//! it. Problems name the entry and the element, never a value.

use serde_json::Value;

use crate::records::Problem;
use crate::records::access::{Data, SERVED_TYPES};

/// The most entries one Bundle may hold: an export of one patient's whole record fits many
/// times over, and a clinic's larger loads go through `carekeep-server import`.
pub const MAX_ENTRIES: usize = 10_000;

/// How a Bundle's entries are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// All or nothing, in one store transaction.
    Transaction,
    /// Each entry on its own: one refused entry leaves the others standing.
    Batch,
}

impl Kind {
    /// The response Bundle's type.
    pub fn response_type(self) -> &'static str {
        match self {
            Kind::Transaction => "transaction-response",
            Kind::Batch => "batch-response",
        }
    }
}

/// The identifier system under which `carekeep-server import` remembers where each record
/// came from (`Type/source-id`, a Bundle entry's `fullUrl`), so a second run finds it. The
/// server's own: never taken from a client's condition or a resource's identifiers, so no
/// one can plant a record that an import would take for its own.
pub const SOURCE_SYSTEM: &str = "urn:carekeep:source";

/// A business identifier (`system|value`), what a conditional create or reference matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identifier {
    /// The identifier's system; empty when the condition names none.
    pub system: String,
    /// The identifier's value.
    pub value: String,
}

impl Identifier {
    /// Reads an `identifier=system|value` (or `identifier=value`) query, percent-decoded; any
    /// other search is not one this server resolves.
    pub fn from_query(query: &str) -> Option<Identifier> {
        let mut pairs = form_urlencoded::parse(query.as_bytes());
        let (name, token) = pairs.next()?;
        if name != "identifier" || pairs.next().is_some() || token.is_empty() {
            return None;
        }
        let (system, value) = token.split_once('|').unwrap_or(("", &token));
        (!value.is_empty()).then(|| Identifier { system: system.to_owned(), value: value.to_owned() })
    }
}

/// What one entry asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `POST Type`: a new resource with an id the server assigns, unless `if_none_exist`
    /// matches one already there.
    Create {
        /// `ifNoneExist`: the identifier that, found, makes this entry the existing resource.
        if_none_exist: Option<Identifier>,
    },
    /// `PUT Type/id`: replaces an existing resource.
    Update {
        /// The id.
        id: String,
        /// `ifMatch`: the version the sender changed.
        if_match: Option<i64>,
    },
    /// `DELETE Type/id`.
    Delete {
        /// The id.
        id: String,
    },
    /// `GET Type/id`.
    Read {
        /// The id.
        id: String,
    },
}

impl Action {
    /// The order the specification processes entries in: deletes, creates, updates, reads.
    pub fn order(&self) -> u8 {
        match self {
            Action::Delete { .. } => 0,
            Action::Create { .. } => 1,
            Action::Update { .. } => 2,
            Action::Read { .. } => 3,
        }
    }
}

/// One entry of the Bundle.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its position in the Bundle, from 0: how problems and the response name it.
    pub index: usize,
    /// The resource type it acts on.
    pub resource_type: String,
    /// Its `fullUrl`, which other entries' references may use (`urn:uuid:…`).
    pub full_url: Option<String>,
    /// What it asks.
    pub action: Action,
    /// The resource sent with a create or update.
    pub resource: Option<Value>,
    /// The id already chosen for a create (an import spanning several Bundles, whose
    /// references were resolved across them); `None`: the server assigns one.
    pub id: Option<String>,
}

/// A Bundle read into entries, in the Bundle's order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Transaction or batch.
    pub kind: Kind,
    /// The entries.
    pub entries: Vec<Entry>,
    /// Where references to records outside this Bundle point (an import's other files).
    pub known: super::references::Targets,
}

fn problem(path: String, code: &'static str, rule: &str) -> Problem {
    Problem { message: format!("{path}: {rule}"), path, code }
}

impl Plan {
    /// Reads `bundle`. Every problem of shape is reported at once, each naming its entry.
    pub fn read(bundle: Value) -> Result<Plan, Vec<Problem>> {
        let Value::Object(mut bundle) = bundle else {
            return Err(vec![problem("Bundle".into(), "structure", "the body must be a FHIR Bundle")]);
        };
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(vec![problem("Bundle.resourceType".into(), "invalid", "the body must be a FHIR Bundle")]);
        }
        let kind = match bundle.get("type").and_then(Value::as_str) {
            Some("transaction") => Kind::Transaction,
            Some("batch") => Kind::Batch,
            _ => {
                return Err(vec![problem(
                    "Bundle.type".into(),
                    "value",
                    "must be transaction or batch (a collection or an export is loaded with carekeep-server import)",
                )]);
            }
        };
        let entries = match bundle.remove("entry") {
            None => Vec::new(),
            Some(Value::Array(entries)) => entries,
            Some(_) => return Err(vec![problem("Bundle.entry".into(), "structure", "must be a list of entries")]),
        };
        if entries.len() > MAX_ENTRIES {
            return Err(vec![problem(
                "Bundle.entry".into(),
                "too-costly",
                &format!("more than {MAX_ENTRIES} entries; split the Bundle, or load it with carekeep-server import"),
            )]);
        }
        let mut problems = Vec::new();
        let mut read = Vec::with_capacity(entries.len());
        for (index, entry) in entries.into_iter().enumerate() {
            match read_entry(index, entry) {
                Ok(entry) => read.push(entry),
                Err(p) => problems.push(p),
            }
        }
        problems.extend(overlaps(&read));
        if problems.is_empty() {
            Ok(Plan { kind, entries: read, known: super::references::Targets::default() })
        } else {
            Err(problems)
        }
    }
}

/// Two entries naming one `fullUrl`, or acting on one `Type/id`, make a Bundle whose result
/// depends on the order the server picks: refused, as the specification asks.
fn overlaps(entries: &[Entry]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut urls = std::collections::HashSet::new();
    let mut targets = std::collections::HashSet::new();
    for entry in entries {
        if let Some(url) = &entry.full_url
            && !urls.insert(url.as_str())
        {
            problems.push(problem(
                format!("Bundle.entry[{}].fullUrl", entry.index),
                "invalid",
                "another entry has the same fullUrl",
            ));
        }
        let id = match &entry.action {
            Action::Update { id, .. } | Action::Delete { id } => Some(id),
            Action::Create { .. } | Action::Read { .. } => None,
        };
        if let Some(id) = id
            && !targets.insert((entry.resource_type.as_str(), id.as_str()))
        {
            problems.push(problem(
                format!("Bundle.entry[{}].request.url", entry.index),
                "invalid",
                "another entry changes the same resource",
            ));
        }
    }
    problems
}

fn read_entry(index: usize, entry: Value) -> Result<Entry, Problem> {
    let at = |element: &str| format!("Bundle.entry[{index}].{element}");
    let Value::Object(mut entry) = entry else {
        return Err(problem(format!("Bundle.entry[{index}]"), "structure", "must be an object"));
    };
    let full_url = match entry.remove("fullUrl") {
        None => None,
        Some(Value::String(url)) if !url.is_empty() => Some(url),
        Some(_) => return Err(problem(at("fullUrl"), "value", "must be a URI")),
    };
    let request = entry.remove("request").unwrap_or(Value::Null);
    let method = request.get("method").and_then(Value::as_str);
    let url = request.get("url").and_then(Value::as_str).unwrap_or_default();
    let url = url.strip_prefix('/').unwrap_or(url);
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut segments = path.split('/');
    let resource_type = segments.next().unwrap_or_default().to_owned();
    let id = segments.next().map(str::to_owned);
    let well_formed_id = id.as_deref().is_none_or(carekeep_fhir::is_valid_id) && segments.next().is_none();
    if method.is_none() || url.is_empty() || !well_formed_id {
        return Err(problem(
            at("request"),
            "required",
            "each entry needs request.method and request.url (Type for a create, Type/id otherwise)",
        ));
    }
    if !SERVED_TYPES.contains(&resource_type.as_str()) || Data::of(&resource_type) == Some(Data::AuditTrail) {
        // The type's name only when it is one of FHIR's: anything else is the sender's text.
        let named = if carekeep_fhir::is_r4_resource_type(&resource_type) { resource_type.as_str() } else { "it" };
        return Err(problem(
            at("request.url"),
            "not-supported",
            &format!("this server does not store {named}; see its CapabilityStatement for the types it does"),
        ));
    }
    if !query.is_empty() {
        return Err(problem(
            at("request.url"),
            "not-supported",
            "conditional updates, deletes and searches are not taken in a Bundle; name the resource by Type/id",
        ));
    }
    let resource = entry.remove("resource");
    let action = read_action(index, method, id, &request)?;
    let needs_resource = matches!(action, Action::Create { .. } | Action::Update { .. });
    match &resource {
        Some(r) if needs_resource => {
            if r.get("resourceType").and_then(Value::as_str) != Some(resource_type.as_str()) {
                return Err(problem(at("resource.resourceType"), "invalid", "must be the type request.url names"));
            }
            if let (Action::Update { id, .. }, Some(body_id)) = (&action, r.get("id"))
                && body_id.as_str() != Some(id)
            {
                return Err(problem(at("resource.id"), "invalid", "must be the id request.url names"));
            }
        }
        None if needs_resource => return Err(problem(at("resource"), "required", "a create or update sends one")),
        _ => {}
    }
    Ok(Entry {
        index,
        resource_type,
        full_url,
        action,
        resource: if needs_resource { resource } else { None },
        id: None,
    })
}

/// What an entry's request asks, from its method, the id its URL names and its conditions.
fn read_action(index: usize, method: Option<&str>, id: Option<String>, request: &Value) -> Result<Action, Problem> {
    let at = |element: &str| format!("Bundle.entry[{index}].{element}");
    Ok(match (method, id) {
        (Some("POST"), None) => {
            let if_none_exist = match request.get("ifNoneExist") {
                None => None,
                Some(Value::String(q)) => {
                    Some(Identifier::from_query(q).filter(|i| i.system != SOURCE_SYSTEM).ok_or_else(|| {
                        problem(
                            at("request.ifNoneExist"),
                            "not-supported",
                            "only identifier=system|value is taken as a condition (and not the server's own system)",
                        )
                    })?)
                }
                Some(_) => return Err(problem(at("request.ifNoneExist"), "value", "must be a search string")),
            };
            Action::Create { if_none_exist }
        }
        (Some("PUT"), Some(id)) => {
            let if_match = match request.get("ifMatch").and_then(Value::as_str) {
                None => None,
                Some(tag) => Some(
                    tag.trim()
                        .trim_start_matches("W/")
                        .trim_matches('"')
                        .parse::<i64>()
                        .map_err(|_| problem(at("request.ifMatch"), "value", "must be an ETag such as W/\"3\""))?,
                ),
            };
            Action::Update { id, if_match }
        }
        (Some("DELETE"), Some(id)) => Action::Delete { id },
        (Some("GET" | "HEAD"), Some(id)) => Action::Read { id },
        (Some("POST" | "PUT" | "DELETE" | "GET" | "HEAD" | "PATCH"), _) => {
            return Err(problem(
                at("request"),
                "not-supported",
                "a create names Type; an update, a delete or a read names Type/id (PATCH and searches are not taken)",
            ));
        }
        _ => return Err(problem(at("request.method"), "value", "must be POST, PUT, DELETE or GET")),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(bundle: Value) -> Vec<String> {
        Plan::read(bundle).unwrap_err().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn entries_are_read_with_their_conditions() {
        let plan = Plan::read(json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:a", "resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn%7C12%2034"}},
            {"resource": {"resourceType": "Observation", "id": "o1"},
             "request": {"method": "PUT", "url": "/Observation/o1", "ifMatch": "W/\"3\""}},
            {"request": {"method": "DELETE", "url": "Condition/c1"}},
            {"request": {"method": "GET", "url": "Patient/p1"}},
        ]}))
        .unwrap();
        assert_eq!(plan.kind, Kind::Transaction);
        let wanted = Identifier { system: "urn:mrn".into(), value: "12 34".into() };
        assert_eq!(plan.entries[0].action, Action::Create { if_none_exist: Some(wanted) });
        assert_eq!(plan.entries[1].action, Action::Update { id: "o1".into(), if_match: Some(3) });
        assert_eq!(plan.entries[2].action, Action::Delete { id: "c1".into() });
        assert_eq!(plan.entries[3].action, Action::Read { id: "p1".into() });
    }

    #[test]
    fn problems_name_the_entry_and_element_never_the_value() {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "SENTINEL-TYPE"}},
            {"resource": {"resourceType": "AdverseEvent"}, "request": {"method": "POST", "url": "AdverseEvent"}},
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "POST", "url": "Patient", "ifNoneExist": "name=SENTINEL"},
             "resource": {"resourceType": "Patient"}},
            {"request": {"method": "DELETE", "url": "Patient?name=SENTINEL"}},
            {"request": {"method": "PUT", "url": "Patient/p1"}},
            {"fullUrl": "urn:uuid:x", "request": {"method": "GET", "url": "Patient/p1"}},
            {"fullUrl": "urn:uuid:x", "request": {"method": "GET", "url": "Patient/p2"}},
        ]});
        let problems = Plan::read(bundle).unwrap_err();
        let text = format!("{problems:?}");
        assert!(!text.contains("SENTINEL"), "{text}");
        assert!(text.contains("AdverseEvent"), "a FHIR type is named: {text}");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "Bundle.entry[0].request.url",
                "Bundle.entry[1].request.url",
                "Bundle.entry[2].resource.resourceType",
                "Bundle.entry[3].request.ifNoneExist",
                "Bundle.entry[4].request.url",
                "Bundle.entry[5].resource",
                "Bundle.entry[7].fullUrl",
            ]
        );
    }

    #[test]
    fn only_transactions_and_batches_of_bounded_size_are_taken() {
        assert_eq!(paths(json!({"resourceType": "Bundle", "type": "collection"})), ["Bundle.type"]);
        assert_eq!(paths(json!({"resourceType": "Patient"})), ["Bundle.resourceType"]);
        let many: Vec<Value> = (0..=MAX_ENTRIES)
            .map(|_| json!({"request": {"method": "GET", "url": "Patient/p"}}))
            .collect();
        assert_eq!(paths(json!({"resourceType": "Bundle", "type": "batch", "entry": many})), ["Bundle.entry"]);
        let empty = Plan::read(json!({"resourceType": "Bundle", "type": "batch"})).unwrap();
        assert!(empty.entries.is_empty() && empty.kind == Kind::Batch);
    }
}

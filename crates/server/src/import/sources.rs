//! Reading what an import is given: folders, `.json` Bundles (transaction, batch or
//! collection) and FHIR Bulk Data `.ndjson` files (one resource a line). A file that cannot
//! be read as one of these stops the import before anything is stored, naming the file and
//! the line or entry; a resource that can be read but not stored is refused later, alone.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::ServerError;
use crate::records::bundle::Identifier;

/// Where one resource came from, for the summary: the file's name and its entry or line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file, as given.
    pub file: PathBuf,
    /// `entry 3` of a Bundle, `line 12` of an NDJSON file.
    pub position: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.file.display(), self.position)
    }
}

/// One resource to import.
#[derive(Debug, Clone)]
pub struct Item {
    /// Where it came from.
    pub origin: Origin,
    /// Its type.
    pub resource_type: String,
    /// What other resources of the import call it: a Bundle entry's `fullUrl`, or
    /// `Type/source-id` (Bulk Data references).
    pub name: Option<String>,
    /// The entry's own `ifNoneExist` (Synthea's directory), if any.
    pub condition: Option<Identifier>,
    /// What the import remembers it by, so a second run finds it: its type with its
    /// `fullUrl`, its source id, or (neither given) a digest of its content.
    pub source_key: String,
    /// The resource.
    pub resource: Value,
}

/// The resources of one file, and whether they stand or fall together (a transaction).
#[derive(Debug, Clone)]
pub struct Source {
    /// The file.
    pub file: PathBuf,
    /// A transaction Bundle: all or none.
    pub atomic: bool,
    /// Its resources, in the file's order.
    pub items: Vec<Item>,
}

fn unreadable(file: &Path, rule: &str) -> ServerError {
    ServerError::Invalid(format!("{}: {rule}", file.display()))
}

/// Every `.json` and `.ndjson` file under `paths` (folders are walked, in name order).
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ServerError> {
    let mut found = Vec::new();
    for path in paths {
        walk(path, &mut found)?;
    }
    if found.is_empty() {
        return Err(ServerError::Invalid("no .json or .ndjson files in what was given".into()));
    }
    Ok(found)
}

fn walk(path: &Path, found: &mut Vec<PathBuf>) -> Result<(), ServerError> {
    let io = |e| ServerError::Io { action: "read", path: path.to_owned(), source: e };
    if path.is_dir() {
        let mut children: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| Some(e.ok()?.path()))
            .collect();
        children.sort();
        for child in children {
            if child.is_dir() || is_import_file(&child) {
                walk(&child, found)?;
            }
        }
    } else if is_import_file(path) {
        found.push(path.to_owned());
    } else if path.exists() {
        return Err(unreadable(path, "not a .json Bundle or a .ndjson file"));
    } else {
        return Err(unreadable(path, "no such file or folder"));
    }
    Ok(())
}

fn is_import_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("json" | "ndjson"))
}

/// Reads one file.
pub fn read(file: &Path) -> Result<Source, ServerError> {
    let text = std::fs::read_to_string(file).map_err(|e| ServerError::Io {
        action: "read",
        path: file.to_owned(),
        source: e,
    })?;
    if file.extension().and_then(|e| e.to_str()) == Some("ndjson") {
        return ndjson(file, &text);
    }
    let bundle: Value = serde_json::from_str(&text)
        .map_err(|e| unreadable(file, &format!("not JSON (line {}, column {})", e.line(), e.column())))?;
    bundle_items(file, &bundle)
}

fn bundle_items(file: &Path, bundle: &Value) -> Result<Source, ServerError> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(unreadable(file, "not a FHIR Bundle (a single resource belongs in a .ndjson file)"));
    }
    let atomic = match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => true,
        Some("batch" | "collection") => false,
        _ => return Err(unreadable(file, "Bundle.type must be transaction, batch or collection")),
    };
    let entries = bundle.get("entry").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let mut items = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let origin = Origin { file: file.to_owned(), position: format!("entry {i}") };
        let method = entry.pointer("/request/method").and_then(Value::as_str);
        if !matches!(method, None | Some("POST" | "PUT")) {
            return Err(unreadable(
                file,
                &format!("entry {i}: only resources are imported (request.method POST or PUT, or none)"),
            ));
        }
        let condition = match entry.pointer("/request/ifNoneExist").and_then(Value::as_str) {
            None => None,
            Some(q) => Some(
                Identifier::from_query(q)
                    .filter(|i| i.system != crate::records::bundle::plan::SOURCE_SYSTEM)
                    .ok_or_else(|| {
                        unreadable(
                            file,
                            &format!("entry {i}: request.ifNoneExist: only identifier=system|value is taken"),
                        )
                    })?,
            ),
        };
        let full_url = entry.get("fullUrl").and_then(Value::as_str).map(str::to_owned);
        let resource = entry.get("resource").cloned().unwrap_or(Value::Null);
        items.push(
            item(origin, full_url, condition, resource)
                .map_err(|rule| unreadable(file, &format!("entry {i}: {rule}")))?,
        );
    }
    Ok(Source { file: file.to_owned(), atomic, items })
}

fn ndjson(file: &Path, text: &str) -> Result<Source, ServerError> {
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let origin = Origin { file: file.to_owned(), position: format!("line {}", n + 1) };
        let at = |rule: &str| unreadable(file, &format!("line {}: {rule}", n + 1));
        let resource: Value = serde_json::from_str(line).map_err(|_| at("not one JSON resource"))?;
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let name = resource
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| carekeep_fhir::is_valid_id(id))
            .map(|id| format!("{resource_type}/{id}"));
        items.push(item(origin, name, None, resource).map_err(at)?);
    }
    Ok(Source { file: file.to_owned(), atomic: false, items })
}

fn item(
    origin: Origin,
    name: Option<String>,
    condition: Option<Identifier>,
    resource: Value,
) -> Result<Item, &'static str> {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .filter(|t| carekeep_fhir::is_r4_resource_type(t))
        .ok_or("not a FHIR R4 resource")?
        .to_owned();
    let source_key = name.as_ref().map_or_else(
        || {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(resource.to_string().as_bytes());
            let mut hex = String::new();
            crate::ids::push_hex(&mut hex, &digest);
            format!("{resource_type} sha256:{hex}")
        },
        |name| format!("{resource_type} {name}"),
    );
    Ok(Item { origin, resource_type, name, condition, source_key, resource })
}

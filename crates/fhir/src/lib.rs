//! Just enough FHIR R4 to store resources safely and find them again, shared by the app's
//! cache and the server: structural checks that name the failing path (never the value), and
//! the fields a store indexes a resource by (patient compartment, date, category, codes).

mod dates;
mod index;
mod narrative;
mod types;

pub use dates::{is_valid_instant, sortable_date_time};
pub use index::{CodeEntry, IndexedResource, References, id_from_full_url, index_resource, patient_fields};
pub use narrative::without_narrative;
pub use types::is_r4_resource_type;

/// A resource that is not valid FHIR R4 JSON: where, and what is wrong, in words that never
/// quote the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid FHIR resource at {path}: {problem}")]
pub struct Invalid {
    /// Where in the JSON, e.g. `entry[3].resource.resourceType` (field names only).
    pub path: String,
    /// What is wrong.
    pub problem: &'static str,
}

impl Invalid {
    pub(crate) fn new(path: impl Into<String>, problem: &'static str) -> Self {
        Self { path: path.into(), problem }
    }
}

/// Whether `id` is a valid FHIR id: 1–64 of `A–Z a–z 0–9 - .`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

//! Just enough FHIR R4 to store resources safely and find them again: structural checks that
//! name the failing path (never the value), and the index fields the store searches by.

mod dates;
mod index;
mod types;

pub use dates::{is_valid_instant, sortable_date_time};
pub(crate) use index::{IndexedResource, References, id_from_full_url, index_resource};
pub use types::is_r4_resource_type;

/// Whether `id` is a valid FHIR id: 1–64 of `A–Z a–z 0–9 - .`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

//! carekeep-protocol: what the app and the server must agree on, defined once (DESIGN.md §1).
//!
//! - [`auth`]: sign-in messages and roles.
//! - [`pins`]: certificate pin sets (SPKI SHA-256, RFC 7469 form).
//! - [`policy`]: the per-tenant, per-role policy the server signs (Ed25519) and the app enforces.
//! - [`refusal`]: the codes of the server's `{error, message}` refusals.
//! - [`sync`]: what a device asks at sync (status, removals) and its audit uploads, with the
//!   vocabulary a device may write into the trail.
//! - [`audit`]: the audit record, its canonical encoding and the hash-chain rule, so events
//!   recorded offline on a device can join the server's chain.
//!
//! No I/O lives here: only types, encodings and the checks on them.

pub mod audit;
pub mod auth;
pub mod pins;
pub mod policy;
pub mod refusal;
mod secret;
pub mod sync;

pub use secret::Secret;

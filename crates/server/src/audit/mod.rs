//! Auditing (DESIGN.md §6): who touched which record, kept where nobody can quietly change
//! it. Two sources feed one trail:
//! - [`trail`]: the server's own tamper-evident trail — one hash-chained record per
//!   audited request or write, signed checkpoints, and `audit verify`;
//! - [`archive`]: completed months sealed into signed files, checked with the live trail;
//! - [`search`]: a tenant's records as the `AuditEvent` route pages through them;
//! - [`device`]: the records a device kept while it worked from its cache, uploaded at its
//!   next sync and appended to that trail after the server has checked them.
//!
//! The trail's API is re-exported here, so the rest of the server says `audit::AuditLog`,
//! `audit::query`, and so on.

pub mod archive;
pub mod device;
pub mod search;
pub mod trail;

pub use trail::{
    AuditLog, CHECKPOINT_EVERY, HEAD_EVERY, Verified, VerifyError, adopt, checkpoint, push_to_outbox, query, verify,
};

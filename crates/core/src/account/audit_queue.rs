//! `audit-queue.jsonl`: the session's chained, PHI-free audit records waiting for upload,
//! one JSON record a line. It outlives logout and wipe on purpose — the organisation still
//! needs to learn what happened on the device — and holds nothing from a record.

use std::io::Write;

use carekeep_protocol::audit::AuditRecord;

use crate::error::CacheError;
use crate::{Error, Profile, Result};

/// Appends `records` (in order).
pub(super) fn append(profile: &Profile, records: &[AuditRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut lines = Vec::new();
    for record in records {
        serde_json::to_writer(&mut lines, record).map_err(|_| Error::Cache(CacheError::KeyFileInvalid))?;
        lines.push(b'\n');
    }
    let mut file = crate::platform::open_private_append(&profile.audit_queue()).map_err(|e| Error::io("write", &e))?;
    file.write_all(&lines)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", &e))
}

/// Every queued record, oldest first. Unreadable lines (a torn last write) are skipped; the
/// chain shows the gap when the server checks it.
pub(super) fn read(profile: &Profile) -> Result<Vec<AuditRecord>> {
    match std::fs::read_to_string(profile.audit_queue()) {
        Ok(text) => Ok(text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("read", &e)),
    }
}

/// Replaces the queue with `records` (after an upload): written aside, then renamed over
/// the queue, so a crash leaves the old queue or the new one, never half of one.
pub(super) fn replace(profile: &Profile, records: &[AuditRecord]) -> Result<()> {
    let path = profile.audit_queue();
    let aside = path.with_extension("jsonl.next");
    let _ = std::fs::remove_file(&aside);
    let mut lines = Vec::new();
    for record in records {
        serde_json::to_writer(&mut lines, record).map_err(|_| Error::Cache(CacheError::KeyFileInvalid))?;
        lines.push(b'\n');
    }
    let mut file = crate::platform::open_private_append(&aside).map_err(|e| Error::io("write", &e))?;
    file.write_all(&lines)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", &e))?;
    std::fs::rename(&aside, &path).map_err(|e| Error::io("write", &e))
}

/// The newest queued record: where the next run's chain continues.
pub(super) fn last(profile: &Profile) -> Result<Option<AuditRecord>> {
    Ok(read(profile)?.pop())
}

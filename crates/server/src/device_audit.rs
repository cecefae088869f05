//! Audit records a device kept while it worked from its cache (offline or not), uploaded at
//! its next sync and appended to the server's trail, each marked with the device's time
//! (`occurred_at`) and the upload time (`recorded_at`).
//!
//! A device keeps its records hash-chained. The server remembers the newest record (the
//! tip) of each chain a user has uploaded, so it can tell three cases apart:
//! - a batch that repeats records it already has (a device that lost the answer and sent
//!   them again): those are skipped, so each record lands once;
//! - a batch that continues a known chain, or starts a new one: appended;
//! - a batch that neither continues nor starts a chain (records dropped or rewritten on
//!   the device): appended after a failed "gap" event that flags it for review.

use carekeep_protocol::audit::{AuditEvent, AuditRecord, ChainHash, Outcome};
use carekeep_protocol::sync::{DeviceAuditUpload, MAX_DEVICE_AUDIT_BATCH};
use rusqlite::{OptionalExtension, params};

use crate::ServerError;
use crate::auth::Principal;
use crate::store::Store;

/// Why a batch was refused: worded for the developer of the client.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The batch is malformed or not the caller's.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ServerError),
}

impl From<rusqlite::Error> for UploadError {
    fn from(e: rusqlite::Error) -> Self {
        UploadError::Store(ServerError::Store(e.to_string()))
    }
}

/// An accepted batch: the events to append, and the chain tip to remember once they are.
pub struct Accepted {
    /// The events for the server's trail (a gap event first, if there was a gap).
    pub events: Vec<AuditEvent>,
    /// Whether the batch continued (or started) a chain.
    pub continued: bool,
    /// The tip this batch replaces, if it continued one.
    replaces: Option<ChainHash>,
    /// The batch's newest record.
    tip: Option<ChainHash>,
    stream: &'static str,
    user_id: String,
}

/// Checks `upload` from `caller` and turns its new records into events for the trail.
pub fn accept(
    store: &Store,
    caller: &Principal,
    ip: &str,
    upload: &DeviceAuditUpload,
    now_rfc3339: &str,
) -> Result<Accepted, UploadError> {
    let records = &upload.records;
    if records.len() > MAX_DEVICE_AUDIT_BATCH {
        return Err(UploadError::Invalid(format!("records: send at most {MAX_DEVICE_AUDIT_BATCH} per request")));
    }
    for (i, record) in records.iter().enumerate() {
        if AuditRecord::compute_hash(record.seq, &record.prev_hash, &record.event) != record.hash {
            return Err(UploadError::Invalid(format!("records[{i}]: its hash does not match its content")));
        }
        if record.event.user.as_ref().is_some_and(|u| *u != caller.user_id) {
            return Err(UploadError::Invalid(format!("records[{i}]: recorded for another user")));
        }
        check_fields(store, &caller.tenant, &record.event)
            .map_err(|what| UploadError::Invalid(format!("records[{i}].{what}")))?;
    }
    let stream = upload.stream.as_str();
    let tips = known_tips(store, &caller.user_id, stream)?;
    // Records up to a known tip were appended by an earlier upload of the same chain.
    let (skip, mut replaces) = match records.iter().rposition(|r| tips.contains(&r.hash)) {
        Some(i) => (i + 1, Some(records[i].hash)),
        None => (0, None),
    };
    let new = &records[skip..];
    let mut continued = true;
    if let Some(first) = new.first()
        && replaces.is_none()
    {
        if tips.contains(&first.prev_hash) {
            replaces = Some(first.prev_hash);
        } else {
            continued = first.prev_hash == ChainHash::GENESIS;
        }
    }
    continued &= new.windows(2).all(|w| w[1].prev_hash == w[0].hash);
    let mut events = Vec::with_capacity(new.len() + 1);
    let marked = |action: String, outcome: Outcome, occurred_at: Option<String>| AuditEvent {
        recorded_at: now_rfc3339.to_owned(),
        occurred_at,
        tenant: caller.tenant.clone(),
        user: Some(caller.user_id.clone()),
        role: Some(caller.role.as_str().to_owned()),
        device: Some(caller.device_id.clone()),
        ip: Some(ip.to_owned()),
        action,
        resource_type: None,
        resource_id: None,
        patient: None,
        outcome,
        break_glass: false,
    };
    if !continued {
        events.push(marked(format!("device {stream} audit: gap in the device's chain"), Outcome::Failed, None));
    }
    for record in new {
        let e = &record.event;
        let occurred_at = e.occurred_at.clone().or_else(|| Some(e.recorded_at.clone()));
        let mut event = marked(format!("device {stream}: {}", e.action), e.outcome, occurred_at);
        event.device = e.device.clone().or(event.device);
        event.resource_type.clone_from(&e.resource_type);
        event.resource_id.clone_from(&e.resource_id);
        event.patient.clone_from(&e.patient);
        event.break_glass = e.break_glass;
        events.push(event);
    }
    Ok(Accepted {
        events,
        continued,
        replaces,
        tip: new.last().map(|r| r.hash),
        stream,
        user_id: caller.user_id.clone(),
    })
}

impl Accepted {
    /// Remembers the batch's newest record as its chain's tip. Call once the events are in
    /// the trail: a crash in between makes the device send the batch again, and the server
    /// append it again — a duplicate, never a loss.
    pub fn remember_tip(&self, store: &Store) -> Result<(), UploadError> {
        let Some(tip) = self.tip else { return Ok(()) };
        let mut conn = store.lock();
        let tx = conn.transaction()?;
        if let Some(old) = self.replaces {
            tx.execute(
                "DELETE FROM device_audit_tips WHERE user_id = ?1 AND stream = ?2 AND tip = ?3",
                params![self.user_id, self.stream, old.to_string()],
            )?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO device_audit_tips (user_id, stream, tip) VALUES (?1, ?2, ?3)",
            params![self.user_id, self.stream, tip.to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// A device's record carries only what the trail may hold: an action from the shared
/// vocabulary (never free text), a served resource type, opaque ids, and a patient that
/// exists in the caller's tenant — so nothing a device sends can put PHI into the trail.
fn check_fields(store: &Store, tenant: &str, event: &AuditEvent) -> Result<(), String> {
    if !carekeep_protocol::sync::is_device_action(&event.action) {
        return Err("action: not an action devices record".into());
    }
    if event.resource_type.as_deref().is_some_and(|t| !crate::records::access::SERVED_TYPES.contains(&t)) {
        return Err("resource_type: not a type this server serves".into());
    }
    let opaque = |id: &Option<String>| id.as_deref().is_none_or(carekeep_fhir::is_valid_id);
    if !opaque(&event.resource_id) || !opaque(&event.device) {
        return Err("resource_id or device: not an opaque id".into());
    }
    if let Some(patient) = &event.patient {
        let known: Option<i64> = store
            .read()
            .query_row(
                "SELECT 1 FROM resources WHERE tenant = ?1 AND type = 'Patient' AND id = ?2",
                params![tenant, patient],
                |r| r.get(0),
            )
            .optional()
            .map_err(|_| "patient: could not be checked".to_owned())?;
        if known.is_none() {
            return Err("patient: no such patient".into());
        }
    }
    Ok(())
}

fn known_tips(store: &Store, user_id: &str, stream: &str) -> Result<Vec<ChainHash>, UploadError> {
    let conn = store.read();
    let mut stmt = conn.prepare_cached("SELECT tip FROM device_audit_tips WHERE user_id = ?1 AND stream = ?2")?;
    let rows = stmt.query_map(params![user_id, stream], |r| r.get::<_, String>(0))?;
    let mut tips = Vec::new();
    for tip in rows {
        let tip = tip?;
        if let Ok(hash) = serde_json::from_value::<ChainHash>(serde_json::Value::String(tip)) {
            tips.push(hash);
        }
    }
    Ok(tips)
}

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
//!
//! A device's word is not taken for whose record it read. A record about a patient goes
//! into that patient's history only if the account could read the patient when the record
//! says it happened — linked to them (self, proxy, care team) or holding a break-glass
//! grant covering that moment — and no earlier than the account existed; a break-glass flag
//! needs a grant the server gave, and a record may name only one of the account's own
//! devices. Anything else is appended as a refused record without the patient, for review; unknown and forbidden patients are treated alike, so an upload
//! tells nothing about which ids exist.

use carekeep_protocol::audit::{AuditEvent, AuditRecord, ChainHash, Outcome};
use carekeep_protocol::sync::{DeviceAuditUpload, MAX_DEVICE_AUDIT_BATCH};
use time::format_description::well_known::Rfc3339;

use crate::ServerError;
use crate::auth::Principal;
use crate::records::device_tips::Readable;
use crate::records::{RecordError, Records};

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

impl From<RecordError> for UploadError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Store(e) => UploadError::Store(e),
            other => UploadError::Store(ServerError::Store(other.to_string())),
        }
    }
}

/// An accepted batch: the events to append, and the chain tip to remember once they are.
pub struct Accepted {
    /// The events for the server's trail (a gap event first, if there was a gap).
    pub events: Vec<AuditEvent>,
    /// Whether the batch continued (or started) a chain.
    pub continued: bool,
    /// Records about patients the account could not read then (appended as refusals).
    pub refused: usize,
    /// The tip this batch replaces, if it continued one.
    replaces: Option<ChainHash>,
    /// The batch's newest record.
    tip: Option<ChainHash>,
    stream: &'static str,
    tenant: String,
    user_id: String,
}

/// Checks `upload` from `caller` against what `store` knows of them, and turns its new
/// records into events for the trail.
pub fn accept(
    store: &Records,
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
        check_fields(&record.event).map_err(|what| UploadError::Invalid(format!("records[{i}].{what}")))?;
    }
    let stream = upload.stream.as_str();
    let tips = known_tips(store, caller, stream)?;
    // Records up to a known tip were appended by an earlier upload of the same chain.
    let (skip, mut replaces) = match records.iter().rposition(|r| tips.contains(&r.hash)) {
        Some(i) => (i + 1, Some(records[i].hash)),
        None => (0, None),
    };
    let new = &records[skip..];
    let readable = store.readable(&caller.tenant, &caller.user_id)?;
    let now_unix = time::OffsetDateTime::parse(now_rfc3339, &Rfc3339).map_or(0, time::OffsetDateTime::unix_timestamp);
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
    let mut refused = 0;
    for record in new {
        let e = &record.event;
        let occurred_at = e.occurred_at.clone().or_else(|| Some(e.recorded_at.clone()));
        let Some(break_glass) = readable.vouches_for(e, occurred_at.as_deref(), now_unix) else {
            refused += 1;
            events.push(marked(
                format!("device {stream}: refused record ({})", e.action),
                Outcome::Denied,
                occurred_at,
            ));
            continue;
        };
        let mut event = marked(format!("device {stream}: {}", e.action), e.outcome, occurred_at);
        event.device = e.device.clone().or(event.device);
        event.resource_type.clone_from(&e.resource_type);
        event.resource_id.clone_from(&e.resource_id);
        event.patient.clone_from(&e.patient);
        event.break_glass = break_glass;
        events.push(event);
    }
    Ok(Accepted {
        events,
        continued,
        refused,
        replaces,
        tip: new.last().map(|r| r.hash),
        stream,
        tenant: caller.tenant.clone(),
        user_id: caller.user_id.clone(),
    })
}

impl Accepted {
    /// Remembers the batch's newest record as its chain's tip. Call once the events are in
    /// the trail: a crash in between makes the device send the batch again, and the server
    /// append it again — a duplicate, never a loss.
    pub fn remember_tip(&self, records: &Records) -> Result<(), UploadError> {
        let Some(tip) = self.tip else { return Ok(()) };
        let replaces = self.replaces.map(|old| old.to_string());
        records.remember_device_tip(&self.tenant, &self.user_id, self.stream, replaces.as_deref(), &tip.to_string())?;
        Ok(())
    }
}

/// A device's record carries only what the trail may hold: an action from the shared
/// vocabulary (never free text), a served resource type and opaque ids — so nothing a device
/// sends can put PHI into the trail. Whose record it was is checked apart ([`Readable`]).
fn check_fields(event: &AuditEvent) -> Result<(), String> {
    if !carekeep_protocol::sync::is_device_action(&event.action) {
        return Err("action: not an action devices record".into());
    }
    if event
        .resource_type
        .as_deref()
        .is_some_and(|t| !crate::records::access::SERVED_TYPES.contains(&t))
    {
        return Err("resource_type: not a type this server serves".into());
    }
    // Times are the only free-form fields a device sends: each must be one, so no text
    // (a name, a note) can ride into the six-year trail inside them.
    let is_time = |t: &str| time::OffsetDateTime::parse(t, &Rfc3339).is_ok();
    if !is_time(&event.recorded_at) || event.occurred_at.as_deref().is_some_and(|t| !is_time(t)) {
        return Err("recorded_at or occurred_at: not an RFC 3339 time".into());
    }
    let opaque = |id: &Option<String>| id.as_deref().is_none_or(carekeep_fhir::is_valid_id);
    if !opaque(&event.resource_id) || !opaque(&event.device) || !opaque(&event.patient) {
        return Err("resource_id, device or patient: not an opaque id".into());
    }
    Ok(())
}

/// Slack allowed between a device's clock and the server's, each way (seconds).
const CLOCK_SLACK_SECS: i64 = 5 * 60;

impl Readable {
    /// Whether `event`, which the device says happened at `occurred_at`, may name its
    /// patient in the trail: `None` if not; else whether to flag it break-glass (the
    /// account reached the patient only through a grant — whatever the device claimed).
    fn vouches_for(&self, event: &AuditEvent, occurred_at: Option<&str>, now: i64) -> Option<bool> {
        if event.device.as_ref().is_some_and(|d| !self.devices.contains(d)) {
            return None;
        }
        let Some(patient) = event.patient.as_deref() else { return (!event.break_glass).then_some(false) };
        let at = occurred_at
            .and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok())
            .map(time::OffsetDateTime::unix_timestamp)?;
        if at > now + CLOCK_SLACK_SECS || at < self.created_at - CLOCK_SLACK_SECS {
            return None;
        }
        let linked = self.linked.contains(patient);
        let granted = self.grants.iter().any(|(p, opened, expires)| {
            p == patient && *opened - CLOCK_SLACK_SECS <= at && at <= *expires + CLOCK_SLACK_SECS
        });
        match (linked, granted) {
            (_, true) if event.break_glass || !linked => Some(true),
            (true, _) if !event.break_glass => Some(false),
            _ => None,
        }
    }
}

fn known_tips(records: &Records, caller: &Principal, stream: &str) -> Result<Vec<ChainHash>, UploadError> {
    let tips = records.device_tips(&caller.tenant, &caller.user_id, stream)?;
    Ok(tips
        .into_iter()
        .filter_map(|tip| serde_json::from_value::<ChainHash>(serde_json::Value::String(tip)).ok())
        .collect())
}

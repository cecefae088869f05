//! The clinical records: FHIR R4 resources per tenant, checked on the way in, indexed by the
//! same fields the app's cache uses ([`carekeep_fhir`]), searched with paging, and guarded by
//! the [`access`] table. Blocking: call from `spawn_blocking`.

pub mod access;
pub mod authorship;
pub mod break_glass;
pub mod bundle;
pub mod device_tips;
pub mod documents;
pub mod export;
pub mod idempotency;
pub mod identifiers;
pub mod links;
pub mod removed;
pub mod search;
pub mod validate;

use std::collections::HashSet;
use std::sync::Arc;

use carekeep_protocol::audit::AuditEvent;
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ServerError;
use crate::store::Store;
pub use access::{Access, Data, Decision, Intent};
pub use idempotency::Once;
pub use removed::{DeletionScope, Removed};
pub use validate::Problem;

/// One stored resource, current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// FHIR type.
    pub resource_type: String,
    /// Opaque id.
    pub id: String,
    /// Version, from 1; the ETag is `W/"<version>"`.
    pub version: i64,
    /// The patient whose compartment holds it (bare id), if any.
    pub patient: Option<String>,
    /// The resource's JSON, with `id` and `meta` as the server set them.
    pub json: String,
    /// The user who last wrote it; `None` for what the clinic imported or seeded. A patient
    /// may change only what they wrote themselves ([`authorship`]).
    pub written_by: Option<String>,
}

/// Who makes a write, and what travels with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Writer<'a> {
    /// The writing user, recorded as the resource's author; `None` for the clinic's own
    /// tools (seed, import).
    pub user_id: Option<&'a str>,
    /// The client's `Idempotency-Key`, if it sent one (see [`idempotency`]).
    pub key: Option<&'a str>,
    /// The request's audit record, completed with the resource written and committed in
    /// the write's own transaction ([`crate::audit::push_to_outbox`]).
    pub audit: Option<&'a AuditEvent>,
}

impl<'a> Writer<'a> {
    /// The clinic's own tools: no user, no key, no request to audit.
    pub const CLINIC: Writer<'static> = Writer { user_id: None, key: None, audit: None };

    /// `user_id` writing through the API, with the key it sent.
    pub fn user(user_id: &'a str, key: Option<&'a str>) -> Self {
        Self { user_id: Some(user_id), key, audit: None }
    }

    /// The same writer, whose write commits with `record` (the request's audit record).
    #[must_use]
    pub fn audited(self, record: &'a AuditEvent) -> Self {
        Self { audit: Some(record), ..self }
    }

    /// The audit record of a write of `stored`: the request's, naming what was written.
    pub(crate) fn event_for(&self, stored: &Stored) -> Option<AuditEvent> {
        let mut event = self.audit?.clone();
        event.resource_type = Some(stored.resource_type.clone());
        event.resource_id = Some(stored.id.clone());
        event.patient.clone_from(&stored.patient);
        Some(event)
    }

    /// Puts the audit record of a write of `stored` into the outbox, on the write's `tx`.
    fn record(&self, tx: &Transaction<'_>, stored: &Stored) -> Result<(), RecordError> {
        if let Some(event) = self.event_for(stored) {
            crate::audit::push_to_outbox(tx, &event)?;
        }
        Ok(())
    }

    pub(crate) fn once(&self) -> Option<Once<'a>> {
        self.user_id.zip(self.key).and_then(|(user, key)| Once::new(user, key))
    }
}

/// A resource that passed every check and is ready to store.
#[derive(Debug, Clone)]
pub struct Checked {
    pub(crate) value: Value,
    pub(crate) attachments: Vec<documents::Pending>,
    /// FHIR type.
    pub resource_type: String,
    /// The patient it belongs to (bare id), if any.
    pub patient: Option<String>,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The resource is not valid FHIR R4, or not acceptable here.
    #[error("the resource is not valid")]
    Invalid(Vec<Problem>),
    /// No such resource (or one the caller cannot see: indistinguishable by design).
    #[error("no such resource")]
    NotFound,
    /// `If-Match` named another version than the current one.
    #[error("the resource changed since it was read")]
    VersionConflict,
    /// The store failed.
    #[error("{0}")]
    Store(#[from] ServerError),
    /// The database is out of reach for now (a shared database lost or restarting):
    /// nothing was written, and the same request may be sent again.
    #[error("the records store cannot be reached for now")]
    Unavailable,
    /// What was asked is not yet built on a PostgreSQL deployment (issue 18): refused
    /// whole, before anything is read or written.
    #[error("{0} is not available on a PostgreSQL deployment yet")]
    EmbeddedOnly(&'static str),
    /// The database was lost while a write committed: it may or may not have been kept.
    /// Sent again with its idempotency key, it is answered once either way.
    #[error("the records store was lost while the write committed; it may or may not have been kept")]
    OutcomeUnknown,
}

impl From<rusqlite::Error> for RecordError {
    fn from(e: rusqlite::Error) -> Self {
        RecordError::Store(ServerError::Store(e.to_string()))
    }
}

pub(crate) fn invalid(path: &str, code: &'static str, message: &str) -> RecordError {
    RecordError::Invalid(vec![Problem { path: path.to_owned(), code, message: message.to_owned() }])
}

/// The records service, on either engine: the embedded SQLCipher store, or PostgreSQL
/// shared by several nodes ([`crate::pg::records::PgRecords`], which answers alike).
/// Synchronous, as the embedded engine is: call it from `spawn_blocking`.
pub struct Records {
    engine: Engine,
    validator: validate::Validator,
    documents_key: crate::keys::Key,
}

/// Where the records are kept.
enum Engine {
    Sqlcipher(Arc<Store>),
    /// PostgreSQL, and the runtime its driver runs on: each operation is run to completion
    /// there from the blocking thread that called it, so handlers keep one path for both.
    Postgres(crate::pg::records::PgRecords, tokio::runtime::Handle),
}

impl Records {
    /// Records kept in `store`; document bytes are wrapped with `documents_key`.
    pub fn new(store: Arc<Store>, documents_key: crate::keys::Key) -> Self {
        Self { engine: Engine::Sqlcipher(store), validator: validate::Validator::default(), documents_key }
    }

    /// Records kept in PostgreSQL through `pg`, whose driver runs on `runtime`. Calls must
    /// come from outside the runtime's async tasks (`spawn_blocking`, or a plain thread).
    pub fn postgres(pg: crate::pg::records::PgRecords, runtime: tokio::runtime::Handle) -> Self {
        Self {
            engine: Engine::Postgres(pg, runtime),
            validator: validate::Validator::default(),
            // Documents are sealed by `pg` itself, under the same purpose key.
            documents_key: zeroize::Zeroizing::new([0; 32]),
        }
    }

    /// The embedded store (for the audit and document helpers that share it); on a
    /// PostgreSQL deployment, the refusal naming `what` is not there yet.
    pub fn store(&self, what: &'static str) -> Result<&Arc<Store>, RecordError> {
        match &self.engine {
            Engine::Sqlcipher(store) => Ok(store),
            Engine::Postgres(..) => Err(RecordError::EmbeddedOnly(what)),
        }
    }

    /// Whether the records are in PostgreSQL (shared by several nodes).
    pub fn is_shared(&self) -> bool {
        matches!(self.engine, Engine::Postgres(..))
    }

    /// The PostgreSQL engine and the runtime to run it on, for the concerns beside the
    /// records that keep their tables in the same database (the audit's search).
    pub(crate) fn shared(&self) -> Option<(&crate::pg::records::PgRecords, &tokio::runtime::Handle)> {
        match &self.engine {
            Engine::Sqlcipher(_) => None,
            Engine::Postgres(pg, runtime) => Some((pg, runtime)),
        }
    }

    /// Checks a resource a client sent for `resource_type`: the FHIR R4 schema and calendar
    /// rules, the type it was sent to, and — for a patient's data — that it names its patient.
    /// The patient-authored mark is removed whoever sent it ([`authorship::provenance`]).
    pub fn check(&self, value: Value, resource_type: &str) -> Result<Checked, RecordError> {
        check(&self.validator, value, resource_type)
    }

    /// The current version of `resource_type/id` in `tenant`.
    pub fn read(&self, tenant: &str, resource_type: &str, id: &str) -> Result<Option<Stored>, RecordError> {
        match &self.engine {
            Engine::Sqlcipher(store) => Ok(current(&store.read(), tenant, resource_type, id)?),
            Engine::Postgres(pg, runtime) => runtime.block_on(pg.read(tenant, resource_type, id)),
        }
    }

    /// Stores `checked` as a new resource with a fresh opaque id, version 1, stamped with
    /// the time it is written and its author. A patient it names must exist in `tenant`.
    /// With the writer's key, a key already used returns the resource that request created
    /// (`true`: replayed) instead of creating another.
    pub fn create(&self, tenant: &str, checked: Checked, writer: &Writer<'_>) -> Result<(Stored, bool), RecordError> {
        let store = match &self.engine {
            Engine::Sqlcipher(store) => store,
            Engine::Postgres(pg, runtime) => return runtime.block_on(pg.create(tenant, checked, writer)),
        };
        let once = writer.once();
        let request = idempotency::request_hash("create", "", 0, &checked.value);
        let mut conn = store.lock();
        let now = commit_time();
        let tx = conn.transaction()?;
        if let Some(once) = once
            && let Some(earlier) = idempotency::replayed(&tx, tenant, once, "create", &checked.resource_type, &request)?
        {
            return Ok((earlier, true));
        }
        let id = crate::ids::new_id("r")?.replacen("r-", "", 1);
        let stored = write(&tx, &self.documents_key, tenant, checked, &id, 1, now, writer.user_id)?;
        if let Some(once) = once {
            idempotency::remember(&tx, tenant, once, "create", &request, &stored, now.unix_timestamp())?;
        }
        writer.record(&tx, &stored)?;
        tx.commit()?;
        Ok((stored, false))
    }

    /// Replaces `resource_type/id` if its current version is `expected_version`, recording
    /// the writer as its author. With the writer's key, a key already used returns that
    /// request's result (`true`: replayed) — so a replayed update is not mistaken for a
    /// conflict with itself.
    pub fn update(
        &self,
        tenant: &str,
        id: &str,
        checked: Checked,
        expected_version: i64,
        writer: &Writer<'_>,
    ) -> Result<(Stored, bool), RecordError> {
        let store = match &self.engine {
            Engine::Sqlcipher(store) => store,
            Engine::Postgres(pg, runtime) => {
                return runtime.block_on(pg.update(tenant, id, checked, expected_version, writer));
            }
        };
        let once = writer.once();
        let request = idempotency::request_hash("update", id, expected_version, &checked.value);
        let mut conn = store.lock();
        let now = commit_time();
        let tx = conn.transaction()?;
        if let Some(once) = once
            && let Some(earlier) = idempotency::replayed(&tx, tenant, once, "update", &checked.resource_type, &request)?
        {
            return Ok((earlier, true));
        }
        let current: Option<i64> = tx
            .query_row(
                "SELECT version FROM resources WHERE tenant = ?1 AND type = ?2 AND id = ?3",
                params![tenant, checked.resource_type, id],
                |r| r.get(0),
            )
            .optional()?;
        match current {
            None => return Err(RecordError::NotFound),
            Some(v) if v != expected_version => return Err(RecordError::VersionConflict),
            Some(_) => {}
        }
        let stored = write(&tx, &self.documents_key, tenant, checked, id, expected_version + 1, now, writer.user_id)?;
        if let Some(once) = once {
            idempotency::remember(&tx, tenant, once, "update", &request, &stored, now.unix_timestamp())?;
        }
        writer.record(&tx, &stored)?;
        tx.commit()?;
        Ok((stored, false))
    }

    /// Stores resources exactly as given (ids included), version 1, all or none, in one
    /// transaction: for seeding a tenant from Bundles. Each was checked like any other write.
    pub fn import(
        &self,
        tenant: &str,
        resources: Vec<(Checked, String)>,
        now: OffsetDateTime,
    ) -> Result<Vec<Stored>, RecordError> {
        let store = match &self.engine {
            Engine::Sqlcipher(store) => store,
            // Stamped by the database's clock, in commit order (see `pg::records`).
            Engine::Postgres(pg, runtime) => return runtime.block_on(pg.import(tenant, resources)),
        };
        let mut conn = store.lock();
        let tx = conn.transaction()?;
        let mut stored = Vec::with_capacity(resources.len());
        for (checked, id) in resources {
            stored.push(write(&tx, &self.documents_key, tenant, checked, &id, 1, now, None)?);
        }
        tx.commit()?;
        Ok(stored)
    }

    /// The caller's links to patients of `tenant` and open break-glass grants, for
    /// [`Access`].
    pub fn access(
        &self,
        tenant: &str,
        user_id: &str,
        role: carekeep_protocol::auth::Role,
        now: i64,
    ) -> Result<Access, RecordError> {
        self.load_access(tenant, user_id, role, None, now)
    }

    /// As [`Records::access`], for requests about one patient: only the caller's links to
    /// `patient` are loaded (a care team of thousands costs one lookup), and decisions about
    /// that patient are the same.
    pub fn access_to(
        &self,
        tenant: &str,
        user_id: &str,
        role: carekeep_protocol::auth::Role,
        patient: &str,
        now: i64,
    ) -> Result<Access, RecordError> {
        self.load_access(tenant, user_id, role, Some(patient), now)
    }

    fn load_access(
        &self,
        tenant: &str,
        user_id: &str,
        role: carekeep_protocol::auth::Role,
        patient: Option<&str>,
        now: i64,
    ) -> Result<Access, RecordError> {
        let store = match &self.engine {
            Engine::Sqlcipher(store) => store,
            Engine::Postgres(pg, runtime) => return runtime.block_on(pg.access(tenant, user_id, role, patient, now)),
        };
        // A user belongs to one tenant: their links are that tenant's.
        let conn = store.read();
        let mut access = Access {
            user_id: user_id.to_owned(),
            role,
            linked: HashSet::new(),
            care_team: HashSet::new(),
            break_glass: HashSet::new(),
        };
        let mut links = conn.prepare_cached(
            "SELECT patient, relation FROM patient_links WHERE user_id = ?1 AND (?2 IS NULL OR patient = ?2)",
        )?;
        for row in
            links.query_map(params![user_id, patient], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        {
            let (patient, relation) = row?;
            if relation == "care-team" {
                access.care_team.insert(patient);
            } else {
                access.linked.insert(patient);
            }
        }
        let mut grants = conn.prepare_cached(
            "SELECT patient FROM break_glass WHERE user_id = ?1 AND expires_at > ?2 AND (?3 IS NULL OR patient = ?3)",
        )?;
        for row in grants.query_map(params![user_id, now, patient], |r| r.get::<_, String>(0))? {
            access.break_glass.insert(row?);
        }
        Ok(access)
    }

    /// The id of `patient`'s earliest `resource_type` by its clinical date (their first
    /// visit, say), if they have one.
    pub fn earliest(&self, tenant: &str, resource_type: &str, patient: &str) -> Result<Option<String>, RecordError> {
        let store = match &self.engine {
            Engine::Sqlcipher(store) => store,
            Engine::Postgres(pg, runtime) => return runtime.block_on(pg.earliest(tenant, resource_type, patient)),
        };
        Ok(store
            .read()
            .query_row(
                "SELECT id FROM resources WHERE tenant = ?1 AND type = ?2 AND patient = ?3 ORDER BY effective, id LIMIT 1",
                params![tenant, resource_type, patient],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Links `user_id` to `patient` as `relation` (`self`, `proxy` or `care-team`).
    pub fn link(&self, tenant: &str, user_id: &str, patient: &str, relation: &str) -> Result<(), RecordError> {
        let store = match &self.engine {
            Engine::Sqlcipher(store) => store,
            Engine::Postgres(pg, runtime) => return runtime.block_on(pg.link(tenant, user_id, patient, relation)),
        };
        store.lock().execute(
            "INSERT INTO patient_links (tenant, user_id, patient, relation) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user_id, patient) DO UPDATE SET relation = excluded.relation",
            params![tenant, user_id, patient, relation],
        )?;
        Ok(())
    }
}

/// [`Records::check`], for either engine: the resource as a client sent it, checked against
/// `validator` and made ready to store.
pub(crate) fn check(
    validator: &validate::Validator,
    mut value: Value,
    resource_type: &str,
) -> Result<Checked, RecordError> {
    if value.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
        return Err(invalid(
            "resourceType",
            "invalid",
            &format!("resourceType: the body must be a {resource_type}, the type in the URL"),
        ));
    }
    let data = Data::of(resource_type)
        .filter(|d| *d != Data::AuditTrail)
        .ok_or_else(|| invalid(resource_type, "not-supported", "this server does not accept this resource type"))?;
    let problems = validator.check(&value);
    if !problems.is_empty() {
        return Err(RecordError::Invalid(problems));
    }
    if let Some(path) = nul_in(&value, resource_type) {
        // Allowed by the schema's patterns, kept by no database's text type.
        return Err(invalid(&path, "value", &format!("{path}: holds a NUL character; remove it")));
    }
    let attachments = if resource_type == "DocumentReference" {
        documents::take_attachments(&mut value).map_err(RecordError::Invalid)?
    } else {
        Vec::new()
    };
    // Ids, versions and the patient-authored mark are the server's to assign: a
    // placeholder id keeps the indexer happy.
    authorship::provenance::strip(&mut value);
    if let Some(obj) = value.as_object_mut() {
        obj.insert("id".into(), Value::String("pending".into()));
        if let Some(meta) = obj.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("versionId");
            meta.remove("lastUpdated");
        }
    }
    if let Some(path) = indirect_patient_reference(&value) {
        return Err(invalid(
            &format!("{resource_type}.{path}"),
            "value",
            &format!(
                "{resource_type}.{path}: refer to the patient as Patient/<id>; any other form (another server's \
                 URL) is not accepted"
            ),
        ));
    }
    let raw = value.to_string();
    let indexed =
        carekeep_fhir::index_resource(&value, &raw, resource_type, None, &carekeep_fhir::References::default())
            .map_err(|e| invalid(&e.path, "value", &format!("{}: {}", e.path, e.problem)))?;
    let patient = indexed
        .patient
        .as_deref()
        .and_then(|p| p.strip_prefix("Patient/"))
        .map(str::to_owned);
    let patient = if resource_type == "Patient" { None } else { patient };
    if patient.is_none() && !matches!(data, Data::Demographics | Data::Directory) {
        let field = patient_element(resource_type);
        return Err(invalid(
            &format!("{resource_type}.{field}"),
            "required",
            &format!("{resource_type}.{field}: must reference the patient it belongs to (Patient/<id>)"),
        ));
    }
    Ok(Checked { value, attachments, resource_type: resource_type.to_owned(), patient })
}

/// The path of the first string (or key) in `value` holding a NUL character, if any.
fn nul_in(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(|| path.to_owned()),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| nul_in(v, &format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            if k.contains('\0') { Some(path.to_owned()) } else { nul_in(v, &format!("{path}.{k}")) }
        }),
        _ => None,
    }
}

/// Where a resource points at its patient other than as `Patient/<id>` (optionally
/// `/_history/<n>`): an absolute URL (`https://elsewhere/fhir/Patient/1`), a scheme-relative
/// one, or any other path ending in `Patient/1` names a patient of another server or of
/// nowhere, and filing it under this server's `Patient/1` would put it in the wrong
/// person's record.
fn indirect_patient_reference(value: &Value) -> Option<String> {
    let indirect = |r: &Value| {
        let Some(text) = r.get("reference").and_then(Value::as_str) else { return false };
        let Some(resolved) = carekeep_fhir::References::default().resolve(text) else { return false };
        resolved.starts_with("Patient/")
            && text != resolved
            && !text
                .strip_prefix(resolved.as_str())
                .and_then(|rest| rest.strip_prefix("/_history/"))
                .is_some_and(|version| !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()))
    };
    let resource_type = value.get("resourceType").and_then(Value::as_str).unwrap_or_default();
    for field in carekeep_fhir::patient_fields(resource_type) {
        if value.get(*field).is_some_and(indirect) {
            return Some(format!("{field}.reference"));
        }
    }
    let targets = value.get("target").and_then(Value::as_array).into_iter().flatten();
    if let Some((i, _)) = targets.enumerate().find(|(_, t)| indirect(t)) {
        return Some(format!("target[{i}].reference"));
    }
    let participants = value.get("participant").and_then(Value::as_array).into_iter().flatten();
    participants
        .enumerate()
        .find(|(_, p)| p.get("actor").is_some_and(indirect))
        .map(|(i, _)| format!("participant[{i}].actor.reference"))
}

/// The element that names a resource's patient, for messages: `subject` for most types.
pub fn patient_element(resource_type: &str) -> &'static str {
    match resource_type {
        "Provenance" => "target",
        "Appointment" => "participant",
        other => carekeep_fhir::patient_fields(other)[0],
    }
}

/// The refusal of a resource whose patient is not one the writer can see: the same words
/// whether the patient does not exist, is another tenant's, or is out of reach.
pub fn patient_not_found(resource_type: &str) -> RecordError {
    let field = patient_element(resource_type);
    invalid(
        &format!("{resource_type}.{field}"),
        "not-found",
        &format!("{resource_type}.{field}: references a patient that does not exist"),
    )
}

/// The current version of `resource_type/id` in `tenant`, read on `conn`.
fn current(
    conn: &rusqlite::Connection,
    tenant: &str,
    resource_type: &str,
    id: &str,
) -> rusqlite::Result<Option<Stored>> {
    conn.prepare_cached(
        "SELECT version, patient, json, written_by FROM resources WHERE tenant = ?1 AND type = ?2 AND id = ?3",
    )?
    .query_row(params![tenant, resource_type, id], |r| {
        Ok(Stored {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            version: r.get(0)?,
            patient: r.get(1)?,
            json: r.get(2)?,
            written_by: r.get(3)?,
        })
    })
    .optional()
}

/// The time a write is stamped with, read once the writer lock is held: stamps then follow
/// commit order, so a device syncing `_since` a time it was told cannot miss a write that
/// was waiting for the lock when it looked.
fn commit_time() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The instant as FHIR shows it (`2026-11-23T10:00:00.123456Z`) and its sortable form.
pub(crate) fn instant(now: OffsetDateTime) -> (String, String) {
    let shown = now.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_default();
    let sortable = carekeep_fhir::sortable_date_time(&shown).unwrap_or_else(|| shown.clone());
    (shown, sortable)
}

/// Gives `value` its id, version and write time (`meta`), as both engines store it: its
/// sortable write time, and its JSON.
pub(crate) fn stamp(value: &mut Value, id: &str, version: i64, now: OffsetDateTime) -> (String, String) {
    let (shown, sortable) = instant(now);
    if let Some(obj) = value.as_object_mut() {
        obj.insert("id".into(), Value::String(id.to_owned()));
        let meta = obj.entry("meta").or_insert_with(|| serde_json::json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("versionId".into(), Value::String(version.to_string()));
            meta.insert("lastUpdated".into(), Value::String(shown));
        }
    }
    (sortable, value.to_string())
}

/// The index of a stamped resource's `json`.
pub(crate) fn index<'j>(
    value: &Value,
    json: &'j str,
    resource_type: &str,
) -> Result<carekeep_fhir::IndexedResource<'j>, RecordError> {
    carekeep_fhir::index_resource(value, json, resource_type, None, &carekeep_fhir::References::default())
        .map_err(|e| invalid(&e.path, "value", &format!("{}: {}", e.path, e.problem)))
}

#[expect(clippy::too_many_arguments, reason = "one private helper; its callers name each part")]
fn write(
    tx: &Transaction<'_>,
    documents_key: &[u8; 32],
    tenant: &str,
    checked: Checked,
    id: &str,
    version: i64,
    now: OffsetDateTime,
    author: Option<&str>,
) -> Result<Stored, RecordError> {
    let Checked { mut value, attachments, resource_type, patient } = checked;
    if let Some(patient) = &patient {
        let known: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM resources WHERE tenant = ?1 AND type = 'Patient' AND id = ?2",
                params![tenant, patient],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_none() {
            return Err(patient_not_found(&resource_type));
        }
    }
    let (sortable, json) = stamp(&mut value, id, version, now);
    let indexed = index(&value, &json, &resource_type)?;
    let patient = if resource_type == "Patient" { Some(id.to_owned()) } else { patient };
    tx.prepare_cached(
        "INSERT INTO resources (tenant, type, id, version, last_updated, patient, category, effective, json,
                                written_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (tenant, type, id) DO UPDATE SET version = excluded.version,
             last_updated = excluded.last_updated, patient = excluded.patient, category = excluded.category,
             effective = excluded.effective, json = excluded.json, written_by = excluded.written_by",
    )?
    .execute(params![
        tenant,
        resource_type,
        id,
        version,
        sortable,
        patient,
        indexed.category,
        indexed.effective,
        json,
        author
    ])?;
    tx.prepare_cached("DELETE FROM resource_codes WHERE tenant = ?1 AND type = ?2 AND id = ?3")?
        .execute(params![tenant, resource_type, id])?;
    let mut insert =
        tx.prepare_cached("INSERT INTO resource_codes (tenant, type, id, system, code) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for code in &indexed.codes {
        insert.execute(params![tenant, resource_type, id, code.system, code.code])?;
    }
    identifiers::index(tx, tenant, &resource_type, id, &value)?;
    if let Some(patient) = &patient {
        documents::store(tx, documents_key, tenant, patient, id, &attachments)?;
    }
    if resource_type == "DocumentReference" {
        documents::forget_unlinked(tx, tenant, id, Some(&json))?;
    }
    Ok(Stored { resource_type, id: id.to_owned(), version, patient, json, written_by: author.map(str::to_owned) })
}

//! Break-glass grants and the admins' alerts, in the store: a clinician opens a patient
//! outside their care team for [`GRANT_SECS`], at most [`GRANTS_PER_HOUR`] an hour. Counting
//! and granting happen in one transaction, so simultaneous requests cannot slip past the
//! limit together. The route and its refusals are `http::break_glass`.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Engine, RecordError, Records};
use crate::ServerError;
use crate::store::Store;

/// How long a break-glass grant lasts.
pub const GRANT_SECS: i64 = 60 * 60;

/// Grants one clinician may open in any hour: an emergency rarely needs more than a few
/// records; opening twenty in a second is a search, not an emergency.
pub const GRANTS_PER_HOUR: i64 = 5;

/// How a request for a grant ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Granted until this time.
    Until(i64),
    /// No such patient in the caller's tenant.
    NoPatient,
    /// The clinician is over the hourly limit; an alert was raised for the tenant's admins.
    OverLimit,
}

impl Records {
    /// Opens `patient` of `tenant` to `user` for [`GRANT_SECS`] from `now`, with `reason`
    /// kept for review — unless the patient does not exist or the user is over the hourly
    /// limit.
    pub fn open_break_glass(
        &self,
        tenant: &str,
        user: &str,
        patient: &str,
        reason: &str,
        now: i64,
    ) -> Result<Opened, RecordError> {
        match &self.engine {
            Engine::Sqlcipher(store) => Ok(open(store, tenant, user, patient, reason, now)?),
            Engine::Postgres(pg, runtime) => runtime.block_on(pg.open_break_glass(tenant, user, patient, reason, now)),
        }
    }

    /// `tenant`'s grants, newest first.
    pub fn break_glass_grants(&self, tenant: &str) -> Result<Vec<GrantRow>, RecordError> {
        match &self.engine {
            Engine::Sqlcipher(store) => Ok(grants(store, tenant)?),
            Engine::Postgres(pg, runtime) => runtime.block_on(pg.break_glass_grants(tenant)),
        }
    }

    /// `tenant`'s alerts, newest first.
    pub fn alerts(&self, tenant: &str) -> Result<Vec<AlertRow>, RecordError> {
        match &self.engine {
            Engine::Sqlcipher(store) => Ok(alerts(store, tenant)?),
            Engine::Postgres(pg, runtime) => runtime.block_on(pg.alerts(tenant)),
        }
    }
}

fn open(store: &Store, tenant: &str, user: &str, patient: &str, reason: &str, now: i64) -> Result<Opened, ServerError> {
    let mut conn = store.lock();
    let tx = conn.transaction()?;
    let exists: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM resources WHERE tenant = ?1 AND type = 'Patient' AND id = ?2",
            params![tenant, patient],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(Opened::NoPatient);
    }
    let recent: i64 = tx.query_row(
        "SELECT count(*) FROM break_glass WHERE user_id = ?1 AND opened_at > ?2",
        params![user, now - 3600],
        |r| r.get(0),
    )?;
    if recent >= GRANTS_PER_HOUR {
        tx.execute(
            "INSERT INTO admin_alerts (id, tenant, kind, user_id, raised_at) VALUES (?1, ?2, 'break-glass-rate', ?3, ?4)",
            params![crate::ids::new_id("alert")?, tenant, user, now],
        )?;
        tx.commit()?;
        return Ok(Opened::OverLimit);
    }
    tx.execute(
        "INSERT INTO break_glass (id, tenant, user_id, patient, reason, opened_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![crate::ids::new_id("bg")?, tenant, user, patient, reason, now, now + GRANT_SECS],
    )?;
    tx.commit()?;
    Ok(Opened::Until(now + GRANT_SECS))
}

/// One grant, as the tenant's admins review it.
#[derive(Debug, Clone, Serialize)]
pub struct GrantRow {
    /// The grant's id.
    pub id: String,
    /// The clinician's user id (their sign-in name is the accounts', see
    /// [`crate::auth::Auth::usernames`]).
    pub user: String,
    /// The patient opened.
    pub patient: String,
    /// Why, in the clinician's words.
    pub reason: String,
    /// When (Unix seconds).
    pub opened_at: i64,
    /// Until when.
    pub expires_at: i64,
}

/// One alert for the tenant's admins.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRow {
    /// The alert's id.
    pub id: String,
    /// What happened (`break-glass-rate`).
    pub kind: String,
    /// Whose doing (a user id).
    pub user: String,
    /// When (Unix seconds).
    pub raised_at: i64,
}

fn grants(store: &Store, tenant: &str) -> Result<Vec<GrantRow>, ServerError> {
    let conn = store.read();
    let mut stmt = conn.prepare(
        "SELECT id, user_id, patient, reason, opened_at, expires_at
         FROM break_glass WHERE tenant = ?1 ORDER BY opened_at DESC, id",
    )?;
    let rows = stmt.query_map([tenant], |r| {
        Ok(GrantRow {
            id: r.get(0)?,
            user: r.get(1)?,
            patient: r.get(2)?,
            reason: r.get(3)?,
            opened_at: r.get(4)?,
            expires_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn alerts(store: &Store, tenant: &str) -> Result<Vec<AlertRow>, ServerError> {
    let conn = store.read();
    let mut stmt = conn.prepare(
        "SELECT id, kind, user_id, raised_at FROM admin_alerts WHERE tenant = ?1 ORDER BY raised_at DESC, id",
    )?;
    let rows = stmt.query_map([tenant], |r| {
        Ok(AlertRow { id: r.get(0)?, kind: r.get(1)?, user: r.get(2)?, raised_at: r.get(3)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

//! What the audit needs of the store when a device uploads the records it kept offline
//! ([`crate::audit::device`]): the tips of the chains the user uploaded before, what the
//! account could read (and when), and the new tip once the records are in the trail — on
//! either engine.

use std::collections::HashSet;

use rusqlite::params;

use super::{Engine, RecordError, Records};

/// What an account could read, and when: its links to patients, its break-glass grants
/// (patient, opened, expires), when it was created, and its devices.
#[derive(Debug, Default)]
pub struct Readable {
    /// Patients the account is linked to (self, proxy, care team).
    pub linked: HashSet<String>,
    /// Break-glass grants: patient, opened at, expires at.
    pub grants: Vec<(String, i64, i64)>,
    /// When the account was created.
    pub created_at: i64,
    /// The account's devices: a record may name only one of them.
    pub devices: HashSet<String>,
}

impl Records {
    /// The tips (hashes, as text) of `user_id`'s uploaded chains of `stream`.
    pub fn device_tips(&self, tenant: &str, user_id: &str, stream: &str) -> Result<Vec<String>, RecordError> {
        let store = match &self.engine {
            Engine::Sqlcipher(store) => store,
            Engine::Postgres(pg, runtime) => return runtime.block_on(pg.device_tips(tenant, user_id, stream)),
        };
        let conn = store.read();
        let mut stmt = conn.prepare_cached("SELECT tip FROM device_audit_tips WHERE user_id = ?1 AND stream = ?2")?;
        let tips = stmt
            .query_map(params![user_id, stream], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(tips)
    }

    /// What `user_id` of `tenant` could read, and when.
    pub fn readable(&self, tenant: &str, user_id: &str) -> Result<Readable, RecordError> {
        let store = match &self.engine {
            Engine::Sqlcipher(store) => store,
            Engine::Postgres(pg, runtime) => return runtime.block_on(pg.readable(tenant, user_id)),
        };
        let conn = store.read();
        let linked = conn
            .prepare_cached("SELECT patient FROM patient_links WHERE user_id = ?1 AND tenant = ?2")?
            .query_map(params![user_id, tenant], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let grants = conn
            .prepare_cached(
                "SELECT patient, opened_at, expires_at FROM break_glass WHERE user_id = ?1 AND tenant = ?2",
            )?
            .query_map(params![user_id, tenant], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let created_at = conn
            .prepare_cached("SELECT created_at FROM users WHERE id = ?1")?
            .query_row([user_id], |r| r.get(0))?;
        let devices = conn
            .prepare_cached("SELECT id FROM devices WHERE user_id = ?1")?
            .query_map([user_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Readable { linked, grants, created_at, devices })
    }

    /// Makes `tip` the newest record of `user_id`'s chain of `stream`, in place of
    /// `replaces` (the tip the batch continued), if any.
    pub fn remember_device_tip(
        &self,
        tenant: &str,
        user_id: &str,
        stream: &str,
        replaces: Option<&str>,
        tip: &str,
    ) -> Result<(), RecordError> {
        let store = match &self.engine {
            Engine::Sqlcipher(store) => store,
            Engine::Postgres(pg, runtime) => {
                return runtime.block_on(pg.remember_device_tip(tenant, user_id, stream, replaces, tip));
            }
        };
        let mut conn = store.lock();
        let tx = conn.transaction()?;
        if let Some(old) = replaces {
            tx.execute(
                "DELETE FROM device_audit_tips WHERE user_id = ?1 AND stream = ?2 AND tip = ?3",
                params![user_id, stream, old],
            )?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO device_audit_tips (user_id, stream, tip) VALUES (?1, ?2, ?3)",
            params![user_id, stream, tip],
        )?;
        tx.commit()?;
        Ok(())
    }
}

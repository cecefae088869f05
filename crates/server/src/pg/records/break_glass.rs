//! Break-glass on PostgreSQL: a clinician opens a patient outside their care team for
//! [`GRANT_SECS`], at most [`GRANTS_PER_HOUR`] an hour, as on the embedded store
//! ([`crate::records::break_glass`]). Counting and granting hold the tenant's lock, so
//! requests at once on any nodes cannot slip past the limit together. The reason is sealed
//! under the tenant's data key (it is free text: it may name the patient), and each grant
//! carries a MAC under the master key — one the nodes' database credential adds grants
//! nothing ([`PgRecords::access`] refuses it).

use super::{GrantRow, PgRecords, altered, db};
use crate::keys;
use crate::pg::audit::lock_tenant;
use crate::pg::tenant_tx;
use crate::records::RecordError;
use crate::records::break_glass::{self, AlertRow, GRANT_SECS, GRANTS_PER_HOUR, Opened};

/// What a grant's sealed reason is bound to.
fn reason_aad(tenant: &str, id: &str) -> Vec<u8> {
    [b"carekeep.pg.break-glass-reason\0".as_slice(), tenant.as_bytes(), b"\0", id.as_bytes()].concat()
}

impl PgRecords {
    /// Opens `patient` to `user` for [`GRANT_SECS`] from `now`; as
    /// [`crate::records::Records::open_break_glass`].
    pub async fn open_break_glass(
        &self,
        tenant: &str,
        user: &str,
        patient: &str,
        reason: &str,
        now: i64,
    ) -> Result<Opened, RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        lock_tenant(&tx, tenant).await.map_err(db)?;
        let exists = tx
            .query_opt(
                "SELECT 1 FROM resources WHERE tenant = $1 AND type = 'Patient' AND id = $2",
                &[&tenant, &patient],
            )
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Ok(Opened::NoPatient);
        }
        let recent: i64 = tx
            .query_one(
                "SELECT count(*) FROM break_glass WHERE tenant = $1 AND user_id = $2 AND opened_at > $3",
                &[&tenant, &user, &(now - 3600)],
            )
            .await
            .map_err(db)?
            .get(0);
        if recent >= GRANTS_PER_HOUR {
            tx.execute(
                "INSERT INTO admin_alerts (id, tenant, kind, user_id, raised_at) VALUES ($1, $2, 'break-glass-rate', $3, $4)",
                &[&crate::ids::new_id("alert")?, &tenant, &user, &now],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            return Ok(Opened::OverLimit);
        }
        let id = crate::ids::new_id("bg")?;
        let key = self.data_key(&tx, tenant, None).await?;
        let sealed = keys::seal(&key, &reason_aad(tenant, &id), reason.as_bytes())?;
        let expires_at = now + GRANT_SECS;
        let grant = GrantRow { id: &id, tenant, user_id: user, patient, opened_at: now, expires_at };
        tx.execute(
            "INSERT INTO break_glass (id, tenant, user_id, patient, reason_sealed, opened_at, expires_at, mac)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&id, &tenant, &user, &patient, &sealed, &now, &expires_at, &grant.mac(&self.keys.grants).as_slice()],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Opened::Until(expires_at))
    }

    /// `tenant`'s grants, newest first, each checked and its reason opened; as
    /// [`crate::records::Records::break_glass_grants`].
    pub async fn break_glass_grants(&self, tenant: &str) -> Result<Vec<break_glass::GrantRow>, RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let rows = tx
            .query(
                "SELECT id, user_id, patient, reason_sealed, opened_at, expires_at, mac FROM break_glass
                 WHERE tenant = $1 ORDER BY opened_at DESC, id",
                &[&tenant],
            )
            .await
            .map_err(db)?;
        let key = if rows.is_empty() { None } else { Some(self.data_key(&tx, tenant, None).await?) };
        tx.commit().await.map_err(db)?;
        let mut grants = Vec::with_capacity(rows.len());
        for row in &rows {
            let grant = GrantRow {
                id: row.get(0),
                tenant,
                user_id: row.get(1),
                patient: row.get(2),
                opened_at: row.get(4),
                expires_at: row.get(5),
            };
            if !grant.verify(&self.keys.grants, row.get(6)) {
                return Err(super::query::forged());
            }
            let key = key.as_ref().ok_or_else(altered)?;
            let reason = keys::open(key, &reason_aad(tenant, grant.id), row.get(3)).ok_or_else(altered)?;
            grants.push(break_glass::GrantRow {
                id: grant.id.to_owned(),
                user: grant.user_id.to_owned(),
                patient: grant.patient.to_owned(),
                reason: String::from_utf8(reason.to_vec()).map_err(|_| altered())?,
                opened_at: grant.opened_at,
                expires_at: grant.expires_at,
            });
        }
        Ok(grants)
    }

    /// `tenant`'s alerts, newest first; as [`crate::records::Records::alerts`].
    pub async fn alerts(&self, tenant: &str) -> Result<Vec<AlertRow>, RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let rows = tx
            .query(
                "SELECT id, kind, user_id, raised_at FROM admin_alerts WHERE tenant = $1 ORDER BY raised_at DESC, id",
                &[&tenant],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| AlertRow { id: r.get(0), kind: r.get(1), user: r.get(2), raised_at: r.get(3) })
            .collect())
    }
}

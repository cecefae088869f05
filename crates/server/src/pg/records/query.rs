//! Reads on PostgreSQL: one resource, searches with paging, the caller's access (links and
//! break-glass grants), deletions for sync, documents, and the blind name index — each in
//! a transaction of the one tenant, each body opened with the tenant's key and its row's
//! binding (an altered or moved body is an error, never data).

use std::collections::HashSet;
use std::fmt::Write as _;

use carekeep_protocol::auth::Role;
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::{Binding, GrantRow, PgRecords, altered, blind_token, db, link_parts, tokens_of};
use crate::keys::Key;
use crate::pg::tenant_tx;
use crate::records::access::{Access, PatientFilter};
use crate::records::device_tips::Readable;
use crate::records::documents::{self, Document};
use crate::records::removed::{DeletionScope, Removed};
use crate::records::search::{After, MAX_COUNT, Page, Search, date_clauses};
use crate::records::{RecordError, Stored};

/// A statement's parameters, owned, in placeholder order.
#[derive(Default)]
struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Params {
    /// Adds `value`; its placeholder (`$n`).
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

impl PgRecords {
    /// The current version of `resource_type/id` in `tenant`.
    pub async fn read(&self, tenant: &str, resource_type: &str, id: &str) -> Result<Option<Stored>, RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let stored = self.read_in(&tx, None, tenant, resource_type, id).await?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    /// The current version of `resource_type/id`, read on `tx` (already in `tenant`) and
    /// opened with `key` (or the tenant's, looked up when there is a row to open).
    pub(super) async fn read_in(
        &self,
        tx: &Transaction<'_>,
        key: Option<&Key>,
        tenant: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<Stored>, RecordError> {
        let Some(row) = tx
            .query_opt(
                "SELECT version, patient, body, written_by FROM resources WHERE tenant = $1 AND type = $2 AND id = $3",
                &[&tenant, &resource_type, &id],
            )
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let key = match key {
            Some(key) => key.clone(),
            None => self.data_key(tx, tenant, None).await?,
        };
        let (version, patient, written_by): (i64, Option<String>, Option<String>) =
            (row.get(0), row.get(1), row.get(3));
        let binding = Binding {
            tenant,
            resource_type,
            id,
            version,
            patient: patient.as_deref(),
            written_by: written_by.as_deref(),
        };
        let json = binding.open(&key, row.get(2))?;
        Ok(Some(Stored {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            version,
            patient,
            json,
            written_by,
        }))
    }

    /// Runs `search` in `tenant`, limited to the patients `filter` allows, from `after`; as
    /// [`crate::records::Records::search`], with the same order and pages.
    pub async fn search(
        &self,
        tenant: &str,
        search: &Search,
        filter: &PatientFilter,
        after: Option<&After>,
    ) -> Result<Page, RecordError> {
        let empty = || Page { resources: Vec::new(), total: 0, next: None };
        if *filter == PatientFilter::Nothing || search.types.is_empty() {
            return Ok(empty());
        }
        let mut params = Params::default();
        let mut sql = format!(
            " FROM resources r WHERE r.tenant = {} AND r.type = ANY({}::text[])",
            params.bind(tenant.to_owned()),
            params.bind(search.types.clone())
        );
        if let PatientFilter::Only(patients) = filter {
            if patients.is_empty() {
                return Ok(empty());
            }
            let _ = write!(sql, " AND r.patient = ANY({}::text[])", params.bind(patients.clone()));
        }
        if let Some(patient) = &search.patient {
            let _ = write!(sql, " AND r.patient = {}", params.bind(patient.clone()));
        }
        if let Some(id) = &search.id {
            let _ = write!(sql, " AND r.id = {}", params.bind(id.clone()));
        }
        if let Some(category) = &search.category {
            let _ = write!(sql, " AND r.category = {}", params.bind(category.clone()));
        }
        if let Some((system, code)) = &search.code {
            let _ = write!(
                sql,
                " AND EXISTS (SELECT 1 FROM resource_codes c WHERE c.tenant = r.tenant AND c.type = r.type \
                 AND c.id = r.id AND c.code = {}",
                params.bind(code.clone())
            );
            if let Some(system) = system {
                let _ = write!(sql, " AND c.system = {}", params.bind(system.clone()));
            }
            sql.push(')');
        }
        sql += &date_clauses("r.effective", &search.date, |v| params.bind(v));
        sql += &date_clauses("r.last_updated", &search.last_updated, |v| params.bind(v));
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let total: i64 = tx
            .query_one(&format!("SELECT count(*){sql}"), &params.refs())
            .await
            .map_err(db)?
            .get(0);
        if let Some(After(updated, resource_type, id)) = after {
            let _ = write!(
                sql,
                " AND (r.last_updated, r.type, r.id) > ({}, {}, {})",
                params.bind(updated.clone()),
                params.bind(resource_type.clone()),
                params.bind(id.clone())
            );
        }
        let limit = search.count.clamp(1, MAX_COUNT);
        // Byte order, as SQLite's: the columns are collated "C" (see the schema).
        let _ = write!(sql, " ORDER BY r.last_updated, r.type, r.id LIMIT {}", limit + 1);
        let rows = tx
            .query(
                &format!("SELECT r.type, r.id, r.version, r.patient, r.body, r.last_updated, r.written_by{sql}"),
                &params.refs(),
            )
            .await
            .map_err(db)?;
        let key = if rows.is_empty() { None } else { Some(self.data_key(&tx, tenant, None).await?) };
        tx.commit().await.map_err(db)?;
        let mut resources = Vec::with_capacity(rows.len());
        let mut last_updated = Vec::with_capacity(rows.len());
        for (row, key) in rows.iter().zip(std::iter::repeat(key.as_ref())) {
            let key = key.ok_or_else(altered)?;
            let (resource_type, id, version): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
            let (patient, written_by): (Option<String>, Option<String>) = (row.get(3), row.get(6));
            let binding = Binding {
                tenant,
                resource_type: &resource_type,
                id: &id,
                version,
                patient: patient.as_deref(),
                written_by: written_by.as_deref(),
            };
            let json = binding.open(key, row.get(4))?;
            resources.push(Stored { resource_type, id, version, patient, json, written_by });
            last_updated.push(row.get::<_, String>(5));
        }
        // One row past the page was fetched: its presence says there is a next page.
        let next = (resources.len() > limit as usize).then(|| {
            resources.truncate(limit as usize);
            let last = &resources[resources.len() - 1];
            After(last_updated[resources.len() - 1].clone(), last.resource_type.clone(), last.id.clone())
        });
        Ok(Page { resources, total: u64::try_from(total).unwrap_or(0), next })
    }

    /// The caller's links to patients (to `patient` only, if given) and open break-glass
    /// grants in `tenant`; as [`crate::records::Records::access`] and `access_to`.
    pub async fn access(
        &self,
        tenant: &str,
        user_id: &str,
        role: Role,
        patient: Option<&str>,
        now: i64,
    ) -> Result<Access, RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let links = tx
            .query(
                "SELECT patient, relation, mac FROM patient_links
                 WHERE tenant = $1 AND user_id = $2 AND ($3::text IS NULL OR patient = $3)",
                &[&tenant, &user_id, &patient],
            )
            .await
            .map_err(db)?;
        let grants = tx
            .query(
                "SELECT id, patient, opened_at, expires_at, mac FROM break_glass
                 WHERE tenant = $1 AND user_id = $2 AND expires_at > $3 AND ($4::text IS NULL OR patient = $4)",
                &[&tenant, &user_id, &now, &patient],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut access = Access {
            user_id: user_id.to_owned(),
            role,
            linked: HashSet::new(),
            care_team: HashSet::new(),
            break_glass: HashSet::new(),
        };
        for row in &grants {
            access
                .break_glass
                .insert(self.checked_grant(row, tenant, user_id)?.patient.to_owned());
        }
        for row in &links {
            let (patient, relation) = self.checked_link(row, tenant, user_id)?;
            if relation == "care-team" {
                access.care_team.insert(patient.to_owned());
            } else {
                access.linked.insert(patient.to_owned());
            }
        }
        Ok(access)
    }

    /// Links `user_id` to `patient` as `relation` (`self`, `proxy` or `care-team`).
    pub async fn link(&self, tenant: &str, user_id: &str, patient: &str, relation: &str) -> Result<(), RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        self.link_in(&tx, tenant, user_id, patient, relation).await?;
        tx.commit().await.map_err(db)
    }

    /// [`PgRecords::link`], on `tx`.
    pub(super) async fn link_in(
        &self,
        tx: &Transaction<'_>,
        tenant: &str,
        user_id: &str,
        patient: &str,
        relation: &str,
    ) -> Result<(), RecordError> {
        tx.execute(
            "INSERT INTO patient_links (tenant, user_id, patient, relation, mac) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant, user_id, patient) DO UPDATE SET relation = excluded.relation, mac = excluded.mac",
            &[
                &tenant,
                &user_id,
                &patient,
                &relation,
                &crate::keys::mac(&self.keys.grants, &link_parts(tenant, user_id, patient, relation)).as_slice(),
            ],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Each patient `filter` reaches with the latest change in their compartment, and the
    /// newest deletion within `scope`; as [`crate::records::Records::sync_status`].
    pub async fn sync_status(
        &self,
        tenant: &str,
        filter: &PatientFilter,
        scope: &DeletionScope,
    ) -> Result<(Vec<(String, String)>, i64), RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let rows = match filter {
            PatientFilter::Nothing => Vec::new(),
            // The Patient resource itself is in its own compartment: no row, no patient.
            PatientFilter::Only(ids) => tx
                .query(
                    "SELECT patient, max(last_updated) FROM resources WHERE tenant = $1 AND patient = ANY($2)
                     GROUP BY patient ORDER BY patient COLLATE \"C\"",
                    &[&tenant, ids],
                )
                .await
                .map_err(db)?,
            PatientFilter::Any => tx
                .query(
                    "SELECT patient, max(last_updated) FROM resources WHERE tenant = $1 AND patient IS NOT NULL
                     GROUP BY patient HAVING bool_or(type = 'Patient') ORDER BY patient COLLATE \"C\"",
                    &[&tenant],
                )
                .await
                .map_err(db)?,
        };
        let mut params = Params::default();
        let clause = scope_clause(scope, tenant, &mut params);
        let newest = tx
            .query_opt(&format!("SELECT seq FROM removed WHERE {clause} ORDER BY seq DESC LIMIT 1"), &params.refs())
            .await
            .map_err(db)?
            .map_or(0, |row| row.get(0));
        tx.commit().await.map_err(db)?;
        let mut patients: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        if let PatientFilter::Only(ids) = filter {
            // In the order asked, as the embedded store answers.
            patients.sort_by_key(|(p, _)| ids.iter().position(|id| id == p));
        }
        Ok((patients, newest))
    }

    /// Up to `limit` deletions in `tenant` after `after`, oldest first, within `scope`.
    pub async fn removed_after(
        &self,
        tenant: &str,
        scope: &DeletionScope,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Removed>, RecordError> {
        let mut params = Params::default();
        let clause = scope_clause(scope, tenant, &mut params);
        let sql = format!(
            "SELECT seq, type, id, patient FROM removed WHERE {clause} AND seq > {} ORDER BY seq LIMIT {}",
            params.bind(after),
            params.bind(i64::from(limit))
        );
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let rows = tx.query(&sql, &params.refs()).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| Removed { seq: r.get(0), resource_type: r.get(1), id: r.get(2), patient: r.get(3) })
            .collect())
    }

    /// The document `id` of `tenant`, decrypted; `None` if there is none.
    pub async fn document(&self, tenant: &str, id: &str) -> Result<Option<Document>, RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let document = self.document_in(&tx, tenant, id).await?;
        tx.commit().await.map_err(db)?;
        Ok(document)
    }

    /// The document `id` of `tenant` read on `tx` (in the tenant) and opened.
    pub(super) async fn document_in(
        &self,
        tx: &Transaction<'_>,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Document>, RecordError> {
        let row = tx
            .query_opt(
                "SELECT patient, content_type, wrapped_key, ciphertext, resource_id FROM documents
                 WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let patient: String = row.get(0);
        let aad = documents::bound_aad(tenant, id, &patient, row.get(4));
        let bytes = documents::open_bound(&self.keys.documents, &aad, row.get(2), row.get(3))?;
        Ok(Some(Document { patient, content_type: row.get(1), bytes }))
    }

    /// The patient a document belongs to — checked: the document is opened, so a row
    /// refiled under another patient is an error, never an answer.
    pub async fn document_patient(&self, tenant: &str, id: &str) -> Result<Option<String>, RecordError> {
        Ok(self.document(tenant, id).await?.map(|document| document.patient))
    }

    /// The ids of `tenant`'s patients one of whose names holds every token of `name`
    /// (case and accents aside), through the blind index.
    pub async fn patients_named(&self, tenant: &str, name: &str) -> Result<Vec<String>, RecordError> {
        let mut tokens: Vec<Vec<u8>> = tokens_of(name)
            .iter()
            .map(|t| blind_token(&self.keys.names, tenant, t).to_vec())
            .collect();
        // "ana ana" asks for one token, not two.
        tokens.sort();
        tokens.dedup();
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let count = i64::try_from(tokens.len()).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let rows = tx
            .query(
                "SELECT id FROM resource_names WHERE tenant = $1 AND type = 'Patient' AND token = ANY($2)
                 GROUP BY id HAVING count(DISTINCT token) = $3 ORDER BY id COLLATE \"C\"",
                &[&tenant, &tokens, &count],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

impl PgRecords {
    /// A link row (`patient, relation, mac`) of `user_id`, checked: its patient and
    /// relation. A link the server did not write (its MAC does not match) is tampering:
    /// refused whole, never half-honoured.
    fn checked_link<'r>(
        &self,
        row: &'r tokio_postgres::Row,
        tenant: &str,
        user_id: &str,
    ) -> Result<(&'r str, &'r str), RecordError> {
        let (patient, relation): (&str, &str) = (row.get(0), row.get(1));
        if crate::keys::verify_mac(&self.keys.grants, &link_parts(tenant, user_id, patient, relation), row.get(2)) {
            Ok((patient, relation))
        } else {
            Err(forged())
        }
    }

    /// A break-glass grant row (`id, patient, opened_at, expires_at, mac`) of `user_id`,
    /// checked as [`PgRecords::checked_link`] checks a link.
    fn checked_grant<'r>(
        &self,
        row: &'r tokio_postgres::Row,
        tenant: &'r str,
        user_id: &'r str,
    ) -> Result<GrantRow<'r>, RecordError> {
        let grant = GrantRow {
            id: row.get(0),
            tenant,
            user_id,
            patient: row.get(1),
            opened_at: row.get(2),
            expires_at: row.get(3),
        };
        if grant.verify(&self.keys.grants, row.get(4)) { Ok(grant) } else { Err(forged()) }
    }
}

/// A link or grant row whose MAC does not match: written by someone without the master key.
pub(super) fn forged() -> RecordError {
    tracing::error!("a patient link or break-glass grant failed its integrity check");
    RecordError::Store(crate::ServerError::Store(
        "an access grant failed its integrity check: it was not written by this deployment; restore it".into(),
    ))
}

/// The condition on `removed` rows of `tenant` within `scope` (see [`DeletionScope`]).
fn scope_clause(scope: &DeletionScope, tenant: &str, params: &mut Params) -> String {
    let mut clauses = Vec::new();
    for (types, filter) in scope.kinds() {
        let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
        let of_type = format!("type = ANY({}::text[])", params.bind(types));
        match filter {
            PatientFilter::Any => clauses.push(of_type),
            PatientFilter::Only(ids) => {
                clauses.push(format!("({of_type} AND patient = ANY({}::text[]))", params.bind(ids.clone())));
            }
            PatientFilter::Nothing => {}
        }
    }
    if clauses.is_empty() {
        clauses.push("false".into());
    }
    format!("tenant = {} AND ({})", params.bind(tenant.to_owned()), clauses.join(" OR "))
}

impl PgRecords {
    /// The tips of `user_id`'s uploaded device audit chains of `stream`; as
    /// [`crate::records::Records::device_tips`].
    pub async fn device_tips(&self, tenant: &str, user_id: &str, stream: &str) -> Result<Vec<String>, RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let rows = tx
            .query(
                "SELECT tip FROM device_audit_tips WHERE tenant = $1 AND user_id = $2 AND stream = $3",
                &[&tenant, &user_id, &stream],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// What `user_id` could read, and when; as [`crate::records::Records::readable`]. Links
    /// and grants are checked as [`PgRecords::access`] checks them.
    pub async fn readable(&self, tenant: &str, user_id: &str) -> Result<Readable, RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let links = tx
            .query(
                "SELECT patient, relation, mac FROM patient_links WHERE tenant = $1 AND user_id = $2",
                &[&tenant, &user_id],
            )
            .await
            .map_err(db)?;
        let grants = tx
            .query(
                "SELECT id, patient, opened_at, expires_at, mac FROM break_glass WHERE tenant = $1 AND user_id = $2",
                &[&tenant, &user_id],
            )
            .await
            .map_err(db)?;
        let created_at: i64 = tx
            .query_one("SELECT created_at FROM users WHERE tenant = $1 AND id = $2", &[&tenant, &user_id])
            .await
            .map_err(db)?
            .get(0);
        let devices = tx
            .query("SELECT id FROM devices WHERE tenant = $1 AND user_id = $2", &[&tenant, &user_id])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut readable =
            Readable { created_at, devices: devices.iter().map(|r| r.get(0)).collect(), ..Readable::default() };
        for row in &links {
            readable.linked.insert(self.checked_link(row, tenant, user_id)?.0.to_owned());
        }
        for row in &grants {
            let grant = self.checked_grant(row, tenant, user_id)?;
            readable
                .grants
                .push((grant.patient.to_owned(), grant.opened_at, grant.expires_at));
        }
        Ok(readable)
    }

    /// Makes `tip` the newest record of `user_id`'s chain of `stream`; as
    /// [`crate::records::Records::remember_device_tip`].
    pub async fn remember_device_tip(
        &self,
        tenant: &str,
        user_id: &str,
        stream: &str,
        replaces: Option<&str>,
        tip: &str,
    ) -> Result<(), RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        if let Some(old) = replaces {
            tx.execute(
                "DELETE FROM device_audit_tips WHERE tenant = $1 AND user_id = $2 AND stream = $3 AND tip = $4",
                &[&tenant, &user_id, &stream, &old],
            )
            .await
            .map_err(db)?;
        }
        tx.execute(
            "INSERT INTO device_audit_tips (tenant, user_id, stream, tip) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&tenant, &user_id, &stream, &tip],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }
}

impl PgRecords {
    /// `tenant`'s audit trail, newest first, filtered as `search` asks, below `below`; as
    /// [`crate::audit::search::read_trail`] on the embedded store.
    pub async fn audit_trail(
        &self,
        tenant: &str,
        patients: Option<&[String]>,
        search: &Search,
        below: Option<i64>,
    ) -> Result<crate::audit::search::Trail, RecordError> {
        let mut params = Params::default();
        let mut sql = format!(" FROM audit_log a WHERE a.tenant = {}", params.bind(tenant.to_owned()));
        if let Some(patients) = patients {
            if patients.is_empty() {
                return Ok(crate::audit::search::page(Vec::new(), 0, search.count));
            }
            let _ = write!(sql, " AND a.patient = ANY({}::text[])", params.bind(patients.to_vec()));
        }
        if let Some(agent) = &search.agent {
            let _ = write!(sql, " AND a.user_id = {}", params.bind(agent.clone()));
        }
        sql += &date_clauses("a.recorded_at", &search.date, |v| params.bind(v));
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let total: i64 = tx
            .query_one(&format!("SELECT count(*){sql}"), &params.refs())
            .await
            .map_err(db)?
            .get(0);
        if let Some(below) = below {
            let _ = write!(sql, " AND a.seq < {}", params.bind(below));
        }
        let _ = write!(sql, " ORDER BY a.seq DESC LIMIT {}", search.count + 1);
        let rows = tx
            .query(&format!("SELECT a.seq, a.record{sql}"), &params.refs())
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let rows = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(crate::audit::search::page(rows, u64::try_from(total).unwrap_or(0), search.count))
    }
}

impl PgRecords {
    /// The id of `patient`'s earliest `resource_type` by its clinical date; as
    /// [`crate::records::Records::earliest`].
    pub async fn earliest(
        &self,
        tenant: &str,
        resource_type: &str,
        patient: &str,
    ) -> Result<Option<String>, RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let row = tx
            .query_opt(
                "SELECT id FROM resources WHERE tenant = $1 AND type = $2 AND patient = $3
                 ORDER BY effective NULLS FIRST, id LIMIT 1",
                &[&tenant, &resource_type, &patient],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(row.map(|r| r.get(0)))
    }
}

//! The audit trail searched as the FHIR `AuditEvent` route asks: a tenant's records, newest
//! first, filtered by patient, agent and date, a page at a time. The route and its access
//! rules are `http::audit_events`.

use std::fmt::Write as _;

use carekeep_protocol::audit::AuditRecord;
use rusqlite::params_from_iter;

use crate::records::search::{self, Search};
use crate::records::{RecordError, Records};

/// One page of the trail, how many match in all, and where the next starts.
pub struct Trail {
    /// The page's records, newest first.
    pub records: Vec<AuditRecord>,
    /// Records matching in all.
    pub total: u64,
    /// Where the next page starts (below this sequence number), if there is one.
    pub next_below: Option<i64>,
}

/// The trail's records for `tenant`, newest first, filtered as `search` asks, below `below`,
/// from whichever engine keeps them.
pub fn read_trail(
    records: &Records,
    tenant: &str,
    patients: Option<&[String]>,
    search: &Search,
    below: Option<i64>,
) -> Result<Trail, RecordError> {
    if let Some((pg, runtime)) = records.shared() {
        return runtime.block_on(pg.audit_trail(tenant, patients, search, below));
    }
    Ok(embedded(records.store("searching the audit trail")?, tenant, patients, search, below)?)
}

fn embedded(
    store: &crate::store::Store,
    tenant: &str,
    patients: Option<&[String]>,
    search: &Search,
    below: Option<i64>,
) -> rusqlite::Result<Trail> {
    let mut sql = String::from(" FROM audit_log a WHERE a.tenant = ?");
    let mut args = vec![tenant.to_owned()];
    if let Some(patients) = patients {
        if patients.is_empty() {
            return Ok(Trail { records: Vec::new(), total: 0, next_below: None });
        }
        sql.push_str(" AND a.patient IN (");
        sql.push_str(&vec!["?"; patients.len()].join(", "));
        sql.push(')');
        args.extend(patients.iter().cloned());
    }
    if let Some(agent) = &search.agent {
        sql.push_str(" AND a.user_id = ?");
        args.push(agent.clone());
    }
    search::push_date_conditions(&mut sql, &mut args, "a.recorded_at", &search.date);
    let conn = store.read();
    let total: u64 = conn.query_row(&format!("SELECT count(*){sql}"), params_from_iter(args.iter()), |r| r.get(0))?;
    if let Some(below) = below {
        let _ = write!(sql, " AND a.seq < {below}");
    }
    let _ = write!(sql, " ORDER BY a.seq DESC LIMIT {}", search.count + 1);
    let mut stmt = conn.prepare(&format!("SELECT a.seq, a.record{sql}"))?;
    let rows = stmt.query_map(params_from_iter(args.iter()), |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(page(rows, total, search.count))
}

/// A page of `count` from `rows` (sequence number, record), newest first, one past the
/// page fetched to tell whether there is a next.
pub(crate) fn page(rows: Vec<(i64, String)>, total: u64, count: u32) -> Trail {
    let mut records = Vec::new();
    let mut next_below = None;
    for (seq, json) in rows {
        if records.len() == count as usize {
            next_below = Some(seq + 1);
            break;
        }
        if let Ok(record) = serde_json::from_str::<AuditRecord>(&json) {
            records.push(record);
        }
    }
    Trail { records, total, next_below }
}

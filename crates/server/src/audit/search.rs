//! The audit trail searched as the FHIR `AuditEvent` route asks: a tenant's records, newest
//! first, filtered by patient, agent and date, a page at a time. The route and its access
//! rules are `http::audit_events`.

use std::fmt::Write as _;

use carekeep_protocol::audit::AuditRecord;
use rusqlite::params_from_iter;

use crate::records::search::{self, Search};

/// One page of the trail, with usernames, how many match in all, and where the next starts.
pub struct Trail {
    /// The page's records, each with the acting user's sign-in name.
    pub records: Vec<(AuditRecord, Option<String>)>,
    /// Records matching in all.
    pub total: u64,
    /// Where the next page starts (below this sequence number), if there is one.
    pub next_below: Option<i64>,
}

/// The trail's records for `tenant`, newest first, filtered as `search` asks, below `below`.
pub fn read_trail(
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
    let mut stmt =
        conn.prepare(&format!("SELECT a.seq, a.record, (SELECT u.username FROM users u WHERE u.id = a.user_id){sql}"))?;
    let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?))
    })?;
    let mut records = Vec::new();
    let mut next_below = None;
    for row in rows {
        let (seq, json, username) = row?;
        if records.len() == search.count as usize {
            next_below = Some(seq + 1);
            break;
        }
        if let Ok(record) = serde_json::from_str::<AuditRecord>(&json) {
            records.push((record, username));
        }
    }
    Ok(Trail { records, total, next_below })
}

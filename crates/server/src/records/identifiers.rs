//! Business identifiers (`Patient.identifier`, a Practitioner's NPI, a source system's id),
//! indexed so a Bundle's conditional create (`ifNoneExist`) and conditional references find
//! the record they name, and an import run twice finds what its first run stored.

use rusqlite::{Connection, Transaction, params};
use serde_json::Value;

use super::bundle::plan::{Identifier, SOURCE_SYSTEM};

/// Indexes `value`'s identifiers (one `Identifier` or a list of them) under `type/id`,
/// replacing what was indexed before.
pub(super) fn index(
    tx: &Transaction<'_>,
    tenant: &str,
    resource_type: &str,
    id: &str,
    value: &Value,
) -> rusqlite::Result<()> {
    // Where an import found it stays known across changes; the resource's own identifiers
    // are indexed afresh.
    tx.prepare_cached("DELETE FROM resource_identifiers WHERE tenant = ?1 AND type = ?2 AND id = ?3 AND system != ?4")?
        .execute(params![tenant, resource_type, id, SOURCE_SYSTEM])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO resource_identifiers (tenant, type, id, system, value) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (system, text) in of(value) {
        insert.execute(params![tenant, resource_type, id, system, text])?;
    }
    Ok(())
}

/// `value`'s own identifiers (one `Identifier` or a list of them) as (system, value): the
/// system empty when it names none, the server's own [`SOURCE_SYSTEM`] left out (a
/// resource cannot claim to be what an import stored).
pub(crate) fn of(value: &Value) -> Vec<(&str, &str)> {
    let identifiers = match value.get("identifier") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => Vec::new(),
    };
    identifiers
        .into_iter()
        .filter_map(|identifier| {
            let text = identifier.get("value").and_then(Value::as_str)?;
            let system = identifier.get("system").and_then(Value::as_str).unwrap_or_default();
            (system != SOURCE_SYSTEM).then_some((system, text))
        })
        .collect()
}

/// The ids of `resource_type` in `tenant` carrying `identifier` (any system, when it names
/// none), at most a few: more than one is already an ambiguity to report.
pub(crate) fn find(
    conn: &Connection,
    tenant: &str,
    resource_type: &str,
    identifier: &Identifier,
) -> rusqlite::Result<Vec<String>> {
    // No DISTINCT: SQLite would then walk the type's rows in id order (by resource) rather
    // than seek the value — every lookup a scan, an import quadratic.
    let mut statement = conn.prepare_cached(
        "SELECT id FROM resource_identifiers INDEXED BY identifiers_by_value
         WHERE tenant = ?1 AND type = ?2 AND value = ?3 AND (?4 = '' OR system = ?4) LIMIT 8",
    )?;
    let mut ids: Vec<String> = statement
        .query_map(params![tenant, resource_type, identifier.value, identifier.system], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Remembers that `type/id` is what an import stored for `source` (see
/// [`SOURCE_SYSTEM`]), so the next run of the same files finds it.
pub(super) fn remember(
    tx: &Transaction<'_>,
    tenant: &str,
    resource_type: &str,
    id: &str,
    source: &Identifier,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO resource_identifiers (tenant, type, id, system, value) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![tenant, resource_type, id, SOURCE_SYSTEM, source.value])?;
    Ok(())
}

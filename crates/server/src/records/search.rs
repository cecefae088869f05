//! FHIR search: the parameters this server understands, the SQL they become, and the opaque
//! page tokens of next links (sealed, so a link reveals neither the patient nor the query,
//! and bound to the user who searched).

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::params_from_iter;
use serde::{Deserialize, Serialize};

use super::access::PatientFilter;
use super::{RecordError, Records, Stored};
use crate::keys;

/// Results per page unless `_count` says otherwise, and the most it may say.
pub const DEFAULT_COUNT: u32 = 50;
/// The largest page.
pub const MAX_COUNT: u32 = 500;
/// How long a next link stays usable.
pub const PAGE_TOKEN_SECS: i64 = 15 * 60;

/// A comparison prefix of a date search value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    /// `eq` (the default): within the given precision.
    Eq,
    /// `lt`.
    Lt,
    /// `le`.
    Le,
    /// `gt`.
    Gt,
    /// `ge`.
    Ge,
}

/// One search, as parsed from the query string (or restored from a page token).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Search {
    /// The types searched: one, or every type `$everything` may return.
    pub types: Vec<String>,
    /// `patient=` / `subject=` (bare id), or the `$everything` patient.
    pub patient: Option<String>,
    /// `_id=`.
    pub id: Option<String>,
    /// `category=` (a code).
    pub category: Option<String>,
    /// `code=` as `[system|]code`.
    pub code: Option<(Option<String>, String)>,
    /// `date=` conditions on the clinically relevant date.
    pub date: Vec<(Cmp, String)>,
    /// `_lastUpdated=` conditions (and `_since` as `ge`).
    pub last_updated: Vec<(Cmp, String)>,
    /// Page size.
    pub count: u32,
    /// `agent=` (AuditEvent only): the user who acted.
    #[serde(default)]
    pub agent: Option<String>,
}

/// Why a query string was refused: names the parameter, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadSearch(pub String);

impl Search {
    /// Parses a type search's query string (already split into pairs).
    pub fn parse(resource_type: &str, pairs: &[(String, String)]) -> Result<Self, BadSearch> {
        let mut search = Search { types: vec![resource_type.to_owned()], count: DEFAULT_COUNT, ..Search::default() };
        for (name, value) in pairs {
            match name.as_str() {
                "patient" | "subject" => {
                    let id = value.strip_prefix("Patient/").unwrap_or(value);
                    if !carekeep_fhir::is_valid_id(id) {
                        return Err(BadSearch(format!("{name}: expected a patient id")));
                    }
                    search.patient = Some(id.to_owned());
                }
                "_id" if carekeep_fhir::is_valid_id(value) => search.id = Some(value.clone()),
                "category" => search.category = Some(value.rsplit('|').next().unwrap_or(value).to_owned()),
                "code" => {
                    search.code = Some(match value.split_once('|') {
                        Some((system, code)) => ((!system.is_empty()).then(|| system.to_owned()), code.to_owned()),
                        None => (None, value.clone()),
                    });
                }
                "date" => search.date.push(date_condition(name, value)?),
                "_lastUpdated" => search.last_updated.push(date_condition(name, value)?),
                "_count" => search.count = count(value)?,
                "_format" if value.contains("json") => {}
                _ => return Err(BadSearch(format!("{name}: not a search parameter this server supports"))),
            }
        }
        Ok(search)
    }

    /// `$everything`'s parameters: `_since` and `_count`.
    pub fn parse_everything(types: Vec<String>, patient: &str, pairs: &[(String, String)]) -> Result<Self, BadSearch> {
        let mut search = Search { types, patient: Some(patient.to_owned()), count: DEFAULT_COUNT, ..Search::default() };
        for (name, value) in pairs {
            match name.as_str() {
                "_since" => {
                    if !carekeep_fhir::is_valid_instant(value) {
                        return Err(BadSearch("_since: expected an instant such as 2026-01-01T00:00:00Z".into()));
                    }
                    search.last_updated.push(date_condition(name, &format!("ge{value}"))?);
                }
                "_count" => search.count = count(value)?,
                _ => return Err(BadSearch(format!("{name}: $everything takes only _since and _count"))),
            }
        }
        Ok(search)
    }
}

fn count(value: &str) -> Result<u32, BadSearch> {
    value
        .parse::<u32>()
        .ok()
        .filter(|c| (1..=MAX_COUNT).contains(c))
        .ok_or_else(|| BadSearch(format!("_count: expected a number from 1 to {MAX_COUNT}")))
}

/// A `date`-style search value (`ge2024-01`) as a comparison and its sortable form.
pub fn date_condition(name: &str, value: &str) -> Result<(Cmp, String), BadSearch> {
    let (cmp, rest) = match value.get(..2) {
        Some("eq") => (Cmp::Eq, &value[2..]),
        Some("lt") => (Cmp::Lt, &value[2..]),
        Some("le") => (Cmp::Le, &value[2..]),
        Some("gt") => (Cmp::Gt, &value[2..]),
        Some("ge") => (Cmp::Ge, &value[2..]),
        _ => (Cmp::Eq, value),
    };
    let sortable = carekeep_fhir::sortable_date_time(rest).ok_or_else(|| {
        BadSearch(format!("{name}: expected a FHIR date or dateTime, optionally after eq/lt/le/gt/ge"))
    })?;
    Ok((cmp, sortable))
}

/// Appends `AND` clauses for date `conditions` on `column` (sortable text). A value matches
/// everything that starts with it: `2024-01` covers the whole month.
pub fn push_date_conditions(sql: &mut String, args: &mut Vec<String>, column: &str, conditions: &[(Cmp, String)]) {
    sql.push_str(&date_clauses(column, conditions, |value| {
        args.push(value);
        "?".to_owned()
    }));
}

/// The `AND` clauses of [`push_date_conditions`], for any SQL dialect: `bind` takes each
/// value and returns its placeholder.
pub fn date_clauses(column: &str, conditions: &[(Cmp, String)], mut bind: impl FnMut(String) -> String) -> String {
    let mut sql = String::new();
    for (cmp, value) in conditions {
        let end = format!("{value}~");
        let _ = match cmp {
            Cmp::Eq => write!(sql, " AND {column} >= {} AND {column} < {}", bind(value.clone()), bind(end)),
            Cmp::Lt => write!(sql, " AND {column} < {}", bind(value.clone())),
            Cmp::Le => write!(sql, " AND {column} < {}", bind(end)),
            Cmp::Gt => write!(sql, " AND {column} >= {}", bind(end)),
            Cmp::Ge => write!(sql, " AND {column} >= {}", bind(value.clone())),
        };
    }
    sql
}

/// Where a page starts: after this (last updated, type, id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct After(pub String, pub String, pub String);

impl After {
    /// In the audit trail (newest first): continue below record `seq`.
    pub fn audit(seq: i64) -> Self {
        After(seq.to_string(), "AuditEvent".into(), String::new())
    }

    /// The record an audit trail page continues below, if this is one.
    pub fn audit_seq(&self) -> Option<i64> {
        (self.1 == "AuditEvent").then(|| self.0.parse().ok()).flatten()
    }
}

/// One page of results.
#[derive(Debug)]
pub struct Page {
    /// The resources, oldest change first.
    pub resources: Vec<Stored>,
    /// How many match in all.
    pub total: u64,
    /// Where the next page starts, if there is one.
    pub next: Option<After>,
}

/// What a page token seals.
#[derive(Serialize, Deserialize)]
struct Sealed {
    search: Search,
    after: After,
    expires: i64,
}

/// Seals the next page's position for `user_id`. Access is not sealed: each page applies
/// the caller's access as it is then, so a care-team change takes effect mid-paging.
pub fn page_token(
    key: &[u8; 32],
    user_id: &str,
    search: &Search,
    after: After,
    now: i64,
) -> Result<String, RecordError> {
    let sealed = Sealed { search: search.clone(), after, expires: now + PAGE_TOKEN_SECS };
    let json = serde_json::to_vec(&sealed).map_err(|e| crate::ServerError::Store(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(keys::seal(key, user_id.as_bytes(), &json)?))
}

/// Opens a page token `user_id` was given; `None` if it was altered, belongs to someone
/// else, or expired.
pub fn open_page_token(key: &[u8; 32], user_id: &str, token: &str, now: i64) -> Option<(Search, After)> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let json = keys::open(key, user_id.as_bytes(), &bytes)?;
    let sealed: Sealed = serde_json::from_slice(&json).ok()?;
    (sealed.expires > now).then_some((sealed.search, sealed.after))
}

impl Records {
    /// Runs `search` in `tenant`, limited to the patients `filter` allows, from `after`.
    pub fn search(
        &self,
        tenant: &str,
        search: &Search,
        filter: &PatientFilter,
        after: Option<&After>,
    ) -> Result<Page, RecordError> {
        let store = match &self.engine {
            super::Engine::Sqlcipher(store) => store,
            super::Engine::Postgres(pg, runtime) => return runtime.block_on(pg.search(tenant, search, filter, after)),
        };
        if *filter == PatientFilter::Nothing || search.types.is_empty() {
            return Ok(Page { resources: Vec::new(), total: 0, next: None });
        }
        let mut sql = String::from(" FROM resources r WHERE r.tenant = ?");
        let mut args: Vec<String> = vec![tenant.to_owned()];
        let placeholders = |sql: &mut String, args: &mut Vec<String>, values: &[String]| {
            sql.push('(');
            for (i, v) in values.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                args.push(v.clone());
            }
            sql.push(')');
        };
        sql.push_str(" AND r.type IN ");
        placeholders(&mut sql, &mut args, &search.types);
        if let PatientFilter::Only(patients) = filter {
            if patients.is_empty() {
                return Ok(Page { resources: Vec::new(), total: 0, next: None });
            }
            sql.push_str(" AND r.patient IN ");
            placeholders(&mut sql, &mut args, patients);
        }
        if let Some(patient) = &search.patient {
            sql.push_str(" AND r.patient = ?");
            args.push(patient.clone());
        }
        if let Some(id) = &search.id {
            sql.push_str(" AND r.id = ?");
            args.push(id.clone());
        }
        if let Some(category) = &search.category {
            sql.push_str(" AND r.category = ?");
            args.push(category.clone());
        }
        if let Some((system, code)) = &search.code {
            sql.push_str(" AND EXISTS (SELECT 1 FROM resource_codes c WHERE c.tenant = r.tenant AND c.type = r.type AND c.id = r.id AND c.code = ?");
            args.push(code.clone());
            if let Some(system) = system {
                sql.push_str(" AND c.system = ?");
                args.push(system.clone());
            }
            sql.push(')');
        }
        push_date_conditions(&mut sql, &mut args, "r.effective", &search.date);
        push_date_conditions(&mut sql, &mut args, "r.last_updated", &search.last_updated);
        let conn = store.read();
        let total: i64 = conn
            .prepare(&format!("SELECT count(*){sql}"))?
            .query_row(params_from_iter(args.iter()), |r| r.get(0))?;
        if let Some(After(updated, resource_type, id)) = after {
            sql.push_str(" AND (r.last_updated, r.type, r.id) > (?, ?, ?)");
            args.extend([updated.clone(), resource_type.clone(), id.clone()]);
        }
        let limit = search.count.clamp(1, MAX_COUNT);
        let _ = write!(sql, " ORDER BY r.last_updated, r.type, r.id LIMIT {}", limit + 1);
        let mut stmt = conn.prepare(&format!(
            "SELECT r.type, r.id, r.version, r.patient, r.json, r.last_updated, r.written_by{sql}"
        ))?;
        let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
            Ok((
                Stored {
                    resource_type: r.get(0)?,
                    id: r.get(1)?,
                    version: r.get(2)?,
                    patient: r.get(3)?,
                    json: r.get(4)?,
                    written_by: r.get(6)?,
                },
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut resources = Vec::new();
        let mut last_updated = Vec::new();
        for row in rows {
            let (stored, updated) = row?;
            resources.push(stored);
            last_updated.push(updated);
        }
        // One row past the page was fetched: its presence says there is a next page.
        let next = (resources.len() > limit as usize).then(|| {
            resources.truncate(limit as usize);
            let last = &resources[resources.len() - 1];
            After(last_updated[resources.len() - 1].clone(), last.resource_type.clone(), last.id.clone())
        });
        Ok(Page { resources, total: u64::try_from(total).unwrap_or(0), next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[test]
    fn parameters_parse_and_unknown_ones_are_refused_by_name() {
        let s = Search::parse(
            "Observation",
            &pairs(&[
                ("patient", "Patient/p1"),
                ("code", "http://loinc.org|2339-0"),
                ("date", "ge2024-01"),
                ("_count", "10"),
            ]),
        )
        .unwrap();
        assert_eq!(s.patient.as_deref(), Some("p1"));
        assert_eq!(s.code, Some((Some("http://loinc.org".into()), "2339-0".into())));
        assert_eq!(s.date, vec![(Cmp::Ge, "2024-01".into())]);
        assert_eq!(s.count, 10);
        let err = Search::parse("Observation", &pairs(&[("name", "SENTINEL")])).unwrap_err();
        assert!(err.0.starts_with("name:") && !err.0.contains("SENTINEL"));
        assert!(Search::parse("Observation", &pairs(&[("date", "2024-13")])).is_err());
        assert!(Search::parse("Observation", &pairs(&[("_count", "0")])).is_err());
    }

    #[test]
    fn page_tokens_are_bound_to_the_user_and_expire() {
        let key = [9; 32];
        let search =
            Search { types: vec!["Observation".into()], patient: Some("SENTINEL".into()), ..Search::default() };
        let after = After("2024".into(), "Observation".into(), "o1".into());
        let token = page_token(&key, "u1", &search, after.clone(), 100).unwrap();
        assert!(!token.contains("SENTINEL"));
        assert_eq!(open_page_token(&key, "u1", &token, 101), Some((search, after)));
        assert_eq!(open_page_token(&key, "u2", &token, 101), None);
        assert_eq!(open_page_token(&key, "u1", &token, 100 + PAGE_TOKEN_SECS), None);
        let mut tampered = token.into_bytes();
        tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(open_page_token(&key, "u1", &String::from_utf8(tampered).unwrap(), 101), None);
    }
}

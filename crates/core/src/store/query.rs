//! Searching the store: by patient and type, narrowed by code and date; lab trends.

use rusqlite::params_from_iter;
use rusqlite::types::Value as SqlValue;

use super::{Store, StoredResource, stored_row};
use crate::{Error, Result};
use carekeep_fhir::sortable_date_time;

/// A code to match, as FHIR token search writes it: `system|code` or just `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeFilter {
    /// The code system URI; `None` matches the code in any system.
    pub system: Option<String>,
    /// The code.
    pub code: String,
}

impl CodeFilter {
    /// Parses `system|code` or `code`.
    pub fn parse(token: &str) -> Result<Self> {
        let (system, code) = match token.split_once('|') {
            Some((system, code)) => ((!system.is_empty()).then(|| system.to_owned()), code),
            None => (None, token),
        };
        if code.is_empty() {
            return Err(Error::InvalidArgument { what: "code", problem: "it is empty" });
        }
        Ok(Self { system, code: code.to_owned() })
    }
}

/// A patient as a FHIR reference, `Patient/<id>`, from either a bare id or a reference (the
/// UI and the CLI take both).
pub fn patient_reference(patient: &str) -> String {
    if patient.starts_with("Patient/") { patient.to_owned() } else { format!("Patient/{patient}") }
}

/// A search: resources of one type (of one patient, or all), optionally with a code,
/// category and date range.
#[derive(Debug, Clone, Default)]
pub struct ResourceQuery {
    /// `Patient/<id>`; `None`: every patient in the cache.
    pub patient: Option<String>,
    /// Resource type, e.g. `Observation`.
    pub resource_type: String,
    /// Only resources with this code.
    pub code: Option<CodeFilter>,
    /// Only resources whose first category is this code (e.g. `laboratory`, `vital-signs`).
    pub category: Option<String>,
    /// Effective on or after this FHIR date/dateTime.
    pub from: Option<String>,
    /// Effective before this FHIR date/dateTime (exclusive).
    pub to: Option<String>,
}

/// One point of a lab or vital-sign trend.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendPoint {
    /// When (sortable UTC form, see [`sortable_date_time`]).
    pub effective: String,
    /// The measured value.
    pub value: f64,
    /// Its unit, when given.
    pub unit: Option<String>,
}

fn date_bound(value: Option<&String>, what: &'static str) -> Result<Option<String>> {
    value
        .map(|v| sortable_date_time(v).ok_or(Error::InvalidArgument { what, problem: "not a FHIR date or dateTime" }))
        .transpose()
}

impl Store<'_> {
    /// Resources matching `query`, oldest first (undated ones last).
    pub fn search(&self, query: &ResourceQuery) -> Result<Vec<StoredResource>> {
        let mut sql = String::from("SELECT r.type, r.id, r.version_id, r.json FROM resources r WHERE r.type = ?");
        let mut args = vec![SqlValue::from(query.resource_type.clone())];
        if let Some(patient) = &query.patient {
            sql.push_str(" AND r.patient = ?");
            args.push(SqlValue::from(patient.clone()));
        }
        if let Some(code) = &query.code {
            sql.push_str(" AND EXISTS (SELECT 1 FROM codes c WHERE c.resource = r.pk AND c.code = ?");
            args.push(SqlValue::from(code.code.clone()));
            if let Some(system) = &code.system {
                sql.push_str(" AND c.system = ?");
                args.push(SqlValue::from(system.clone()));
            }
            sql.push(')');
        }
        if let Some(category) = &query.category {
            sql.push_str(" AND r.category = ?");
            args.push(SqlValue::from(category.clone()));
        }
        if let Some(from) = date_bound(query.from.as_ref(), "from date")? {
            sql.push_str(" AND r.effective >= ?");
            args.push(SqlValue::from(from));
        }
        if let Some(to) = date_bound(query.to.as_ref(), "to date")? {
            sql.push_str(" AND r.effective < ?");
            args.push(SqlValue::from(to));
        }
        sql.push_str(" ORDER BY r.effective IS NULL, r.effective, r.pk");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), stored_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(Error::from)
    }

    /// Every cached resource of one patient (`Patient/<id>`), the Patient first, then by
    /// type and date: the record an export writes out.
    pub fn patient_record(&self, patient: &str) -> Result<Vec<StoredResource>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.type, r.id, r.version_id, r.json FROM resources r WHERE r.patient = ?1
             ORDER BY r.type != 'Patient', r.type, r.effective IS NULL, r.effective, r.pk",
        )?;
        let rows = stmt.query_map([patient], stored_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(Error::from)
    }

    /// The values of one code for one patient, in date order: the data behind a lab-trend
    /// chart. Observations without a numeric value or a date are left out.
    pub fn lab_trend(&self, patient: &str, code: &CodeFilter) -> Result<Vec<TrendPoint>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT effective, value, unit FROM codes
             WHERE patient = ?2 AND code = ?1 AND (?3 IS NULL OR system = ?3)
               AND value IS NOT NULL AND effective IS NOT NULL
             ORDER BY effective",
        )?;
        let rows = stmt.query_map(rusqlite::params![code.code, patient, code.system], |row| {
            Ok(TrendPoint { effective: row.get(0)?, value: row.get(1)?, unit: row.get(2)? })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(Error::from)
    }
}

//! `carekeep-server import`: a clinic's existing records, loaded into a tenant from files —
//! transaction, batch and collection Bundles (what Synthea and most EHR exports write) and
//! FHIR Bulk Data NDJSON (`Type.ndjson`, one resource a line).
//!
//! Every resource goes through the same check and the same write as the API's
//! ([`crate::records::bundle`], decided by the [`Clinic`] gate). References resolve across
//! all the files given: a Bundle's `fullUrl`s and conditional references, Bulk Data's
//! `Type/id` by the source's own ids. Each stored record is remembered under where it came
//! from ([`SOURCE_SYSTEM`]), so the same files imported again — or an import killed half-way
//! and run again — store nothing twice. Work is committed in units: a transaction file whole,
//! everything else in batches of [`UNIT`] resources grouped by patient, each with one audit
//! record per patient touched. Patients join the care team `--care-team` names, and that of
//! the users whose own Practitioner record their `generalPractitioner` is.

pub mod sources;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use carekeep_protocol::audit::{AuditEvent, Outcome as AuditOutcome};

use crate::ServerError;
use crate::records::bundle::plan::SOURCE_SYSTEM;
use crate::records::bundle::{Action, Clinic, Entry, Identifier, Kind, Outcome, Plan, Targets};
use crate::records::{Problem, RecordError, Records, access, identifiers};
pub use sources::{Item, Origin, Source};

/// Resources per unit of work outside transaction files: large enough that the import runs
/// near the store's own pace, small enough that the server's writes wait well under its 5 s
/// busy timeout while one commits.
pub const UNIT: usize = 500;

/// One resource that was not stored, and why (each problem names the element and the rule,
/// never a value).
#[derive(Debug, Clone)]
pub struct Refused {
    /// Where it came from.
    pub origin: Origin,
    /// Its type.
    pub resource_type: String,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Stored now, by type.
    pub stored: BTreeMap<String, u64>,
    /// Found already there (an earlier run, or the record a condition names), by type.
    pub already: BTreeMap<String, u64>,
    /// Stored by an earlier import and deleted at the clinic since: not brought back, by type.
    pub deleted_since: BTreeMap<String, u64>,
    /// Not stored.
    pub refused: Vec<Refused>,
    /// The patients whose records were stored or found.
    pub patients: BTreeSet<String>,
    /// Of those, the ones no clinician or nurse is linked to: reachable by break-glass only.
    pub without_care_team: BTreeSet<String>,
}

/// Imports `paths` into `tenant`. With `care_team` (a clinician's or nurse's username), the
/// patients touched join that user's care team. `progress` hears (resources done, in all)
/// after each unit. Files that cannot be read stop the import before anything is stored.
pub fn run(
    records: &Records,
    tenant: &str,
    paths: &[PathBuf],
    care_team: Option<&str>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Summary, ServerError> {
    let care_team = care_team.map(|name| care_team_user(records, tenant, name)).transpose()?;
    let files = sources::files(paths)?;
    let sources: Vec<Source> = files.iter().map(|f| sources::read(f)).collect::<Result<_, _>>()?;
    let total: usize = sources.iter().map(|s| s.items.len()).sum();
    let (units, targets, deleted_since) = plan_units(records, tenant, sources)?;
    let template = AuditEvent {
        recorded_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        occurred_at: None,
        tenant: tenant.to_owned(),
        user: None,
        role: None,
        device: None,
        ip: None,
        action: "import".into(),
        resource_type: None,
        resource_id: None,
        patient: None,
        outcome: AuditOutcome::Success,
        break_glass: false,
    };
    let mut summary = Summary { deleted_since, ..Summary::default() };
    let mut done = 0;
    progress(0, total);
    for unit in units {
        done += unit.items.len();
        apply_unit(records, tenant, unit, &targets, &template, &mut summary)?;
        progress(done, total);
    }
    if let Some(user) = &care_team {
        for patient in &summary.patients {
            records.link(tenant, user, patient, "care-team").map_err(store_error)?;
        }
    }
    link_general_practitioners(records, tenant, &summary.patients)?;
    summary.without_care_team = without_care_team(records, tenant, &summary.patients)?;
    Ok(summary)
}

fn store_error(e: RecordError) -> ServerError {
    match e {
        RecordError::Store(e) => e,
        other => ServerError::Store(other.to_string()),
    }
}

/// The id of `username`, who must be a clinician or nurse of `tenant`.
fn care_team_user(records: &Records, tenant: &str, username: &str) -> Result<String, ServerError> {
    let conn = records.store("import").map_err(store_error)?.read();
    let found: Option<(String, String)> = conn
        .query_row(
            "SELECT id, role FROM users WHERE tenant = ?1 AND username = ?2 AND disabled = 0",
            [tenant, username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    match found {
        Some((id, role)) if role == "clinician" || role == "nurse" => Ok(id),
        Some(_) => Err(ServerError::Invalid(format!("--care-team: {username} is not a clinician or nurse"))),
        None => Err(ServerError::Invalid(format!("--care-team: no active user {username} in tenant {tenant}"))),
    }
}

/// Puts each of `patients` on the care team of the users whose own Practitioner record
/// (`user practitioner`) the patient's `generalPractitioner` names.
fn link_general_practitioners(records: &Records, tenant: &str, patients: &BTreeSet<String>) -> Result<(), ServerError> {
    let store = |e: rusqlite::Error| ServerError::Store(e.to_string());
    let mut links = Vec::new();
    {
        let conn = records.store("import").map_err(store_error)?.read();
        let mut practitioners = conn
            .prepare_cached(
                "SELECT substr(json_extract(g.value, '$.reference'), 14) FROM resources r,
                        json_each(r.json, '$.generalPractitioner') g
                 WHERE r.tenant = ?1 AND r.type = 'Patient' AND r.id = ?2
                   AND json_extract(g.value, '$.reference') LIKE 'Practitioner/%'",
            )
            .map_err(store)?;
        let mut users = conn
            .prepare_cached(
                "SELECT id FROM users WHERE tenant = ?1 AND practitioner = ?2 AND disabled = 0
                   AND role IN ('clinician', 'nurse')",
            )
            .map_err(store)?;
        for patient in patients {
            let named: Vec<String> = practitioners
                .query_map([tenant, patient], |r| r.get(0))
                .map_err(store)?
                .collect::<Result<_, _>>()
                .map_err(store)?;
            for practitioner in named {
                for user in users
                    .query_map([tenant, &practitioner], |r| r.get::<_, String>(0))
                    .map_err(store)?
                {
                    links.push((user.map_err(store)?, patient.clone()));
                }
            }
        }
    }
    for (user, patient) in links {
        records.link(tenant, &user, &patient, "care-team").map_err(store_error)?;
    }
    Ok(())
}

/// The patients of `patients` no clinician or nurse is linked to.
fn without_care_team(
    records: &Records,
    tenant: &str,
    patients: &BTreeSet<String>,
) -> Result<BTreeSet<String>, ServerError> {
    let conn = records.store("import").map_err(store_error)?.read();
    let mut linked = conn
        .prepare_cached("SELECT 1 FROM patient_links WHERE tenant = ?1 AND patient = ?2 AND relation = 'care-team'")
        .map_err(|e| ServerError::Store(e.to_string()))?;
    let mut alone = BTreeSet::new();
    for patient in patients {
        if !linked
            .exists([tenant, patient.as_str()])
            .map_err(|e| ServerError::Store(e.to_string()))?
        {
            alone.insert(patient.clone());
        }
    }
    Ok(alone)
}

/// A unit of work: resources committed together.
struct Unit {
    kind: Kind,
    items: Vec<(Item, String, Identifier)>,
}

/// Every resource's id chosen, the units of work, and what was left out as deleted since an
/// earlier import (by type).
type Planned = (Vec<Unit>, Targets, BTreeMap<String, u64>);

/// Chooses every resource's id (the one an earlier run stored, or a new one), so references
/// resolve across files, and cuts the work into units: a transaction file of at most
/// [`UNIT`] entries whole; larger ones, like everything else, [`UNIT`] at a time grouped by
/// patient (an import is resumed by running it again, so a large file need not hold the
/// writer for all its entries at once). What an earlier import stored and the clinic
/// deleted since is left out.
fn plan_units(records: &Records, tenant: &str, sources: Vec<Source>) -> Result<Planned, ServerError> {
    let mut deleted_since: BTreeMap<String, u64> = BTreeMap::new();
    let conn = records.store("import").map_err(store_error)?.read();
    let mut targets = Targets::default();
    // Two files may hold the same resource (Synthea's patients share their medications):
    // one id for one source.
    let mut by_condition: HashMap<(String, Identifier), String> = HashMap::new();
    let mut chosen = Vec::with_capacity(sources.len());
    for source in sources {
        let mut items = Vec::with_capacity(source.items.len());
        for item in source.items {
            let condition = item
                .condition
                .clone()
                .unwrap_or_else(|| Identifier { system: SOURCE_SYSTEM.into(), value: item.source_key.clone() });
            let key = (item.resource_type.clone(), condition.clone());
            let id = if let Some(id) = by_condition.get(&key) {
                id.clone()
            } else {
                let found = identifiers::find(&conn, tenant, &item.resource_type, &condition)
                    .map_err(|e| ServerError::Store(e.to_string()))?;
                let gone = condition.system == SOURCE_SYSTEM
                    && !found.is_empty()
                    && found
                        .iter()
                        .all(|id| matches!(records.read(tenant, &item.resource_type, id), Ok(None)));
                if gone {
                    // Others of these files may still name it, as they named it the first time.
                    if let Some(name) = &item.name {
                        targets.insert(name, &item.resource_type, &found[0]);
                    }
                    *deleted_since.entry(item.resource_type.clone()).or_default() += 1;
                    continue;
                }
                // Only what the clinic loaded counts (see `Clinic::sees`).
                let found: Vec<String> = found
                    .into_iter()
                    .filter(|id| matches!(records.read(tenant, &item.resource_type, id), Ok(Some(s)) if s.written_by.is_none()))
                    .collect();
                let id = match found.as_slice() {
                    [existing] => existing.clone(),
                    _ => crate::ids::new_id("r")?.replacen("r-", "", 1),
                };
                by_condition.insert(key, id.clone());
                id
            };
            if let Some(name) = &item.name {
                targets.insert(name, &item.resource_type, &id);
            }
            targets.insert_identifiers(&item.resource_type, &id, &item.resource);
            items.push((item, id, condition));
        }
        chosen.push((source.atomic, items));
    }
    drop(conn);
    // The directory and the patients first (a record's patient must exist when it is
    // stored), then each transaction file whole, then the rest grouped by patient.
    let rank = |t: &str| match access::Data::of(t) {
        Some(access::Data::Directory) => 0,
        Some(access::Data::Demographics) => 1,
        _ => 2,
    };
    let mut first = Vec::new();
    let mut transactions = Vec::new();
    let mut rest = Vec::new();
    for (atomic, items) in chosen {
        if atomic && items.len() <= UNIT {
            transactions.push(Unit { kind: Kind::Transaction, items });
            continue;
        }
        for item in items {
            if rank(&item.0.resource_type) < 2 { first.push(item) } else { rest.push(item) }
        }
    }
    first.sort_by_key(|(item, _, _)| rank(&item.resource_type));
    rest.sort_by_cached_key(|(item, _, _)| patient_of(item, &targets));
    let mut units: Vec<Unit> = first
        .chunks(UNIT)
        .map(|c| Unit { kind: Kind::Batch, items: c.to_vec() })
        .collect();
    units.extend(transactions);
    units.extend(rest.chunks(UNIT).map(|c| Unit { kind: Kind::Batch, items: c.to_vec() }));
    Ok((units, targets, deleted_since))
}

/// The patient an item names, as it will be stored (`Patient/<id>`), for grouping.
fn patient_of(item: &Item, targets: &Targets) -> String {
    let reference = carekeep_fhir::patient_fields(&item.resource_type)
        .iter()
        .find_map(|field| item.resource.get(*field)?.get("reference")?.as_str());
    reference
        .map(|r| targets.resolve(r).cloned().unwrap_or_else(|| r.to_owned()))
        .unwrap_or_default()
}

fn apply_unit(
    records: &Records,
    tenant: &str,
    unit: Unit,
    targets: &Targets,
    template: &AuditEvent,
    summary: &mut Summary,
) -> Result<(), ServerError> {
    let mut origins = HashMap::with_capacity(unit.items.len());
    let entries: Vec<Entry> = unit
        .items
        .into_iter()
        .enumerate()
        .map(|(index, (item, id, condition))| {
            origins.insert(index, (item.origin, item.resource_type.clone()));
            Entry {
                index,
                resource_type: item.resource_type,
                full_url: item.name,
                action: Action::Create { if_none_exist: Some(condition) },
                resource: Some(item.resource),
                id: Some(id),
            }
        })
        .collect();
    let plan = Plan { kind: unit.kind, entries, known: targets.clone() };
    let refused = |index: usize, problems: Vec<Problem>, summary: &mut Summary| {
        let (origin, resource_type) = origins[&index].clone();
        let problems = problems.into_iter().map(|p| within(index, &resource_type, p)).collect();
        summary.refused.push(Refused { origin, resource_type, problems });
    };
    match records
        .apply_bundle(tenant, plan, &Clinic, Some(template))
        .map_err(store_error)?
    {
        Outcome::Applied { answers, touched } => {
            for answer in answers {
                match (answer.stored, answer.refusal) {
                    (Some(stored), _) => {
                        let counts = if answer.status == 201 { &mut summary.stored } else { &mut summary.already };
                        *counts.entry(stored.resource_type.clone()).or_default() += 1;
                        if stored.resource_type == "Patient" {
                            summary.patients.insert(stored.id);
                        }
                    }
                    (None, Some(refusal)) => refused(answer.index, refusal.problems, summary),
                    (None, None) => {}
                }
            }
            summary.patients.extend(touched.into_keys().flatten());
        }
        Outcome::Refused(refusals) => {
            // A transaction file stands or falls whole: each of its entries is refused, the
            // ones at fault with their problems.
            let mut at_fault: HashMap<usize, Vec<Problem>> = HashMap::new();
            for refusal in refusals {
                for problem in refusal.problems {
                    let index = entry_index(&problem.path).unwrap_or(0);
                    at_fault.entry(index).or_default().push(problem);
                }
            }
            for index in 0..origins.len() {
                let problems = at_fault.remove(&index).unwrap_or_else(|| {
                    vec![Problem {
                        path: String::new(),
                        code: "transaction",
                        message: "not stored: another entry of its transaction Bundle was refused".into(),
                    }]
                });
                refused(index, problems, summary);
            }
        }
    }
    Ok(())
}

/// `3` of `Bundle.entry[3].resource.code`.
fn entry_index(path: &str) -> Option<usize> {
    path.strip_prefix("Bundle.entry[")?.split(']').next()?.parse().ok()
}

/// A problem about entry `index` told about the resource itself: `Observation.code: …`
/// instead of `Bundle.entry[3].resource.code: …` (the origin names the entry or line).
fn within(index: usize, resource_type: &str, problem: Problem) -> Problem {
    let prefix = format!("Bundle.entry[{index}].resource");
    let Some(rest) = problem.path.strip_prefix(&prefix) else { return problem };
    let path = format!("{resource_type}{rest}");
    let rule = problem
        .message
        .split_once(": ")
        .map_or(problem.message.as_str(), |(_, rule)| rule);
    Problem { message: format!("{path}: {rule}"), path, code: problem.code }
}

/// The summary as the command prints it: counts per type, refusals per type with where and
/// the rule broken — never a value.
pub fn report(summary: &Summary) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let stored: u64 = summary.stored.values().sum();
    let already: u64 = summary.already.values().sum();
    let _ = writeln!(
        out,
        "Stored {stored} resources, found {already} already there, refused {}; {} patients.",
        summary.refused.len(),
        summary.patients.len()
    );
    let mut types: BTreeSet<&String> = summary.stored.keys().collect();
    types.extend(summary.already.keys());
    for t in types {
        let (s, a) = (summary.stored.get(t).copied().unwrap_or(0), summary.already.get(t).copied().unwrap_or(0));
        let _ = writeln!(out, "  {t}: {s} stored, {a} already there");
    }
    for (t, n) in &summary.deleted_since {
        let _ = writeln!(out, "  {t}: {n} deleted at the clinic since an earlier import, not brought back");
    }
    let mut refused_by_type: BTreeMap<&str, Vec<&Refused>> = BTreeMap::new();
    for r in &summary.refused {
        refused_by_type.entry(&r.resource_type).or_default().push(r);
    }
    for (t, refused) in refused_by_type {
        let _ = writeln!(out, "Refused {t}: {}", refused.len());
        for r in refused {
            for p in &r.problems {
                let _ = writeln!(out, "  {}: {}", r.origin, p.message);
            }
        }
    }
    if !summary.without_care_team.is_empty() {
        let _ = writeln!(
            out,
            "{} patients are on no care team: clinicians reach them only by break-glass. Link them with \
             `user link --as care-team`, or import again with --care-team USER.",
            summary.without_care_team.len()
        );
    }
    out
}

impl Summary {
    /// Whether anything was refused (the command then exits non-zero).
    pub fn refused_any(&self) -> bool {
        !self.refused.is_empty()
    }
}

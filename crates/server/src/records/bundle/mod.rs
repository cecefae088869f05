//! FHIR `transaction` and `batch` Bundles (R4 §3.1.0.11), what exports and test data sets
//! are made of. A transaction is all or nothing in one store transaction; a batch applies
//! each entry on its own. Entries are processed in the specification's order (deletes,
//! creates, updates, reads); `fullUrl`s are resolved to the ids the server assigns and
//! rewritten in every reference of every entry ([`references`]); a create with
//! `ifNoneExist` on an identifier finds the record an earlier load stored instead of
//! storing it twice; `ifMatch` is honoured.
//!
//! Every entry is checked, decided and stored exactly as the single-resource routes do it:
//! the same [`Records::check`], the same [`gate`] over the access table, the same write.
//! The slow part — the schema check of every resource — happens before the writer lock is
//! taken; under it, only the writes.

pub mod gate;
pub mod ledger;
pub mod plan;
pub mod references;

use std::collections::{BTreeMap, HashSet};

use carekeep_protocol::audit::{AuditEvent, Outcome as AuditOutcome};
use serde_json::Value;

pub use gate::{Caller, Clinic, Gate, Refusal};
pub use ledger::{Ledger, Lookup};
pub use plan::{Action, Entry, Identifier, Kind, Plan};
pub use references::Targets;

use super::{Checked, RecordError, Records, Stored};

/// What happened to one entry.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The entry's position in the Bundle.
    pub index: usize,
    /// Its HTTP status: 201 created, 200 matched, updated or read, 204 deleted, or the
    /// refusal's.
    pub status: u16,
    /// The resource as stored (or as read); `None` when refused.
    pub stored: Option<Stored>,
    /// Why it was refused (a batch's entries only: a refused transaction has no answers).
    pub refusal: Option<Refusal>,
}

/// A Bundle's result.
#[derive(Debug)]
pub enum Outcome {
    /// Stored (a batch: the entries that could be).
    Applied {
        /// Each entry's answer, in the Bundle's order.
        answers: Vec<Answer>,
        /// The patients whose records were written or read (`None`: records of no patient),
        /// each flagged when only break-glass allowed it: one audit record each.
        touched: BTreeMap<Option<String>, bool>,
    },
    /// A transaction refused as a whole: nothing was stored. Every refusal found before
    /// storing, or the one that stopped the store.
    Refused(Vec<Refusal>),
}

/// A transaction refused as a whole before anything is written, if `kind` is one and any
/// entry of `prepared` was refused.
pub(crate) fn refused_whole(kind: Kind, prepared: &[Prepared]) -> Option<Outcome> {
    let refused: Vec<Refusal> = prepared.iter().filter_map(|p| p.step.as_ref().err().cloned()).collect();
    (kind == Kind::Transaction && !refused.is_empty()).then_some(Outcome::Refused(refused))
}

/// One entry, ready to apply.
enum Step {
    Create { checked: Checked, id: String, if_none_exist: Option<Identifier>, break_glass: bool },
    Existing { id: String },
    Update { checked: Checked, id: String, if_match: Option<i64> },
    Delete { id: String },
    Read { id: String },
}

/// One entry, checked and decided, waiting for the writer.
pub(crate) struct Prepared {
    index: usize,
    resource_type: String,
    step: Result<Step, Refusal>,
}

impl Records {
    /// Applies `plan` in `tenant` as `gate` decides. The request's `audit` record, if any,
    /// is committed in the same transaction, once per patient touched.
    pub fn apply_bundle(
        &self,
        tenant: &str,
        plan: Plan,
        gate: &dyn Gate,
        audit: Option<&AuditEvent>,
    ) -> Result<Outcome, RecordError> {
        let store = match &self.engine {
            super::Engine::Sqlcipher(store) => store,
            super::Engine::Postgres(pg, runtime) => return pg.apply_bundle(self, runtime, tenant, plan, gate, audit),
        };
        let kind = plan.kind;
        let prepared = self.prepare(&mut &*store.read(), tenant, plan, gate)?;
        if let Some(refused) = refused_whole(kind, &prepared) {
            return Ok(refused);
        }
        let mut conn = store.lock();
        let now = super::commit_time();
        let tx = conn.transaction()?;
        let mut ledger = ledger::Embedded { tx: &tx, documents_key: &self.documents_key, now };
        let outcome = Self::apply(&mut ledger, tenant, kind, prepared, gate, audit)?;
        if matches!(outcome, Outcome::Applied { .. }) {
            tx.commit()?;
        }
        Ok(outcome)
    }

    /// Applies `prepared` through `ledger` (inside its transaction, which the caller commits
    /// if the answer is [`Outcome::Applied`]): the steps in the specification's order, a
    /// batch's each under a savepoint, new patients onto the writer's care team, and the
    /// request's audit records once per patient touched or refused.
    pub(crate) fn apply(
        ledger: &mut dyn Ledger,
        tenant: &str,
        kind: Kind,
        prepared: Vec<Prepared>,
        gate: &dyn Gate,
        audit: Option<&AuditEvent>,
    ) -> Result<Outcome, RecordError> {
        let mut order: Vec<usize> = (0..prepared.len()).collect();
        order.sort_by_key(|&i| {
            let p = &prepared[i];
            let (rank, patient_last) = match &p.step {
                Ok(Step::Delete { .. }) => (0, false),
                Ok(Step::Create { .. } | Step::Existing { .. }) => (1, p.resource_type != "Patient"),
                Ok(Step::Update { .. }) => (2, false),
                Ok(Step::Read { .. }) | Err(_) => (3, false),
            };
            (rank, patient_last, p.index)
        });
        let mut answers: Vec<Option<Answer>> = vec![None; prepared.len()];
        let mut touched = BTreeMap::new();
        let mut registered = Vec::new();
        let mut steps: Vec<Option<Prepared>> = prepared.into_iter().map(Some).collect();
        for i in order {
            let Some(Prepared { index, resource_type, step }) = steps[i].take() else { continue };
            let step = match step {
                Ok(step) => step,
                Err(refusal) => {
                    answers[i] = Some(Answer { index, status: refusal.status, stored: None, refusal: Some(refusal) });
                    continue;
                }
            };
            if kind == Kind::Batch {
                ledger.savepoint("SAVEPOINT entry")?;
            }
            match Self::apply_step(ledger, tenant, gate, index, &resource_type, step)? {
                Ok((status, stored, break_glass)) => {
                    if kind == Kind::Batch {
                        ledger.savepoint("RELEASE entry")?;
                    }
                    if status == 201 && stored.resource_type == "Patient" {
                        registered.push(stored.id.clone());
                    }
                    let flag = touched.entry(stored.patient.clone()).or_insert(false);
                    *flag |= break_glass;
                    answers[i] = Some(Answer { index, status, stored: Some(stored), refusal: None });
                }
                Err(refusal) if kind == Kind::Transaction => return Ok(Outcome::Refused(vec![refusal])),
                Err(refusal) => {
                    ledger.savepoint("ROLLBACK TO entry")?;
                    ledger.savepoint("RELEASE entry")?;
                    answers[i] = Some(Answer { index, status: refusal.status, stored: None, refusal: Some(refusal) });
                }
            }
        }
        if let Some(user) = gate.joins_care_team() {
            for patient in &registered {
                ledger.join_care_team(tenant, user, patient)?;
            }
        }
        if let Some(template) = audit
            && !touched.is_empty()
        {
            for (patient, break_glass) in &touched {
                let mut event = template.clone();
                event.patient.clone_from(patient);
                event.break_glass = *break_glass;
                ledger.audit(tenant, &event)?;
            }
            // The entries refused beside them are recorded too, under their patient, as the
            // single routes record a refusal: a batch's successes hide no denied attempt.
            let refused: BTreeMap<Option<String>, bool> = answers
                .iter()
                .flatten()
                .filter_map(|a| a.refusal.as_ref())
                .fold(BTreeMap::new(), |mut by_patient, r| {
                    *by_patient.entry(r.patient.clone()).or_insert(false) |= r.is_denial();
                    by_patient
                });
            for (patient, denied) in refused {
                let mut event = template.clone();
                event.patient = patient;
                event.outcome = if denied { AuditOutcome::Denied } else { AuditOutcome::Failed };
                ledger.audit(tenant, &event)?;
            }
        }
        Ok(Outcome::Applied { answers: answers.into_iter().flatten().collect(), touched })
    }

    /// Ids, references and checks: everything that needs no writer lock, looked up through
    /// `lookup`.
    pub(crate) fn prepare(
        &self,
        lookup: &mut dyn Lookup,
        tenant: &str,
        plan: Plan,
        gate: &dyn Gate,
    ) -> Result<Vec<Prepared>, RecordError> {
        let Plan { entries, known: mut targets, .. } = plan;
        let mut firsts = Vec::with_capacity(entries.len());
        for entry in entries {
            let step = match &entry.action {
                // The role first, as the single routes: a condition is never evaluated for
                // someone who could not write the type anyway.
                Action::Create { .. } if gate.role(entry.index, &entry.resource_type).is_err() => {
                    Err(gate.role(entry.index, &entry.resource_type).unwrap_err())
                }
                Action::Create { if_none_exist: Some(wanted) } => {
                    // Only records the writer may match count: anything else is as if it were
                    // not there, so a condition cannot tell whether an identifier (an MRN, an
                    // insurance number) is on file, nor can a user's own record stand in for
                    // what an import brings ([`Gate::sees`]).
                    let mut seen = Vec::new();
                    for id in lookup.find(tenant, &entry.resource_type, wanted)? {
                        if lookup
                            .current(tenant, &entry.resource_type, &id)?
                            .is_some_and(|found| gate.sees(&found))
                        {
                            seen.push(id);
                        }
                    }
                    match seen.as_slice() {
                        [] => Ok(None),
                        [id] => Ok(Some(id.clone())),
                        _ => Err(Refusal::new(
                            412,
                            entry.index,
                            "request.ifNoneExist",
                            "multiple-matches",
                            "more than one record you can open has this identifier",
                        )),
                    }
                }
                _ => Ok(None),
            };
            let id = match (&entry.action, &step) {
                (Action::Create { .. }, Ok(Some(existing))) => Some(existing.clone()),
                (Action::Create { .. }, Ok(None)) => match &entry.id {
                    Some(chosen) => Some(chosen.clone()),
                    None => Some(crate::ids::new_id("r")?.replacen("r-", "", 1)),
                },
                (Action::Update { id, .. } | Action::Delete { id } | Action::Read { id }, _) => Some(id.clone()),
                (Action::Create { .. }, Err(_)) => None,
            };
            if let (Some(url), Some(id)) = (&entry.full_url, &id) {
                targets.insert(url, &entry.resource_type, id);
            }
            if let (Action::Create { .. }, Some(id), Some(resource)) = (&entry.action, &id, &entry.resource) {
                targets.insert_identifiers(&entry.resource_type, id, resource);
            }
            firsts.push((entry, step.map(|matched| (matched, id.unwrap_or_default()))));
        }
        // References, while the read connection answers conditional ones.
        let mut rewritten = Vec::with_capacity(firsts.len());
        for (mut entry, first) in firsts {
            let problems = match entry.resource.as_mut() {
                Some(resource) if first.is_ok() => {
                    references::rewrite(resource, entry.index, &targets, &mut |resource_type, wanted| {
                        conditional(&mut *lookup, tenant, gate, resource_type, wanted)
                    })
                }
                _ => Vec::new(),
            };
            let first = match first {
                Ok(_) if !problems.is_empty() => Err(Refusal { status: 422, problems, patient: None }),
                other => other,
            };
            rewritten.push((entry, first));
        }
        let mut prepared = Vec::with_capacity(rewritten.len());
        let mut new_patients = HashSet::new();
        for (entry, first) in rewritten {
            let (index, resource_type) = (entry.index, entry.resource_type.clone());
            let step = match first {
                Err(refusal) => Err(refusal),
                Ok((matched, id)) => self.checked_step(entry, matched.is_some(), id, gate)?,
            };
            if let Ok(Step::Create { checked, id, .. }) = &step
                && checked.resource_type == "Patient"
            {
                new_patients.insert(id.clone());
            }
            prepared.push(Prepared { index, resource_type, step });
        }
        for p in &mut prepared {
            if let Ok(Step::Create { checked, break_glass, .. }) = &mut p.step {
                let exists = match &checked.patient {
                    Some(patient) => {
                        new_patients.contains(patient) || lookup.current(tenant, "Patient", patient)?.is_some()
                    }
                    None => false,
                };
                match gate.create(p.index, checked, &new_patients, exists) {
                    Ok(flag) => *break_glass = flag,
                    Err(refusal) => {
                        let real = checked
                            .patient
                            .clone()
                            .filter(|patient| exists && !new_patients.contains(patient));
                        p.step = Err(refusal.about(real));
                    }
                }
            }
        }
        Ok(prepared)
    }

    /// The step for one entry whose ids are known: its resource checked as any write is.
    fn checked_step(
        &self,
        entry: Entry,
        matched: bool,
        id: String,
        gate: &dyn Gate,
    ) -> Result<Result<Step, Refusal>, RecordError> {
        let Entry { index, resource_type, action, resource, .. } = entry;
        if !matches!(action, Action::Read { .. })
            && let Err(refusal) = gate.role(index, &resource_type)
        {
            return Ok(Err(refusal));
        }
        if let (Some(largest), Some(value)) = (gate.largest_resource(), &resource)
            && serde_json::to_vec(value).map_or(usize::MAX, |v| v.len()) > largest
        {
            return Ok(Err(Refusal::new(
                413,
                index,
                "resource",
                "too-costly",
                &format!("larger than one resource may be ({} KiB); send its attachments apart", largest / 1024),
            )));
        }
        if let Action::Update { if_match: None, .. } = action
            && gate.requires_if_match()
        {
            return Ok(Err(Refusal::new(
                428,
                index,
                "request.ifMatch",
                "required",
                "name the version you changed (ifMatch: W/\"3\"), so no one's change is overwritten unseen",
            )));
        }
        let check = |value: Value| -> Result<Result<Checked, Refusal>, RecordError> {
            let checked = self.check(value, &resource_type).and_then(|mut checked| {
                gate.content(&mut checked)?;
                Ok(checked)
            });
            match checked {
                Ok(checked) => Ok(Ok(checked)),
                Err(e) => Refusal::from_record(index, &resource_type, e).map(Err),
            }
        };
        Ok(match (action, resource) {
            (Action::Create { .. }, _) if matched => Ok(Step::Existing { id }),
            (Action::Create { if_none_exist }, Some(value)) => {
                check(value)?.map(|checked| Step::Create { checked, id, if_none_exist, break_glass: false })
            }
            (Action::Update { if_match, .. }, Some(value)) => {
                check(value)?.map(|checked| Step::Update { checked, id, if_match })
            }
            (Action::Delete { .. }, _) => Ok(Step::Delete { id }),
            (Action::Read { .. }, _) => Ok(Step::Read { id }),
            (Action::Create { .. } | Action::Update { .. }, None) => {
                Err(Refusal::new(400, index, "resource", "required", "a create or update sends one"))
            }
        })
    }

    /// Applies one step on `tx`: its status, the resource, whether only break-glass allowed
    /// it; or why it was refused.
    fn apply_step(
        ledger: &mut dyn Ledger,
        tenant: &str,
        gate: &dyn Gate,
        index: usize,
        resource_type: &str,
        step: Step,
    ) -> Result<Result<(u16, Stored, bool), Refusal>, RecordError> {
        let refused = |e: RecordError| Refusal::from_record(index, resource_type, e).map(Err);
        let missing = || Refusal::new(404, index, "request.url", "not-found", "no such resource");
        Ok(match step {
            Step::Create { checked, id, if_none_exist, break_glass } => {
                if let Some(wanted) = &if_none_exist {
                    for id in ledger.find(tenant, resource_type, wanted)? {
                        if ledger
                            .current(tenant, resource_type, &id)?
                            .is_some_and(|found| gate.sees(&found))
                        {
                            return Ok(Err(stored_meanwhile(index)));
                        }
                    }
                }
                match ledger.write(tenant, checked, &id, 1, gate.author()) {
                    Ok(stored) => {
                        if let Some(source) = if_none_exist.as_ref().filter(|i| i.system == plan::SOURCE_SYSTEM) {
                            ledger.remember(tenant, resource_type, &id, source)?;
                        }
                        Ok((201, stored, break_glass))
                    }
                    Err(e) => return refused(e),
                }
            }
            Step::Existing { id } => match ledger.current(tenant, resource_type, &id)? {
                Some(found) => Ok((200, found, false)),
                None => Err(stored_meanwhile(index)),
            },
            Step::Update { checked, id, if_match } => {
                let Some(found) = ledger.current(tenant, resource_type, &id)? else { return Ok(Err(missing())) };
                let break_glass = match gate.change(index, &found, Some(&checked)) {
                    Ok(flag) => flag,
                    Err(refusal) => return Ok(Err(refusal.about(found.patient))),
                };
                if if_match.is_some_and(|v| v != found.version) {
                    return refused(RecordError::VersionConflict);
                }
                let version = found.version + 1;
                match ledger.write(tenant, checked, &id, version, gate.author()) {
                    Ok(stored) => Ok((200, stored, break_glass)),
                    Err(e) => return refused(e),
                }
            }
            Step::Delete { id } => {
                let Some(found) = ledger.current(tenant, resource_type, &id)? else { return Ok(Err(missing())) };
                let break_glass = match gate.change(index, &found, None) {
                    Ok(flag) => flag,
                    Err(refusal) => return Ok(Err(refusal.about(found.patient))),
                };
                if resource_type == "Patient" {
                    return Ok(Err(Refusal::new(
                        422,
                        index,
                        "request.url",
                        "business-rule",
                        "a patient's record is not deleted; remove them from the care team instead",
                    )));
                }
                ledger.remove(tenant, &found)?;
                Ok((204, found, break_glass))
            }
            Step::Read { id } => {
                let Some(found) = ledger.current(tenant, resource_type, &id)? else { return Ok(Err(missing())) };
                match gate.read(index, &found) {
                    Ok(flag) => Ok((200, found, flag)),
                    Err(refusal) => Err(refusal.about(found.patient)),
                }
            }
        })
    }
}

fn stored_meanwhile(index: usize) -> Refusal {
    Refusal::new(
        409,
        index,
        "request.ifNoneExist",
        "conflict",
        "a record with this identifier was stored or removed while the Bundle was checked; send it again",
    )
}

/// The one record of `resource_type` with `wanted` that `gate` lets the writer see.
fn conditional(
    lookup: &mut dyn Lookup,
    tenant: &str,
    gate: &dyn Gate,
    resource_type: &str,
    wanted: &Identifier,
) -> Result<String, &'static str> {
    const UNAVAILABLE: &str = "could not be looked up just now; send the Bundle again";
    let ids = lookup.find(tenant, resource_type, wanted).map_err(|_| UNAVAILABLE)?;
    let mut seen = Vec::new();
    for id in ids {
        if lookup
            .current(tenant, resource_type, &id)
            .map_err(|_| UNAVAILABLE)?
            .is_some_and(|s| gate.sees(&s))
        {
            seen.push(id);
        }
    }
    match seen.len() {
        1 => Ok(seen.remove(0)),
        0 => Err("matches no record you can see"),
        _ => Err("matches more than one record"),
    }
}

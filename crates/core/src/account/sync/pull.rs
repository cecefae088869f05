//! Sync steps 4–6: which patients this device keeps, deletions, and each kept patient's
//! records through `$everything` — all of it at first, then `_since` the last complete pull.

use std::collections::{HashMap, HashSet};

use carekeep_protocol::sync::SyncStatus;

use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;

use super::{Phase, Progress, SyncReport};
use crate::account::Account;
use crate::net::Page;
use crate::store::PageMark;
use crate::{Error, Result};

/// Resources per `$everything` page.
const PAGE_SIZE: &str = "500";

/// How far before the server's clock at the start of a pull the next pull begins. The
/// server stamps writes under its writer lock, so stamps follow commits; the overlap covers
/// the `Date` header being produced after the page's snapshot was read, and a write
/// committing in between. Fetching a resource twice is harmless.
const SINCE_OVERLAP_SECS: i64 = 5;

impl Account {
    /// Keeps the patients the server listed (a patient's own record and those they are
    /// proxy for, a clinician's care team), up to the policy's limit, and removes from the
    /// cache every patient no longer on the list. Returns those whose records changed since
    /// their last complete pull (or whose pull is unfinished).
    pub(super) fn reconcile_patients(
        &mut self,
        status: &SyncStatus,
        report: &mut SyncReport,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<String>> {
        progress(Progress { phase: Phase::Patients, done: 0, total: 1 });
        let limit = usize::try_from(self.facts.policy()?.policy.max_synced_patients).unwrap_or(usize::MAX);
        let listed = &status.patients[..status.patients.len().min(limit)];
        report.patients_over_limit = status.patients.len() - listed.len();
        report.patients = listed.len();
        let keep: HashMap<&str, &str> = listed.iter().map(|p| (p.id.as_str(), p.changed_at.as_str())).collect();
        let mut store = self.store()?;
        let mut stale = Vec::new();
        let mut known = HashSet::new();
        for kept in store.sync_patients()? {
            match keep.get(kept.patient.as_str()) {
                None => {
                    store.forget_patient(&kept.patient)?;
                    report.patients_removed += 1;
                }
                Some(changed_at) => {
                    let changed = kept.since.as_deref().is_none_or(|since| *changed_at >= since);
                    if changed || kept.cursor.is_some() {
                        stale.push(kept.patient.clone());
                    }
                    known.insert(kept.patient);
                }
            }
        }
        for patient in listed.iter().filter(|p| !known.contains(&p.id)) {
            store.keep_patient(&patient.id)?;
            stale.push(patient.id.clone());
        }
        progress(Progress { phase: Phase::Patients, done: 1, total: 1 });
        Ok(stale)
    }

    /// Removes from the cache what was deleted on the server since the last sync (nothing
    /// to ask when the server's newest deletion is one already applied).
    pub(super) async fn apply_removals(
        &mut self,
        removed_through: i64,
        report: &mut SyncReport,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        progress(Progress { phase: Phase::Removals, done: 0, total: 1 });
        let mut after = self.store()?.removed_after()?;
        while after < removed_through {
            let page = self.call(report, |server, token| async move { server.removed(&token, after).await }).await?;
            let gone = page.removed.iter().map(|r| (r.resource_type.as_str(), r.id.as_str()));
            report.resources_removed += self.store()?.apply_removed(gone, page.after)?;
            if !page.more || page.after <= after {
                break;
            }
            after = page.after;
        }
        progress(Progress { phase: Phase::Removals, done: 1, total: 1 });
        Ok(())
    }

    /// Pulls every kept patient's records.
    pub(super) async fn pull_records(
        &mut self,
        patients: &[String],
        report: &mut SyncReport,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        progress(Progress { phase: Phase::Records, done: 0, total: patients.len() });
        for (done, patient) in patients.iter().enumerate() {
            self.pull_patient(patient, report).await?;
            progress(Progress { phase: Phase::Records, done: done + 1, total: patients.len() });
        }
        Ok(())
    }

    /// Pulls one patient's records: from the unfinished pull's next page if there is one,
    /// else `$everything` since their last complete pull (everything, the first time).
    pub(super) async fn pull_patient(&mut self, patient: &str, report: &mut SyncReport) -> Result<()> {
        let state = self.store()?.sync_patients()?.into_iter().find(|s| s.patient == patient);
        let since = state.as_ref().and_then(|s| s.since.clone());
        let resumed = state.and_then(|s| s.cursor).and_then(|c| {
            let (as_of, token) = c.split_once(' ')?;
            Some((as_of.to_owned(), Page { path: "/fhir".into(), query: vec![("_page".into(), token.to_owned())] }))
        });
        let (mut as_of, mut page, mut resuming) = match resumed {
            Some((as_of, page)) => (Some(as_of), page, true),
            None => (None, everything(patient, since.as_deref()), false),
        };
        let mut pages = PageGuard::default();
        loop {
            let (json, next) = match self.fetch_page(&page, report).await {
                // The unfinished pull's page link expired: start that pull again.
                Err(Error::ServerRefused { status: 410 }) if resuming => {
                    self.store()?.restart_pull(patient)?;
                    (as_of, page, resuming) = (None, everything(patient, since.as_deref()), false);
                    continue;
                }
                other => other?,
            };
            pages.check(&json, next.as_ref())?;
            let as_of = as_of.get_or_insert_with(|| self.pull_start()).clone();
            let mark = match &next {
                Some(next) => PageMark::More { cursor: format!("{as_of} {}", page_token(next)) },
                None => PageMark::Complete { since: as_of },
            };
            report.resources_pulled += self.store()?.ingest_sync_page(&json, patient, &mark)?.stored;
            match next {
                Some(next) => page = next,
                None => return Ok(()),
            }
        }
    }

    async fn fetch_page(&mut self, page: &Page, report: &mut SyncReport) -> Result<(String, Option<Page>)> {
        self.call(report, |server, token| {
            let page = page.clone();
            async move { server.fhir_page(&token, &page).await }
        })
        .await
    }

    /// Where the next pull begins: the server's clock as it answered this pull's first
    /// page (the device's clock cannot move it), less [`SINCE_OVERLAP_SECS`], in the
    /// sortable form the server reports changes in (so the two compare as text).
    fn pull_start(&self) -> String {
        let server_now = self.server.last_server_time().unwrap_or_else(|| self.clock.now_unix());
        time::OffsetDateTime::from_unix_timestamp(server_now - SINCE_OVERLAP_SECS)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .and_then(|t| carekeep_fhir::sortable_date_time(&t))
            .unwrap_or_else(|| "1970-01-01T00:00:00.000000Z".to_owned())
    }
}

/// The first page of a patient's `$everything`.
fn everything(patient: &str, since: Option<&str>) -> Page {
    let mut query = vec![("_count".to_owned(), PAGE_SIZE.to_owned())];
    if let Some(since) = since {
        query.push(("_since".to_owned(), since.to_owned()));
    }
    Page { path: format!("/fhir/Patient/{patient}/$everything"), query }
}

fn page_token(page: &Page) -> &str {
    page.query.iter().find(|(k, _)| k == "_page").map_or("", |(_, v)| v.as_str())
}

/// Stops a pull the server would never end: a next link already followed, or a page whose
/// content was already received.
#[derive(Default)]
struct PageGuard {
    links: HashSet<String>,
    contents: HashSet<[u8; 32]>,
}

impl PageGuard {
    fn check(&mut self, json: &str, next: Option<&Page>) -> Result<()> {
        let bundle: serde_json::Value = serde_json::from_str(json).map_err(|_| Error::ServerMalformed)?;
        let entries = bundle["entry"]
            .as_array()
            .filter(|e| !e.is_empty())
            .map(|e| Sha256::digest(e.len().to_string() + &serde_json::to_string(e).unwrap_or_default()).into());
        if let Some(digest) = entries
            && !self.contents.insert(digest)
        {
            return Err(Error::PagingLoop);
        }
        if let Some(next) = next
            && !self.links.insert(page_token(next).to_owned())
        {
            return Err(Error::PagingLoop);
        }
        Ok(())
    }
}

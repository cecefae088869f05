//! Sync steps 4–6: which patients this device keeps, deletions, and each kept patient's
//! records through `$everything` — all of it at first, then `_since` the last complete pull.

use std::collections::{HashMap, HashSet};

use carekeep_protocol::sync::SyncStatus;

use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;

use super::{Phase, Progress, SyncReport};
use crate::account::Account;
use crate::error::ServerError;
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
        progress: &mut (dyn FnMut(Progress) + Send),
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
        let new: Vec<&str> = listed.iter().map(|p| p.id.as_str()).filter(|id| !known.contains(*id)).collect();
        store.keep_patients(&new)?;
        stale.extend(new.iter().map(|id| (*id).to_owned()));
        progress(Progress { phase: Phase::Patients, done: 1, total: 1 });
        Ok(stale)
    }

    /// Removes from the cache what was deleted on the server since the last sync (nothing
    /// to ask when the server's newest deletion is one already applied).
    pub(super) async fn apply_removals(
        &mut self,
        removed_through: i64,
        report: &mut SyncReport,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<()> {
        progress(Progress { phase: Phase::Removals, done: 0, total: 1 });
        let mut after = self.store()?.removed_after()?;
        while after < removed_through {
            let page = self
                .call(report, |server, token| async move { server.removed(&token, after).await })
                .await?;
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

    /// Pulls every kept patient's records. The next patient's first page is fetched while
    /// this one's pages are stored, so the network and the cache work side by side.
    pub(super) async fn pull_records(
        &mut self,
        patients: &[String],
        report: &mut SyncReport,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<()> {
        progress(Progress { phase: Phase::Records, done: 0, total: patients.len() });
        let mut ahead: Option<Prefetched> = None;
        for (done, patient) in patients.iter().enumerate() {
            let first = match ahead.take() {
                Some(fetched) if fetched.patient == *patient => fetched.handle.await.ok().and_then(Result::ok),
                _ => None,
            };
            if let Some(next) = patients.get(done + 1) {
                ahead = self.prefetch(next, report).await?;
            }
            self.pull_patient_from(patient, first, report).await?;
            progress(Progress { phase: Phase::Records, done: done + 1, total: patients.len() });
        }
        if let Some(fetched) = ahead {
            fetched.handle.abort();
        }
        Ok(())
    }

    /// Pulls one patient's records: from the unfinished pull's next page if there is one,
    /// else `$everything` since their last complete pull (everything, the first time).
    pub(super) async fn pull_patient(&mut self, patient: &str, report: &mut SyncReport) -> Result<()> {
        self.pull_patient_from(patient, None, report).await
    }

    /// As [`Account::pull_patient`], starting with `first` if it was fetched ahead.
    async fn pull_patient_from(
        &mut self,
        patient: &str,
        first: Option<Fetched>,
        report: &mut SyncReport,
    ) -> Result<()> {
        let PullStart { mut page, mut as_of, mut resuming, since } = self.pull_start(patient)?;
        let mut first = first;
        let mut pages = PageGuard::default();
        loop {
            let fetched = match first.take() {
                Some(fetched) => Ok(fetched),
                None => self.fetch_page(&page, report).await.map(|(json, next)| Fetched {
                    json,
                    next,
                    server_time: self.server.last_server_time(),
                }),
            };
            let Fetched { json, next, server_time } = match fetched {
                // The unfinished pull's page link expired: start that pull again.
                Err(Error::Server(ServerError::ServerRefused { status: 410 })) if resuming => {
                    self.store()?.restart_pull(patient)?;
                    (as_of, page, resuming) = (None, everything(patient, since.as_deref()), false);
                    continue;
                }
                other => other?,
            };
            pages.check(&json, next.as_ref())?;
            let as_of = as_of.get_or_insert_with(|| self.since_from(server_time)).clone();
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

    /// Where `patient`'s pull starts: the unfinished pull's next page, or `$everything`
    /// since the last complete pull.
    fn pull_start(&mut self, patient: &str) -> Result<PullStart> {
        let state = self.store()?.sync_patient(patient)?;
        let since = state.as_ref().and_then(|s| s.since.clone());
        let resumed = state.and_then(|s| s.cursor).and_then(|c| {
            let (as_of, token) = c.split_once(' ')?;
            Some((as_of.to_owned(), Page { path: "/fhir".into(), query: vec![("_page".into(), token.to_owned())] }))
        });
        Ok(match resumed {
            Some((as_of, page)) => PullStart { page, as_of: Some(as_of), resuming: true, since },
            None => PullStart { page: everything(patient, since.as_deref()), as_of: None, resuming: false, since },
        })
    }

    /// Starts fetching `patient`'s first page in the background. Best effort: any failure
    /// is left for the ordinary fetch to meet (and retry, or act on).
    async fn prefetch(&mut self, patient: &str, report: &mut SyncReport) -> Result<Option<Prefetched>> {
        let start = self.pull_start(patient)?;
        let Ok(token) = self.access_token().await else { return Ok(None) };
        report.requests += 1;
        let server = self.server.clone();
        let handle = tokio::spawn(async move {
            let (json, next) = server.fhir_page(&token, &start.page).await?;
            Ok(Fetched { json, next, server_time: server.last_server_time() })
        });
        Ok(Some(Prefetched { patient: patient.to_owned(), handle }))
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
    fn since_from(&self, server_time: Option<i64>) -> String {
        let server_now = server_time.unwrap_or_else(|| self.clock.now_unix());
        time::OffsetDateTime::from_unix_timestamp(server_now - SINCE_OVERLAP_SECS)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .and_then(|t| carekeep_fhir::sortable_date_time(&t))
            .unwrap_or_else(|| "1970-01-01T00:00:00.000000Z".to_owned())
    }
}

/// Where a patient's pull starts.
struct PullStart {
    page: Page,
    /// The server time the pull counts from, once known (a resumed pull's is kept).
    as_of: Option<String>,
    /// The first page is an unfinished pull's next page (it may have expired).
    resuming: bool,
    /// The last complete pull's time, if any.
    since: Option<String>,
}

/// A page as fetched, with the server's clock when it answered.
struct Fetched {
    json: String,
    next: Option<Page>,
    server_time: Option<i64>,
}

/// A patient's first page, being fetched in the background.
struct Prefetched {
    patient: String,
    handle: tokio::task::JoinHandle<Result<Fetched>>,
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
        /// Just the entries, as text: no resource is parsed here.
        #[derive(serde::Deserialize)]
        struct Entries<'a> {
            #[serde(borrow)]
            entry: Option<&'a serde_json::value::RawValue>,
        }
        let page: Entries<'_> = serde_json::from_str(json).map_err(|_| Error::Server(ServerError::ServerMalformed))?;
        if let Some(entries) = page.entry.map(serde_json::value::RawValue::get).filter(|e| e.trim() != "[]")
            && !self.contents.insert(Sha256::digest(entries.as_bytes()).into())
        {
            return Err(Error::Server(ServerError::PagingLoop));
        }
        if let Some(next) = next
            && !self.links.insert(page_token(next).to_owned())
        {
            return Err(Error::Server(ServerError::PagingLoop));
        }
        Ok(())
    }
}

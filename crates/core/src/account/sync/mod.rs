//! Offline-first sync between the vault and the server (DESIGN §2, §3, §6), in this order:
//!
//! 1. **Contact**: `GET /sync/status` — which patients this account may keep, when each
//!    last changed, and the newest deletion. A remote wipe or a revocation is honoured
//!    here, before any data moves either way. The signed policy is fetched again when the
//!    cached one is older than [`POLICY_REFRESH_SECS`].
//! 2. **Audit**: the records this device kept (session transitions; records read from the
//!    cache) are uploaded; the server appends them marked with device and upload time.
//! 3. **Upload**: the outbox is replayed in order, each write with its idempotency key (and
//!    `If-Match` for updates). A conflict (412) or a refusal is set aside with the server's
//!    version or reason, never overwritten; later writes go on.
//! 4. **Patients**: up to the policy's limit are kept; patients this account may no longer
//!    see leave the cache with all their records.
//! 5. **Removals**: resources deleted on the server leave the cache.
//! 6. **Records**: each kept patient that changed since their last complete pull, through
//!    `$everything` page by page — everything at first, then `_since`. Each page is stored
//!    together with where the pull stands, so a sync killed at any point resumes at the
//!    next page.
//!
//! A sync with nothing new, nothing queued and a fresh policy is one request.
//!
//! Transient failures (unreachable, timeouts, 5xx, garbled answers) are retried with
//! back-off and jitter ([`Retry`]); when they persist the sync stops with a typed error, and
//! everything already stored stays usable offline.

mod audit;
mod pull;
mod push;
mod retry;

use std::future::Future;

use carekeep_protocol::Secret;
use carekeep_protocol::sync::SyncStatus;

pub use retry::Retry;

use super::Account;
use crate::error::ServerError;
use crate::net::Server;
use crate::{Error, Result};

/// How old the cached signed policy may grow before a sync fetches it again.
pub const POLICY_REFRESH_SECS: i64 = 12 * 3600;

/// The step a sync is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Asking the server whether this device may go on.
    Contact,
    /// Uploading audit records kept on this device.
    Audit,
    /// Sending queued writes.
    Upload,
    /// Learning which patients this account keeps.
    Patients,
    /// Applying deletions.
    Removals,
    /// Pulling patients' records.
    Records,
    /// Finished.
    Done,
}

impl Phase {
    /// A short label for progress displays.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Contact => "contacting the server",
            Phase::Audit => "uploading the access log",
            Phase::Upload => "sending your changes",
            Phase::Patients => "checking your patient list",
            Phase::Removals => "removing deleted records",
            Phase::Records => "downloading records",
            Phase::Done => "up to date",
        }
    }
}

/// How far a sync has come: `done` of `total` in `phase` (writes, patients; 0 of 0 when
/// a phase has nothing to count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The step.
    pub phase: Phase,
    /// Items done in it.
    pub done: usize,
    /// Items in it.
    pub total: usize,
}

/// What a sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Audit records the server appended.
    pub audit_uploaded: usize,
    /// Queued writes the server stored.
    pub writes_sent: usize,
    /// Writes set aside as conflicts (both versions kept).
    pub conflicts: usize,
    /// Writes the server refused (its reason kept).
    pub rejected: usize,
    /// Patients kept on this device.
    pub patients: usize,
    /// Patients beyond the policy's limit, not kept (fetch them on demand).
    pub patients_over_limit: usize,
    /// Patients (and their records) removed: no longer visible to this account.
    pub patients_removed: usize,
    /// Resources removed because they were deleted on the server.
    pub resources_removed: usize,
    /// Resources stored or refreshed.
    pub resources_pulled: usize,
    /// Requests made (sign-in refreshes excluded).
    pub requests: usize,
}

impl Account {
    /// Syncs this device with the server; see the [module docs](self). `progress` hears each
    /// step as it goes.
    pub async fn sync(&mut self, progress: &mut (dyn FnMut(Progress) + Send)) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        progress(Progress { phase: Phase::Contact, done: 0, total: 1 });
        let status = self.contact(&mut report).await?;
        progress(Progress { phase: Phase::Contact, done: 1, total: 1 });
        self.upload_audit(&mut report, progress).await?;
        self.push_outbox(&mut report, progress).await?;
        let patients = self.reconcile_patients(&status, &mut report, progress)?;
        self.apply_removals(status.removed_through, &mut report, progress).await?;
        self.pull_records(&patients, &mut report, progress).await?;
        self.facts.last_sync_unix = Some(self.clock.now_unix());
        self.facts.write(&self.profile)?;
        progress(Progress { phase: Phase::Done, done: 1, total: 1 });
        Ok(report)
    }

    /// Fetches one patient's records on demand (one not kept by sync, e.g. opened under
    /// break-glass). They stay until the next sync, which keeps only the patients this
    /// account may keep.
    pub async fn fetch_patient(&mut self, patient: &str) -> Result<usize> {
        let mut report = SyncReport::default();
        self.pull_patient(patient, &mut report).await?;
        Ok(report.resources_pulled)
    }

    /// Break-glass: opens a patient outside this clinician's care team, in an emergency,
    /// and fetches their records. A high-risk action: it needs a full sign-in within the
    /// step-up window, and a reason (10 to 500 characters) kept for review. Every access
    /// under it is flagged in the audit; the records leave the cache at the first sync
    /// after the grant ends.
    pub async fn break_glass(&mut self, patient: &str, reason: &str) -> Result<usize> {
        self.session.check_step_up()?;
        let reason = reason.trim();
        if !(10..=500).contains(&reason.chars().count()) {
            return Err(Error::InvalidArgument {
                what: "reason",
                problem: "say why you need this record, in 10 to 500 characters; it is kept for review",
            });
        }
        let mut report = SyncReport::default();
        let reason = reason.to_owned();
        let patient_id = patient.to_owned();
        self.call(&mut report, |server, token| {
            let (patient, reason) = (patient_id.clone(), reason.clone());
            async move { server.break_glass(&token, &patient, &reason).await }
        })
        .await?;
        self.store()?.keep_patient(patient)?;
        self.pull_patient(patient, &mut report).await?;
        Ok(report.resources_pulled)
    }

    /// Sets how sync retries transient failures.
    pub fn set_retry(&mut self, retry: Retry) {
        self.retry = retry;
    }

    /// Sets how long one request may take (default [`crate::net::REQUEST_TIMEOUT`]).
    pub fn set_request_timeout(&mut self, timeout: std::time::Duration) {
        self.server.set_request_timeout(timeout);
    }

    /// The first call of a sync: where things stand at the server. The server answers a
    /// wiped or revoked device here, and the cache is erased before anything else happens.
    /// A policy older than [`POLICY_REFRESH_SECS`] is fetched again (timeouts, pins after a
    /// key rotation) and kept for the next start.
    async fn contact(&mut self, report: &mut SyncReport) -> Result<SyncStatus> {
        let status = self
            .call(report, |server, token| async move { server.status(&token).await })
            .await?;
        let now = self.session.latest_known_time().max(self.clock.now_unix());
        if now - self.facts.policy_fetched_unix >= POLICY_REFRESH_SECS {
            let verified = self
                .call(report, |server, token| async move { server.policy(&token).await })
                .await?;
            if verified.policy.tenant == self.facts.tenant && verified.policy.role == self.facts.role {
                self.facts.pins = verified.policy.pins.clone();
                self.facts.signed_policy = verified.signed;
                self.facts.policy_key = verified.key;
                self.facts.policy_fetched_unix = now;
                self.facts.write(&self.profile)?;
            }
        }
        Ok(status)
    }

    /// [`Account::call`] outside a sync (devices, the authenticator, the access history),
    /// where no report counts the requests.
    pub(super) async fn request<T, F, Fut>(&mut self, f: F) -> Result<T>
    where
        F: Fn(Server, Secret) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.call(&mut SyncReport::default(), f).await
    }

    /// One server call with a current access token: refreshed once if it expired, retried
    /// with back-off while the failure is transient, and acted on (wipe, pin mismatch) by
    /// [`Account::after_server`].
    pub(super) async fn call<T, F, Fut>(&mut self, report: &mut SyncReport, f: F) -> Result<T>
    where
        F: Fn(Server, Secret) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut retries = 0;
        let mut refreshed = false;
        loop {
            // A refresh has already been acted on by `access_token`.
            let (result, refreshing) = match self.access_token().await {
                Ok(token) => {
                    report.requests += 1;
                    (f(self.server.clone(), token).await, false)
                }
                Err(e) => (Err(e), true),
            };
            match result {
                Err(Error::Server(ServerError::AccessExpired)) if !refreshed => {
                    self.access_token = None;
                    refreshed = true;
                }
                Err(e) if e.is_transient() && retries + 1 < self.retry.attempts => {
                    tokio::time::sleep(self.retry.pause(retries)).await;
                    retries += 1;
                }
                other if refreshing => return other,
                other => {
                    if other.is_ok() {
                        self.session.time_seen(self.server.last_server_time().unwrap_or(i64::MIN));
                    }
                    return self.after_server(other);
                }
            }
        }
    }
}

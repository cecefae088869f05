//! Sync step 3: the outbox, replayed in order. Each write carries its idempotency key, so a
//! write whose answer was lost (or whose process was killed) is stored once however often it
//! is sent. A stored write and its removal from the queue are one transaction here.

use std::sync::Arc;

use super::{Phase, Progress, SyncReport};
use crate::Result;
use crate::account::Account;
use crate::net::Pushed;
use crate::store::{OutboxEntry, SetAsideKind};

impl Account {
    pub(super) async fn push_outbox(
        &mut self,
        report: &mut SyncReport,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<()> {
        let total = usize::try_from(self.store()?.outbox().len()?).unwrap_or(usize::MAX);
        progress(Progress { phase: Phase::Upload, done: 0, total });
        let mut done = 0;
        while let Some(entry) = self.store()?.outbox().peek(1)?.pop() {
            let entry = Arc::new(entry);
            let pushed = self
                .call(report, |server, token| {
                    let entry = entry.clone();
                    async move { server.push(&token, &entry).await }
                })
                .await?;
            match pushed {
                Pushed::Stored(json) => {
                    self.store()?.outbox().settle(entry.seq, &json)?;
                    report.writes_sent += 1;
                }
                Pushed::Conflict => {
                    let current = self.server_version(&entry, report).await?;
                    let reason = "Someone changed this record on the server after your device's copy. Both \
                                  versions are kept: keep yours or the server's.";
                    self.store()?
                        .set_aside(&entry, SetAsideKind::Conflict, current.as_deref(), reason)?;
                    report.conflicts += 1;
                }
                Pushed::Refused { reason, .. } => {
                    self.store()?.set_aside(&entry, SetAsideKind::Rejected, None, &reason)?;
                    report.rejected += 1;
                }
            }
            done += 1;
            progress(Progress { phase: Phase::Upload, done, total: total.max(done) });
        }
        Ok(())
    }

    /// The server's current version of the record a conflicting write was meant to change.
    async fn server_version(&mut self, entry: &OutboxEntry, report: &mut SyncReport) -> Result<Option<String>> {
        let Some(id) = entry.id.clone() else { return Ok(None) };
        let resource_type = entry.resource_type.clone();
        self.call(report, |server, token| {
            let (resource_type, id) = (resource_type.clone(), id.clone());
            async move { server.read(&token, &resource_type, &id).await }
        })
        .await
    }
}

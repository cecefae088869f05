//! Sync step 2: the audit records this device kept, uploaded in batches. The server skips
//! records it already has, so a batch whose answer was lost is simply sent again; only
//! after the server's receipt are they dropped here (the newest kept as the chain's tip,
//! and remembered as uploaded so it is not sent again).

use carekeep_protocol::audit::AuditRecord;
use carekeep_protocol::sync::{DeviceAuditUpload, DeviceStream, MAX_DEVICE_AUDIT_BATCH};

use super::{Phase, Progress, SyncReport};
use crate::Result;
use crate::account::{Account, audit_queue};

impl Account {
    pub(super) async fn upload_audit(
        &mut self,
        report: &mut SyncReport,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<()> {
        // This run's session records first join the queue.
        self.write_audit()?;
        let queued = audit_queue::read(&self.profile)?;
        let mut mine: Vec<AuditRecord> = queued
            .iter()
            .filter(|r| r.event.user.as_ref().is_none_or(|u| *u == self.facts.user_id))
            .cloned()
            .collect();
        // Those up to the newest the server confirmed are there already.
        if let Some(through) = self.facts.audit_uploaded_through
            && let Some(i) = mine.iter().position(|r| r.hash == through)
        {
            mine.drain(..=i);
        }
        let access_total = self.store()?.access_log(usize::MAX)?.len();
        let total = mine.len() + access_total;
        progress(Progress { phase: Phase::Audit, done: 0, total });
        let mut done = 0;
        for batch in mine.chunks(MAX_DEVICE_AUDIT_BATCH) {
            report.audit_uploaded += self.send_audit(DeviceStream::Session, batch.to_vec(), report).await?;
            done += batch.len();
            progress(Progress { phase: Phase::Audit, done, total });
        }
        if let Some(last) = mine.last() {
            // Keep other users' records (they upload at their own sign-in), and the newest
            // record as the tip the next one links to; the server skips it next time.
            let keep: Vec<AuditRecord> = queued
                .into_iter()
                .filter(|r| r.event.user.as_ref().is_some_and(|u| *u != self.facts.user_id) || r.hash == last.hash)
                .collect();
            audit_queue::replace(&self.profile, &keep)?;
            self.facts.audit_uploaded_through = Some(last.hash);
            self.facts.write(&self.profile)?;
        }
        loop {
            let batch = self.store()?.access_log(MAX_DEVICE_AUDIT_BATCH)?;
            let Some(&(through, _)) = batch.last() else { break };
            let records = batch.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>();
            report.audit_uploaded += self.send_audit(DeviceStream::Access, records, report).await?;
            self.store()?.trim_access_log(through)?;
            done += batch.len();
            progress(Progress { phase: Phase::Audit, done, total });
        }
        Ok(())
    }

    async fn send_audit(
        &mut self,
        stream: DeviceStream,
        records: Vec<AuditRecord>,
        report: &mut SyncReport,
    ) -> Result<usize> {
        let upload = std::sync::Arc::new(DeviceAuditUpload { stream, records });
        let receipt = self
            .call(report, |server, token| {
                let upload = upload.clone();
                async move { server.upload_audit(&token, &upload).await }
            })
            .await?;
        Ok(receipt.appended)
    }
}

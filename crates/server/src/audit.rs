//! The server's audit trail (DESIGN.md §6): one hash-chained record per audited request,
//! in the rule [`carekeep_protocol::audit`] defines, with a signed checkpoint every
//! [`CHECKPOINT_EVERY`] records. Records hold ids, never PHI.

use std::sync::{Arc, Mutex, PoisonError, mpsc};

use carekeep_protocol::audit::{AuditEvent, AuditRecord, ChainError, Checkpoint, verify_chain};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rusqlite::{OptionalExtension, params};

use crate::ServerError;
use crate::store::Store;

/// Records between signed checkpoints.
pub const CHECKPOINT_EVERY: u64 = 100;

/// Most requests' records one group commit takes: bounds the transaction (and the wait of
/// the first request in it) under a flood.
const GROUP_MAX: usize = 512;

/// The append side of the trail. Appends are serialised: each record links to the last.
///
/// Requests hand their records to one writer thread ([`AuditLog::record`]), which commits
/// whatever has queued up in one transaction — one fsync for many requests (group commit) —
/// and only then lets each request answer. Durability is unchanged: no response leaves
/// before its record is on disk.
pub struct AuditLog {
    chain: Arc<Chain>,
    queue: mpsc::Sender<Pending>,
}

/// The chain's end and where it is written.
struct Chain {
    store: Arc<Store>,
    signing_key: Arc<SigningKey>,
    checkpoint_every: u64,
    last: Mutex<Option<AuditRecord>>,
}

/// One request's records, waiting for the writer.
struct Pending {
    events: Vec<AuditEvent>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl AuditLog {
    /// Opens the trail in `store`, continuing from its last record, and starts its writer.
    pub fn open(store: Arc<Store>, signing_key: Arc<SigningKey>, checkpoint_every: u64) -> Result<Self, ServerError> {
        let last = store
            .lock()
            .query_row("SELECT record FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| r.get::<_, String>(0))
            .optional()
            .map_err(|e| ServerError::Store(e.to_string()))?
            .map(|json| serde_json::from_str::<AuditRecord>(&json))
            .transpose()
            .map_err(|_| ServerError::Store("the last audit record is unreadable; run `audit verify`".into()))?;
        let chain =
            Arc::new(Chain { store, signing_key, checkpoint_every: checkpoint_every.max(1), last: Mutex::new(last) });
        let (queue, pending) = mpsc::channel();
        let writer = chain.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(&pending))
            .map_err(|e| ServerError::Store(format!("cannot start the audit writer: {e}")))?;
        Ok(Self { chain, queue })
    }

    /// Appends `events` in order, all or none, and returns once they are durable. Records
    /// of concurrent requests share one commit.
    pub async fn record(&self, events: Vec<AuditEvent>) -> Result<(), ServerError> {
        let stopped = || ServerError::Store("the audit writer stopped".into());
        let (done, committed) = tokio::sync::oneshot::channel();
        self.queue.send(Pending { events, done }).map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?.map_err(ServerError::Store)
    }

    /// Appends `event` (and, every `checkpoint_every` records, a signed checkpoint).
    /// Blocking: call from `spawn_blocking`.
    pub fn append(&self, event: AuditEvent) -> Result<AuditRecord, ServerError> {
        self.append_all(vec![event])?;
        Ok(self.chain.last.lock().unwrap_or_else(PoisonError::into_inner).clone().expect("just appended"))
    }

    /// Appends `events` in order, in one transaction: all or none. Blocking.
    pub fn append_all(&self, events: Vec<AuditEvent>) -> Result<(), ServerError> {
        self.chain.append_all(events)
    }
}

impl Chain {
    /// The writer thread: takes what has queued, commits it at once, answers each request.
    /// Ends when the log is dropped.
    fn run(&self, pending: &mpsc::Receiver<Pending>) {
        while let Ok(first) = pending.recv() {
            let mut group = vec![first];
            while group.len() < GROUP_MAX {
                match pending.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            let (events, waiting): (Vec<_>, Vec<_>) = group.into_iter().map(|p| (p.events, p.done)).unzip();
            let result = self.append_all(events.into_iter().flatten().collect()).map_err(|e| e.to_string());
            for done in waiting {
                let _ = done.send(result.clone());
            }
        }
    }

    /// Appends `events` in order, in one transaction: all or none.
    fn append_all(&self, events: Vec<AuditEvent>) -> Result<(), ServerError> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let mut conn = self.store.lock();
        let bad = |e: rusqlite::Error| ServerError::Store(e.to_string());
        let tx = conn.transaction().map_err(bad)?;
        let mut newest = last.clone();
        for event in events {
            let record = AuditRecord::append(newest.as_ref(), event);
            let json = serde_json::to_string(&record).map_err(|e| ServerError::Store(e.to_string()))?;
            let seq = i64::try_from(record.seq).map_err(|_| ServerError::Store("audit sequence overflow".into()))?;
            tx.prepare_cached(
                "INSERT INTO audit_log (seq, record, patient, recorded_at, tenant, user_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    seq,
                    json,
                    record.event.patient,
                    record.event.recorded_at,
                    record.event.tenant,
                    record.event.user
                ])
            })
            .map_err(bad)?;
            if (record.seq + 1).is_multiple_of(self.checkpoint_every) {
                let checkpoint = Checkpoint::sign(&record, &self.signing_key);
                let text = serde_json::to_string(&checkpoint).unwrap_or_default();
                tx.execute("INSERT INTO audit_checkpoints (seq, checkpoint) VALUES (?1, ?2)", params![seq, text])
                    .map_err(bad)?;
            }
            newest = Some(record);
        }
        tx.commit().map_err(bad)?;
        *last = newest;
        Ok(())
    }
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// Checkpoints whose signatures held.
    pub checkpoints: u64,
}

/// Why the trail cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A record or checkpoint could not even be read: it was edited by hand.
    #[error("record #{0} is unreadable: it was edited")]
    Unreadable(i64),
    /// The chain is broken.
    #[error("{0}")]
    Broken(ChainError),
    /// The store failed.
    #[error("{0}")]
    Store(ServerError),
}

/// Checks the whole trail against `key`: links, content, order and every checkpoint.
pub fn verify(store: &Store, key: &VerifyingKey) -> Result<Verified, VerifyError> {
    let conn = store.lock();
    let read = |sql: &str| -> Result<Vec<(i64, String)>, VerifyError> {
        let mut stmt = conn.prepare(sql).map_err(|e| VerifyError::Store(ServerError::Store(e.to_string())))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| VerifyError::Store(ServerError::Store(e.to_string())))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| VerifyError::Store(ServerError::Store(e.to_string())))
    };
    let records = read("SELECT seq, record FROM audit_log ORDER BY seq")?
        .into_iter()
        .map(|(seq, json)| serde_json::from_str::<AuditRecord>(&json).map_err(|_| VerifyError::Unreadable(seq)))
        .collect::<Result<Vec<_>, _>>()?;
    let checkpoints = read("SELECT seq, checkpoint FROM audit_checkpoints ORDER BY seq")?
        .into_iter()
        .map(|(seq, json)| serde_json::from_str::<Checkpoint>(&json).map_err(|_| VerifyError::Unreadable(seq)))
        .collect::<Result<Vec<_>, _>>()?;
    verify_chain(&records, &checkpoints, key).map_err(VerifyError::Broken)?;
    Ok(Verified { records: records.len() as u64, checkpoints: checkpoints.len() as u64 })
}

/// "Who accessed this patient's record": records naming `patient`, between `from` and `to`
/// (RFC 3339, inclusive), oldest first. Reads the chained JSON, not the index copy.
pub fn query(store: &Store, patient: &str, from: &str, to: &str) -> Result<Vec<AuditRecord>, ServerError> {
    let conn = store.lock();
    let mut stmt = conn
        .prepare(
            "SELECT record FROM audit_log WHERE patient = ?1 AND recorded_at >= ?2 AND recorded_at <= ?3 ORDER BY seq",
        )
        .map_err(|e| ServerError::Store(e.to_string()))?;
    let rows = stmt
        .query_map(params![patient, from, to], |r| r.get::<_, String>(0))
        .map_err(|e| ServerError::Store(e.to_string()))?;
    let mut out = Vec::new();
    for json in rows {
        let json = json.map_err(|e| ServerError::Store(e.to_string()))?;
        let record: AuditRecord = serde_json::from_str(&json).map_err(|e| ServerError::Store(e.to_string()))?;
        if record.event.patient.as_deref() == Some(patient) {
            out.push(record);
        }
    }
    Ok(out)
}

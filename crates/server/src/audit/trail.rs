//! The server's audit trail (DESIGN.md §6): one hash-chained record per audited request,
//! in the rule [`carekeep_protocol::audit`] defines, with a signed checkpoint every
//! [`CHECKPOINT_EVERY`] records. Records hold ids, never PHI.
//!
//! Three things keep the trail honest beyond the chain itself:
//! - **Writes and their records commit together.** A write puts its record into store.db's
//!   outbox in the write's own transaction ([`push_to_outbox`]); the writer thread moves
//!   outbox records into the trail (audit.db) before any request's response leaves, and
//!   notes in audit.db the last one it moved, so a crash at any point neither loses nor
//!   duplicates one.
//! - **A rolled-back trail is noticed.** store.db keeps the trail's head, signed
//!   ([`Checkpoint`]): written with every write and checkpoint, at most [`HEAD_EVERY`] after
//!   anything else, and at shutdown. A trail that no longer reaches that head (an older copy
//!   of audit.db put back) stops the server at start and fails `audit verify`.
//! - **Nothing outside the chain is trusted.** The columns searches filter on are derived
//!   from the chained record (generated columns), `verify` checks them against it, and a
//!   checkpoint missing from the rule's places is a failure.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use carekeep_protocol::audit::{
    AuditEvent, AuditRecord, ChainError, ChainHash, Checkpoint, require_checkpoints_in, verify_chain_from,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rusqlite::{Connection, OptionalExtension, params};

use crate::ServerError;
use crate::store::Store;

/// Records between signed checkpoints: the checkpoint of record `seq` is signed when
/// `seq + 1` is a multiple of it, and `verify` requires each one.
pub const CHECKPOINT_EVERY: u64 = 100;

/// How long the head store.db remembers may lag behind the trail while requests arrive.
/// Writing it more often would make every reader of store.db drop its decrypted page cache
/// with each group commit; writes, checkpoints and shutdown write it at once.
pub const HEAD_EVERY: Duration = Duration::from_secs(1);

/// Most requests' records one group commit takes: bounds the transaction (and the wait of
/// the first request in it) under a flood.
const GROUP_MAX: usize = 512;

/// The append side of the trail. Appends are serialised: each record links to the last.
///
/// Requests hand their records to one writer thread ([`AuditLog::record`]), which commits
/// whatever has queued up, and whatever writes left in the outbox, in one transaction — one
/// fsync for many requests (group commit) — and only then lets each request answer.
/// Durability is unchanged: no response leaves before its record is on disk in the trail.
///
/// On a PostgreSQL deployment the trail is the database's, one chain per tenant
/// ([`AuditLog::postgres`]), appended the same way by a task of each node.
pub struct AuditLog(Keeper);

/// Who keeps the trail.
enum Keeper {
    /// This process, in the embedded store's audit file.
    Embedded {
        chain: Arc<Chain>,
        /// `None` once dropped: the writer then finishes and leaves the head current.
        queue: Option<mpsc::Sender<Pending>>,
        writer: Option<std::thread::JoinHandle<()>>,
    },
    /// PostgreSQL, shared by every node.
    Shared(crate::pg::audit::Appender),
}

/// The chain's end and where it is written.
struct Chain {
    store: Arc<Store>,
    signing_key: Arc<SigningKey>,
    state: Mutex<ChainState>,
}

/// What the writer knows of the trail.
struct ChainState {
    /// The newest record.
    last: Option<AuditRecord>,
    /// The last outbox row the trail holds.
    outbox_through: i64,
    /// The newest record whose head store.db holds, and when it was written.
    head_seq: Option<u64>,
    head_written: Instant,
}

/// One request's records, waiting for the writer.
struct Pending {
    events: Vec<AuditEvent>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Puts a write's audit `event` into store.db's outbox, on `conn` inside the write's own
/// transaction: the write and its record commit together or not at all. The writer thread
/// moves it into the trail before the request answers.
pub fn push_to_outbox(conn: &Connection, event: &AuditEvent) -> Result<(), ServerError> {
    let json = serde_json::to_string(event).map_err(|e| ServerError::Store(e.to_string()))?;
    conn.prepare_cached("INSERT INTO main.audit_outbox (event) VALUES (?1)")
        .and_then(|mut insert| insert.execute([json]))
        .map_err(ServerError::from)?;
    Ok(())
}

impl AuditLog {
    /// Opens the trail in `store`, continuing from its last record: refuses a trail that no
    /// longer reaches the head store.db remembers (rolled back, or rewritten), moves what
    /// the outbox holds into it (writes whose records a crash left there), and starts the
    /// writer.
    pub fn open(store: Arc<Store>, signing_key: Arc<SigningKey>) -> Result<Self, ServerError> {
        let (last, outbox_through, head) = {
            let conn = store.lock();
            let last = last_record(&conn)?;
            let through: i64 = conn
                .query_row("SELECT outbox_through FROM audit_state WHERE id = 1", [], |r| r.get(0))
                .map_err(ServerError::from)?;
            let refuse = |e: VerifyError| ServerError::AuditBroken(format!("{e}; the server will not append to it"));
            let head = remembered_head(&conn).map_err(refuse)?;
            match &head {
                Some(head) => {
                    check_head(head, &signing_key.verifying_key(), |seq| record_at(&conn, seq), last.as_ref())
                        .map_err(refuse)?;
                }
                None if last.is_some() => return Err(refuse(VerifyError::HeadMissing)),
                None => {}
            }
            (last, through, head)
        };
        let chain = Arc::new(Chain {
            store,
            signing_key,
            state: Mutex::new(ChainState {
                last,
                outbox_through,
                head_seq: head.map(|h| h.seq),
                head_written: Instant::now(),
            }),
        });
        // What a crash left in the outbox goes into the trail before anything else; and rows
        // a kill left between moving them into the trail and clearing them are cleared.
        chain.append_group(Vec::new())?;
        chain.write_head(&mut chain.lock_state(), true)?;
        let (queue, pending) = mpsc::channel();
        let writer = chain.clone();
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(&pending))
            .map_err(|e| ServerError::Store(format!("cannot start the audit writer: {e}")))?;
        Ok(Self(Keeper::Embedded { chain, queue: Some(queue), writer: Some(writer) }))
    }

    /// The trail of a PostgreSQL deployment, appended through `pool` (a node's), its
    /// checkpoints signed by `signing_key`. A write's record commits with the write there
    /// ([`crate::pg::records`]), so a request that wrote adds none here.
    pub fn postgres(pool: deadpool_postgres::Pool, signing_key: Arc<SigningKey>) -> Self {
        Self(Keeper::Shared(crate::pg::audit::Appender::start(pool, signing_key)))
    }

    /// The embedded chain, for the blocking appends tools and tests make.
    fn chain(&self) -> Result<&Arc<Chain>, ServerError> {
        match &self.0 {
            Keeper::Embedded { chain, .. } => Ok(chain),
            Keeper::Shared(_) => {
                Err(ServerError::Invalid("the trail is in PostgreSQL: append through `record`".into()))
            }
        }
    }

    /// Appends `events` in order, all or none, and returns once they — and any write
    /// records waiting in the outbox — are durable in the trail. Records of concurrent
    /// requests share one commit.
    pub async fn record(&self, events: Vec<AuditEvent>) -> Result<(), ServerError> {
        let queue = match &self.0 {
            Keeper::Embedded { queue, .. } => queue,
            Keeper::Shared(appender) => return appender.record(events).await,
        };
        let stopped = || ServerError::Store("the audit writer stopped".into());
        let (done, committed) = tokio::sync::oneshot::channel();
        queue
            .as_ref()
            .ok_or_else(stopped)?
            .send(Pending { events, done })
            .map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?.map_err(ServerError::Store)
    }

    /// Appends `event` (and, every [`CHECKPOINT_EVERY`] records, a signed checkpoint).
    /// Blocking: call from `spawn_blocking`.
    pub fn append(&self, event: AuditEvent) -> Result<AuditRecord, ServerError> {
        self.append_all(vec![event])?;
        Ok(self.chain()?.lock_state().last.clone().expect("just appended"))
    }

    /// Appends `events` in order, in one transaction: all or none. Blocking.
    pub fn append_all(&self, events: Vec<AuditEvent>) -> Result<(), ServerError> {
        self.chain()?.append_group(events)
    }
}

impl Drop for AuditLog {
    /// Stops the writer once it has committed what was queued, leaving store.db's head
    /// current.
    fn drop(&mut self) {
        if let Keeper::Embedded { queue, writer, .. } = &mut self.0 {
            *queue = None;
            if let Some(writer) = writer.take() {
                let _ = writer.join();
            }
        }
    }
}

/// Gives a trail from before heads were kept (migration [`crate::store::AUDIT_HEAD_SINCE`])
/// its first head, signed over its newest record. Called once, as the store is upgraded.
pub fn adopt(store: &Store, signing_key: &SigningKey) -> Result<(), ServerError> {
    let conn = store.lock();
    let Some(last) = last_record(&conn)? else { return Ok(()) };
    let head = serde_json::to_string(&Checkpoint::sign_head(&last, signing_key)).unwrap_or_default();
    conn.execute("INSERT OR IGNORE INTO main.audit_head (id, checkpoint) VALUES (1, ?1)", [head])?;
    Ok(())
}

impl Chain {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, ChainState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: takes what has queued, commits it at once, answers each request;
    /// between requests, brings store.db's head up to date. Ends when the log is dropped,
    /// leaving the head current.
    fn run(&self, pending: &mpsc::Receiver<Pending>) {
        loop {
            let first = match pending.recv_timeout(HEAD_EVERY) {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    self.keep_head();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut group = vec![first];
            while group.len() < GROUP_MAX {
                match pending.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            let (events, waiting): (Vec<_>, Vec<_>) = group.into_iter().map(|p| (p.events, p.done)).unzip();
            let result = self
                .append_group(events.into_iter().flatten().collect())
                .map_err(|e| e.to_string());
            for done in waiting {
                let _ = done.send(result.clone());
            }
        }
        self.keep_head();
    }

    /// Appends what the outbox holds, then `events`, in one audit.db transaction (all or
    /// none); then clears the moved outbox rows and, when due, writes the head into
    /// store.db.
    fn append_group(&self, events: Vec<AuditEvent>) -> Result<(), ServerError> {
        let mut state = self.lock_state();
        let mut conn = self.store.lock();
        let outbox: Vec<(i64, String)> = conn
            .prepare_cached("SELECT id, event FROM main.audit_outbox WHERE id > ?1 ORDER BY id")
            .and_then(|mut stmt| {
                stmt.query_map([state.outbox_through], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(ServerError::from)?;
        let mut all = Vec::with_capacity(outbox.len() + events.len());
        for (_, json) in &outbox {
            all.push(serde_json::from_str::<AuditEvent>(json).map_err(|e| ServerError::Store(e.to_string()))?);
        }
        all.extend(events);
        let through = outbox.last().map_or(state.outbox_through, |(id, _)| *id);
        let tx = conn.transaction().map_err(ServerError::from)?;
        let mut newest = state.last.clone();
        let mut signed = false;
        for event in all {
            let record = AuditRecord::append(newest.as_ref(), event);
            let json = serde_json::to_string(&record).map_err(|e| ServerError::Store(e.to_string()))?;
            let seq = i64::try_from(record.seq).map_err(|_| ServerError::Store("audit sequence overflow".into()))?;
            tx.prepare_cached("INSERT INTO audit_log (seq, record) VALUES (?1, ?2)")
                .and_then(|mut insert| insert.execute(params![seq, json]))
                .map_err(ServerError::from)?;
            if (record.seq + 1).is_multiple_of(CHECKPOINT_EVERY) {
                let checkpoint = Checkpoint::sign(&record, &self.signing_key);
                let text = serde_json::to_string(&checkpoint).unwrap_or_default();
                tx.execute("INSERT INTO audit_checkpoints (seq, checkpoint) VALUES (?1, ?2)", params![seq, text])
                    .map_err(ServerError::from)?;
                signed = true;
            }
            newest = Some(record);
        }
        if through != state.outbox_through {
            tx.execute("UPDATE audit_state SET outbox_through = ?1 WHERE id = 1", [through])
                .map_err(ServerError::from)?;
        }
        tx.commit().map_err(ServerError::from)?;
        state.last = newest;
        let moved = through != state.outbox_through;
        state.outbox_through = through;
        drop(conn);
        // store.db is written here only when the group had writes (whose outbox rows are
        // cleared now), signed a checkpoint, or the head is overdue.
        // The first record of a trail gets its head at once: from then on a missing head is
        // tampering.
        if moved || signed || state.head_seq.is_none() {
            self.write_head(&mut state, moved)?;
        } else if state.head_written.elapsed() >= HEAD_EVERY {
            self.write_head(&mut state, false)?;
        }
        Ok(())
    }

    /// Brings the head up to date if the trail moved past it (between requests, and at
    /// shutdown).
    fn keep_head(&self) {
        if let Err(e) = self.write_head(&mut self.lock_state(), false) {
            tracing::error!(error = %e, "could not record the audit trail's head");
        }
    }

    /// Writes the signed head into store.db (and, with `clear_outbox`, forgets the outbox
    /// rows the trail now holds), in one store.db transaction.
    fn write_head(&self, state: &mut ChainState, clear_outbox: bool) -> Result<(), ServerError> {
        let Some(last) = &state.last else { return Ok(()) };
        if state.head_seq == Some(last.seq) && !clear_outbox {
            state.head_written = Instant::now();
            return Ok(());
        }
        let head = serde_json::to_string(&Checkpoint::sign_head(last, &self.signing_key)).unwrap_or_default();
        let mut conn = self.store.lock();
        let tx = conn.transaction().map_err(ServerError::from)?;
        if clear_outbox {
            tx.execute("DELETE FROM main.audit_outbox WHERE id <= ?1", [state.outbox_through])
                .map_err(ServerError::from)?;
        }
        tx.execute(
            "INSERT INTO main.audit_head (id, checkpoint) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET checkpoint = excluded.checkpoint",
            [head],
        )
        .map_err(ServerError::from)?;
        tx.commit().map_err(ServerError::from)?;
        state.head_seq = Some(last.seq);
        state.head_written = Instant::now();
        Ok(())
    }
}

/// The signed head store.db remembers, if any.
fn remembered_head(conn: &Connection) -> Result<Option<Checkpoint>, VerifyError> {
    let text: Option<String> = conn
        .query_row("SELECT checkpoint FROM main.audit_head WHERE id = 1", [], |r| r.get(0))
        .optional()
        .map_err(|e| VerifyError::Store(e.into()))?;
    text.map(|t| serde_json::from_str(&t).map_err(|_| VerifyError::HeadForged))
        .transpose()
}

/// The record at `seq`, if the trail has it.
fn record_at(conn: &Connection, seq: u64) -> Result<Option<AuditRecord>, VerifyError> {
    let seq = i64::try_from(seq).map_err(|_| VerifyError::Unreadable(i64::MAX))?;
    let json: Option<String> = conn
        .query_row("SELECT record FROM audit_log WHERE seq = ?1", [seq], |r| r.get(0))
        .optional()
        .map_err(|e| VerifyError::Store(e.into()))?;
    json.map(|j| serde_json::from_str(&j).map_err(|_| VerifyError::Unreadable(seq)))
        .transpose()
}

/// Checks that the trail still reaches the head store.db remembers: signed by this server,
/// and the record it names still there with the hash it had.
fn check_head(
    head: &Checkpoint,
    key: &VerifyingKey,
    record_at: impl Fn(u64) -> Result<Option<AuditRecord>, VerifyError>,
    last: Option<&AuditRecord>,
) -> Result<(), VerifyError> {
    if !head.verifies_as_head(key) {
        return Err(VerifyError::HeadForged);
    }
    match record_at(head.seq)? {
        None => Err(VerifyError::RolledBack { len: last.map_or(0, |l| l.seq + 1), seen: head.seq }),
        Some(record) if record.hash != head.hash => {
            Err(VerifyError::Broken(ChainError::Rewritten { from: 0, checkpoint: head.seq }))
        }
        Some(_) => Ok(()),
    }
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked, archived and live.
    pub records: u64,
    /// Checkpoints whose signatures held.
    pub checkpoints: u64,
    /// Sealed archives checked.
    pub archives: u64,
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
    /// A search column (patient, time, tenant, user) disagrees with the chained record.
    #[error("record #{0}: its search columns were changed apart from the record")]
    IndexEdited(i64),
    /// The trail is shorter than the head store.db remembers: an older copy was put back.
    #[error(
        "the trail holds {len} records but the server had recorded up to #{seen}: audit.db was rolled back or \
         cut short; restore its latest copy"
    )]
    RolledBack {
        /// Records the trail holds.
        len: u64,
        /// The newest record the server had written.
        seen: u64,
    },
    /// The head store.db remembers is not signed by this server.
    #[error("the audit trail's remembered head is not signed by this server: store.db was edited")]
    HeadForged,
    /// The trail has records, but store.db no longer holds its head.
    #[error("store.db no longer holds the audit trail's head: it was edited or replaced; restore it")]
    HeadMissing,
    /// A sealed archive is missing, altered, or out of place.
    #[error("audit archive {0}")]
    Archive(String),
    /// A hash anchored outside the server is no longer in the trail.
    #[error("no record of the trail has the anchored hash {0}: the trail was rewritten since it was anchored")]
    AnchorMissing(ChainHash),
    /// The store failed.
    #[error("{0}")]
    Store(ServerError),
}

/// Checks the whole trail against `key`: the sealed archives in `archive_dir`, then the live
/// trail continuing them — links, content, order, every checkpoint (each signed, none
/// missing), the search columns against the records, that the trail reaches the head
/// store.db remembers, and that it still holds every hash in `anchors` (checkpoint hashes
/// kept outside the server).
pub fn verify(
    store: &Store,
    key: &VerifyingKey,
    archive_dir: &std::path::Path,
    anchors: &[ChainHash],
) -> Result<Verified, VerifyError> {
    let conn = store.lock();
    let failed = |e: rusqlite::Error| VerifyError::Store(e.into());
    let mut unseen: std::collections::HashSet<ChainHash> = anchors.iter().copied().collect();
    let mut archived = 0_u64;
    let (first, prev, archived_checkpoints) = super::archive::verify_archives(&conn, archive_dir, key, |record| {
        unseen.remove(&record.hash);
        archived += 1;
    })?;
    let archive_count: u64 = conn
        .query_row("SELECT count(*) FROM audit.audit_archives", [], |r| r.get(0))
        .map_err(failed)?;
    let mut records = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT seq, record, patient, recorded_at, tenant, user_id FROM audit_log ORDER BY seq")
            .map_err(failed)?;
        let mut rows = stmt.query([]).map_err(failed)?;
        while let Some(row) = rows.next().map_err(failed)? {
            let seq: i64 = row.get(0).map_err(failed)?;
            let record: AuditRecord = serde_json::from_str(&row.get::<_, String>(1).map_err(failed)?)
                .map_err(|_| VerifyError::Unreadable(seq))?;
            let columns: (Option<String>, Option<String>, Option<String>, Option<String>) = (
                row.get(2).map_err(failed)?,
                row.get(3).map_err(failed)?,
                row.get(4).map_err(failed)?,
                row.get(5).map_err(failed)?,
            );
            let e = &record.event;
            let derived = (e.patient.clone(), Some(e.recorded_at.clone()), Some(e.tenant.clone()), e.user.clone());
            if columns != derived || u64::try_from(seq).ok() != Some(record.seq) {
                return Err(VerifyError::IndexEdited(seq));
            }
            records.push(record);
        }
    }
    let mut checkpoints = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT seq, checkpoint FROM audit_checkpoints ORDER BY seq")
            .map_err(failed)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(failed)?;
        for row in rows {
            let (seq, json) = row.map_err(failed)?;
            checkpoints.push(serde_json::from_str::<Checkpoint>(&json).map_err(|_| VerifyError::Unreadable(seq))?);
        }
    }
    verify_chain_from(first, prev, &records, &checkpoints, key).map_err(VerifyError::Broken)?;
    require_checkpoints_in(first..first + records.len() as u64, &checkpoints, CHECKPOINT_EVERY)
        .map_err(VerifyError::Broken)?;
    match remembered_head(&conn)? {
        Some(head) => {
            let at = |seq: u64| {
                Ok(seq
                    .checked_sub(first)
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| records.get(i))
                    .cloned())
            };
            check_head(&head, key, at, records.last())?;
        }
        None if first + records.len() as u64 > 0 => return Err(VerifyError::HeadMissing),
        None => {}
    }
    for record in &records {
        unseen.remove(&record.hash);
    }
    if let Some(missing) = unseen.into_iter().next() {
        return Err(VerifyError::AnchorMissing(missing));
    }
    Ok(Verified {
        records: archived + records.len() as u64,
        checkpoints: archived_checkpoints + checkpoints.len() as u64,
        archives: archive_count,
    })
}

/// The trail's newest record, if it has one.
pub(crate) fn last_record(conn: &Connection) -> Result<Option<AuditRecord>, ServerError> {
    conn.query_row("SELECT record FROM audit.audit_log ORDER BY seq DESC LIMIT 1", [], |r| r.get::<_, String>(0))
        .optional()?
        .map(|json| serde_json::from_str(&json))
        .transpose()
        .map_err(|_| ServerError::Store("the last audit record is unreadable; run `audit verify`".into()))
}

/// The trail's newest record as a signed checkpoint, to anchor outside the server; `None`
/// while the trail is empty.
pub fn checkpoint(store: &Store, key: &SigningKey) -> Result<Checkpoint, ServerError> {
    let last = last_record(&store.read())?
        .ok_or_else(|| ServerError::Invalid("the audit trail is empty: there is nothing to anchor yet".into()))?;
    Ok(Checkpoint::sign(&last, key))
}

/// "Who accessed this patient's record": records naming `patient`, between `from` and `to`
/// (RFC 3339, inclusive), oldest first. The columns it filters on are derived from the
/// chained JSON, and it checks the JSON again.
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

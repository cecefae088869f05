//! The audit trail in PostgreSQL: one hash chain per tenant, in the rule
//! [`carekeep_protocol::audit`] defines, with a signed checkpoint every
//! [`crate::audit::CHECKPOINT_EVERY`] records — one sequence per tenant however many servers
//! append at once. An append takes the tenant's advisory lock for its transaction, reads the
//! chain's end, and writes a whole group of records (one commit for many requests, as the
//! SQLCipher trail's group commit does); the primary key (tenant, seq) would refuse a fork
//! even without the lock. The application role may only read and insert here.

use carekeep_protocol::audit::{AuditEvent, AuditRecord, Checkpoint, require_checkpoints, verify_chain};
use ed25519_dalek::{SigningKey, VerifyingKey};
use tokio_postgres::{Client, Transaction};

use super::failed;
use crate::ServerError;
use crate::audit::CHECKPOINT_EVERY;

/// The first key of the audit's advisory locks (the second is the tenant's hash).
const AUDIT_LOCK: i32 = 0x6175_6474; // "audt"

/// Appends `events` (all of `tenant`) to the tenant's chain, in one transaction: all or
/// none, adjacent, after whatever any server appended before. Returns the last record.
pub async fn append(
    client: &mut Client,
    key: &SigningKey,
    tenant: &str,
    events: Vec<AuditEvent>,
) -> Result<Option<AuditRecord>, ServerError> {
    // READ COMMITTED whatever the role's default: the chain's end is read after the lock.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(failed)?;
    tx.execute("SELECT set_config('carekeep.tenant', $1, true)", &[&tenant])
        .await
        .map_err(failed)?;
    let last = append_in(&tx, key, tenant, events).await?;
    tx.commit().await.map_err(failed)?;
    Ok(last)
}

/// Takes `tenant`'s chain (and write) lock for the rest of `tx`: the lock every append and
/// every write of records of the tenant holds until it commits.
pub(crate) async fn lock_tenant(tx: &Transaction<'_>, tenant: &str) -> Result<(), tokio_postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&AUDIT_LOCK, &tenant])
        .await
        .map(drop)
}

/// As [`append`], inside `tx` (already in `tenant`): the records commit with the write
/// they describe, or not at all.
pub(crate) async fn append_in(
    tx: &Transaction<'_>,
    key: &SigningKey,
    tenant: &str,
    events: Vec<AuditEvent>,
) -> Result<Option<AuditRecord>, ServerError> {
    if events.iter().any(|e| e.tenant != tenant) {
        return Err(ServerError::Invalid("an audit event of another tenant was appended to this one's chain".into()));
    }
    lock_tenant(tx, tenant).await.map_err(failed)?;
    let mut last: Option<AuditRecord> = tx
        .query_opt("SELECT record FROM audit_log WHERE tenant = $1 ORDER BY seq DESC LIMIT 1", &[&tenant])
        .await
        .map_err(failed)?
        .map(|row| serde_json::from_str(row.get::<_, &str>(0)))
        .transpose()
        .map_err(|_| ServerError::AuditBroken("the newest audit record is unreadable; run `audit verify`".into()))?;
    for event in events {
        let record = AuditRecord::append(last.as_ref(), event);
        let seq = i64::try_from(record.seq).map_err(|_| ServerError::Store("audit sequence overflow".into()))?;
        let json = serde_json::to_string(&record).map_err(|e| ServerError::Store(e.to_string()))?;
        tx.execute("INSERT INTO audit_log (tenant, seq, record) VALUES ($1, $2, $3)", &[&tenant, &seq, &json])
            .await
            .map_err(failed)?;
        if (record.seq + 1).is_multiple_of(CHECKPOINT_EVERY) {
            let checkpoint = serde_json::to_string(&Checkpoint::sign(&record, key)).unwrap_or_default();
            tx.execute(
                "INSERT INTO audit_checkpoints (tenant, seq, checkpoint) VALUES ($1, $2, $3)",
                &[&tenant, &seq, &checkpoint],
            )
            .await
            .map_err(failed)?;
        }
        last = Some(record);
    }
    Ok(last)
}

/// The tenants whose chains the trail holds (`-`, records of callers not known, among
/// them), through the schema's `audit_chains()`.
pub async fn chains(client: &Client) -> Result<Vec<String>, ServerError> {
    let rows = client
        .query("SELECT * FROM audit_chains() ORDER BY 1", &[])
        .await
        .map_err(failed)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Checks `tenant`'s whole chain against `key`: links, content, order, every checkpoint
/// signed and none missing. Returns the records checked.
pub async fn verify(client: &mut Client, key: &VerifyingKey, tenant: &str) -> Result<Vec<AuditRecord>, ServerError> {
    // One snapshot for the records and the checkpoints.
    let tx = super::snapshot(client).await.map_err(failed)?;
    tx.execute("SELECT set_config('carekeep.tenant', $1, true)", &[&tenant])
        .await
        .map_err(failed)?;
    let unreadable = |seq: i64| ServerError::AuditBroken(format!("record #{seq} is unreadable: it was edited"));
    let mut records = Vec::new();
    for row in tx
        .query("SELECT seq, record FROM audit_log WHERE tenant = $1 ORDER BY seq", &[&tenant])
        .await
        .map_err(failed)?
    {
        let seq: i64 = row.get(0);
        let record: AuditRecord = serde_json::from_str(row.get::<_, &str>(1)).map_err(|_| unreadable(seq))?;
        if record.event.tenant != tenant || i64::try_from(record.seq).ok() != Some(seq) {
            return Err(unreadable(seq));
        }
        records.push(record);
    }
    let mut checkpoints = Vec::new();
    for row in tx
        .query("SELECT seq, checkpoint FROM audit_checkpoints WHERE tenant = $1 ORDER BY seq", &[&tenant])
        .await
        .map_err(failed)?
    {
        let seq: i64 = row.get(0);
        checkpoints.push(serde_json::from_str::<Checkpoint>(row.get::<_, &str>(1)).map_err(|_| unreadable(seq))?);
    }
    tx.commit().await.map_err(failed)?;
    let broken = |e| ServerError::AuditBroken(format!("{e}"));
    verify_chain(&records, &checkpoints, key).map_err(broken)?;
    require_checkpoints(records.len() as u64, &checkpoints, CHECKPOINT_EVERY).map_err(broken)?;
    Ok(records)
}

/// Most requests' records one group commit takes.
const GROUP_MAX: usize = 512;

/// The append side of a node's audit on PostgreSQL: each tenant's requests hand their
/// records to that tenant's task, which appends whatever has queued up in one transaction
/// under the tenant's lock (group commit) and only then lets each request answer. Tenants
/// do not wait for each other: a tenant whose lock is held (a long Bundle) delays its own
/// records only. Records no known caller made (a failed sign-in) go to the chain of tenant
/// `-`, which no tenant id can be.
pub struct Appender {
    pool: deadpool_postgres::Pool,
    key: std::sync::Arc<SigningKey>,
    tenants: std::sync::Mutex<std::collections::HashMap<String, tokio::sync::mpsc::UnboundedSender<Pending>>>,
}

/// One request's records, waiting for its tenant's task.
struct Pending {
    events: Vec<AuditEvent>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl Appender {
    /// An appender writing through `pool` (a node's) with checkpoints signed by `key`; its
    /// tasks start on the current runtime as tenants first record.
    pub fn start(pool: deadpool_postgres::Pool, key: std::sync::Arc<SigningKey>) -> Self {
        Self { pool, key, tenants: std::sync::Mutex::new(std::collections::HashMap::new()) }
    }

    /// `tenant`'s queue, its task started if this is its first record.
    fn queue(&self, tenant: &str) -> tokio::sync::mpsc::UnboundedSender<Pending> {
        let mut tenants = self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(queue) = tenants.get(tenant).filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let (queue, pending) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run(self.pool.clone(), self.key.clone(), tenant.to_owned(), pending));
        tenants.insert(tenant.to_owned(), queue.clone());
        queue
    }

    /// Appends `events` (all of one tenant, or none) and returns once they are committed.
    pub async fn record(&self, events: Vec<AuditEvent>) -> Result<(), ServerError> {
        let Some(tenant) = events.first().map(|e| e.tenant.clone()) else { return Ok(()) };
        if events.iter().any(|e| e.tenant != tenant) {
            return Err(ServerError::Invalid("one request's audit records name two tenants".into()));
        }
        let stopped = || ServerError::Store("the audit writer stopped".into());
        let (done, committed) = tokio::sync::oneshot::channel();
        self.queue(&tenant).send(Pending { events, done }).map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?.map_err(ServerError::Store)
    }
}

/// One tenant's task: appends what its requests queued, a group per transaction.
async fn run(
    pool: deadpool_postgres::Pool,
    key: std::sync::Arc<SigningKey>,
    tenant: String,
    mut pending: tokio::sync::mpsc::UnboundedReceiver<Pending>,
) {
    while let Some(first) = pending.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match pending.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let events: Vec<AuditEvent> = group.iter().flat_map(|p| p.events.iter().cloned()).collect();
        let appended = match super::pooled(&pool).await {
            Ok(mut client) => append(&mut client, &key, &tenant, events).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = &appended {
            tracing::error!(error = %e, "audit append to PostgreSQL failed");
        }
        let answer = appended.map_err(|e| e.to_string());
        for request in group {
            let _ = request.done.send(answer.clone());
        }
    }
}

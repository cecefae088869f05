//! The server's store: two SQLCipher files keyed from the master key — the records and
//! accounts (`main`), and the audit trail (attached as `audit`, its own key).
//!
//! One writing connection behind a mutex, and a few read-only ones beside it: in WAL mode
//! readers never wait for the writer. The audit lives apart because it commits on every
//! request, and any commit to a file makes the other connections drop their cached (already
//! decrypted) pages of that file; apart, reads of records stay cached. All connections are
//! used from `spawn_blocking`; handlers never hold one across an await.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::ServerError;

const MIGRATIONS: &[&str] = &[
    // 1: tenants, users, sign-in state, devices, tokens (only their hashes), the audit chain.
    "CREATE TABLE tenants (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE users (
        id               TEXT PRIMARY KEY,
        tenant           TEXT NOT NULL REFERENCES tenants (id),
        username         TEXT NOT NULL UNIQUE,
        role             TEXT NOT NULL,
        password_hash    TEXT NOT NULL,
        totp_secret      BLOB NOT NULL,
        totp_pending     BLOB,
        totp_last_step   INTEGER NOT NULL DEFAULT -1,
        failed_attempts  INTEGER NOT NULL DEFAULT 0,
        locked_until     INTEGER NOT NULL DEFAULT 0,
        disabled         INTEGER NOT NULL DEFAULT 0,
        created_at       INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE mfa_challenges (
        token_hash  BLOB PRIMARY KEY,
        user_id     TEXT NOT NULL REFERENCES users (id),
        expires_at  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE devices (
        id          TEXT PRIMARY KEY,
        user_id     TEXT NOT NULL REFERENCES users (id),
        name        TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        full_auth_at INTEGER NOT NULL,
        revoked     INTEGER NOT NULL DEFAULT 0,
        wipe        INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE TABLE refresh_tokens (
        token_hash  BLOB PRIMARY KEY,
        device_id   TEXT NOT NULL REFERENCES devices (id),
        issued_at   INTEGER NOT NULL,
        used        INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE TABLE audit_log (
        seq          INTEGER PRIMARY KEY,
        record       TEXT NOT NULL,
        patient      TEXT,
        recorded_at  TEXT NOT NULL
    ) STRICT;
    CREATE INDEX audit_by_patient ON audit_log (patient, recorded_at);
    CREATE TABLE audit_checkpoints (
        seq         INTEGER PRIMARY KEY,
        checkpoint  TEXT NOT NULL
    ) STRICT;
    CREATE TABLE access_tokens (
        token_hash  BLOB PRIMARY KEY,
        device_id   TEXT NOT NULL REFERENCES devices (id),
        expires_at  INTEGER NOT NULL,
        last_used   INTEGER NOT NULL
    ) STRICT;",
    // 2: FHIR resources (current version, with the fields searches filter on), who is linked
    // to which patient, break-glass grants, encrypted documents, and audit columns for
    // searching the trail by tenant and agent.
    "CREATE TABLE resources (
        tenant        TEXT NOT NULL REFERENCES tenants (id),
        type          TEXT NOT NULL,
        id            TEXT NOT NULL,
        version       INTEGER NOT NULL,
        last_updated  TEXT NOT NULL,
        patient       TEXT,
        category      TEXT,
        effective     TEXT,
        json          TEXT NOT NULL,
        PRIMARY KEY (tenant, type, id)
    ) STRICT;
    CREATE INDEX resources_by_patient ON resources (tenant, patient, last_updated, type, id);
    CREATE INDEX resources_by_type ON resources (tenant, type, last_updated, id);
    CREATE TABLE resource_codes (
        tenant  TEXT NOT NULL,
        type    TEXT NOT NULL,
        id      TEXT NOT NULL,
        system  TEXT,
        code    TEXT NOT NULL,
        FOREIGN KEY (tenant, type, id) REFERENCES resources (tenant, type, id) ON DELETE CASCADE
    ) STRICT;
    CREATE INDEX codes_by_code ON resource_codes (tenant, code, type, id);
    CREATE INDEX codes_by_resource ON resource_codes (tenant, type, id);
    CREATE TABLE patient_links (
        tenant    TEXT NOT NULL REFERENCES tenants (id),
        user_id   TEXT NOT NULL REFERENCES users (id),
        patient   TEXT NOT NULL,
        relation  TEXT NOT NULL CHECK (relation IN ('self', 'proxy', 'care-team')),
        PRIMARY KEY (user_id, patient)
    ) STRICT;
    CREATE TABLE break_glass (
        id          TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL REFERENCES tenants (id),
        user_id     TEXT NOT NULL REFERENCES users (id),
        patient     TEXT NOT NULL,
        reason      TEXT NOT NULL,
        opened_at   INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX break_glass_by_user ON break_glass (user_id, expires_at);
    CREATE TABLE documents (
        tenant        TEXT NOT NULL REFERENCES tenants (id),
        id            TEXT NOT NULL,
        patient       TEXT NOT NULL,
        content_type  TEXT NOT NULL,
        wrapped_key   BLOB NOT NULL,
        ciphertext    BLOB NOT NULL,
        PRIMARY KEY (tenant, id)
    ) STRICT;
    ALTER TABLE audit_log ADD COLUMN tenant TEXT;
    ALTER TABLE audit_log ADD COLUMN user_id TEXT;
    CREATE INDEX audit_by_tenant ON audit_log (tenant, recorded_at);",
    // 3: per-tenant, per-role idle limits for device sessions (absent: the server default).
    "CREATE TABLE idle_limits (
        tenant    TEXT NOT NULL REFERENCES tenants (id),
        role      TEXT NOT NULL,
        idle_secs INTEGER NOT NULL,
        PRIMARY KEY (tenant, role)
    ) STRICT;",
    // 4: the audit trail moves to its own file (attached as `audit`): its commits, one per
    // request, no longer make every reader of the records drop its page cache.
    "CREATE TABLE audit.audit_log (
        seq          INTEGER PRIMARY KEY,
        record       TEXT NOT NULL,
        patient      TEXT,
        recorded_at  TEXT NOT NULL,
        tenant       TEXT,
        user_id      TEXT
    ) STRICT;
    INSERT INTO audit.audit_log SELECT seq, record, patient, recorded_at, tenant, user_id FROM main.audit_log;
    CREATE INDEX audit.audit_by_patient ON audit_log (patient, recorded_at);
    CREATE INDEX audit.audit_by_tenant ON audit_log (tenant, recorded_at);
    CREATE TABLE audit.audit_checkpoints (
        seq         INTEGER PRIMARY KEY,
        checkpoint  TEXT NOT NULL
    ) STRICT;
    INSERT INTO audit.audit_checkpoints SELECT seq, checkpoint FROM main.audit_checkpoints;
    DROP TABLE main.audit_log;
    DROP TABLE main.audit_checkpoints;",
    // 5: a device revoked by a person (an admin, the user, a disabled account) is told so —
    // its app erases its cache — unlike one whose session merely ended (idle, token reuse).
    "ALTER TABLE devices ADD COLUMN revoked_by_person INTEGER NOT NULL DEFAULT 0;",
    // 6: offline-first sync. Writes replayed from a device's outbox apply once per
    // idempotency key; deletions leave a tombstone devices learn from; the newest record of
    // each device audit chain a user uploaded (one tip per chain: one per device profile).
    "CREATE TABLE idempotency (
        tenant      TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        key         TEXT NOT NULL,
        method      TEXT NOT NULL,
        type        TEXT NOT NULL,
        id          TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (tenant, user_id, key)
    ) STRICT;
    CREATE INDEX idempotency_by_age ON idempotency (created_at);
    CREATE TABLE removed (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant      TEXT NOT NULL,
        type        TEXT NOT NULL,
        id          TEXT NOT NULL,
        patient     TEXT,
        removed_at  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX removed_by_tenant ON removed (tenant, seq);
    CREATE TABLE device_audit_tips (
        user_id  TEXT NOT NULL,
        stream   TEXT NOT NULL,
        tip      TEXT NOT NULL,
        PRIMARY KEY (user_id, stream, tip)
    ) STRICT;",
    // 7: who last wrote each resource (a user id; NULL for what the clinic imported), so a
    // patient may change only what they recorded themselves.
    "ALTER TABLE resources ADD COLUMN written_by TEXT;",
    // 8: the audit trail's search columns are derived from the chained record itself, so
    // none can be edited apart from it (a NULLed patient column hid a patient's accesses
    // from "who viewed my record" while the chain still verified).
    "CREATE TABLE audit.audit_log_v2 (
        seq          INTEGER PRIMARY KEY,
        record       TEXT NOT NULL,
        patient      TEXT GENERATED ALWAYS AS (json_extract(record, '$.event.patient')) VIRTUAL,
        recorded_at  TEXT GENERATED ALWAYS AS (json_extract(record, '$.event.recorded_at')) VIRTUAL,
        tenant       TEXT GENERATED ALWAYS AS (json_extract(record, '$.event.tenant')) VIRTUAL,
        user_id      TEXT GENERATED ALWAYS AS (json_extract(record, '$.event.user')) VIRTUAL
    ) STRICT;
    INSERT INTO audit.audit_log_v2 (seq, record) SELECT seq, record FROM audit.audit_log;
    DROP TABLE audit.audit_log;
    ALTER TABLE audit.audit_log_v2 RENAME TO audit_log;
    CREATE INDEX audit.audit_by_patient ON audit_log (patient, recorded_at);
    CREATE INDEX audit.audit_by_tenant ON audit_log (tenant, recorded_at);",
    // 9: a write's audit record commits with the write, in store.db's outbox, and moves to
    // the trail after (`outbox_through`: the last outbox row the trail holds). store.db also
    // keeps the trail's signed head, so an older copy of audit.db put back is noticed.
    "CREATE TABLE main.audit_outbox (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        event  TEXT NOT NULL
    ) STRICT;
    CREATE TABLE audit.audit_state (
        id              INTEGER PRIMARY KEY CHECK (id = 1),
        outbox_through  INTEGER NOT NULL
    ) STRICT;
    INSERT INTO audit.audit_state (id, outbox_through) VALUES (1, 0);
    CREATE TABLE main.audit_head (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        checkpoint  TEXT NOT NULL
    ) STRICT;",
    // 10: sign-in budgets replace the account lock (users.failed_attempts and locked_until
    // are no longer read): one per account for unknown devices and one per known device,
    // under a keyed hash; a half-finished sign-in carries its budget to the second step.
    "CREATE TABLE sign_in_budgets (
        bucket         BLOB PRIMARY KEY,
        failures       INTEGER NOT NULL,
        blocked_until  INTEGER NOT NULL,
        last_failure   INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX sign_in_budgets_by_age ON sign_in_budgets (last_failure);
    ALTER TABLE mfa_challenges ADD COLUMN bucket BLOB;
    ALTER TABLE mfa_challenges ADD COLUMN known_device INTEGER NOT NULL DEFAULT 0;",
    // 11: an idempotency key is remembered with a hash of its request, so the key with
    // another body or target is refused instead of answered with the earlier write.
    "ALTER TABLE idempotency ADD COLUMN request_hash BLOB;",
    // 12: each document knows its DocumentReference, so deleting the reference (or a new
    // version that no longer links it) deletes the bytes in the same transaction. Existing
    // documents are matched to the reference linking them; those no reference links any
    // more (left behind by a deletion) are removed now.
    "ALTER TABLE documents ADD COLUMN resource_id TEXT;
    UPDATE documents SET resource_id = (
        SELECT r.id FROM resources r, json_each(r.json, '$.content') c
        WHERE r.tenant = documents.tenant AND r.type = 'DocumentReference'
          AND json_extract(c.value, '$.attachment.url') = '/documents/' || documents.id
        LIMIT 1);
    DELETE FROM documents WHERE resource_id IS NULL;
    CREATE INDEX documents_by_resource ON documents (tenant, resource_id);",
    // 13: what a tenant's admins should look at (a clinician over the break-glass limit).
    "CREATE TABLE admin_alerts (
        id         TEXT PRIMARY KEY,
        tenant     TEXT NOT NULL REFERENCES tenants (id),
        kind       TEXT NOT NULL,
        user_id    TEXT NOT NULL REFERENCES users (id),
        raised_at  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX admin_alerts_by_tenant ON admin_alerts (tenant, raised_at);
    CREATE INDEX break_glass_by_opening ON break_glass (user_id, opened_at);",
    // 14: business identifiers (an MRN, an NPI, a source system's id), so a Bundle's
    // conditional create and conditional references find the record they name, and an
    // import run twice finds what the first run stored. Existing records are indexed now.
    "CREATE TABLE resource_identifiers (
        tenant  TEXT NOT NULL,
        type    TEXT NOT NULL,
        id      TEXT NOT NULL,
        system  TEXT NOT NULL,
        value   TEXT NOT NULL
    ) STRICT;
    CREATE INDEX identifiers_by_value ON resource_identifiers (tenant, type, value, system);
    CREATE INDEX identifiers_by_resource ON resource_identifiers (tenant, type, id);
    INSERT INTO resource_identifiers (tenant, type, id, system, value)
        SELECT r.tenant, r.type, r.id, coalesce(json_extract(i.value, '$.system'), ''), json_extract(i.value, '$.value')
        FROM resources r, json_each(r.json, '$.identifier') i
        WHERE json_type(r.json, '$.identifier') = 'array' AND json_type(i.value, '$.value') = 'text';
    INSERT INTO resource_identifiers (tenant, type, id, system, value)
        SELECT tenant, type, id, coalesce(json_extract(json, '$.identifier.system'), ''),
               json_extract(json, '$.identifier.value')
        FROM resources
        WHERE json_type(json, '$.identifier') = 'object' AND json_type(json, '$.identifier.value') = 'text';",
    // 15: Bulk Data exports: who asked for what, and the files, each encrypted like a
    // document (its own key, wrapped by the documents key), kept a day.
    "CREATE TABLE exports (
        id          TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL REFERENCES tenants (id),
        user_id     TEXT NOT NULL REFERENCES users (id),
        request     TEXT NOT NULL,
        status      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        finished_at TEXT
    ) STRICT;
    CREATE TABLE export_files (
        export_id   TEXT NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
        n           INTEGER NOT NULL,
        type        TEXT NOT NULL,
        count       INTEGER NOT NULL,
        patients    TEXT NOT NULL,
        wrapped_key BLOB NOT NULL,
        ciphertext  BLOB NOT NULL,
        PRIMARY KEY (export_id, n)
    ) STRICT;",
    // 16: a clinician's or nurse's own Practitioner record, so an import can put a patient
    // on the care team of the practitioner `Patient.generalPractitioner` names.
    "ALTER TABLE users ADD COLUMN practitioner TEXT;",
    // 17: sealed monthly archives of the audit trail (audit-archive/ in the data directory):
    // which run of the chain each holds, where it ends, and the SHA-256 of its file.
    "CREATE TABLE audit.audit_archives (
        first_seq  INTEGER PRIMARY KEY,
        last_seq   INTEGER NOT NULL,
        file       TEXT NOT NULL UNIQUE,
        last_hash  TEXT NOT NULL,
        sha256     TEXT NOT NULL
    ) STRICT;",
];

/// The migration from which the audit trail lives in its own file.
const AUDIT_FILE_SINCE: i64 = 4;

/// The migration from which store.db keeps the audit trail's signed head.
pub const AUDIT_HEAD_SINCE: i64 = 9;

/// Read-only connections beside the writer: enough for both cores and a blocked reader.
const READERS: usize = 4;

/// The encrypted store.
pub struct Store {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// The schema version the files had before this open migrated them.
    found_version: i64,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and its audit trail at `audit_path`,
    /// with keys derived from `master_key`. Refuses to start a new, empty trail beside
    /// records that already had one: a deleted audit file is tampering, not a fresh start.
    pub fn open(path: &Path, audit_path: &Path, master_key: &[u8]) -> Result<Self, ServerError> {
        let bad = |e: rusqlite::Error| ServerError::Store(e.to_string());
        let keys = Keys::derive(master_key);
        let mut writer = connect(path, &keys.main)?;
        if !audit_path.exists() && schema_version(&writer).map_err(bad)? >= AUDIT_FILE_SINCE {
            return Err(ServerError::Store(format!(
                "the audit trail {} is missing: restore it from a backup before the server may start",
                audit_path.display()
            )));
        }
        attach_audit(&writer, audit_path, &keys.audit)?;
        writer
            .query_row("PRAGMA main.journal_mode = WAL", [], |_| Ok(()))
            .map_err(bad)?;
        writer
            .query_row("PRAGMA audit.journal_mode = WAL", [], |_| Ok(()))
            .map_err(bad)?;
        let found_version = schema_version(&writer).map_err(bad)?;
        migrate(&mut writer).map_err(bad)?;
        // Every write transaction takes the write lock when it begins. A deferred one reads
        // first and asks for the lock later, and if another process (an import beside the
        // server) committed meanwhile SQLite cannot wait for it — its snapshot is stale — and
        // fails at once with "database is locked"; an immediate one waits its busy timeout.
        writer.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        let readers = (0..READERS)
            .map(|_| {
                let reader = connect(path, &keys.main)?;
                attach_audit(&reader, audit_path, &keys.audit)?;
                reader.execute_batch("PRAGMA query_only = ON;").map_err(bad)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<_, ServerError>>()?;
        Ok(Self { writer: Mutex::new(writer), readers, next_reader: AtomicUsize::new(0), found_version })
    }

    /// The schema version the files had before this open migrated them (0: a new store).
    pub fn found_version(&self) -> i64 {
        self.found_version
    }

    /// Whether this open migrated an existing store across `version` (a new store was
    /// never before it).
    pub fn upgraded_across(&self, version: i64) -> bool {
        (1..version).contains(&self.found_version)
    }

    /// The writing connection, for one short synchronous unit of work. Writes are
    /// serialised here; so are reads that must see their own transaction.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A read-only connection (writes fail on it), for a read that needs no transaction
    /// of its own. It sees everything committed before it starts.
    pub fn read(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..READERS {
            if let Ok(reader) = self.readers[(start + i) % READERS].try_lock() {
                return reader;
            }
        }
        self.readers[start % READERS].lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Copies the store and its audit trail, as both stood at one instant, to `main_out` and
/// `audit_out` (new files, keyed as the originals), while a running server keeps writing.
///
/// Commits to the two files are paused only for the instant it takes to open one read
/// snapshot of each (a write lock on both, held across two reads): the copies then come from
/// those snapshots with SQLite's online backup API while writers go on. A write and its
/// audit record therefore land both in the copy or neither. `facts` reads the same snapshot
/// (counts, the trail's last record) before the copies are made.
pub fn snapshot<T>(
    path: &Path,
    audit_path: &Path,
    master_key: &[u8],
    (main_out, audit_out): (&Path, &Path),
    facts: impl FnOnce(&Connection) -> Result<T, ServerError>,
) -> Result<T, ServerError> {
    for file in [path, audit_path] {
        if !file.exists() {
            return Err(ServerError::Store(format!("{} is missing: there is nothing to back up", file.display())));
        }
    }
    let keys = Keys::derive(master_key);
    let open = || -> Result<Connection, ServerError> {
        let conn = connect(path, &keys.main)?;
        attach_audit(&conn, audit_path, &keys.audit)?;
        Ok(conn)
    };
    let (freeze, reader) = (open()?, open()?);
    reader.execute_batch("PRAGMA query_only = ON;")?;
    freeze.execute_batch("BEGIN IMMEDIATE;")?;
    let begun = reader.execute_batch("BEGIN;").and_then(|()| {
        reader.query_row("SELECT count(*) FROM main.sqlite_master", [], |_| Ok(()))?;
        reader.query_row("SELECT count(*) FROM audit.sqlite_master", [], |_| Ok(()))
    });
    freeze.execute_batch("ROLLBACK;")?;
    drop(freeze);
    begun?;
    let facts = facts(&reader)?;
    copy_schema(&reader, "main", main_out, &keys.main)?;
    copy_schema(&reader, "audit", audit_out, &keys.audit)?;
    reader.execute_batch("COMMIT;")?;
    Ok(facts)
}

/// Copies schema `name` of `from` (inside its open read transaction) to a new file at `to`.
fn copy_schema(from: &Connection, name: &str, to: &Path, key: &[u8; 32]) -> Result<(), ServerError> {
    if to.exists() {
        return Err(ServerError::Store(format!("{} already exists", to.display())));
    }
    let mut copy = connect(to, key)?;
    // A staging copy: its durability is the sealed backup's (synced once, whole); a journal
    // and a sync per page would only double the writing.
    copy.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
    let backup = rusqlite::backup::Backup::new_with_names(from, name, &mut copy, rusqlite::MAIN_DB)?;
    match backup.step(-1)? {
        rusqlite::backup::StepResult::Done => Ok(()),
        other => Err(ServerError::Store(format!("copying {name} stopped early ({other:?})"))),
    }
}

/// The two files' raw SQLCipher keys.
struct Keys {
    main: Zeroizing<[u8; 32]>,
    audit: Zeroizing<[u8; 32]>,
}

impl Keys {
    fn derive(master_key: &[u8]) -> Self {
        Self {
            main: derive(b"carekeep.server.store.v1\0", master_key),
            audit: derive(b"carekeep.server.audit.v1\0", master_key),
        }
    }
}

fn derive(context: &[u8], master_key: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut kdf = Sha256::new();
    kdf.update(context);
    kdf.update(master_key);
    Zeroizing::new(kdf.finalize().into())
}

/// `x'…'`: SQLCipher's spelling of a raw key (no passphrase derivation).
fn raw_key(key: &[u8; 32]) -> Zeroizing<String> {
    let mut literal = Zeroizing::new(String::from("x'"));
    crate::ids::push_hex(&mut literal, key);
    literal.push('\'');
    literal
}

fn unreadable(_: rusqlite::Error) -> ServerError {
    ServerError::Store("the store cannot be opened with this master key".into())
}

/// One keyed connection to the records file, with the store's pragmas.
fn connect(path: &Path, key: &[u8; 32]) -> Result<Connection, ServerError> {
    let bad = |e: rusqlite::Error| ServerError::Store(e.to_string());
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(bad)?;
    conn.execute_batch("PRAGMA cipher_log_level = NONE;").map_err(bad)?;
    conn.pragma_update(None, "key", &*raw_key(key)).map_err(bad)?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .map_err(unreadable)?;
    conn.execute_batch(
        "PRAGMA main.synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;
         PRAGMA busy_timeout = 5000;",
    )
    .map_err(bad)?;
    Ok(conn)
}

/// Attaches the audit file (creating it if needed) as schema `audit`.
fn attach_audit(conn: &Connection, audit_path: &Path, key: &[u8; 32]) -> Result<(), ServerError> {
    let bad = |e: rusqlite::Error| ServerError::Store(e.to_string());
    let audit_path = audit_path
        .to_str()
        .ok_or_else(|| ServerError::Store("the audit path is not UTF-8".into()))?;
    conn.execute("ATTACH DATABASE ?1 AS audit KEY ?2", rusqlite::params![audit_path, &*raw_key(key)])
        .map_err(bad)?;
    conn.query_row("SELECT count(*) FROM audit.sqlite_master", [], |_| Ok(()))
        .map_err(unreadable)?;
    conn.execute_batch("PRAGMA audit.synchronous = FULL;").map_err(bad)
}

/// The schema version the store's files record (0: none yet).
pub(crate) fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    let exists: bool =
        conn.query_row("SELECT count(*) > 0 FROM main.sqlite_master WHERE name = 'schema_version'", [], |r| r.get(0))?;
    if !exists {
        return Ok(0);
    }
    conn.query_row("SELECT coalesce(max(version), 0) FROM main.schema_version", [], |r| r.get(0))
}

/// Applies every migration the store has not recorded, in order, each in its own
/// transaction with its record.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS main.schema_version (version INTEGER PRIMARY KEY) STRICT;")?;
    let applied: std::collections::HashSet<i64> = conn
        .prepare("SELECT version FROM main.schema_version")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for (version, sql) in (1_i64..).zip(MIGRATIONS).filter(|(version, _)| !applied.contains(version)) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [version])?;
        tx.commit()?;
    }
    Ok(())
}

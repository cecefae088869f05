//! Opening the SQLCipher database with a raw key, and its schema migrations.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::CacheError;
use crate::keys::Key256;
use crate::{Error, Result};

/// `PRAGMA application_id` of a Carekeep vault ("CkV1"): tells our file from any other.
const APPLICATION_ID: i32 = 0x436B_5631;

/// Page size: 16 KiB rather than SQLite's 4 KiB. Each page costs SQLCipher a cipher and
/// HMAC set-up besides its bytes; with bigger pages a bulk ingest runs ~30% faster (measured
/// by the ingest benchmark) while point reads stay well inside the unlock budget. A vault
/// whose length is not a multiple of it was truncated.
const PAGE_SIZE: u64 = 16384;
const PAGE_SIZE_PRAGMA: &str = "PRAGMA cipher_page_size = 16384;";

/// A `Connection` is never shared between threads, so SQLite's own per-call mutex is pure
/// cost (rusqlite's default too); no URI parsing, since paths are ours.
const OPEN_EXISTING: OpenFlags = OpenFlags::SQLITE_OPEN_READ_WRITE.union(OpenFlags::SQLITE_OPEN_NO_MUTEX);
const OPEN_CREATE: OpenFlags = OPEN_EXISTING.union(OpenFlags::SQLITE_OPEN_CREATE);

/// Schema migrations, applied in order inside one transaction each. Never edit a released
/// one: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: FHIR resources with their indexed columns, codes for search and trends, the outbox.
    "CREATE TABLE resources (
        pk            INTEGER PRIMARY KEY,
        type          TEXT NOT NULL,
        id            TEXT NOT NULL,
        version_id    TEXT,
        last_updated  TEXT,
        patient       TEXT,
        effective     TEXT,
        category      TEXT,
        json          TEXT NOT NULL,
        UNIQUE (type, id)
    ) STRICT;
    CREATE INDEX resources_by_patient ON resources (patient, type, effective);
    -- Clustered by resource (no separate rowid b-tree): replacing a resource's codes is
    -- one range delete.
    CREATE TABLE codes (
        resource   INTEGER NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
        seq        INTEGER NOT NULL,
        system     TEXT,
        code       TEXT NOT NULL,
        patient    TEXT,
        effective  TEXT,
        value      REAL,
        unit       TEXT,
        PRIMARY KEY (resource, seq)
    ) STRICT, WITHOUT ROWID;
    -- Covers the lab-trend query: one range scan, no table lookups.
    CREATE INDEX codes_trend ON codes (patient, code, effective, value, unit, system);
    CREATE TABLE outbox (
        seq              INTEGER PRIMARY KEY AUTOINCREMENT,
        idempotency_key  TEXT NOT NULL UNIQUE,
        method           TEXT NOT NULL CHECK (method IN ('create', 'update')),
        type             TEXT NOT NULL,
        id               TEXT,
        if_match         TEXT,
        body             TEXT NOT NULL,
        created_at       INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE meta (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    ) STRICT;",
    // 2: sync. Per patient: the server time the last complete pull reached, and the next
    // page of an unfinished one (an interrupted sync resumes there). Writes the server
    // refused or found in conflict, kept with its version and reason until the person
    // decides. Records read from this cache, chained, until the server has them.
    "CREATE TABLE sync_patients (
        patient  TEXT PRIMARY KEY,
        since    TEXT,
        cursor   TEXT
    ) STRICT;
    CREATE TABLE set_aside (
        seq              INTEGER PRIMARY KEY,
        kind             TEXT NOT NULL CHECK (kind IN ('conflict', 'rejected')),
        idempotency_key  TEXT NOT NULL,
        method           TEXT NOT NULL,
        type             TEXT NOT NULL,
        id               TEXT,
        if_match         TEXT,
        body             TEXT NOT NULL,
        created_at       INTEGER NOT NULL,
        server_version   TEXT,
        reason           TEXT NOT NULL
    ) STRICT;
    CREATE TABLE access_log (
        seq     INTEGER PRIMARY KEY,
        record  TEXT NOT NULL
    ) STRICT;",
    // 3: documents (a DocumentReference's attachments) downloaded to this device, kept
    // inside the encrypted cache and gone with their DocumentReference.
    "CREATE TABLE documents (
        url           TEXT PRIMARY KEY,
        resource      INTEGER NOT NULL REFERENCES resources (pk) ON DELETE CASCADE,
        content_type  TEXT NOT NULL,
        bytes         BLOB NOT NULL,
        fetched_at    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX documents_by_resource ON documents (resource);",
];

/// Creates a new, empty vault database at `path`, keyed with `k_db`.
pub(crate) fn create(path: &Path, k_db: &Key256) -> Result<Connection> {
    let mut conn = Connection::open_with_flags(path, OPEN_CREATE)?;
    apply_key_and_pragmas(&conn, k_db)?;
    conn.pragma_update(None, "application_id", APPLICATION_ID)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens an existing vault database, telling a wrong key, a foreign file and damage apart as
/// far as the bytes allow.
pub(crate) fn open(path: &Path, k_db: &Key256) -> Result<Connection> {
    let len = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Cache(CacheError::CorruptCache),
        _ => Error::io("read", &e),
    })?;
    if len.len() < 16 {
        return Err(Error::Cache(CacheError::CorruptCache));
    }
    if has_plain_sqlite_header(path)? {
        return Err(Error::Cache(CacheError::NotAVault));
    }
    if len.len() % PAGE_SIZE != 0 {
        return Err(Error::Cache(CacheError::CorruptCache));
    }
    let mut conn = Connection::open_with_flags(path, OPEN_EXISTING)?;
    apply_key_and_pragmas(&conn, k_db)?;
    let app_id: i32 = conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
    if app_id != APPLICATION_ID {
        return Err(Error::Cache(CacheError::NotAVault));
    }
    migrate(&mut conn)?;
    Ok(conn)
}

/// Re-encrypts every page under `new_key`. SQLCipher cannot rekey a WAL database safely, so
/// the log is folded in and the journal switched to DELETE (whose rekey is one atomic
/// transaction) for the duration.
pub(crate) fn rekey(conn: &Connection, new_key: &Key256) -> Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    conn.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))?;
    let literal = new_key.sqlcipher_literal();
    let result = conn.execute_batch(&format!("PRAGMA rekey = \"{}\";", literal.as_str()));
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    result.map_err(Error::from)
}

/// `PRAGMA cipher_integrity_check` (page HMACs) and `PRAGMA quick_check` (structure).
pub(crate) fn verify_integrity(conn: &Connection) -> Result<()> {
    let mut stmt = conn.prepare("PRAGMA cipher_integrity_check")?;
    let damaged_pages = stmt.query_map([], |_| Ok(()))?.count();
    if damaged_pages > 0 {
        return Err(Error::Cache(CacheError::CorruptCache));
    }
    let verdict: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if verdict == "ok" { Ok(()) } else { Err(Error::Cache(CacheError::CorruptCache)) }
}

fn has_plain_sqlite_header(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut header = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("read", &e))?;
    file.read_exact(&mut header).map_err(|e| Error::io("read", &e))?;
    Ok(&header == b"SQLite format 3\0")
}

fn apply_key_and_pragmas(conn: &Connection, k_db: &Key256) -> Result<()> {
    // Before the key: nothing SQLCipher logs may describe our files or keys.
    conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
    let literal = k_db.sqlcipher_literal();
    conn.execute_batch(&format!("PRAGMA key = \"{}\";", literal.as_str()))?;
    // Not stored in the file: must be the same at every open, before the first read.
    conn.execute_batch(PAGE_SIZE_PRAGMA)?;
    // The first read decrypts page 1: a wrong key fails here with SQLITE_NOTADB.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch(PRAGMAS)?;
    conn.execute_batch(CACHE_SIZE_PRAGMA)?;
    Ok(())
}

/// Durability, integrity and hygiene, shared with the benchmark baseline.
const PRAGMAS: &str = "PRAGMA synchronous = FULL;
     PRAGMA foreign_keys = ON;
     PRAGMA temp_store = MEMORY;
     PRAGMA secure_delete = ON;";

/// The everyday page cache (16 MiB); bulk ingests raise it for their duration.
pub(crate) const CACHE_SIZE_PRAGMA: &str = "PRAGMA cache_size = -16384;";

fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version     INTEGER PRIMARY KEY,
            applied_at  TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
        ) STRICT;",
    )?;
    let current: i64 = conn.query_row("SELECT coalesce(max(version), 0) FROM schema_version", [], |r| r.get(0))?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if current > known {
        // A newer app wrote this cache; refusing beats misreading it.
        return Err(Error::Cache(CacheError::CacheSchemaTooNew(current)));
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(usize::try_from(current).unwrap_or(0)) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [version])?;
        tx.commit()?;
    }
    Ok(())
}

/// The schema of a vault, for the plain-SQLite benchmark baseline (same tables, no key).
pub(crate) fn create_unencrypted(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open_with_flags(path, OPEN_CREATE)?;
    conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};"))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch(PRAGMAS)?;
    conn.execute_batch(CACHE_SIZE_PRAGMA)?;
    migrate(&mut conn)?;
    Ok(conn)
}

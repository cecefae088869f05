//! The server's store: one SQLCipher database keyed from the master key.
//!
//! A single connection behind a mutex, used from `spawn_blocking`; handlers never hold it
//! across an await.

use std::path::Path;
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
];

/// The encrypted store.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the store at `path` with a key derived from `master_key`.
    pub fn open(path: &Path, master_key: &[u8]) -> Result<Self, ServerError> {
        let bad = |e: rusqlite::Error| ServerError::Store(e.to_string());
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(bad)?;
        let mut kdf = Sha256::new();
        kdf.update(b"carekeep.server.store.v1\0");
        kdf.update(master_key);
        let key: Zeroizing<[u8; 32]> = Zeroizing::new(kdf.finalize().into());
        let mut literal = Zeroizing::new(String::from("PRAGMA key = \"x'"));
        crate::auth::secrets::push_hex(&mut literal, key.as_slice());
        literal.push_str("'\";");
        conn.execute_batch("PRAGMA cipher_log_level = NONE;").map_err(bad)?;
        conn.execute_batch(&literal).map_err(bad)?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
            .map_err(|_| ServerError::Store("the store cannot be opened with this master key".into()))?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).map_err(bad)?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;")
            .map_err(bad)?;
        migrate(&mut conn).map_err(bad)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    /// The connection, for one short synchronous unit of work.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY) STRICT;")?;
    let current: i64 = conn.query_row("SELECT coalesce(max(version), 0) FROM schema_version", [], |r| r.get(0))?;
    for (version, sql) in (1_i64..).zip(MIGRATIONS).skip(usize::try_from(current).unwrap_or(0)) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [version])?;
        tx.commit()?;
    }
    Ok(())
}

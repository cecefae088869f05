//! Exactly-once writes: a device replaying its outbox after a crash or a lost answer sends
//! the same `Idempotency-Key` again, and gets the write it already made instead of a second
//! one. The key is remembered in the same transaction as the write it names.

use rusqlite::{Connection, OptionalExtension, params};

use super::{RecordError, Stored, invalid};

/// How long a key is remembered: longer than any device stays offline with a write whose
/// answer it lost (the offline grace is 72 hours by default).
pub const KEEP_SECS: i64 = 30 * 24 * 3600;

/// Whose write a key belongs to, and the key itself. Keys are per user: one user's key can
/// never replay another's write.
#[derive(Debug, Clone, Copy)]
pub struct Once<'a> {
    /// The writing user.
    pub user_id: &'a str,
    /// The client's key (random, at most [`MAX_KEY_LEN`] characters).
    pub key: &'a str,
}

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 128;

impl<'a> Once<'a> {
    /// A key as sent, if it is well-formed (printable ASCII without spaces, not too long).
    pub fn new(user_id: &'a str, key: &'a str) -> Option<Self> {
        let ok = !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic());
        ok.then_some(Self { user_id, key })
    }
}

/// The write an earlier request with this key made, as it stands now; `None` for a new key.
/// The same key for another kind of request is refused rather than guessed at.
pub(super) fn replayed(
    conn: &Connection,
    tenant: &str,
    once: Once<'_>,
    method: &str,
    resource_type: &str,
) -> Result<Option<Stored>, RecordError> {
    let earlier: Option<(String, String, String)> = conn
        .prepare_cached("SELECT method, type, id FROM idempotency WHERE tenant = ?1 AND user_id = ?2 AND key = ?3")?
        .query_row(params![tenant, once.user_id, once.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((earlier_method, earlier_type, id)) = earlier else { return Ok(None) };
    if earlier_method != method || earlier_type != resource_type {
        return Err(invalid(
            "Idempotency-Key",
            "conflict",
            "Idempotency-Key: this key was used for a different request; send each write with a new key",
        ));
    }
    super::current(conn, tenant, resource_type, &id)?.map(Some).ok_or(RecordError::NotFound)
}

/// Remembers that `once` made `stored`, and forgets keys older than [`KEEP_SECS`].
pub(super) fn remember(
    conn: &Connection,
    tenant: &str,
    once: Once<'_>,
    method: &str,
    stored: &Stored,
    now_unix: i64,
) -> Result<(), RecordError> {
    conn.prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?.execute([now_unix - KEEP_SECS])?;
    conn.prepare_cached(
        "INSERT INTO idempotency (tenant, user_id, key, method, type, id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![tenant, once.user_id, once.key, method, stored.resource_type, stored.id, now_unix])?;
    Ok(())
}

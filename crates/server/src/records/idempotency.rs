//! Exactly-once writes: a device replaying its outbox after a crash or a lost answer sends
//! the same `Idempotency-Key` again, and gets the write it already made instead of a second
//! one. The key is remembered in the same transaction as the write it names, with a hash of
//! the request it came with: the same key with another body, another target or another
//! kind of request is refused, never answered with the earlier write. (The caller's right
//! to read what a replay returns is checked by the handler, as for any read.)

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

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

/// What a key is remembered with: SHA-256 over the kind of request, its target (the id an
/// update names, its `If-Match` version) and the resource sent, as checked.
pub(crate) fn request_hash(method: &str, target: &str, version: i64, body: &serde_json::Value) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [method.as_bytes(), target.as_bytes(), &version.to_be_bytes(), body.to_string().as_bytes()] {
        hash.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

/// The write an earlier request with this key made, as it stands now; `None` for a new key.
/// The same key for another request (kind, type, target or body) is refused rather than
/// answered with what it wrote.
pub(super) fn replayed(
    conn: &Connection,
    tenant: &str,
    once: Once<'_>,
    method: &str,
    resource_type: &str,
    request: &[u8; 32],
) -> Result<Option<Stored>, RecordError> {
    let earlier: Option<(String, String, String, Option<Vec<u8>>)> = conn
        .prepare_cached(
            "SELECT method, type, id, request_hash FROM idempotency WHERE tenant = ?1 AND user_id = ?2 AND key = ?3",
        )?
        .query_row(params![tenant, once.user_id, once.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((earlier_method, earlier_type, id, earlier_request)) = earlier else { return Ok(None) };
    // Keys remembered before requests were hashed (NULL) match on kind and type alone.
    let same_request = earlier_request.is_none_or(|h| h.as_slice() == request.as_slice());
    if earlier_method != method || earlier_type != resource_type || !same_request {
        return Err(reused());
    }
    super::current(conn, tenant, resource_type, &id)?
        .map(Some)
        .ok_or(RecordError::NotFound)
}

/// The refusal of a key sent again with another request (kind, type, target or body).
pub(crate) fn reused() -> RecordError {
    invalid(
        "Idempotency-Key",
        "conflict",
        "Idempotency-Key: this key was used for a different request; send each write with a new key",
    )
}

/// Remembers that `once`, with `request`, made `stored`, and forgets keys older than
/// [`KEEP_SECS`].
pub(super) fn remember(
    conn: &Connection,
    tenant: &str,
    once: Once<'_>,
    method: &str,
    request: &[u8; 32],
    stored: &Stored,
    now_unix: i64,
) -> Result<(), RecordError> {
    conn.prepare_cached("DELETE FROM idempotency WHERE created_at < ?1")?
        .execute([now_unix - KEEP_SECS])?;
    conn.prepare_cached(
        "INSERT INTO idempotency (tenant, user_id, key, method, type, id, created_at, request_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        tenant,
        once.user_id,
        once.key,
        method,
        stored.resource_type,
        stored.id,
        now_unix,
        &request[..]
    ])?;
    Ok(())
}

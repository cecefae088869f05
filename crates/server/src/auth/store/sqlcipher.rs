//! The sign-in tables' SQL on the embedded SQLCipher store, all of it here, the throttle's
//! budgets included. Each read returns a row struct of [`super`] with named fields; what a
//! row means is decided in Rust ([`crate::auth::rules`]), not in the queries.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    AccessRow, ChallengeRow, DeviceFlags, DeviceRow, IssuedTokens, PassedSignIn, RefreshRow, SessionRow, UserRow,
};
use crate::auth::AuthError;

/// A [`SessionRow`] from the columns `d.id, d.revoked, d.revoked_by_person, d.wipe,
/// u.disabled, d.last_seen, l.idle_secs, u.tenant`, the first at `first`.
fn session(r: &Row<'_>, first: usize) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        device_id: r.get(first)?,
        flags: DeviceFlags {
            revoked: r.get(first + 1)?,
            revoked_by_person: r.get(first + 2)?,
            wipe: r.get(first + 3)?,
        },
        user_disabled: r.get(first + 4)?,
        last_seen: r.get(first + 5)?,
        idle_limit: r.get(first + 6)?,
        tenant: r.get(first + 7)?,
    })
}

pub(super) fn user_by_name(conn: &Connection, username: &str) -> rusqlite::Result<Option<UserRow>> {
    conn.prepare_cached("SELECT id, tenant, password_hash, disabled FROM users WHERE username = ?1")?
        .query_row([username], |r| {
            Ok(UserRow { id: r.get(0)?, tenant: r.get(1)?, password_hash: r.get(2)?, disabled: r.get(3)? })
        })
        .optional()
}

pub(super) fn insert_challenge(
    conn: &Connection,
    hash: &[u8],
    user_id: &str,
    expires_at: i64,
    bucket: &[u8],
    known_device: bool,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO mfa_challenges (token_hash, user_id, expires_at, bucket, known_device)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![hash, user_id, expires_at, bucket, known_device],
    )
    .map(|_| ())
}

pub(super) fn challenge(conn: &Connection, hash: &[u8]) -> rusqlite::Result<Option<ChallengeRow>> {
    conn.query_row(
        "SELECT c.user_id, c.expires_at, u.totp_secret, u.disabled, c.bucket, c.known_device, u.username, u.tenant
         FROM mfa_challenges c JOIN users u ON u.id = c.user_id WHERE c.token_hash = ?1",
        [hash],
        |r| {
            Ok(ChallengeRow {
                user_id: r.get(0)?,
                expires_at: r.get(1)?,
                totp_secret: r.get(2)?,
                totp_stored: r.get(2)?,
                user_disabled: r.get(3)?,
                bucket: r.get(4)?,
                known_device: r.get(5)?,
                username: r.get(6)?,
                tenant: r.get(7)?,
            })
        },
    )
    .optional()
}

/// Deletes a challenge; false if another request took it first.
fn take_challenge(conn: &Connection, hash: &[u8]) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM mfa_challenges WHERE token_hash = ?1", [hash])? > 0)
}

/// Claims a TOTP step for a user; false if that step (or a later one) was claimed already.
fn claim_step(conn: &Connection, user_id: &str, step: i64) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE users SET totp_last_step = ?2 WHERE id = ?1 AND totp_last_step < ?2",
        params![user_id, step],
    )? > 0)
}

/// Registers a device that just made a full sign-in.
fn insert_device(conn: &Connection, id: &str, user_id: &str, name: &str, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO devices (id, user_id, name, created_at, last_seen, full_auth_at) VALUES (?1, ?2, ?3, ?4, ?4, ?4)",
        params![id, user_id, name, now],
    )
    .map(|_| ())
}

pub(super) fn refresh_token(conn: &Connection, hash: &[u8]) -> rusqlite::Result<Option<RefreshRow>> {
    conn.query_row(
        "SELECT t.used, d.id, d.revoked, d.revoked_by_person, d.wipe, u.disabled, d.last_seen, l.idle_secs, u.tenant
         FROM refresh_tokens t JOIN devices d ON d.id = t.device_id JOIN users u ON u.id = d.user_id
         LEFT JOIN idle_limits l ON l.tenant = u.tenant AND l.role = u.role
         WHERE t.token_hash = ?1",
        [hash],
        |r| Ok(RefreshRow { used: r.get(0)?, session: session(r, 1)? }),
    )
    .optional()
}

/// Whether a device's refresh token was used; `None` if it has no such token.
pub(super) fn refresh_used(conn: &Connection, hash: &[u8], device_id: &str) -> rusqlite::Result<Option<bool>> {
    conn.query_row(
        "SELECT used FROM refresh_tokens WHERE token_hash = ?1 AND device_id = ?2",
        params![hash, device_id],
        |r| r.get(0),
    )
    .optional()
}

/// The tenant and device a refresh token belongs to.
pub(super) fn refresh_device(conn: &Connection, hash: &[u8]) -> rusqlite::Result<Option<(String, String)>> {
    conn.query_row(
        "SELECT u.tenant, t.device_id FROM refresh_tokens t JOIN devices d ON d.id = t.device_id
         JOIN users u ON u.id = d.user_id WHERE t.token_hash = ?1",
        [hash],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

pub(super) fn access_token(conn: &Connection, hash: &[u8]) -> rusqlite::Result<Option<AccessRow>> {
    conn.prepare_cached(
        "SELECT a.expires_at, u.id, u.role,
                d.id, d.revoked, d.revoked_by_person, d.wipe, u.disabled, d.last_seen, l.idle_secs, u.tenant
         FROM access_tokens a JOIN devices d ON d.id = a.device_id JOIN users u ON u.id = d.user_id
         LEFT JOIN idle_limits l ON l.tenant = u.tenant AND l.role = u.role
         WHERE a.token_hash = ?1",
    )?
    .query_row([hash], |r| {
        Ok(AccessRow { expires_at: r.get(0)?, user_id: r.get(1)?, role: r.get(2)?, session: session(r, 3)? })
    })
    .optional()
}

/// Records a device's activity.
pub(super) fn touch_device(conn: &Connection, device_id: &str, now: i64) -> rusqlite::Result<()> {
    conn.execute("UPDATE devices SET last_seen = ?2 WHERE id = ?1", params![device_id, now])
        .map(|_| ())
}

/// Records a new access token (and a new refresh token, unless one is handed out again) and
/// the device's activity, together. Returns the device's user.
pub(super) fn record_tokens(conn: &mut Connection, issued: &IssuedTokens) -> rusqlite::Result<String> {
    let tx = conn.transaction()?;
    let user_id = write_tokens(&tx, issued)?;
    tx.commit()?;
    Ok(user_id)
}

/// Marks `spent_hash` used and records what replaces it, together; `None` (and nothing
/// written) if it was used already.
pub(super) fn rotate(
    conn: &mut Connection,
    spent_hash: &[u8],
    issued: &IssuedTokens,
) -> rusqlite::Result<Option<String>> {
    let tx = conn.transaction()?;
    if tx.execute("UPDATE refresh_tokens SET used = 1 WHERE token_hash = ?1 AND used = 0", [spent_hash])? == 0 {
        return Ok(None);
    }
    let user_id = write_tokens(&tx, issued)?;
    tx.commit()?;
    Ok(Some(user_id))
}

fn write_tokens(conn: &Connection, issued: &IssuedTokens) -> rusqlite::Result<String> {
    conn.execute(
        "INSERT INTO access_tokens (token_hash, device_id, expires_at, last_used) VALUES (?1, ?2, ?3, ?4)",
        params![issued.access_hash, issued.device_id, issued.expires_at, issued.now],
    )?;
    if let Some(refresh_hash) = &issued.new_refresh_hash {
        conn.execute(
            "INSERT INTO refresh_tokens (token_hash, device_id, issued_at) VALUES (?1, ?2, ?3)",
            params![refresh_hash, issued.device_id, issued.now],
        )?;
    }
    conn.query_row(
        "UPDATE devices SET last_seen = ?2 WHERE id = ?1 RETURNING user_id",
        params![issued.device_id, issued.now],
        |r| r.get(0),
    )
}

/// Writes a passed second step and the device's first tokens, all or nothing (see
/// [`super::Accounts::pass_sign_in`]).
pub(super) fn pass_sign_in(
    conn: &mut Connection,
    passed: &PassedSignIn,
    issued: &IssuedTokens,
) -> rusqlite::Result<Result<(), AuthError>> {
    let tx = conn.transaction()?;
    if !take_challenge(&tx, &passed.challenge_hash)? {
        return Ok(Err(AuthError::ChallengeExpired));
    }
    // The step is taken only if no request took it (or a later one) first. A code used
    // already is no guess: it does not count as a failure (after the server's clock went
    // back, every fresh code looks used).
    // Disabled, or given a new authenticator, since the challenge was read: as expired.
    let still_open: bool = tx.query_row(
        "SELECT NOT disabled AND totp_secret = ?2 FROM users WHERE id = ?1",
        params![passed.user_id, passed.totp_stored],
        |r| r.get(0),
    )?;
    if !still_open {
        return Ok(Err(AuthError::ChallengeExpired));
    }
    if !claim_step(&tx, &passed.user_id, passed.step)? {
        return Ok(Err(AuthError::CodeAlreadyUsed));
    }
    clear_budget(&tx, &passed.budget.stored_key())?;
    insert_device(&tx, &passed.device_id, &passed.user_id, &passed.device_name, passed.now)?;
    write_tokens(&tx, issued)?;
    tx.commit()?;
    Ok(Ok(()))
}

/// When the device last made a full sign-in (password and code).
pub(super) fn full_auth_at(conn: &Connection, device_id: &str) -> rusqlite::Result<i64> {
    conn.query_row("SELECT full_auth_at FROM devices WHERE id = ?1", [device_id], |r| r.get(0))
}

pub(super) fn username(conn: &Connection, user_id: &str) -> rusqlite::Result<String> {
    conn.query_row("SELECT username FROM users WHERE id = ?1", [user_id], |r| r.get(0))
}

/// The sign-in names of those of `ids` who are users of `tenant`.
pub(super) fn usernames(
    conn: &Connection,
    tenant: &str,
    ids: &[String],
) -> rusqlite::Result<std::collections::HashMap<String, String>> {
    let mut stmt = conn.prepare_cached("SELECT username FROM users WHERE id = ?1 AND tenant = ?2")?;
    let mut names = std::collections::HashMap::new();
    for id in ids {
        if !names.contains_key(id)
            && let Some(name) = stmt.query_row(params![id, tenant], |r| r.get::<_, String>(0)).optional()?
        {
            names.insert(id.clone(), name);
        }
    }
    Ok(names)
}

/// Keeps a new TOTP secret beside the current one until it is confirmed.
pub(super) fn set_pending_totp(conn: &Connection, user_id: &str, secret: &[u8]) -> rusqlite::Result<()> {
    conn.execute("UPDATE users SET totp_pending = ?2 WHERE id = ?1", params![user_id, secret])
        .map(|_| ())
}

pub(super) fn pending_totp(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row("SELECT totp_pending FROM users WHERE id = ?1", [user_id], |r| r.get(0))
}

/// Makes the pending secret the user's, with `step` (the confirming code's) already used.
pub(super) fn confirm_totp(conn: &Connection, user_id: &str, pending: &[u8], step: i64) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = ?2
         WHERE id = ?1 AND totp_pending = ?3",
        params![user_id, step, pending],
    )? > 0)
}

/// A tenant's devices, oldest first: every one with `all_users`, else only `user_id`'s.
pub(super) fn devices(
    conn: &Connection,
    tenant: &str,
    all_users: bool,
    user_id: &str,
) -> rusqlite::Result<Vec<DeviceRow>> {
    let mut stmt = conn.prepare(
        "SELECT d.id, d.user_id, d.name, d.created_at, d.last_seen, d.revoked, d.wipe
         FROM devices d JOIN users u ON u.id = d.user_id
         WHERE u.tenant = ?1 AND (?2 OR d.user_id = ?3) ORDER BY d.created_at",
    )?;
    let rows = stmt.query_map(params![tenant, all_users, user_id], |r| {
        Ok(DeviceRow {
            id: r.get(0)?,
            user_id: r.get(1)?,
            name: r.get(2)?,
            created_at: r.get(3)?,
            last_seen: r.get(4)?,
            revoked: r.get(5)?,
            wipe: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// Whether the device is in `tenant` and (unless `all_users`) is `user_id`'s.
pub(super) fn device_in_reach(
    conn: &Connection,
    device_id: &str,
    tenant: &str,
    all_users: bool,
    user_id: &str,
) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM devices d JOIN users u ON u.id = d.user_id
         WHERE d.id = ?1 AND u.tenant = ?2 AND (?3 OR d.user_id = ?4)",
        params![device_id, tenant, all_users, user_id],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// A person signs a device out (and with `wipe`, flags it to erase its cache).
pub(super) fn revoke_by_person(conn: &Connection, device_id: &str, wipe: bool) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE devices SET revoked = 1, revoked_by_person = 1, wipe = (wipe OR ?2) WHERE id = ?1",
        params![device_id, wipe],
    )
    .map(|_| ())
}

/// The server ends a device's session (idle, a reused token, logout).
pub(super) fn end_device(conn: &Connection, device_id: &str) -> rusqlite::Result<()> {
    conn.execute("UPDATE devices SET revoked = 1 WHERE id = ?1", [device_id])
        .map(|_| ())
}

/// How long a budget must still wait, if at all (`budget` is its keyed hash).
pub(super) fn blocked_until(conn: &Connection, budget: &[u8]) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT blocked_until FROM sign_in_budgets WHERE bucket = ?1")?
        .query_row([budget], |r| r.get(0))
        .optional()
}

/// Counts a failure against a budget, forgetting budgets whose last failure is older than
/// `forget_before` and that no longer wait; returns the budget's failures so far.
pub(super) fn count_failure(conn: &Connection, budget: &[u8], now: i64, forget_before: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("DELETE FROM sign_in_budgets WHERE last_failure < ?1 AND blocked_until < ?2")?
        .execute(params![forget_before, now])?;
    conn.prepare_cached(
        "INSERT INTO sign_in_budgets (bucket, failures, blocked_until, last_failure) VALUES (?1, 1, 0, ?2)
         ON CONFLICT (bucket) DO UPDATE SET failures = failures + 1, last_failure = excluded.last_failure
         RETURNING failures",
    )?
    .query_row(params![budget, now], |r| r.get(0))
}

/// Makes a budget wait until `until`.
pub(super) fn block_until(conn: &Connection, budget: &[u8], until: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE sign_in_budgets SET blocked_until = ?2 WHERE bucket = ?1")?
        .execute(params![budget, until])
        .map(|_| ())
}

/// A full sign-in succeeded: the budget starts afresh.
fn clear_budget(conn: &Connection, budget: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM sign_in_budgets WHERE bucket = ?1")?
        .execute([budget])
        .map(|_| ())
}

//! Administration: tenants and users, for the `tenant` and `user` commands.

use carekeep_protocol::auth::Role;
use rusqlite::params;

use crate::ServerError;
use crate::auth::{password, totp};
use crate::store::Store;

/// A user just created: their id and the TOTP secret to load into an authenticator.
pub struct NewUser {
    /// The opaque user id.
    pub id: String,
    /// TOTP secret, base32.
    pub totp_base32: String,
    /// `otpauth://` URI for authenticator apps.
    pub otpauth_uri: String,
}

/// Refuses a tenant id that is not letters, digits and '-'.
pub(crate) fn check_tenant_id(id: &str) -> Result<(), ServerError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ServerError::Invalid("a tenant id is letters, digits and '-'".into()));
    }
    Ok(())
}

/// Adds a tenant (a clinic).
pub fn add_tenant(store: &Store, id: &str, name: &str, now: i64) -> Result<(), ServerError> {
    check_tenant_id(id)?;
    store
        .lock()
        .execute("INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)", params![id, name, now])
        .map_err(|e| ServerError::Invalid(format!("cannot add tenant {id}: {e}")))?;
    Ok(())
}

/// Adds a user with a password and an active TOTP secret.
pub fn add_user(
    store: &Store,
    tenant: &str,
    username: &str,
    role: Role,
    password: &str,
    now: i64,
) -> Result<NewUser, ServerError> {
    let new = new_account(username, password)?;
    store
        .lock()
        .execute(
            "INSERT INTO users (id, tenant, username, role, password_hash, totp_secret, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![new.user.id, tenant, username, role.as_str(), new.password_hash, new.totp_secret, now],
        )
        .map_err(|e| ServerError::Invalid(format!("cannot add user {username}: {e}")))?;
    Ok(new.user)
}

/// What a new account is made of, whichever store keeps it.
pub(crate) struct NewAccount {
    /// What the administrator hands the person.
    pub user: NewUser,
    /// The password's Argon2id hash (PHC string).
    pub password_hash: String,
    /// The raw TOTP secret.
    pub totp_secret: Vec<u8>,
}

/// A new account's id, password hash and TOTP secret, after checking the password's length.
pub(crate) fn new_account(username: &str, password: &str) -> Result<NewAccount, ServerError> {
    if password.chars().count() < 12 {
        return Err(ServerError::Invalid("a password needs at least 12 characters".into()));
    }
    let id = crate::ids::new_id("usr")?;
    let password_hash = password::hash(password)?;
    let totp_secret = totp::new_secret()?;
    let generator = totp::totp(&totp_secret, username)?;
    let otpauth_uri = generator.to_url().map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
    Ok(NewAccount {
        user: NewUser { id, totp_base32: generator.secret().to_base32(), otpauth_uri },
        password_hash,
        totp_secret,
    })
}

/// Disables a user and signs out all their devices.
pub fn disable_user(store: &Store, username: &str) -> Result<(), ServerError> {
    let mut conn = store.lock();
    let tx = conn.transaction().map_err(|e| ServerError::Store(e.to_string()))?;
    let changed = tx
        .execute("UPDATE users SET disabled = 1 WHERE username = ?1", [username])
        .map_err(|e| ServerError::Store(e.to_string()))?;
    if changed == 0 {
        return Err(ServerError::Invalid(format!("no user named {username}")));
    }
    tx.execute(
        "UPDATE devices SET revoked = 1, revoked_by_person = 1 WHERE user_id = (SELECT id FROM users WHERE username = ?1)",
        [username],
    )
        .map_err(|e| ServerError::Store(e.to_string()))?;
    tx.commit().map_err(|e| ServerError::Store(e.to_string()))
}

/// Replaces a user's TOTP secret (lost phone) and signs out all their devices. Returns the
/// new secret for the user's authenticator.
pub fn reset_mfa(store: &Store, username: &str) -> Result<NewUser, ServerError> {
    let secret = totp::new_secret()?;
    let generator = totp::totp(&secret, username)?;
    let mut conn = store.lock();
    let tx = conn.transaction().map_err(|e| ServerError::Store(e.to_string()))?;
    let id: String = tx
        .query_row(
            "UPDATE users SET totp_secret = ?2, totp_pending = NULL, totp_last_step = -1 WHERE username = ?1 RETURNING id",
            params![username, secret],
            |r| r.get(0),
        )
        .map_err(|_| ServerError::Invalid(format!("no user named {username}")))?;
    tx.execute("UPDATE devices SET revoked = 1 WHERE user_id = ?1", [&id])
        .map_err(|e| ServerError::Store(e.to_string()))?;
    tx.commit().map_err(|e| ServerError::Store(e.to_string()))?;
    let otpauth_uri = generator.to_url().map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
    Ok(NewUser { id, totp_base32: generator.secret().to_base32(), otpauth_uri })
}

/// Links a user to a patient of their tenant as `self`, `proxy` or `care-team`.
pub fn link_user(store: &Store, username: &str, patient: &str, relation: &str) -> Result<(), ServerError> {
    if !["self", "proxy", "care-team"].contains(&relation) {
        return Err(ServerError::Invalid("a link is self, proxy or care-team".into()));
    }
    let conn = store.lock();
    let changed = conn
        .execute(
            "INSERT INTO patient_links (tenant, user_id, patient, relation)
             SELECT u.tenant, u.id, r.id, ?3 FROM users u
             JOIN resources r ON r.tenant = u.tenant AND r.type = 'Patient' AND r.id = ?2
             WHERE u.username = ?1
             ON CONFLICT (user_id, patient) DO UPDATE SET relation = excluded.relation",
            params![username, patient, relation],
        )
        .map_err(|e| ServerError::Store(e.to_string()))?;
    if changed == 0 {
        return Err(ServerError::Invalid(format!("no user {username} with that patient in their tenant")));
    }
    Ok(())
}

/// Names `practitioner` (a Practitioner id of the user's tenant) as clinician or nurse
/// `username`'s own record, so an import links the patients whose `generalPractitioner` it
/// is to that user's care team.
pub fn set_practitioner(store: &Store, username: &str, practitioner: &str) -> Result<(), ServerError> {
    let conn = store.lock();
    let changed = conn
        .execute(
            "UPDATE users SET practitioner = ?2 WHERE username = ?1 AND role IN ('clinician', 'nurse')
               AND EXISTS (SELECT 1 FROM resources r WHERE r.tenant = users.tenant AND r.type = 'Practitioner' AND r.id = ?2)",
            params![username, practitioner],
        )
        .map_err(|e| ServerError::Store(e.to_string()))?;
    if changed == 0 {
        return Err(ServerError::Invalid(format!(
            "no clinician or nurse {username} with that Practitioner in their tenant"
        )));
    }
    Ok(())
}

/// The shortest and longest idle limit a tenant may set for a role, in minutes: under a
/// minute nobody could work; over a shift, an unattended device stays signed in.
pub const IDLE_MINUTES: std::ops::RangeInclusive<u32> = 1..=12 * 60;

/// Refuses an idle limit outside [`IDLE_MINUTES`].
pub(crate) fn check_idle_minutes(minutes: u32) -> Result<(), ServerError> {
    if IDLE_MINUTES.contains(&minutes) {
        return Ok(());
    }
    Err(ServerError::Invalid(format!("an idle limit is {} to {} minutes", IDLE_MINUTES.start(), IDLE_MINUTES.end())))
}

/// Sets how long a device of `role` in `tenant` may stay unused before its user must sign
/// in again (the server default is [`crate::auth::AuthPolicy::idle_secs`]).
pub fn set_idle_limit(store: &Store, tenant: &str, role: Role, minutes: u32) -> Result<(), ServerError> {
    check_idle_minutes(minutes)?;
    store
        .lock()
        .execute(
            "INSERT INTO idle_limits (tenant, role, idle_secs) VALUES (?1, ?2, ?3)
             ON CONFLICT (tenant, role) DO UPDATE SET idle_secs = excluded.idle_secs",
            params![tenant, role.as_str(), i64::from(minutes) * 60],
        )
        .map_err(|_| ServerError::Invalid(format!("no tenant {tenant}")))?;
    Ok(())
}

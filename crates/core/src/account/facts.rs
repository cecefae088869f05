//! `session.json`: what the app must know about the signed-in account before it can unlock —
//! no PHI and no secret.

use carekeep_protocol::audit::ChainHash;
use carekeep_protocol::auth::Role;
use carekeep_protocol::pins::PinSet;
use carekeep_protocol::policy::SignedPolicy;
use serde::{Deserialize, Serialize};

use crate::error::CacheError;
use crate::net::{Server, Tokens, VerifiedPolicy};
use crate::{Error, Profile, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Facts {
    pub server: String,
    pub pins: PinSet,
    pub tenant: String,
    pub user_id: String,
    pub role: Role,
    pub server_device_id: String,
    pub last_full_auth_unix: i64,
    /// Set by a manual lock: the device key may not unlock until the password has.
    pub password_required: bool,
    pub signed_policy: SignedPolicy,
    pub policy_key: String,
    /// The latest time known to be true (this device's readings, the server's clock).
    #[serde(default)]
    pub latest_known_time: i64,
    /// When the signed policy was last fetched (sync fetches it again after a while).
    #[serde(default)]
    pub policy_fetched_unix: i64,
    /// The newest session audit record the server has: later ones wait for upload.
    #[serde(default)]
    pub audit_uploaded_through: Option<ChainHash>,
    /// The id of a refresh-token rotation under way: kept until the new token is in the
    /// keychain, so a process killed in between retries the same rotation (not a secret:
    /// useless without the refresh token).
    #[serde(default)]
    pub pending_rotation: Option<String>,
    /// When the last sync finished (the offline banner's "last synced").
    #[serde(default)]
    pub last_sync_unix: Option<i64>,
}

impl Facts {
    /// The pins kept are the signed policy's (the server's current pair, fresher than what
    /// provisioning typed in): a key rotation reaches the device this way.
    pub fn new(server: &Server, tokens: &Tokens, verified: &VerifiedPolicy, now_unix: i64) -> Self {
        Self {
            server: server.url().as_str().to_owned(),
            pins: verified.policy.pins.clone(),
            tenant: verified.policy.tenant.clone(),
            user_id: tokens.user_id.clone(),
            role: verified.policy.role,
            server_device_id: tokens.device_id.clone(),
            last_full_auth_unix: now_unix,
            password_required: false,
            signed_policy: verified.signed.clone(),
            policy_key: verified.key.clone(),
            latest_known_time: now_unix,
            policy_fetched_unix: now_unix,
            audit_uploaded_through: None,
            pending_rotation: None,
            last_sync_unix: None,
        }
    }

    pub fn read(profile: &Profile) -> Result<Self> {
        match std::fs::read(profile.session_file()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| Error::Cache(CacheError::KeyFileInvalid)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Cache(CacheError::NoVault)),
            Err(e) => Err(Error::io("read", &e)),
        }
    }

    pub fn write(&self, profile: &Profile) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|_| Error::Cache(CacheError::KeyFileInvalid))?;
        profile.write_atomically(&profile.session_file(), &json)
    }

    pub fn remove(profile: &Profile) -> Result<()> {
        match std::fs::remove_file(profile.session_file()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &e)),
        }
    }
}

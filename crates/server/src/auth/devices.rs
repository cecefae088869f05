//! Devices: what each may still do ([`Standing`], decided here once from its flags and its
//! user's, so the access and refresh checks cannot come to different answers), and listing
//! and revoking them. A revoked device keeps its token hashes on record, so it is still
//! recognised at its next contact — which is how a remote wipe reaches it.

use carekeep_protocol::auth::{DeviceInfo, Role};

use super::store::DeviceFlags;
use super::{Auth, AuthError, Principal};

/// What a device may still do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// Signed in.
    Active,
    /// Flagged for remote wipe: its app must erase its cache now.
    WipeRequested,
    /// Signed out by a person (an admin, the user, or disabling the account).
    Revoked,
    /// Signed out by the server (idle, a reused refresh token, logout), or its user disabled.
    Ended,
}

impl Standing {
    /// The standing of a device with `flags` whose user is (or is not) disabled. Wipe
    /// outranks revocation: a wiped device must hear that it has to erase, whoever signed it
    /// out.
    pub(super) fn of(flags: DeviceFlags, user_disabled: bool) -> Self {
        if flags.wipe {
            Standing::WipeRequested
        } else if flags.revoked && flags.revoked_by_person {
            Standing::Revoked
        } else if flags.revoked || user_disabled {
            Standing::Ended
        } else {
            Standing::Active
        }
    }

    /// Ok for an active device; otherwise what its caller is told.
    pub(super) fn admit(self) -> Result<(), AuthError> {
        match self {
            Standing::Active => Ok(()),
            Standing::WipeRequested => Err(AuthError::DeviceWipe),
            Standing::Revoked => Err(AuthError::DeviceRevoked),
            Standing::Ended => Err(AuthError::SessionEnded),
        }
    }
}

impl Auth {
    /// The caller's own devices, or — for an admin — every device in their tenant.
    pub async fn devices(&self, caller: &Principal) -> Result<Vec<DeviceInfo>, AuthError> {
        let rows = self
            .accounts
            .devices(caller.tenant.clone(), caller.role == Role::Admin, caller.user_id.clone())
            .await?;
        Ok(rows
            .into_iter()
            .map(|d| DeviceInfo {
                current: d.id == caller.device_id,
                id: d.id,
                user_id: d.user_id,
                name: d.name,
                created_at: d.created_at,
                last_seen: d.last_seen,
                revoked: d.revoked,
                wipe: d.wipe,
            })
            .collect())
    }

    /// Revokes a device (and with `wipe`, flags it to erase its cache at its next contact).
    /// Users manage their own devices; admins any device in their tenant. A device of another
    /// tenant or user is reported as not found, exactly like one that does not exist.
    pub async fn revoke(&self, caller: &Principal, device_id: &str, wipe: bool) -> Result<bool, AuthError> {
        let allowed = self
            .accounts
            .device_in_reach(
                caller.tenant.clone(),
                device_id.to_owned(),
                caller.role == Role::Admin,
                caller.user_id.clone(),
            )
            .await?;
        if !allowed {
            return Ok(false);
        }
        self.accounts
            .revoke_by_person(caller.tenant.clone(), device_id.to_owned(), wipe)
            .await?;
        Ok(true)
    }

    /// Ends a device's session on the server's own account (idle, reuse, logout).
    pub(super) async fn end_device(&self, tenant: String, device_id: String) -> Result<(), AuthError> {
        self.accounts.end_device(tenant, device_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: DeviceFlags = DeviceFlags { revoked: false, revoked_by_person: false, wipe: false };
    const ENDED: DeviceFlags = DeviceFlags { revoked: true, ..NONE };
    const REVOKED: DeviceFlags = DeviceFlags { revoked: true, revoked_by_person: true, ..NONE };

    #[test]
    fn a_device_with_no_flags_is_active() {
        assert_eq!(Standing::of(NONE, false), Standing::Active);
        assert_eq!(Standing::Active.admit(), Ok(()));
    }

    #[test]
    fn wipe_outranks_every_other_flag() {
        assert_eq!(Standing::of(DeviceFlags { wipe: true, ..REVOKED }, true), Standing::WipeRequested);
        assert_eq!(Standing::of(DeviceFlags { wipe: true, ..NONE }, false), Standing::WipeRequested);
        assert_eq!(Standing::WipeRequested.admit(), Err(AuthError::DeviceWipe));
    }

    #[test]
    fn a_person_revoking_is_told_apart_from_the_server_ending() {
        assert_eq!(Standing::of(REVOKED, false), Standing::Revoked);
        assert_eq!(Standing::of(REVOKED, true), Standing::Revoked);
        assert_eq!(Standing::Revoked.admit(), Err(AuthError::DeviceRevoked));
        assert_eq!(Standing::of(ENDED, false), Standing::Ended);
        assert_eq!(Standing::Ended.admit(), Err(AuthError::SessionEnded));
    }

    #[test]
    fn a_disabled_user_ends_every_device() {
        assert_eq!(Standing::of(NONE, true), Standing::Ended);
        // The by-person flag means nothing on a device that is not revoked.
        assert_eq!(Standing::of(DeviceFlags { revoked_by_person: true, ..NONE }, false), Standing::Active);
    }
}

//! The session rules as pure decisions: each takes the rows it judges and `now` (Unix
//! seconds) and returns what to do — no SQL, no clock — so each is tested with fixed times.
//! The service ([`super::Auth`]) reads the rows, asks here, and writes what was decided.

use super::devices::Standing;
use super::store::{AccessRow, RefreshRow, SessionRow};
use super::{AuthError, LAST_SEEN_EVERY};

/// The idle limit that applies: the tenant's for the user's role, else the server's.
pub(super) fn idle_secs(tenant_limit: Option<i64>, default_secs: i64) -> i64 {
    tenant_limit.unwrap_or(default_secs)
}

/// Whether a device last seen at `last_seen` has been idle past `idle_secs` at `now`.
pub(super) fn idle(last_seen: i64, idle_secs: i64, now: i64) -> bool {
    last_seen + idle_secs < now
}

/// Whether the second step of a sign-in may still be taken.
pub(super) fn challenge_open(expires_at: i64, user_disabled: bool, now: i64) -> bool {
    expires_at > now && !user_disabled
}

/// Ok if the device's last full sign-in is recent enough for a high-risk action.
pub(super) fn step_up(full_auth_at: i64, step_up_secs: i64, now: i64) -> Result<(), AuthError> {
    if now - full_auth_at > step_up_secs { Err(AuthError::StepUpRequired) } else { Ok(()) }
}

/// What an access token gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Access {
    /// Refused; the device is left as it is.
    Refuse(AuthError),
    /// The device was idle too long: end its session, then refuse.
    EndSession,
    /// Admitted; `touch` says whether the device's activity is due a write.
    Admit { touch: bool },
}

/// Judges an access token: the device's standing first, then idle time, then the token's
/// own expiry (an expired token on a live session is refreshed, not signed in again).
pub(super) fn access(row: &AccessRow, idle_secs: i64, now: i64) -> Access {
    let session = &row.session;
    if let Err(refused) = Standing::of(session.flags, session.user_disabled).admit() {
        return Access::Refuse(refused);
    }
    if idle(session.last_seen, idle_secs, now) {
        return Access::EndSession;
    }
    if row.expires_at <= now {
        return Access::Refuse(AuthError::AccessExpired);
    }
    Access::Admit { touch: now - session.last_seen >= LAST_SEEN_EVERY }
}

/// What a presented refresh token gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refresh {
    /// Refused; the device is left as it is.
    Refuse(AuthError),
    /// Used already, with a rotation id: it may be the same device retrying a rotation
    /// whose answer it lost. Look up that rotation's token and ask [`retry`].
    CheckRetry,
    /// Two holders (a used token came back) or an idle device: end the session.
    EndSession,
    /// Spend it and hand out a successor.
    Rotate,
}

/// Judges a refresh token presented by `device_id`, with or without a rotation id.
pub(super) fn refresh(row: &RefreshRow, device_id: &str, has_rotation_id: bool, idle_secs: i64, now: i64) -> Refresh {
    let session = &row.session;
    if session.device_id != device_id {
        return Refresh::Refuse(AuthError::SessionEnded);
    }
    if let Err(refused) = Standing::of(session.flags, session.user_disabled).admit() {
        return Refresh::Refuse(refused);
    }
    if row.used {
        return if has_rotation_id { Refresh::CheckRetry } else { Refresh::EndSession };
    }
    if idle(session.last_seen, idle_secs, now) {
        return Refresh::EndSession;
    }
    Refresh::Rotate
}

/// For a used token come back with a rotation id: whether it is the device retrying (the
/// rotation's token exists and was never used, and the device is not idle), so it gets that
/// token again. Otherwise someone holds a copy, and the session ends.
pub(super) fn retry(successor_used: Option<bool>, session: &SessionRow, idle_secs: i64, now: i64) -> bool {
    successor_used == Some(false) && !idle(session.last_seen, idle_secs, now)
}

#[cfg(test)]
mod tests {
    use super::super::store::DeviceFlags;
    use super::*;

    const T0: i64 = 1_800_000_000;
    const IDLE: i64 = 15 * 60;

    fn session(last_seen: i64) -> SessionRow {
        SessionRow {
            device_id: "dev-1".into(),
            tenant: "clinic-1".into(),
            flags: DeviceFlags::default(),
            user_disabled: false,
            last_seen,
            idle_limit: None,
        }
    }

    fn access_row(expires_at: i64, last_seen: i64) -> AccessRow {
        AccessRow { expires_at, session: session(last_seen), user_id: "usr-1".into(), role: "patient".into() }
    }

    fn refresh_row(used: bool, last_seen: i64) -> RefreshRow {
        RefreshRow { used, session: session(last_seen) }
    }

    #[test]
    fn the_tenant_limit_replaces_the_default() {
        assert_eq!(idle_secs(None, IDLE), IDLE);
        assert_eq!(idle_secs(Some(60), IDLE), 60);
    }

    #[test]
    fn idle_starts_after_the_limit_not_at_it() {
        assert!(!idle(T0, IDLE, T0 + IDLE));
        assert!(idle(T0, IDLE, T0 + IDLE + 1));
    }

    #[test]
    fn a_challenge_closes_at_its_expiry_or_when_its_user_is_disabled() {
        assert!(challenge_open(T0 + 300, false, T0 + 299));
        assert!(!challenge_open(T0 + 300, false, T0 + 300));
        assert!(!challenge_open(T0 + 300, true, T0));
    }

    #[test]
    fn step_up_holds_for_its_window_inclusive() {
        assert_eq!(step_up(T0, 300, T0 + 300), Ok(()));
        assert_eq!(step_up(T0, 300, T0 + 301), Err(AuthError::StepUpRequired));
    }

    #[test]
    fn access_is_admitted_and_activity_written_only_when_due() {
        let row = access_row(T0 + 300, T0);
        assert_eq!(access(&row, IDLE, T0 + LAST_SEEN_EVERY - 1), Access::Admit { touch: false });
        assert_eq!(access(&row, IDLE, T0 + LAST_SEEN_EVERY), Access::Admit { touch: true });
    }

    #[test]
    fn an_expired_access_token_on_a_live_session_asks_for_a_refresh() {
        let row = access_row(T0 + 300, T0 + 200);
        assert_eq!(access(&row, IDLE, T0 + 300), Access::Refuse(AuthError::AccessExpired));
    }

    #[test]
    fn idle_ends_the_session_before_expiry_is_looked_at() {
        let row = access_row(T0 + 300, T0);
        assert_eq!(access(&row, IDLE, T0 + IDLE + 1), Access::EndSession);
        assert_eq!(access(&row, 60, T0 + 61), Access::EndSession);
    }

    #[test]
    fn a_device_out_of_standing_is_refused_whatever_its_token() {
        let mut row = access_row(T0 + 300, T0);
        row.session.flags.wipe = true;
        assert_eq!(access(&row, IDLE, T0 + 10 * IDLE), Access::Refuse(AuthError::DeviceWipe));
        let mut row = refresh_row(true, T0);
        row.session.flags = DeviceFlags { revoked: true, revoked_by_person: true, ..DeviceFlags::default() };
        assert_eq!(refresh(&row, "dev-1", true, IDLE, T0), Refresh::Refuse(AuthError::DeviceRevoked));
    }

    #[test]
    fn a_refresh_token_from_another_device_is_refused_without_ending_anything() {
        let row = refresh_row(true, T0);
        assert_eq!(refresh(&row, "dev-2", true, IDLE, T0), Refresh::Refuse(AuthError::SessionEnded));
    }

    #[test]
    fn a_fresh_refresh_token_rotates_unless_the_device_idled() {
        let row = refresh_row(false, T0);
        assert_eq!(refresh(&row, "dev-1", false, IDLE, T0 + IDLE), Refresh::Rotate);
        assert_eq!(refresh(&row, "dev-1", true, IDLE, T0 + IDLE + 1), Refresh::EndSession);
    }

    #[test]
    fn a_used_refresh_token_ends_the_session_unless_it_may_be_a_retry() {
        let row = refresh_row(true, T0);
        assert_eq!(refresh(&row, "dev-1", false, IDLE, T0), Refresh::EndSession);
        assert_eq!(refresh(&row, "dev-1", true, IDLE, T0), Refresh::CheckRetry);
    }

    #[test]
    fn a_retry_gets_its_token_again_only_if_that_token_is_unused_and_the_device_not_idle() {
        let s = session(T0);
        assert!(retry(Some(false), &s, IDLE, T0 + IDLE));
        assert!(!retry(Some(true), &s, IDLE, T0));
        assert!(!retry(None, &s, IDLE, T0));
        assert!(!retry(Some(false), &s, IDLE, T0 + IDLE + 1));
    }
}

//! The session state machine of DESIGN.md §3, driven by a manual clock: idle and background
//! locks, the 12-hour presence window, step-up, the offline grace, a clock moved back,
//! logout, revocation, and the chained audit record of every transition.

use std::sync::Arc;
use std::time::Duration;

use carekeep_core::Error;
use carekeep_core::clock::ManualClock;
use carekeep_core::error::{ServerError, UnlockError};
use carekeep_core::session::{Identity, Reason, Rules, Session, State};
use carekeep_protocol::auth::Role;
use carekeep_protocol::pins::{Pin, PinSet};
use carekeep_protocol::policy::Policy;

const T0: i64 = 1_800_000_000;
const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn rules(role: Role) -> Rules {
    let pins = PinSet::new(
        vec![Pin::from_spki_der(b"live"), Pin::from_spki_der(b"backup")],
        time::Date::from_calendar_date(2030, time::Month::January, 1).unwrap(),
    )
    .unwrap();
    Rules::from_policy(&Policy::defaults("clinic-1", role, pins, "2027-01-15T08:00:00Z"))
}

fn identity(role: Role) -> Identity {
    Identity { tenant: "clinic-1".into(), user: "usr-1".into(), role, device: "dev-1".into() }
}

fn signed_in(role: Role) -> (Arc<ManualClock>, Session) {
    let clock = Arc::new(ManualClock::new(T0));
    let mut session = Session::signed_out(clock.clone());
    let transition = session.full_sign_in(identity(role), rules(role));
    assert_eq!(
        (transition.from, transition.to, transition.reason),
        (State::SignedOut, State::Unlocked, Reason::FullSignIn)
    );
    (clock, session)
}

#[test]
fn no_input_for_the_roles_idle_limit_locks() {
    let (clock, mut s) = signed_in(Role::Clinician);
    clock.advance(14 * MIN);
    assert_eq!(s.tick(), None);
    s.input();
    clock.advance(14 * MIN);
    assert_eq!(s.tick(), None, "input restarted the idle timer");
    clock.advance(MIN);
    let locked = s.tick().unwrap();
    assert_eq!((locked.to, locked.reason), (State::Locked, Reason::Idle));
    s.input();
    assert_eq!(s.state(), State::Locked, "input does not unlock");

    let (clock, mut patient) = signed_in(Role::Patient);
    clock.advance(5 * MIN);
    assert_eq!(patient.tick().map(|t| t.reason), Some(Reason::Idle), "patients lock after 5 minutes");
}

#[test]
fn backgrounding_and_the_os_lock_lock_at_once_or_after_the_grace() {
    let (_, mut s) = signed_in(Role::Nurse);
    assert_eq!(s.backgrounded().map(|t| (t.to, t.reason)), Some((State::Locked, Reason::Backgrounded)));

    let (clock, mut s) = signed_in(Role::Nurse);
    let mut graced = rules(Role::Nurse);
    graced.background_grace = Duration::from_secs(20);
    s.full_sign_in(identity(Role::Nurse), graced);
    assert_eq!(s.backgrounded(), None);
    clock.advance(Duration::from_secs(10));
    assert_eq!(s.foregrounded(), None, "back within the grace");
    assert_eq!(s.backgrounded(), None);
    clock.advance(Duration::from_secs(20));
    assert_eq!(s.tick().map(|t| t.reason), Some(Reason::Backgrounded));

    let (_, mut s) = signed_in(Role::Nurse);
    assert_eq!(s.os_locked().map(|t| t.reason), Some(Reason::OsLocked));
}

#[test]
fn presence_unlocks_only_within_twelve_hours_of_the_last_full_sign_in() {
    let (clock, mut s) = signed_in(Role::Clinician);
    s.os_locked();
    clock.advance(11 * HOUR);
    s.check_presence_unlock(true).unwrap();
    assert_eq!(s.presence_verified().unwrap().to, State::Unlocked);
    s.os_locked();
    clock.advance(HOUR);
    assert!(matches!(s.check_presence_unlock(true), Err(Error::Unlock(UnlockError::ReauthRequired))));
    assert_eq!(s.state(), State::ReauthRequired);
    assert!(
        matches!(s.presence_verified(), Err(Error::Unlock(UnlockError::ReauthRequired))),
        "no way around the check"
    );
    // A full sign-in starts the window again.
    s.full_sign_in(identity(Role::Clinician), rules(Role::Clinician));
    s.os_locked();
    assert!(
        matches!(s.check_presence_unlock(false), Err(Error::Unlock(UnlockError::ReauthRequired))),
        "the device key is gone"
    );
    assert_eq!(s.state(), State::ReauthRequired);

    let (_, mut s) = signed_in(Role::Clinician);
    s.os_locked();
    assert_eq!(s.biometrics_changed().map(|t| t.to), Some(State::ReauthRequired));
}

#[test]
fn high_risk_actions_need_a_full_sign_in_within_five_minutes() {
    let (clock, mut s) = signed_in(Role::Clinician);
    s.check_step_up().unwrap();
    clock.advance(5 * MIN);
    assert!(matches!(s.check_step_up(), Err(Error::Server(ServerError::StepUpRequired))));
    s.full_sign_in(identity(Role::Clinician), rules(Role::Clinician));
    s.check_step_up().unwrap();
    s.os_locked();
    assert!(matches!(s.check_step_up(), Err(Error::Server(ServerError::StepUpRequired))), "not while locked");
}

#[test]
fn offline_the_password_unlocks_within_the_grace_only() {
    let (clock, mut s) = signed_in(Role::Patient);
    s.os_locked();
    clock.advance(71 * HOUR);
    // Past the 12-hour presence window, but within the 72-hour offline grace.
    assert!(s.check_presence_unlock(true).is_err());
    assert_eq!(s.offline_password_verified().unwrap().reason, Reason::OfflinePassword);
    s.os_locked();
    clock.advance(HOUR);
    assert!(matches!(s.offline_password_verified(), Err(Error::Unlock(UnlockError::OfflineGraceOver))));
    assert_ne!(s.state(), State::Unlocked);
}

#[test]
fn moving_the_clock_back_never_extends_a_session() {
    // Within one run: the monotonic age counts.
    let (clock, mut s) = signed_in(Role::Clinician);
    clock.advance(11 * HOUR);
    clock.rewind(10 * HOUR);
    clock.advance(2 * HOUR);
    s.os_locked();
    assert!(
        matches!(s.check_presence_unlock(true), Err(Error::Unlock(UnlockError::ReauthRequired))),
        "13 hours passed, whatever the clock says"
    );

    // Idle runs on the monotonic clock: setting the time back does not delay the lock.
    let (clock, mut s) = signed_in(Role::Clinician);
    clock.advance(10 * MIN);
    clock.rewind(HOUR);
    clock.advance(5 * MIN);
    assert_eq!(s.tick().map(|t| t.reason), Some(Reason::Idle));

    // After a restart: a wall clock set back before the last sign-in counts as too old.
    let clock = Arc::new(ManualClock::new(T0));
    let mut resumed =
        Session::resume(clock.clone(), identity(Role::Clinician), rules(Role::Clinician), T0 + 3600, None);
    assert_eq!(resumed.state(), State::Locked);
    assert!(matches!(resumed.check_presence_unlock(true), Err(Error::Unlock(UnlockError::ReauthRequired))));
    let clock = Arc::new(ManualClock::new(T0 + 3600));
    let mut honest = Session::resume(clock, identity(Role::Clinician), rules(Role::Clinician), T0, None);
    honest.presence_verified().unwrap();
}

#[test]
fn logout_and_revocation_end_the_session() {
    let (_, mut s) = signed_in(Role::Billing);
    assert_eq!(s.logout().map(|t| t.to), Some(State::SignedOut));
    assert!(matches!(s.offline_password_verified(), Err(Error::Unlock(UnlockError::ReauthRequired))));
    assert_eq!(s.logout(), None);

    let (_, mut s) = signed_in(Role::Billing);
    assert_eq!(s.server_ended(true).map(|t| (t.to, t.reason)), Some((State::Wiped, Reason::RemoteWipe)));
    assert!(s.check_presence_unlock(true).is_err());
    let (_, mut s) = signed_in(Role::Billing);
    assert_eq!(s.server_ended(false).map(|t| t.reason), Some(Reason::Revoked));
}

#[test]
fn every_transition_is_a_chained_phi_free_audit_record() {
    let (clock, mut s) = signed_in(Role::Patient);
    clock.advance(5 * MIN);
    s.tick();
    s.presence_verified().unwrap();
    clock.advance(80 * HOUR);
    s.os_locked();
    let _ = s.offline_password_verified();
    s.server_ended(true);
    let records = s.take_audit();
    let actions: Vec<&str> = records.iter().map(|r| r.event.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "session unlocked (full-sign-in)",
            "session locked (idle)",
            "session unlocked (presence)",
            "session locked (os-locked)",
            "session locked (offline-password)",
            "session wiped (remote-wipe)",
        ]
    );
    assert_eq!(records[4].event.outcome, carekeep_protocol::audit::Outcome::Denied);
    for pair in records.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    // The chain recomputes from the events alone: nothing was altered after hashing.
    let mut previous = None;
    for record in &records {
        let again = carekeep_protocol::audit::AuditRecord::append(previous.as_ref(), record.event.clone());
        assert_eq!(again.hash, record.hash);
        previous = Some(again);
        assert_eq!((record.event.user.as_deref(), record.event.device.as_deref()), (Some("usr-1"), Some("dev-1")));
        assert!(record.event.patient.is_none() && record.event.resource_id.is_none());
    }
    assert!(s.take_audit().is_empty(), "taken once");
}

/// After a restart the monotonic clock starts again; what keeps a clock set back from
/// stretching the window is the latest time known to be true — an earlier reading of this
/// device's clock, or the server's clock from its last answer.
#[test]
fn the_latest_known_time_holds_after_a_restart_with_the_clock_set_back() {
    // Signed in at T0; 13 hours later the server's answer said so; now, after a restart,
    // the device clock reads T0 + 2 h.
    let clock = Arc::new(ManualClock::new(T0 + 2 * 3600));
    let mut s = Session::resume(clock.clone(), identity(Role::Clinician), rules(Role::Clinician), T0, None);
    s.time_seen(T0 + 13 * 3600);
    assert!(matches!(s.check_presence_unlock(true), Err(Error::Unlock(UnlockError::ReauthRequired))));
    assert_eq!(s.latest_known_time(), T0 + 13 * 3600);

    // Without that knowledge the same clock would have allowed it: the test is meaningful.
    let mut unaware = Session::resume(clock, identity(Role::Clinician), rules(Role::Clinician), T0, None);
    unaware.check_presence_unlock(true).unwrap();
}

//! The account on a device, end to end against the real server and the real Secret Service
//! (run inside `cargo xtask keyring-run`): first sign-in creates the vault, later starts
//! unlock it by the session's rules, tokens live in the keychain and memory only, a manual
//! lock needs the password, logout revokes, and a remote wipe erases the device's copy.

use std::sync::Arc;

use carekeep_core::account::Account;
use carekeep_core::clock::ManualClock;
use carekeep_core::error::{CacheError, ConnectionError, ServerError, UnlockError};
use carekeep_core::session::State;
use carekeep_core::{Clock, Error, Password, SystemClock};
use carekeep_e2e::{Device, PASSWORD, PresenceTestDouble, Running, World};
use carekeep_protocol::auth::Role;

/// The device's user revokes it (with `wipe`: flags it for erasure) through the server's
/// own rules, as they would from another device's settings.
async fn revoke_from_elsewhere(world: &World, token: &carekeep_protocol::Secret, wipe: bool) {
    let store = Arc::new(world.data.open_store().unwrap());
    let auth = carekeep_server::auth::Auth::new(store, carekeep_server::auth::AuthPolicy::default(), 1);
    let me = auth.authenticate(token.expose(), SystemClock.now_unix()).await.unwrap();
    assert!(auth.revoke(&me, &me.device_id.clone(), wipe).await.unwrap());
}

/// A patient record written straight into a vault.
const PATIENT_P1: &str =
    r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":"2026-01-01T00:00:00Z"}}"#;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn first_sign_in_creates_the_vault_and_later_starts_unlock_it_by_the_rules() {
    let world = World::new(Role::Patient);
    let running = Running::start(&world.data).await;
    let device = Device::new();
    let mut account = device.sign_in(&world, &running, Arc::new(SystemClock), 0).await.unwrap();
    let status = account.status();
    assert_eq!((status.state, status.role, status.pending_writes), (State::Unlocked, Role::Patient, Some(0)));
    assert!(status.user_id.starts_with("usr-") && !status.pins_expired);
    account.store().unwrap().count().unwrap();
    let token = account.access_token().await.unwrap();
    // Neither the password nor any token is on disk: the refresh token is in the keychain.
    for secret in [PASSWORD, token.expose(), world.username.as_str()] {
        assert!(!contains(&device.files(), secret), "the profile holds a secret or the username");
    }
    drop(account);

    // A later start: locked; the device key unlocks inside the 12-hour window, and a fresh
    // access token comes from the refresh token in the keychain.
    let mut later = Account::open(&device.profile, device.keychain.clone(), Arc::new(SystemClock)).unwrap();
    assert_eq!(later.status().state, State::Locked);
    assert!(matches!(later.store(), Err(Error::Unlock(UnlockError::Locked))));
    // No presence check on this device: the keychain is not even read; the password is asked.
    let absent = PresenceTestDouble::unavailable();
    assert!(matches!(later.unlock_with_device_key(&absent), Err(Error::Unlock(UnlockError::PresenceUnavailable))));
    assert_eq!((absent.asked(), later.status().state), (1, State::Locked));
    later.unlock_with_device_key(&PresenceTestDouble::present()).unwrap();
    later.store().unwrap();
    let fresh = later.access_token().await.unwrap();
    assert_ne!(fresh.expose(), token.expose());
    let policy = later.server().policy(&fresh).await.unwrap();
    assert_eq!(policy.policy.role, Role::Patient);

    // Locked by hand: only the password opens it again.
    later.lock().unwrap();
    drop(later);
    let mut again = Account::open(&device.profile, device.keychain.clone(), Arc::new(SystemClock)).unwrap();
    assert!(matches!(
        again.unlock_with_device_key(&PresenceTestDouble::present()),
        Err(Error::Unlock(UnlockError::PasswordRequired))
    ));
    assert!(matches!(
        again.unlock_with_password(&Password::new("wrong password here")),
        Err(Error::Unlock(UnlockError::WrongPassword { .. }))
    ));
    again.unlock_with_password(&Password::new(PASSWORD)).unwrap();
    assert_eq!(again.status().state, State::Unlocked);
    // Every run's transitions are queued on the device, as one chain across runs.
    let queued = again.queued_audit().unwrap();
    let actions: Vec<&str> = queued.iter().map(|r| r.event.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "session unlocked (full-sign-in)",
            "session unlocked (presence)",
            "session locked (manual)",
            "session unlocked (offline-password)"
        ]
    );
    for pair in queued.windows(2) {
        assert_eq!((pair[1].prev_hash, pair[1].seq), (pair[0].hash, pair[0].seq + 1));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_windows_only_a_full_sign_in_unlocks_and_it_reopens_the_same_vault() {
    let world = World::new(Role::Clinician);
    let running = Running::start(&world.data).await;
    let device = Device::new();
    let clock = Arc::new(ManualClock::new(SystemClock.now_unix()));
    let mut account = device.sign_in(&world, &running, clock.clone(), 0).await.unwrap();
    account.store().unwrap().put(PATIENT_P1).unwrap();
    drop(account);

    clock.advance(std::time::Duration::from_secs(13 * 3600));
    let mut later = Account::open(&device.profile, device.keychain.clone(), clock.clone()).unwrap();
    let presence = PresenceTestDouble::present();
    assert!(matches!(later.unlock_with_device_key(&presence), Err(Error::Unlock(UnlockError::ReauthRequired))));
    assert_eq!(presence.asked(), 0, "past the window the person is not even asked");
    // Inside the 72-hour offline grace, the password still works.
    later.unlock_with_password(&Password::new(PASSWORD)).unwrap();
    drop(later);
    clock.advance(std::time::Duration::from_secs(60 * 3600));
    let mut stale = Account::open(&device.profile, device.keychain.clone(), clock.clone()).unwrap();
    assert!(matches!(
        stale.unlock_with_password(&Password::new(PASSWORD)),
        Err(Error::Unlock(UnlockError::OfflineGraceOver))
    ));
    assert!(matches!(stale.store(), Err(Error::Unlock(UnlockError::Locked))));
    drop(stale);

    // A full sign-in reopens the same vault: the record written before is still there.
    let mut renewed = device.sign_in(&world, &running, Arc::new(SystemClock), 1).await.unwrap();
    assert!(renewed.store().unwrap().get("Patient", "p1").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn another_account_is_refused_logout_revokes_and_a_remote_wipe_erases() {
    let world = World::new(Role::Nurse);
    let running = Running::start(&world.data).await;
    let device = Device::new();
    let account = device.sign_in(&world, &running, Arc::new(SystemClock), 0).await.unwrap();
    let out = account.logout().await.unwrap();
    assert!(out.revoked_at_server && !out.cache_wiped);
    assert!(matches!(
        Account::open(&device.profile, device.keychain.clone(), Arc::new(SystemClock)),
        Err(Error::Cache(CacheError::NoVault))
    ));

    // Someone else on this profile: refused, the first user's vault untouched.
    let other = World::new(Role::Nurse);
    let other_running = Running::start(&other.data).await;
    let refused = device.sign_in(&other, &other_running, Arc::new(SystemClock), 0).await;
    assert!(matches!(refused, Err(Error::Cache(CacheError::OtherAccount))));

    // Signed in again, then the device is flagged for wipe: the next refresh erases it.
    let mut account = device.sign_in(&world, &running, Arc::new(SystemClock), 1).await.unwrap();
    let token = account.access_token().await.unwrap();
    drop(account);
    // The user flags their own device for wipe (as from another device's settings).
    revoke_from_elsewhere(&world, &token, true).await;
    let mut later = Account::open(&device.profile, device.keychain.clone(), Arc::new(SystemClock)).unwrap();
    later.unlock_with_device_key(&PresenceTestDouble::present()).unwrap();
    assert!(matches!(later.access_token().await, Err(Error::Server(ServerError::RemoteWipe))));
    assert!(!device.profile.has_vault(), "the vault is gone");
    assert!(matches!(
        Account::open(&device.profile, device.keychain.clone(), Arc::new(SystemClock)),
        Err(Error::Cache(CacheError::NoVault))
    ));
}

/// The server's certificate changes to a key the device never pinned (two rotations on,
/// the device having slept through both): the connection fails closed, and the refusal is
/// in the local audit for the organisation to see.
#[tokio::test(flavor = "multi_thread")]
async fn a_pin_mismatch_fails_closed_and_is_audited() {
    let world = World::new(Role::Patient);
    let running = Running::start(&world.data).await;
    let device = Device::new();
    let account = device.sign_in(&world, &running, Arc::new(SystemClock), 0).await.unwrap();
    drop(account);
    drop(running);
    world.data.rotate_tls("localhost").unwrap();
    world.data.rotate_tls("localhost").unwrap();
    let rotated = Running::start(&world.data).await;
    // The profile remembers the old port's address: point it at the new one.
    let facts_path = device.profile.dir().join("session.json");
    let facts = std::fs::read_to_string(&facts_path).unwrap();
    let old_url = facts
        .split("\"server\": \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(&facts_path, facts.replace(&old_url, rotated.url().as_str())).unwrap();

    let mut later = Account::open(&device.profile, device.keychain.clone(), Arc::new(SystemClock)).unwrap();
    later.unlock_with_device_key(&PresenceTestDouble::present()).unwrap();
    assert!(matches!(later.sync(&mut |_| {}).await, Err(Error::Connection(ConnectionError::PinMismatch))));
    let actions: Vec<String> = later.queued_audit().unwrap().into_iter().map(|r| r.event.action).collect();
    assert_eq!(actions.last().map(String::as_str), Some("connection refused (pin-mismatch)"), "{actions:?}");
}

/// The organisation revokes the device (here the user, from another device): at its next
/// contact the device is told so and erases its copy; the transition is queued for upload.
#[tokio::test(flavor = "multi_thread")]
async fn revocation_by_the_organisation_erases_the_cache() {
    let world = World::new(Role::Clinician);
    let running = Running::start(&world.data).await;
    let device = Device::new();
    let mut account = device.sign_in(&world, &running, Arc::new(SystemClock), 0).await.unwrap();
    let token = account.access_token().await.unwrap();
    drop(account);
    revoke_from_elsewhere(&world, &token, false).await;

    let mut later = Account::open(&device.profile, device.keychain.clone(), Arc::new(SystemClock)).unwrap();
    later.unlock_with_device_key(&PresenceTestDouble::present()).unwrap();
    let revoked = later.access_token().await.unwrap_err();
    assert!(matches!(revoked, Error::Server(ServerError::DeviceRevoked)), "{revoked:?}");
    assert!(revoked.to_string().contains("erased"));
    assert!(!device.profile.has_vault());
    let actions: Vec<String> = later.queued_audit().unwrap().into_iter().map(|r| r.event.action).collect();
    assert_eq!(actions.last().map(String::as_str), Some("session wiped (revoked)"));
}

/// The app's timers: the idle limit and going to the background lock and drop the key (a
/// presence check unlocks again, unlike a manual lock); export needs a recent full sign-in.
#[tokio::test(flavor = "multi_thread")]
async fn idle_and_background_lock_drop_the_key_and_export_needs_step_up() {
    use std::time::Duration;
    let world = World::new(Role::Patient);
    let running = Running::start(&world.data).await;
    let device = Device::new();
    let clock = Arc::new(ManualClock::new(SystemClock.now_unix()));
    let mut account = device.sign_in(&world, &running, clock.clone(), 0).await.unwrap();
    account.store().unwrap().put(PATIENT_P1).unwrap();
    let export = account.export_patient("p1").await.unwrap();
    let bundle: serde_json::Value = serde_json::from_str(&export.bundle).unwrap();
    assert_eq!(
        (bundle["type"].as_str(), bundle["entry"][0]["resource"]["id"].as_str()),
        (Some("collection"), Some("p1"))
    );
    assert!(export.summary_html.starts_with("<!DOCTYPE html>") && !export.summary_html.contains("<script"));
    assert_eq!(export.documents_missing, 0);

    // Input restarts the patient's 5-minute idle timer; without it the account locks.
    clock.advance(Duration::from_secs(240));
    assert!(!account.tick());
    account.user_input();
    clock.advance(Duration::from_secs(240));
    assert!(!account.tick(), "input restarted the idle timer");
    // Past the 5-minute step-up window, export is refused until a full sign-in.
    assert!(matches!(account.export_patient("p1").await, Err(Error::Server(ServerError::StepUpRequired))));
    clock.advance(Duration::from_secs(61));
    assert!(account.tick(), "idle for 5 minutes: locked now");
    assert!(!account.tick(), "a lock is reported once");
    assert!(matches!(account.store(), Err(Error::Unlock(UnlockError::Locked))));
    assert_eq!(account.status().state, State::Locked);
    // An idle lock is not a walk-away lock: presence unlocks inside the 12-hour window.
    account.unlock_with_device_key(&PresenceTestDouble::present()).unwrap();
    account.store().unwrap();
    // The patient policy's background grace is zero: minimising locks at once.
    assert!(account.backgrounded());
    assert!(matches!(account.store(), Err(Error::Unlock(UnlockError::Locked))));
    assert!(!account.foregrounded());
    account.unlock_with_password(&Password::new(PASSWORD)).unwrap();
    assert!(account.os_locked(), "the OS screen lock locks at once");
    assert!(!account.os_locked());
    let actions: Vec<String> = account.queued_audit().unwrap().into_iter().map(|r| r.event.action).collect();
    for reason in ["idle", "backgrounded", "os-locked"] {
        assert!(actions.iter().any(|a| a.contains(reason)), "{reason} lock audited: {actions:?}");
    }
}

/// A lost phone: the user lists their devices, signs the other one out (its next contact
/// erases its copy), and later signs out everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn devices_are_listed_another_is_signed_out_and_sign_out_everywhere_ends_them_all() {
    let world = World::new(Role::Patient);
    let running = Running::start(&world.data).await;
    let (laptop, phone, tablet) = (Device::new(), Device::new(), Device::new());
    // Three sign-ins in one window: the codes of the step before, this one and the next.
    let mut on_laptop = laptop.sign_in(&world, &running, Arc::new(SystemClock), -1).await.unwrap();
    let mut on_phone = phone.sign_in(&world, &running, Arc::new(SystemClock), 0).await.unwrap();
    let devices = on_laptop.devices().await.unwrap();
    assert_eq!(devices.len(), 2);
    let this = devices.iter().find(|d| d.current).unwrap();
    let other = devices.iter().find(|d| !d.current).unwrap();
    assert!(matches!(on_laptop.revoke_device(&this.id).await, Err(Error::InvalidArgument { .. })));
    assert!(matches!(on_laptop.revoke_device("../policy").await, Err(Error::InvalidArgument { .. })));
    assert!(matches!(on_laptop.revoke_device("dev-nobody").await, Err(Error::InvalidArgument { .. })));
    on_laptop.revoke_device(&other.id).await.unwrap();
    // The phone's next contact: signed out, its copy erased.
    assert!(matches!(on_phone.sync(&mut |_| {}).await, Err(Error::Server(ServerError::DeviceRevoked))));
    assert!(!phone.profile.has_vault());
    drop(on_phone);

    let mut on_tablet = tablet.sign_in(&world, &running, Arc::new(SystemClock), 1).await.unwrap();
    let out = on_laptop.sign_out_everywhere().await.unwrap();
    assert!(out.revoked_at_server);
    assert!(matches!(on_tablet.sync(&mut |_| {}).await, Err(Error::Server(ServerError::DeviceRevoked))));
}

/// Replacing the authenticator: only inside the step-up window, the old one works until a
/// code from the new one is confirmed, and afterwards only the new one signs in.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_authenticator_replaces_the_old_one_only_once_confirmed() {
    use std::time::Duration;
    let mut world = World::new(Role::Patient);
    let running = Running::start(&world.data).await;
    let device = Device::new();
    let clock = Arc::new(ManualClock::new(SystemClock.now_unix()));
    // The current step's code: one from the step before can age out while the server
    // checks the password (a step boundary in between), which made this test flaky.
    let mut account = device.sign_in(&world, &running, clock.clone(), 0).await.unwrap();

    assert!(matches!(
        account.confirm_authenticator(&world.code(0)).await,
        Err(Error::Server(ServerError::NoPendingAuthenticator))
    ));
    assert!(matches!(account.confirm_authenticator("12x456").await, Err(Error::Server(ServerError::BadCode))));
    let enrollment = account.begin_authenticator_change().await.unwrap();
    assert!(enrollment.otpauth_uri.expose().starts_with("otpauth://totp/"));
    assert!(enrollment.qr_png_base64.expose().starts_with("iVBORw0KGgo"), "a PNG");
    assert!(!format!("{enrollment:?}").contains("otpauth://"), "the secret never reaches a log");
    // A code from the old authenticator does not confirm the new one.
    assert!(matches!(account.confirm_authenticator(&world.code(0)).await, Err(Error::Server(ServerError::BadCode))));
    let old_code = world.code(1);
    world.scan_authenticator(enrollment.otpauth_uri.expose());
    account.confirm_authenticator(&world.code(0)).await.unwrap();

    // The old authenticator no longer signs in; the new one does.
    let elsewhere = Device::new();
    let server = carekeep_core::net::Server::connect(running.url(), world.pins()).unwrap();
    let challenge = server.login(&world.username, &world.password, None).await.unwrap();
    assert!(matches!(
        server.verify_code(challenge, &old_code, "old phone").await,
        Err(Error::Server(ServerError::BadCode))
    ));
    elsewhere.sign_in(&world, &running, Arc::new(SystemClock), 1).await.unwrap();

    // Past the step-up window, starting another change needs a full sign-in first.
    clock.advance(Duration::from_secs(301));
    assert!(matches!(account.begin_authenticator_change().await, Err(Error::Server(ServerError::StepUpRequired))));
}

/// "Who viewed my record" from the server: after a clinician on the care team syncs, the
/// patient sees that access (who, role, which record), fetched without a patient id in the URL.
#[tokio::test(flavor = "multi_thread")]
async fn the_patient_sees_a_clinicians_access_in_the_servers_trail() {
    let patient = World::demo(Role::Patient);
    let clinician = patient.colleague(Role::Clinician);
    let running = Running::start(&patient.data).await;
    let (workstation, phone) = (Device::new(), Device::new());
    let mut at_clinic = workstation
        .sign_in(&clinician, &running, Arc::new(SystemClock), 0)
        .await
        .unwrap();
    at_clinic.sync(&mut |_| {}).await.unwrap();

    let mut at_home = phone.sign_in(&patient, &running, Arc::new(SystemClock), 0).await.unwrap();
    let history = at_home.server_access_history().await.unwrap();
    let by_clinician: Vec<_> = history.iter().filter(|a| a.role.as_deref() == Some("clinician")).collect();
    assert!(!by_clinician.is_empty(), "the clinician's sync is in the trail: {history:?}");
    let access = by_clinician[0];
    assert_eq!(access.who.as_deref(), Some(clinician.username.as_str()));
    assert!(access.patient.is_some() && !access.break_glass && !access.denied);
    assert!(access.action.starts_with("GET /fhir"), "{}", access.action);
    // Every entry is about a record the patient may see: their own, or one they are proxy for.
    let store = patient.data.open_store().unwrap();
    let mine: Vec<String> = history.iter().filter_map(|a| a.patient.clone()).collect();
    for id in &mine {
        let trail = carekeep_server::audit::query(&store, id, "2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z").unwrap();
        assert!(!trail.is_empty());
    }
    assert!(history.windows(2).all(|w| w[0].at >= w[1].at), "newest first");
}

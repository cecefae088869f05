//! The vault's lifecycle against the real Secret Service and real SQLCipher files.

mod common;

use std::sync::Arc;
use std::time::Duration;

use carekeep_core::clock::ManualClock;
use carekeep_core::error::{CacheError, UnlockError};
use carekeep_core::{Error, Keychain, Password, UnlockPolicy, Vault};
use common::*;

const PATIENT: &str = r#"{"resourceType":"Patient","id":"p1","name":[{"family":"Testperson"}]}"#;

#[test]
fn create_lock_and_unlock_both_ways() {
    let (_dir, profile, keychain, mut vault) = new_vault();
    vault.store().unwrap().put(PATIENT).unwrap();
    vault.lock();
    assert!(!vault.is_unlocked());
    assert!(matches!(vault.store(), Err(Error::Unlock(UnlockError::Locked))));

    let mut reopened = Vault::open(&profile, keychain.clone()).unwrap();
    assert!(matches!(reopened.store(), Err(Error::Unlock(UnlockError::Locked))));
    reopened.unlock_with_device_key().unwrap();
    assert_eq!(reopened.store().unwrap().get("Patient", "p1").unwrap().unwrap().json, PATIENT);
    reopened.lock();
    reopened.unlock_with_password(&password()).unwrap();
    assert_eq!(reopened.store().unwrap().count().unwrap(), 1);
}

#[test]
fn creating_over_an_existing_vault_is_refused() {
    let (_dir, profile, keychain, _vault) = new_vault();
    let again = Vault::create(&profile, keychain, &user(), &device(), &password());
    assert!(matches!(again, Err(Error::Cache(CacheError::VaultExists))));
}

#[test]
fn opening_an_empty_profile_says_there_is_no_vault() {
    let (_dir, profile) = profile();
    assert!(matches!(Vault::open(&profile, keychain()), Err(Error::Cache(CacheError::NoVault))));
}

#[test]
fn wrong_password_is_typed_and_counted_and_the_counter_survives_a_restart() {
    let (_dir, profile, keychain, mut vault) = new_vault();
    vault.lock();
    drop(vault);
    let mut vault = Vault::open(&profile, keychain.clone()).unwrap();
    match vault.unlock_with_password(&Password::new("wrong")) {
        Err(Error::Unlock(UnlockError::WrongPassword { attempts_left })) => assert_eq!(attempts_left, 9),
        other => panic!("{other:?}"),
    }
    drop(vault);
    // A new process (here: a new handle) sees the same count.
    let mut vault = Vault::open(&profile, keychain).unwrap();
    assert_eq!(vault.failed_attempts().unwrap(), 1);
    match vault.unlock_with_password(&Password::new("still wrong")) {
        Err(Error::Unlock(UnlockError::WrongPassword { attempts_left })) => assert_eq!(attempts_left, 8),
        other => panic!("{other:?}"),
    }
    vault.unlock_with_password(&password()).unwrap();
    assert_eq!(vault.failed_attempts().unwrap(), 0, "a successful unlock resets the counter");
}

#[test]
fn backoff_from_the_third_failure_then_wipe_after_ten() {
    let (_dir, profile, keychain, mut vault) = new_vault();
    vault.lock();
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let policy = UnlockPolicy::default();
    let mut vault = Vault::open(&profile, keychain.clone())
        .unwrap()
        .with_clock(clock.clone())
        .with_policy(policy);
    let wrong = Password::new("nope");
    for n in 1..=9u32 {
        if n > 1 {
            // Try too early, once the back-off applies: refused without counting.
            let wait = policy.delay_after(n - 1);
            if wait > Duration::ZERO {
                match vault.unlock_with_password(&wrong) {
                    Err(Error::Unlock(UnlockError::UnlockBackoff { retry_after })) => assert_eq!(retry_after, wait),
                    other => panic!("attempt {n} before the wait: {other:?}"),
                }
                assert_eq!(vault.failed_attempts().unwrap(), n - 1);
                clock.advance(wait);
            }
        }
        assert!(
            matches!(vault.unlock_with_password(&wrong), Err(Error::Unlock(UnlockError::WrongPassword { .. }))),
            "attempt {n}"
        );
    }
    assert_eq!(policy.delay_after(2), Duration::ZERO, "no wait before the third failure");
    clock.advance(policy.delay_after(9));
    assert!(matches!(vault.unlock_with_password(&wrong), Err(Error::Unlock(UnlockError::WipedAfterFailedAttempts))));
    assert!(!profile.has_vault());
    assert!(files_under(profile.dir()).is_empty(), "{:?}", files_under(profile.dir()));
    assert!(matches!(Vault::open(&profile, keychain), Err(Error::Cache(CacheError::NoVault))));
}

#[test]
fn setting_the_clock_back_does_not_shorten_the_backoff() {
    let (_dir, profile, keychain, mut vault) = new_vault();
    vault.lock();
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let mut vault = Vault::open(&profile, keychain).unwrap().with_clock(clock.clone());
    for _ in 0..3 {
        let _ = vault.unlock_with_password(&Password::new("nope"));
    }
    clock.rewind(Duration::from_secs(3600));
    assert!(matches!(vault.unlock_with_password(&password()), Err(Error::Unlock(UnlockError::UnlockBackoff { .. }))));
    clock.advance(UnlockPolicy::default().delay_after(3));
    vault.unlock_with_password(&password()).unwrap();
}

/// An attempt counts from the moment it starts, so a check cut short (the app killed while
/// the password key was derived) counts like a wrong one; the wait then speaks of unlock
/// attempts, not of wrong passwords the person never typed.
#[test]
fn attempts_cut_short_count_and_the_wait_says_attempts() {
    let (_dir, profile, keychain, mut vault) = new_vault();
    vault.lock();
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    std::fs::write(profile.dir().join("unlock-attempts"), "3 1800000000\n").unwrap();
    let mut vault = Vault::open(&profile, keychain).unwrap().with_clock(clock);
    let held = vault.unlock_with_password(&password()).unwrap_err();
    assert!(matches!(held, Error::Unlock(UnlockError::UnlockBackoff { .. })), "{held:?}");
    let said = held.to_string();
    assert!(said.contains("unlock attempts") && !said.contains("wrong password"), "{said}");
}

#[test]
fn change_password_rewraps_only() {
    let (_dir, profile, keychain, mut vault) = new_vault();
    vault.store().unwrap().put(PATIENT).unwrap();
    let db_before = std::fs::read(profile.dir().join("vault.db")).unwrap();
    let new = Password::new("a new long passphrase");
    assert!(matches!(
        vault.change_password(&Password::new("wrong"), &new),
        Err(Error::Unlock(UnlockError::WrongPassword { .. }))
    ));
    vault.change_password(&password(), &new).unwrap();
    assert_eq!(std::fs::read(profile.dir().join("vault.db")).unwrap(), db_before, "the database is not rewritten");
    vault.lock();
    let mut vault = Vault::open(&profile, keychain).unwrap();
    assert!(matches!(vault.unlock_with_password(&password()), Err(Error::Unlock(UnlockError::WrongPassword { .. }))));
    vault.unlock_with_password(&new).unwrap();
    vault.lock();
    vault.unlock_with_device_key().unwrap();
    assert_eq!(vault.store().unwrap().count().unwrap(), 1);
}

#[test]
fn rotating_the_database_key_reencrypts_and_keeps_the_data() {
    let (_dir, profile, keychain, mut vault) = new_vault();
    vault.store().unwrap().put(PATIENT).unwrap();
    let old_db = std::fs::read(profile.dir().join("vault.db")).unwrap();
    let old_keys = std::fs::read(profile.dir().join("vault.keys")).unwrap();
    vault.rotate_database_key(&password()).unwrap();
    assert_eq!(vault.store().unwrap().count().unwrap(), 1, "still usable after rotation");
    vault.lock();

    let new_db = std::fs::read(profile.dir().join("vault.db")).unwrap();
    assert_ne!(old_db[..16384], new_db[..16384], "every page is re-encrypted");
    assert!(!profile.dir().join("vault.keys.next").exists());

    // The old key file no longer opens the database.
    std::fs::write(profile.dir().join("vault.keys"), &old_keys).unwrap();
    let mut stale = Vault::open(&profile, keychain.clone()).unwrap();
    assert!(matches!(stale.unlock_with_password(&password()), Err(Error::Cache(CacheError::NotAVault))));
}

#[test]
fn an_interrupted_rotation_is_completed_on_the_next_unlock() {
    let (_dir, profile, keychain, mut vault) = new_vault();
    vault.store().unwrap().put(PATIENT).unwrap();
    let old_keys = std::fs::read(profile.dir().join("vault.keys")).unwrap();
    vault.rotate_database_key(&password()).unwrap();
    vault.lock();
    // Simulate a crash after the rekey but before the new key file replaced the old one.
    let new_keys = std::fs::read(profile.dir().join("vault.keys")).unwrap();
    std::fs::write(profile.dir().join("vault.keys.next"), &new_keys).unwrap();
    std::fs::write(profile.dir().join("vault.keys"), &old_keys).unwrap();

    let mut vault = Vault::open(&profile, keychain).unwrap();
    vault.unlock_with_device_key().unwrap();
    assert_eq!(vault.store().unwrap().count().unwrap(), 1);
    assert!(!profile.dir().join("vault.keys.next").exists());
    assert_eq!(std::fs::read(profile.dir().join("vault.keys")).unwrap(), new_keys);
}

#[test]
fn missing_device_key_means_password_then_reenrol() {
    let (_dir, profile, keychain, mut vault) = new_vault();
    vault.lock();
    // Someone removes the item from the keychain (or the biometric set changed).
    let fresh = Vault::open(&profile, keychain.clone()).unwrap();
    let device = fresh.device_id().clone();
    drop(fresh);
    let entry = keyring::Entry::new(keychain.service(), &format!("{}/device-key", device.as_str())).unwrap();
    entry.delete_credential().unwrap();

    let mut vault = Vault::open(&profile, keychain).unwrap();
    assert!(matches!(vault.unlock_with_device_key(), Err(Error::Unlock(UnlockError::DeviceKeyMissing))));
    vault.unlock_with_password(&password()).unwrap();
    vault.enroll_device_key().unwrap();
    vault.lock();
    vault.unlock_with_device_key().unwrap();
}

#[test]
fn wipe_leaves_nothing_readable() {
    let (_dir, profile, keychain, mut vault) = new_vault();
    vault.store().unwrap().put(PATIENT).unwrap();
    let device = vault.device_id().clone();
    let copy_of_db = std::fs::read(profile.dir().join("vault.db")).unwrap();
    let report = vault.wipe().unwrap();
    assert!(report.keychain_cleared);
    assert!(files_under(profile.dir()).is_empty());
    assert!(!profile.dir().exists());
    assert!(matches!(vault.unlock_with_device_key(), Err(Error::Cache(CacheError::NoVault))));
    let entry = keyring::Entry::new(keychain.service(), &format!("{}/device-key", device.as_str())).unwrap();
    assert!(matches!(entry.get_secret(), Err(keyring::Error::NoEntry)));
    // A copy taken before the wipe is ciphertext with no key left anywhere.
    assert!(!contains(&copy_of_db, b"Testperson"));
    assert!(!contains(&copy_of_db, b"SQLite format 3"));
}

#[test]
fn keychain_unavailable_is_typed_and_password_unlock_still_works() {
    const CHILD: &str = "CAREKEEP_TEST_PROFILE";
    if let Ok(dir) = std::env::var(CHILD) {
        // In the child: no D-Bus session bus, so no Secret Service.
        let service = std::env::var("CAREKEEP_TEST_SERVICE").unwrap();
        let profile = carekeep_core::Profile::new(dir);
        let mut vault = Vault::open(&profile, Keychain::with_service(service.clone())).unwrap();
        assert!(matches!(vault.unlock_with_device_key(), Err(Error::Unlock(UnlockError::KeychainUnavailable))));
        vault.unlock_with_password(&password()).unwrap();
        assert_eq!(vault.store().unwrap().count().unwrap(), 1);
        vault.lock();

        // A vault created without a keychain works by password alone.
        let (_d2, other) = common::profile();
        let mut created =
            Vault::create(&other, Keychain::with_service(service), &user(), &device(), &password()).unwrap();
        assert!(!created.has_device_key().unwrap());
        created.lock();
        assert!(matches!(created.unlock_with_device_key(), Err(Error::Unlock(UnlockError::DeviceKeyMissing))));
        created.unlock_with_password(&password()).unwrap();
        return;
    }
    let (_dir, profile, keychain, mut vault) = new_vault();
    vault.store().unwrap().put(PATIENT).unwrap();
    vault.lock();
    let service = keychain.service().to_owned();
    let out = rerun_in_child(
        "keychain_unavailable_is_typed_and_password_unlock_still_works",
        &[
            (CHILD, profile.dir().to_str().unwrap()),
            ("CAREKEEP_TEST_SERVICE", &service),
            ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/carekeep-no-bus"),
        ],
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn debug_output_of_a_vault_holds_no_key_material() {
    let (_dir, _profile, _keychain, vault) = new_vault();
    let shown = format!("{vault:?}");
    assert!(shown.contains("unlocked: true"));
    assert!(!shown.contains("k_db") && !shown.contains("conn"), "{shown}");
}

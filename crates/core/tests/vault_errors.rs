//! Bad files and full disks give typed errors, never panics, and lose nothing committed.

mod common;

use carekeep_core::error::CacheError;
use carekeep_core::{Error, Keychain, Password, Profile, Vault};
use common::*;

/// The vault's page size (see `vault/db.rs`).
const PAGE: usize = 16384;

fn bundle_of(n: usize, offset: usize) -> String {
    let entries: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({"resource": {
                "resourceType": "Observation", "id": format!("obs-{}", offset + i), "status": "final",
                "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
                "effectiveDateTime": "2024-01-01T00:00:00Z",
                "valueQuantity": {"value": i, "unit": "mg/dL"},
                "note": [{"text": "x".repeat(400)}]
            }})
        })
        .collect();
    serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": entries}).to_string()
}

/// A vault holding some records, locked, with its file paths.
fn locked_vault_with_data() -> (tempfile::TempDir, Profile, Keychain) {
    let (dir, profile, keychain, mut vault) = new_vault();
    vault.store().unwrap().ingest_bundle(&bundle_of(300, 0)).unwrap();
    vault.lock();
    (dir, profile, keychain)
}

fn unlock(profile: &Profile, keychain: &Keychain) -> Result<Vault, Error> {
    let mut vault = Vault::open(profile, keychain.clone())?;
    vault.unlock_with_device_key()?;
    // Touch every page: damage may sit anywhere.
    vault.store()?.all()?;
    Ok(vault)
}

#[test]
fn truncated_database_is_a_corrupt_cache() {
    let (_dir, profile, keychain) = locked_vault_with_data();
    let db = profile.dir().join("vault.db");
    let len = std::fs::metadata(&db).unwrap().len();
    for new_len in [len / 2, len - 100, 0] {
        let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        file.set_len(new_len).unwrap();
        assert!(
            matches!(unlock(&profile, &keychain), Err(Error::Cache(CacheError::CorruptCache))),
            "truncated to {new_len}"
        );
    }
}

#[test]
fn a_damaged_page_is_a_corrupt_cache_and_wipe_is_the_way_out() {
    let (_dir, profile, keychain) = locked_vault_with_data();
    let db = profile.dir().join("vault.db");
    let original = std::fs::read(&db).unwrap();
    let pages = original.len() / PAGE;
    assert!(pages > 8);
    // One flipped byte in one page: the background integrity check finds it wherever it is.
    for page in [2, pages / 2, pages - 1] {
        let mut bytes = original.clone();
        bytes[page * PAGE + 100] ^= 0xff;
        std::fs::write(&db, &bytes).unwrap();
        let mut vault = Vault::open(&profile, keychain.clone()).unwrap();
        vault.unlock_with_device_key().unwrap();
        assert!(matches!(vault.verify_integrity(), Err(Error::Cache(CacheError::CorruptCache))), "page {page}");
    }
    std::fs::write(&db, &original).unwrap();
    unlock(&profile, &keychain).unwrap().verify_integrity().unwrap();
    // Damage in the pages a query reads fails that query with the same typed error.
    let mut bytes = original.clone();
    for page in 1..pages {
        bytes[page * PAGE + 100] ^= 0xff;
    }
    std::fs::write(&db, &bytes).unwrap();
    let err = unlock(&profile, &keychain).expect_err("damage must be detected");
    assert!(matches!(err, Error::Cache(CacheError::CorruptCache)), "{err:?}");
    assert!(err.to_string().contains("Erase it and sign in again"));
    // The way out: wipe, then a fresh vault can be created in the same profile.
    let _ = carekeep_core::vault::wipe_profile(&profile, &keychain).unwrap();
    Vault::create(&profile, keychain, &user(), &device(), &password()).unwrap();
}

#[test]
fn a_foreign_database_or_another_vaults_database_is_not_a_vault() {
    let (_dir, profile, keychain) = locked_vault_with_data();
    let db = profile.dir().join("vault.db");
    // Another vault's database in place of ours: our key does not open it.
    let (_other_dir, other_profile, _other_keychain, mut other) = new_vault();
    other.lock();
    std::fs::copy(other_profile.dir().join("vault.db"), &db).unwrap();
    let _ = std::fs::remove_file(profile.dir().join("vault.db-wal"));
    assert!(matches!(unlock(&profile, &keychain), Err(Error::Cache(CacheError::NotAVault))));

    // A plain SQLite file.
    std::fs::remove_file(&db).unwrap();
    let plain = rusqlite::Connection::open(&db).unwrap();
    plain.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    drop(plain);
    assert!(matches!(unlock(&profile, &keychain), Err(Error::Cache(CacheError::NotAVault))));

    // Random bytes of a plausible size.
    std::fs::write(&db, vec![0x5a; 2 * PAGE]).unwrap();
    assert!(matches!(unlock(&profile, &keychain), Err(Error::Cache(CacheError::NotAVault))));
}

#[test]
fn a_damaged_key_file_is_typed_and_never_counted_as_a_wrong_password() {
    let (_dir, profile, keychain) = locked_vault_with_data();
    let keys = profile.dir().join("vault.keys");
    let mut bytes = std::fs::read(&keys).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&keys, &bytes).unwrap();
    assert!(matches!(Vault::open(&profile, keychain.clone()), Err(Error::Cache(CacheError::KeyFileInvalid))));
    std::fs::write(&keys, b"garbage").unwrap();
    assert!(matches!(Vault::open(&profile, keychain.clone()), Err(Error::Cache(CacheError::KeyFileInvalid))));
    assert!(!profile.dir().join("unlock-attempts").exists(), "no attempt was counted");
    // Wipe still finds and removes everything, keychain item included.
    let report = carekeep_core::vault::wipe_profile(&profile, &keychain).unwrap();
    assert!(report.keychain_cleared);
    assert!(files_under(profile.dir()).is_empty());
}

#[test]
fn wrong_key_never_opens() {
    let (_dir, profile, keychain) = locked_vault_with_data();
    // Swap in the key file of another vault: its keys unwrap, but not for this database.
    let (_other_dir, other_profile, other_keychain, mut other) = new_vault();
    other.lock();
    std::fs::copy(other_profile.dir().join("vault.keys"), profile.dir().join("vault.keys")).unwrap();
    let mut vault = Vault::open(&profile, other_keychain).unwrap();
    assert!(matches!(vault.unlock_with_device_key(), Err(Error::Cache(CacheError::NotAVault))));
    assert!(matches!(vault.unlock_with_password(&password()), Err(Error::Cache(CacheError::NotAVault))));
    assert_eq!(vault.failed_attempts().unwrap(), 0, "a right password for a wrong file is not a guess");
    drop(keychain);
}

/// A small tmpfs, mounted for one test and unmounted after it.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap().keep();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system holding `dir` to the last byte with a ballast file.
fn fill(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

#[test]
fn disk_full_is_typed_and_loses_nothing_committed() {
    let Some(fs) = Tmpfs::mount("4m") else {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root and must be able to mount a tmpfs for this test");
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let profile = Profile::new(fs.0.join("profile"));
    let keychain = keychain();
    let mut vault = Vault::create(&profile, keychain.clone(), &user(), &device(), &password()).unwrap();
    vault.store().unwrap().ingest_bundle(&bundle_of(50, 0)).unwrap();
    let committed = vault.store().unwrap().count().unwrap();
    let ballast = fill(&fs.0, "ballast");

    let mut offset = 1000;
    let err = loop {
        match vault.store().unwrap().ingest_bundle(&bundle_of(100, offset)) {
            Ok(_) => offset += 100,
            Err(e) => break e,
        }
        assert!(offset < 100_000, "the disk never filled");
    };
    assert!(matches!(err, Error::Cache(CacheError::DiskFull)), "{err:?}");
    assert!(err.to_string().contains("nothing saved before was lost"));
    let committed_now = vault.store().unwrap().count().unwrap();
    assert!(committed_now >= committed);

    // Key file writes fail cleanly too, keeping the old key file.
    let ballast2 = fill(&fs.0, "ballast2");
    let new_password = Password::new("another passphrase");
    assert!(matches!(vault.change_password(&password(), &new_password), Err(Error::Cache(CacheError::DiskFull))));
    vault.lock();

    // Space freed: everything committed is there, the old password still works.
    std::fs::remove_file(ballast).unwrap();
    std::fs::remove_file(ballast2).unwrap();
    let mut vault = Vault::open(&profile, keychain).unwrap();
    vault.unlock_with_password(&password()).unwrap();
    let mut store = vault.store().unwrap();
    assert_eq!(store.count().unwrap(), committed_now);
    assert!(store.get("Observation", "obs-0").unwrap().is_some());
    store.ingest_bundle(&bundle_of(10, 900_000)).unwrap();
    drop(vault);
    drop(fs);
}

//! Helpers shared by the integration tests: a private keychain namespace per test, a
//! temporary profile, and the fixtures copied from `shared/fixtures`.
#![allow(dead_code, missing_docs, reason = "shared by several test binaries, each using a part of it")]

use std::path::{Path, PathBuf};

use carekeep_core::{DeviceId, Keychain, Password, Profile, UserId, Vault};

/// A keychain service name of its own, so parallel tests never see each other's items.
pub fn keychain() -> Keychain {
    Keychain::with_service(format!("carekeep-test-{}", unique()))
}

pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn user() -> UserId {
    UserId::new("user-0001").unwrap()
}

pub fn device() -> DeviceId {
    DeviceId::new(format!("device-{}", unique())).unwrap()
}

pub fn password() -> Password {
    Password::new("correct horse battery staple")
}

/// A profile inside a fresh temporary directory (kept alive by the returned guard).
pub fn profile() -> (tempfile::TempDir, Profile) {
    let dir = tempfile::tempdir().unwrap();
    let profile = Profile::new(dir.path().join("profile"));
    (dir, profile)
}

/// A new vault with the real keychain; fails loudly when no Secret Service is running.
pub fn new_vault() -> (tempfile::TempDir, Profile, Keychain, Vault) {
    let (dir, profile) = profile();
    let keychain = keychain();
    let vault = Vault::create(&profile, keychain.clone(), &user(), &device(), &password()).unwrap();
    assert!(
        vault.has_device_key().unwrap(),
        "no Secret Service reachable: run the tests through `cargo xtask test`, which starts gnome-keyring"
    );
    (dir, profile, keychain, vault)
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// The JSON files of one fixture folder, sorted.
pub fn fixture_files(folder: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs this test binary's test `name` again in a child process with `env` set, returning
/// whether it passed. For cases that need a different process environment (no D-Bus).
pub fn rerun_in_child(name: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", name, "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

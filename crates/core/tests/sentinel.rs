//! PHI never reaches the disk in clear, nor an error message.

mod common;

use carekeep_core::Error;
use carekeep_core::error::RecordsError;
use carekeep_core::store::{PendingWrite, WriteMethod};
use common::*;

/// A string that occurs nowhere but in the records this test writes.
const SENTINEL: &str = "Zqxsentinelwvj";

fn scan(dir: &std::path::Path) -> Vec<String> {
    let files = files_under(dir);
    assert!(!files.is_empty());
    files
        .iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap();
            contains(&bytes, SENTINEL.as_bytes()) || contains(&bytes, SENTINEL.to_lowercase().as_bytes())
        })
        .map(|f| f.display().to_string())
        .collect()
}

#[test]
fn no_profile_file_holds_the_sentinel_in_clear() {
    let (_dir, profile, _keychain, mut vault) = new_vault();
    let mut bundle = std::fs::read_to_string(&fixture_files("carebundle")[3]).unwrap();
    // Every patient name and narrative of this bundle now carries the sentinel.
    let family =
        serde_json::from_str::<serde_json::Value>(&bundle).unwrap()["entry"][0]["resource"]["name"][0]["family"]
            .as_str()
            .unwrap()
            .to_owned();
    bundle = bundle.replace(&family, SENTINEL);
    assert!(bundle.contains(SENTINEL));
    {
        let mut store = vault.store().unwrap();
        store.ingest_bundle(&bundle).unwrap();
        let note = format!(
            r#"{{"resourceType":"Communication","status":"preparation","payload":[{{"contentString":"{SENTINEL} asks about dosage"}}]}}"#
        );
        store
            .outbox()
            .enqueue(&PendingWrite { method: WriteMethod::Create, body: note, if_match: None }, 0)
            .unwrap();
    }
    // While open (WAL and shared-memory files present) …
    assert!(profile.dir().join("vault.db-wal").exists());
    assert_eq!(scan(profile.dir()), Vec::<String>::new());
    // … after a rotation, which rewrites every page …
    vault.rotate_database_key(&password()).unwrap();
    assert_eq!(scan(profile.dir()), Vec::<String>::new());
    // … and once locked.
    vault.lock();
    assert_eq!(scan(profile.dir()), Vec::<String>::new());
}

#[test]
fn errors_about_records_never_quote_them() {
    let (_dir, _profile, _keychain, mut vault) = new_vault();
    let mut store = vault.store().unwrap();
    let bad = [
        format!(r#"{{"resourceType":"{SENTINEL}","id":"x"}}"#),
        format!(r#"{{"resourceType":"Patient","id":"{SENTINEL} x"}}"#),
        format!(r#"{{"resourceType":"Observation","id":"o","effectiveDateTime":"{SENTINEL}"}}"#),
        format!(r#"{{"resourceType":"Patient","id":"p","meta":{{"lastUpdated":"{SENTINEL}"}}}}"#),
        format!(r#"{{"resourceType":"Patient","id":"p","name":[{{"family":"{SENTINEL}"}}]"#),
    ];
    for json in &bad {
        let err = store.put(json).unwrap_err();
        assert!(matches!(err, Error::Records(RecordsError::InvalidResource { .. })));
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(SENTINEL), "{shown}");
    }
}

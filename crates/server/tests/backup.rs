//! Backups as an operator and an attacker meet them: taken while clinicians write, restored
//! into a new directory that serves exactly what was committed at the snapshot and whose
//! audit chain goes on from its head; and refused when altered, cut short, forged, sealed
//! for another key or of another server — leaving nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use base64::Engine as _;
use carekeep_protocol::auth::Role;
use carekeep_server::DataDir;
use carekeep_server::backup::{self, BackupKey, Manifest, Recipient};
use carekeep_server::records::{Records, Writer};
use serde_json::{Value, json};

const PASSWORD: &str = "a clinician's long password";
/// A patient's name that must never appear outside the store's encryption.
const SENTINEL: &str = "Backupsentinelname";

fn server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_carekeep-server")).args(args).output().unwrap()
}

fn run_ok(args: &[&str]) -> String {
    let out = server(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A temporary path as an argument (they are UTF-8).
fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A server directory with one patient (named [`SENTINEL`]) and a clinician on their care
/// team, and its backup key in `dir/key.txt`.
struct Clinic {
    root: PathBuf,
    data: DataDir,
    key: PathBuf,
    patient: String,
    clinician: carekeep_server::admin::NewUser,
}

fn clinic(dir: &Path, name: &str) -> Clinic {
    let root = dir.join(name);
    let (data, _) = DataDir::init(&root, "localhost").unwrap();
    let store = Arc::new(data.open_store().unwrap());
    carekeep_server::admin::add_tenant(&store, "clinic-1", "Clinic One", 0).unwrap();
    let records = Records::new(store.clone(), zeroize::Zeroizing::new(*data.master_keys().unwrap().documents));
    let body = json!({"resourceType": "Patient", "name": [{"family": SENTINEL}], "birthDate": "1961-02-03"});
    let patient = records
        .create("clinic-1", records.check(body, "Patient").unwrap(), &Writer::CLINIC)
        .unwrap()
        .0
        .id;
    let clinician =
        carekeep_server::admin::add_user(&store, "clinic-1", &format!("dr.{name}"), Role::Clinician, PASSWORD, 0)
            .unwrap();
    records.link("clinic-1", &clinician.id, &patient, "care-team").unwrap();
    let key = dir.join(format!("{name}-key.txt"));
    run_ok(&["backup", "key", "--data", s(&root), "--out", s(&key)]);
    Clinic { root, data, key, patient, clinician }
}

/// The heart-rate values of the patient's readings in `root`'s store, sorted.
fn stored_values(root: &Path) -> Vec<u64> {
    let store = DataDir::open(root).unwrap().open_store().unwrap();
    let conn = store.read();
    let mut values: Vec<u64> = conn
        .prepare(
            "SELECT CAST(json_extract(json, '$.valueQuantity.value') AS INTEGER) FROM resources
             WHERE type = 'Observation' AND tenant = 'clinic-1'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    values.sort_unstable();
    values
}

/// Each reading's value and when its write was answered, in order.
type Answered = Arc<std::sync::Mutex<Vec<(u64, Instant)>>>;

/// Readings 0, 1, 2, … of `patient`, written one after another until `stop`, each noted
/// with the moment it was answered.
fn write_in_order(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    patient: &str,
    stop: &Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<()>, Answered) {
    let acked = Answered::default();
    let (http, base, token, patient, stop, noted) =
        (http.clone(), base.to_owned(), token.to_owned(), patient.to_owned(), stop.clone(), acked.clone());
    let writer = tokio::spawn(async move {
        for value in 0_u32.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let response = http
                .post(format!("{base}/fhir/Observation"))
                .bearer_auth(&token)
                .json(&common::reading(&patient, value))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "a write failed while the backup ran");
            noted.lock().unwrap().push((u64::from(value), Instant::now()));
        }
    });
    (writer, acked)
}

/// How many of `patient`'s Observations the server at `base` serves, page after page.
async fn served_readings(http: &reqwest::Client, base: &str, token: &str, patient: &str) -> usize {
    let mut served = 0;
    let mut next = Some(format!("{base}/fhir/Observation?patient={patient}&_count=500"));
    while let Some(url) = next.take() {
        let page: Value = http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        served += page["entry"].as_array().map_or(0, Vec::len);
        next = page["link"].as_array().and_then(|links| {
            links
                .iter()
                .find(|l| l["relation"] == "next")
                .and_then(|l| l["url"].as_str())
                .map(str::to_owned)
        });
    }
    served
}

/// The clinic's readings in `data` that have no audit record of their creation.
fn unaudited_writes(data: &DataDir) -> i64 {
    let store = data.open_store().unwrap();
    let conn = store.read();
    conn.query_row(
        "SELECT count(*) FROM resources r WHERE r.type = 'Observation' AND r.tenant = 'clinic-1' AND NOT EXISTS (
            SELECT 1 FROM audit_log a WHERE json_extract(a.record, '$.event.resource_id') = r.id
              AND json_extract(a.record, '$.event.action') = 'POST /fhir/{type}')",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_while_writes_flow_restores_exactly_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let clinic = clinic(dir.path(), "main");
    // Enough records that the snapshot takes a while: the demo tenant beside the clinic.
    run_ok(&["seed-demo", "--data", s(&clinic.root)]);
    let http = common::client_for(&clinic.data);
    let (mut child, base) = common::serve_binary(&clinic.root);
    let token = common::sign_in(&http, &base, "dr.main", PASSWORD, &clinic.clinician.totp_base32, 0)
        .await
        .tokens["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // One device writes readings 0, 1, 2, … one after another, noting when each was answered.
    let stop = Arc::new(AtomicBool::new(false));
    let (writer, acked) = write_in_order(&http, &base, &token, &clinic.patient, &stop);
    let answered = || acked.lock().unwrap().len();
    while answered() < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let out = dir.path().join("clinic.ckb");
    let started = Instant::now();
    let backup_out = {
        let (root, out) = (clinic.root.clone(), out.clone());
        tokio::task::spawn_blocking(move || run_ok(&["backup", "--data", s(&root), "--out", s(&out)]))
            .await
            .unwrap()
    };
    let finished = Instant::now();
    let during_backup = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at > started && *at < finished)
        .count();
    while answered() < acked.lock().unwrap().iter().filter(|(_, at)| *at < finished).count() + 10 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(during_backup > 0, "no write was answered while the backup ran");

    // Restored, it holds readings 0..=k: every one answered before the backup began, none
    // that was not yet sent when it ended, and no gap.
    let restored = dir.path().join("restored");
    let restore_out = run_ok(&["restore", "--from", s(&out), "--key", s(&clinic.key), "--data", s(&restored)]);
    let values = stored_values(&restored);
    let acked = acked.lock().unwrap().clone();
    let before = acked.iter().filter(|(_, at)| *at < started).count() as u64;
    let by_end = acked.iter().filter(|(_, at)| *at < finished).count() as u64;
    assert_eq!(values, (0..values.len() as u64).collect::<Vec<_>>(), "the restored readings have a gap");
    assert!(values.len() as u64 >= before, "{} readings restored, {before} were answered before", values.len());
    assert!(values.len() as u64 <= by_end + 1, "{} readings restored, {by_end} answered by the end", values.len());
    assert!(stored_values(&clinic.root).len() > values.len(), "later writes stay out of the backup");

    // The restored server serves them, and its audit trail goes on from the backup's head.
    let head = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("audit_head: "))
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(head(&backup_out), head(&restore_out));
    let restored_data = DataDir::open(&restored).unwrap();
    let (mut child, base) = common::serve_binary(&restored);
    let http = common::client_for(&restored_data);
    let served = served_readings(&http, &base, &token, &clinic.patient).await;
    assert_eq!(served, values.len(), "the restored server serves what was restored");
    let response = http
        .post(format!("{base}/fhir/Observation"))
        .bearer_auth(&token)
        .json(&common::reading(&clinic.patient, 99_999))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    child.kill().unwrap();
    child.wait().unwrap();
    let verified = run_ok(&["audit", "verify", "--data", s(&restored)]);
    let records: u64 = verified.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(records > head(&restore_out) + 1, "the trail went on from the head: {verified}");

    // Every restored reading has its audit record (a write and its record commit together).
    let unaudited = unaudited_writes(&restored_data);
    assert_eq!(unaudited, 0, "a restored write has no audit record");

    // What an operator handles holds no PHI: not the file, not the command's output.
    let sealed = std::fs::read(&out).unwrap();
    for text in [backup_out.as_bytes(), restore_out.as_bytes(), &sealed] {
        assert!(!text.windows(SENTINEL.len()).any(|w| w == SENTINEL.as_bytes()), "the name leaked");
    }
}

/// The restore of `file` with `key` into a new directory: refused with `expected` in its
/// message, and nothing left where it was to go.
fn assert_refused(dir: &Path, file: &Path, key: &Path, expected: &str) {
    let target = dir.join("refused");
    let out = server(&["restore", "--from", s(file), "--key", s(key), "--data", s(&target)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{} was restored", file.display());
    assert!(stderr.contains(expected), "expected «{expected}», got: {stderr}");
    assert!(!target.exists(), "a refused restore left {}", target.display());
    let out = server(&["backup", "verify", s(file), "--key", s(key)]);
    assert!(!out.status.success(), "backup verify accepted {}", file.display());
    assert!(String::from_utf8_lossy(&out.stderr).contains(expected));
}

#[test]
fn backups_altered_cut_short_forged_or_of_another_server_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = clinic(dir.path(), "a");
    let file = dir.path().join("a.ckb");
    run_ok(&["backup", "--data", s(&a.root), "--out", s(&file)]);
    run_ok(&["backup", "verify", s(&file), "--key", s(&a.key)]);
    let sealed = std::fs::read(&file).unwrap();

    // A backup never replaces a file, even an older backup.
    let again = server(&["backup", "--data", s(&a.root), "--out", s(&file)]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&file).unwrap(), sealed);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A byte changed in the middle, the file cut short, bytes added at the end.
    let altered = dir.path().join("altered.ckb");
    let mut bytes = sealed.clone();
    bytes[sealed.len() / 2] ^= 1;
    std::fs::write(&altered, &bytes).unwrap();
    assert_refused(dir.path(), &altered, &a.key, "altered");
    let cut = dir.path().join("cut.ckb");
    std::fs::write(&cut, &sealed[..sealed.len() - 1000]).unwrap();
    assert_refused(dir.path(), &cut, &a.key, "cut short");
    let extended = dir.path().join("extended.ckb");
    std::fs::write(&extended, [&sealed[..], b"x"].concat()).unwrap();
    assert_refused(dir.path(), &extended, &a.key, "its end was altered");
    let not_a_backup = dir.path().join("store-copy.ckb");
    std::fs::copy(a.root.join("store.db"), &not_a_backup).unwrap();
    assert_refused(dir.path(), &not_a_backup, &a.key, "not a Carekeep backup");

    // Another server's backup key: its file names another key.
    let b = clinic(dir.path(), "b");
    assert_refused(dir.path(), &file, &b.key, "another backup key");

    // A backup of server B sealed to A's key (an operator sharing one key): A's key file
    // names server A, so B's backup is refused.
    std::fs::copy(a.root.join("backup-recipient"), b.root.join("backup-recipient")).unwrap();
    let of_b = dir.path().join("b.ckb");
    run_ok(&["backup", "--data", s(&b.root), "--out", s(&of_b)]);
    assert_refused(dir.path(), &of_b, &a.key, "another server");

    // Whoever holds the public half (it sits in the data directory) can seal a file for A's
    // key, but cannot sign its manifest as A: a forged manifest is refused.
    let forged = dir.path().join("forged.ckb");
    let recipient_line = std::fs::read_to_string(a.root.join("backup-recipient")).unwrap();
    let recipient: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(recipient_line.lines().find_map(|l| l.strip_prefix("recipient: ")).unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = BackupKey::read(&a.key).unwrap();
    let genuine = backup::verify(&file, &key).unwrap();
    let manifest = Manifest { created_at: "2030-01-01T00:00:00Z".into(), ..genuine };
    let mut writer =
        backup::envelope::SealWriter::new(Recipient::from_bytes(recipient), std::fs::File::create(&forged).unwrap())
            .unwrap();
    manifest
        .write_signed(&ed25519_dalek::SigningKey::from_bytes(&[9; 32]), &mut writer)
        .unwrap();
    writer.finish().unwrap();
    assert_refused(dir.path(), &forged, &a.key, "forged");

    // A restore goes only into a new or empty directory.
    let occupied = dir.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("notes.txt"), "keep me").unwrap();
    let out = server(&["restore", "--from", s(&file), "--key", s(&a.key), "--data", s(&occupied)]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert_eq!(std::fs::read_to_string(occupied.join("notes.txt")).unwrap(), "keep me");

    // A server without a backup key says how to make one.
    let bare = dir.path().join("bare");
    DataDir::init(&bare, "localhost").unwrap();
    let out = server(&["backup", "--data", s(&bare), "--out", s(&dir.path().join("bare.ckb"))]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("backup key --data"));
}

/// The secret half of a key file, as only its holder could read it.
fn identity_in(key_file: &Path) -> backup::Identity {
    let text = std::fs::read_to_string(key_file).unwrap();
    let secret = text.lines().find_map(|l| l.strip_prefix("secret: ")).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD.decode(secret).unwrap();
    backup::Identity::from_bytes(bytes.try_into().unwrap())
}

#[test]
fn restores_refuse_a_linked_target_and_an_old_backup_sealed_again_to_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = clinic(dir.path(), "a");
    let file = dir.path().join("a.ckb");
    run_ok(&["backup", "--data", s(&a.root), "--out", s(&file)]);

    // A target that is a link to another directory: refused before anything is written,
    // and a refused restore never leaves keys behind, there or beside it.
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let out = server(&["restore", "--from", s(&file), "--key", s(&a.key), "--data", s(&link)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
    let cut = dir.path().join("cut.ckb");
    std::fs::write(&cut, &std::fs::read(&file).unwrap()[..100_000]).unwrap();
    assert_refused(dir.path(), &cut, &a.key, "cut short");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".restoring-"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");

    // The key is replaced; whoever still holds the old one opens an old backup and seals it
    // again to the new key, to pass an old state off as new. The manifest names the key it
    // was made for.
    let old_key = dir.path().join("old-key.txt");
    std::fs::rename(&a.key, &old_key).unwrap();
    run_ok(&["backup", "key", "--data", s(&a.root), "--out", s(&a.key)]);
    let mut plain = Vec::new();
    let mut reader =
        backup::envelope::OpenReader::new(&identity_in(&old_key), std::fs::File::open(&file).unwrap()).unwrap();
    std::io::Read::read_to_end(&mut reader, &mut plain).unwrap();
    let resealed = dir.path().join("resealed.ckb");
    let mut writer =
        backup::envelope::SealWriter::new(identity_in(&a.key).recipient(), std::fs::File::create(&resealed).unwrap())
            .unwrap();
    std::io::Write::write_all(&mut writer, &plain).unwrap();
    writer.finish().unwrap();
    assert_refused(dir.path(), &resealed, &a.key, "sealed again");
    // Backups made after the new key open with it.
    let fresh = dir.path().join("fresh.ckb");
    run_ok(&["backup", "--data", s(&a.root), "--out", s(&fresh)]);
    run_ok(&["backup", "verify", s(&fresh), "--key", s(&a.key)]);
}

#[test]
fn a_backup_made_before_a_migration_restores_into_the_newer_release() {
    let dir = tempfile::tempdir().unwrap();
    let a = clinic(dir.path(), "a");
    // The data directory as the release before the newest migration left it.
    {
        let store = a.data.open_store().unwrap();
        let conn = store.lock();
        let newest: i64 = conn
            .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(newest, 17, "update this test to undo the newest migration");
        conn.execute_batch("DROP TABLE audit.audit_archives; DELETE FROM schema_version WHERE version = 17;")
            .unwrap();
    }
    let file = dir.path().join("old.ckb");
    run_ok(&["backup", "--data", s(&a.root), "--out", s(&file)]);
    let restored = dir.path().join("restored");
    run_ok(&["restore", "--from", s(&file), "--key", s(&a.key), "--data", s(&restored)]);
    let store = DataDir::open(&restored).unwrap().open_store().unwrap();
    let version: i64 = store
        .read()
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 17, "the restored copy is migrated once proven");
    run_ok(&["audit", "verify", "--data", s(&restored)]);
}

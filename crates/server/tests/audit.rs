//! The audit trail: what every audited request leaves behind, and `audit verify` catching
//! edits, deletions and rewrites.

mod common;

use std::process::Command;
use std::sync::Arc;

use carekeep_protocol::audit::{AuditEvent, AuditRecord, Outcome};
use carekeep_server::DataDir;
use carekeep_server::audit::AuditLog;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";
/// A username long enough that it cannot turn up by chance in ciphertext or log noise.
const AMY: &str = "amy.sentinel-4c19d7";

fn records(data: &DataDir) -> Vec<AuditRecord> {
    let store = data.open_store().unwrap();
    let conn = store.lock();
    let mut stmt = conn.prepare("SELECT record FROM audit_log ORDER BY seq").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|j| serde_json::from_str(&j.unwrap()).unwrap())
        .collect()
}

fn verify(data: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_carekeep-server"))
        .args(["audit", "verify", "--data"])
        .arg(data)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_audited_request_leaves_one_chained_phi_free_record() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let (data, amy) = common::data_with_user(dir.path(), AMY, PASSWORD);
    let server = common::start(&data).await;
    let http = common::client_for(&data);
    let base = format!("https://localhost:{}", server.port());

    let wrong = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": AMY, "password": "not her password"}));
    assert_eq!(wrong.send().await.unwrap().status(), 401);
    let tokens = common::sign_in(&http, &base, AMY, PASSWORD, &amy.totp_base32, 0).await.tokens;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        http.get(format!("{base}/policy"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(http.get(format!("{base}/policy")).send().await.unwrap().status(), 401);
    // Public, PHI-free endpoints are not audited.
    http.get(format!("{base}/fhir/metadata")).send().await.unwrap();
    http.get(format!("{base}/policy/key")).send().await.unwrap();
    // An unknown path and a method a route does not take are, without the path itself.
    let probe = http
        .get(format!("{base}/fhir/Patient/{AMY}/history/x"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 404);
    assert_eq!(http.patch(format!("{base}/policy")).send().await.unwrap().status(), 405);
    // A made-up method is free text a client chooses: the trail names it OTHER, never as sent.
    let made_up = reqwest::Method::from_bytes(format!("{}-DOB", AMY.to_uppercase()).as_bytes()).unwrap();
    assert_eq!(http.request(made_up, format!("{base}/nope")).send().await.unwrap().status(), 404);

    let trail = records(&data);
    let summary: Vec<(String, Outcome, Option<String>)> = trail
        .iter()
        .map(|r| (r.event.action.clone(), r.event.outcome, r.event.user.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("POST /auth/login".into(), Outcome::Denied, None),
            ("POST /auth/login".into(), Outcome::Success, None),
            ("POST /auth/mfa".into(), Outcome::Success, Some(amy.id.clone())),
            ("GET /policy".into(), Outcome::Success, Some(amy.id.clone())),
            ("GET /policy".into(), Outcome::Denied, None),
            ("GET (no such route)".into(), Outcome::Failed, None),
            ("PATCH /policy".into(), Outcome::Failed, None),
            ("OTHER (no such route)".into(), Outcome::Failed, None),
        ]
    );
    assert_eq!(trail[3].event.tenant, "clinic-1");
    assert_eq!(trail[3].event.role.as_deref(), Some("patient"));
    assert_eq!(trail[3].event.device.as_deref(), tokens["device_id"].as_str());
    assert_eq!(trail[3].event.ip.as_deref(), Some("127.0.0.1"));
    let all = serde_json::to_string(&trail).unwrap();
    for secret in
        [PASSWORD, "not her password", access, tokens["refresh_token"].as_str().unwrap(), AMY, &AMY.to_uppercase()]
    {
        assert!(!all.contains(secret), "the audit trail holds a secret or a name");
    }

    let ok = verify(&root);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("intact: 8 records"));

    // An insider turns a denied attempt into a success: named at its record.
    let store = data.open_store().unwrap();
    store
        .lock()
        .execute("UPDATE audit_log SET record = replace(record, '\"denied\"', '\"success\"') WHERE seq = 0", [])
        .unwrap();
    let edited = verify(&root);
    assert!(!edited.status.success());
    assert!(
        String::from_utf8_lossy(&edited.stderr).contains("record #0"),
        "{}",
        String::from_utf8_lossy(&edited.stderr)
    );
}

fn event(i: u32) -> AuditEvent {
    AuditEvent {
        recorded_at: format!("2026-11-22T10:00:{:02}Z", i % 60),
        occurred_at: None,
        tenant: "clinic-1".into(),
        user: Some("usr-1".into()),
        role: Some("clinician".into()),
        device: Some("dev-1".into()),
        ip: Some("127.0.0.1".into()),
        action: "GET /fhir/Observation".into(),
        resource_type: Some("Observation".into()),
        resource_id: Some(format!("obs-{i}")),
        patient: Some(if i.is_multiple_of(2) { "pat-a" } else { "pat-b" }.into()),
        outcome: Outcome::Success,
        break_glass: false,
    }
}

/// A trail of `n` records through the real writer, in a fresh data directory.
fn trail_of(n: u32) -> (tempfile::TempDir, std::path::PathBuf, DataDir, Arc<carekeep_server::store::Store>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let (data, _) = DataDir::init(&root, "localhost").unwrap();
    let store = Arc::new(data.open_store().unwrap());
    let log = AuditLog::open(store.clone(), Arc::new(data.signing_key().unwrap())).unwrap();
    log.append_all((0..n).map(event).collect()).unwrap();
    drop(log);
    (dir, root, data, store)
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn checkpoints_catch_a_rewrite_that_recomputes_every_hash_and_deletions_are_named() {
    let (_dir, root, _data, store) = trail_of(250);
    let ok = verify(&root);
    assert!(String::from_utf8_lossy(&ok.stdout).contains("intact: 250 records, 2 signed checkpoints"), "{ok:?}");

    // "Who accessed patient A": 125 of the 250, all naming pat-a.
    let who = carekeep_server::audit::query(&store, "pat-a", "2026-01-01T00:00:00Z", "2026-12-31T23:59:59Z").unwrap();
    assert_eq!(who.len(), 125);
    assert!(who.iter().all(|r| r.event.patient.as_deref() == Some("pat-a")));

    // Rewrite record 3 and relink everything after it, as someone with write access to the
    // store (but not the signing key) could: the checkpoint at record 99 no longer holds.
    let mut rewritten: Vec<AuditRecord> = Vec::new();
    for i in 0..250 {
        let mut e = event(i);
        if i == 3 {
            e.patient = Some("pat-c".into());
        }
        let next = AuditRecord::append(rewritten.last(), e);
        rewritten.push(next);
    }
    {
        let conn = store.lock();
        for r in &rewritten[3..] {
            conn.execute(
                "UPDATE audit_log SET record = ?2 WHERE seq = ?1",
                rusqlite::params![i64::try_from(r.seq).unwrap(), serde_json::to_string(r).unwrap()],
            )
            .unwrap();
        }
    }
    let caught = verify(&root);
    assert!(!caught.status.success());
    let why = stderr(&caught);
    assert!(why.contains("records #0 to #99") && why.contains("rewritten"), "{why}");

    // Deleting every checkpoint with the rewrite does not help: one is due every 100
    // records, and the one at #99 is missing.
    store.lock().execute("DELETE FROM audit_checkpoints", []).unwrap();
    let why = stderr(&verify(&root));
    assert!(why.contains("checkpoint at record #99 is missing"), "{why}");

    // A deleted record is named too.
    let (_dir2, root2, _data2, store2) = trail_of(5);
    store2.lock().execute("DELETE FROM audit_log WHERE seq = 2", []).unwrap();
    let deleted = verify(&root2);
    assert!(!deleted.status.success());
    assert!(
        String::from_utf8_lossy(&deleted.stderr).contains("record #2"),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
}

/// Concurrent requests share commits (group commit), yet every record is chained in order,
/// each caller returns only once its records are stored, and a request's records stay
/// together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits_and_keep_one_unbroken_chain() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let (data, _) = DataDir::init(&root, "localhost").unwrap();
    let store = Arc::new(data.open_store().unwrap());
    let log = Arc::new(AuditLog::open(store.clone(), Arc::new(data.signing_key().unwrap())).unwrap());
    let writers: Vec<_> = (0..16_u32)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    // Two records per request: they must be adjacent in the chain.
                    let n = w * 100 + i * 2;
                    log.record(vec![event(n), event(n + 1)]).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let chain = records(&data);
    assert_eq!(chain.len(), 320);
    for pair in chain.chunks(2) {
        let first: u64 = pair[0].event.resource_id.as_deref().unwrap()["obs-".len()..].parse().unwrap();
        assert_eq!(pair[1].event.resource_id.as_deref(), Some(format!("obs-{}", first + 1).as_str()));
    }
    drop(log);
    let verified = verify(&root);
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("intact: 320 records, 3 signed checkpoints"),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}

/// The trail lives in its own file; a store whose trail file was deleted refuses to start
/// a new, empty one.
#[test]
fn a_deleted_audit_file_stops_the_server_instead_of_starting_an_empty_trail() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let (data, _) = DataDir::init(&root, "localhost").unwrap();
    let store = Arc::new(data.open_store().unwrap());
    AuditLog::open(store.clone(), Arc::new(data.signing_key().unwrap()))
        .unwrap()
        .append(event(0))
        .unwrap();
    drop(store);
    for file in ["audit.db", "audit.db-wal", "audit.db-shm"] {
        let _ = std::fs::remove_file(root.join(file));
    }
    let Err(refused) = data.open_store() else { panic!("the store opened without its audit trail") };
    assert!(refused.to_string().contains("audit trail") && refused.to_string().contains("restore it"), "{refused}");
    // Nothing was created in its place: asking again is refused again.
    assert!(!root.join("audit.db").exists());
    assert!(data.open_store().is_err());
}

/// An older copy of audit.db put back (its WAL gone): the chain in it is whole and its
/// checkpoints are genuine, but store.db remembers a later head. `verify` fails, and the
/// server refuses to start rather than append to it.
#[test]
fn a_rolled_back_trail_fails_verify_and_stops_the_server() {
    let (_dir, root, data, store) = trail_of(120);
    drop(store);
    let old = std::fs::read(root.join("audit.db")).unwrap();
    let store = Arc::new(data.open_store().unwrap());
    let log = AuditLog::open(store.clone(), Arc::new(data.signing_key().unwrap())).unwrap();
    log.append_all((120..150).map(event).collect()).unwrap();
    drop(log);
    drop(store);
    assert!(verify(&root).status.success());

    std::fs::write(root.join("audit.db"), old).unwrap();
    for file in ["audit.db-wal", "audit.db-shm"] {
        let _ = std::fs::remove_file(root.join(file));
    }
    let why = stderr(&verify(&root));
    assert!(why.contains("holds 120 records") && why.contains("up to #149") && why.contains("rolled back"), "{why}");
    let store = Arc::new(data.open_store().unwrap());
    let Err(refused) = AuditLog::open(store, Arc::new(data.signing_key().unwrap())) else {
        panic!("the server appended to a rolled-back trail")
    };
    assert!(refused.to_string().contains("rolled back"), "{refused}");
    let serve = Command::new(env!("CARGO_BIN_EXE_carekeep-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(!serve.status.success() && stderr(&serve).contains("rolled back"), "{}", stderr(&serve));
}

/// With the master key (not the signing key), an insider empties the patient column of a
/// record so "who viewed my record" misses it: the column is derived from the chained
/// record and cannot be set; rebuilt as a plain column to get round that, `verify` names
/// the record. Removing store.db's head (to hide a rollback) is caught too.
#[test]
fn search_columns_and_the_head_cannot_be_edited_apart_from_the_chain() {
    let (_dir, root, _data, store) = trail_of(12);
    let conn = store.lock();
    assert!(conn.execute("UPDATE audit_log SET patient = NULL WHERE seq = 4", []).is_err(), "a generated column");
    conn.execute_batch(
        "CREATE TABLE audit.plain (seq INTEGER PRIMARY KEY, record TEXT NOT NULL, patient TEXT, recorded_at TEXT,
                                   tenant TEXT, user_id TEXT);
         INSERT INTO audit.plain SELECT seq, record, patient, recorded_at, tenant, user_id FROM audit.audit_log;
         UPDATE audit.plain SET patient = NULL WHERE seq = 4;
         DROP TABLE audit.audit_log;
         ALTER TABLE audit.plain RENAME TO audit_log;",
    )
    .unwrap();
    drop(conn);
    let hidden =
        carekeep_server::audit::query(&store, "pat-a", "2026-01-01T00:00:00Z", "2026-12-31T23:59:59Z").unwrap();
    assert_eq!(hidden.len(), 5, "the edit hides record #4 from the query");
    let why = stderr(&verify(&root));
    assert!(why.contains("record #4") && why.contains("search columns"), "{why}");

    let (_dir, root, data, store) = trail_of(12);
    store.lock().execute("DELETE FROM main.audit_head", []).unwrap();
    let why = stderr(&verify(&root));
    assert!(why.contains("no longer holds the audit trail's head"), "{why}");
    assert!(AuditLog::open(store, Arc::new(data.signing_key().unwrap())).is_err());
}

/// With the store's key, an insider cuts the trail back to a checkpoint and puts that
/// checkpoint where store.db keeps the head: a head is signed under its own tag, so no
/// checkpoint can stand in for it, and `verify` and the server refuse the trail.
#[test]
fn an_old_checkpoint_cannot_stand_in_for_the_head() {
    let (_dir, root, data, store) = trail_of(250);
    store
        .lock()
        .execute_batch(
            "UPDATE main.audit_head SET checkpoint = (SELECT checkpoint FROM audit_checkpoints WHERE seq = 199);
             DELETE FROM audit_log WHERE seq > 199;",
        )
        .unwrap();
    let why = stderr(&verify(&root));
    assert!(why.contains("head is not signed by this server"), "{why}");
    assert!(AuditLog::open(store, Arc::new(data.signing_key().unwrap())).is_err());
}

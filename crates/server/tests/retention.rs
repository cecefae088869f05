//! Audit retention as an auditor and an attacker meet it: old months sealed into signed
//! archives that `audit verify` checks with the live trail as one chain; an archive edited,
//! re-hashed, removed or swapped is named; a record altered in the live trail is never
//! sealed; a hash kept outside the server proves the trail still holds it; archives travel
//! in backups; and the server starts on an archived trail.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use carekeep_protocol::audit::{AuditEvent, AuditRecord, Outcome};
use carekeep_server::DataDir;
use carekeep_server::audit::AuditLog;

fn server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_carekeep-server")).args(args).output().unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = server(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn refused(args: &[&str], expected: &str) {
    let out = server(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} passed");
    assert!(stderr.contains(expected), "expected «{expected}»: {stderr}");
}

/// A read of an Observation stamped in `month` (`YYYY-MM`), the `i`th.
fn event(month: &str, i: u32) -> AuditEvent {
    AuditEvent {
        recorded_at: format!("{month}-{:02}T10:00:{:02}Z", 1 + i % 28, i % 60),
        occurred_at: None,
        tenant: "clinic-1".into(),
        user: Some("usr-1".into()),
        role: Some("clinician".into()),
        device: Some("dev-1".into()),
        ip: Some("127.0.0.1".into()),
        action: "GET /fhir/Observation".into(),
        resource_type: Some("Observation".into()),
        resource_id: Some(format!("obs-{i}")),
        patient: Some("pat-a".into()),
        outcome: Outcome::Success,
        break_glass: false,
    }
}

/// Six months of 2025, 130 records each (checkpoints fall inside and across them), then 30
/// records of this month.
fn trail(root: &Path) -> DataDir {
    let (data, _) = DataDir::init(root, "localhost").unwrap();
    let store = Arc::new(data.open_store().unwrap());
    let log = AuditLog::open(store, Arc::new(data.signing_key().unwrap())).unwrap();
    for month in ["2025-01", "2025-02", "2025-03", "2025-04", "2025-05", "2025-06"] {
        log.append_all((0..130).map(|i| event(month, i)).collect()).unwrap();
    }
    let now = time::OffsetDateTime::now_utc();
    let this_month = format!("{:04}-{:02}", now.year(), u8::from(now.month()));
    log.append_all((0..30).map(|i| event(&this_month, i)).collect()).unwrap();
    drop(log);
    data
}

/// Notes `contents` as the archive starting at `first_seq` in audit.db, as someone holding
/// the master key could.
fn note_archive_hash(data: &DataDir, first_seq: i64, contents: &str) {
    let mut hex = String::new();
    carekeep_server::ids::push_hex(&mut hex, &<sha2::Sha256 as sha2::Digest>::digest(contents.as_bytes()));
    let store = data.open_store().unwrap();
    store
        .lock()
        .execute("UPDATE audit.audit_archives SET sha256 = ?1 WHERE first_seq = ?2", rusqlite::params![hex, first_seq])
        .unwrap();
}

/// The archive files in `root`, sorted (none while the folder does not exist).
fn archive_files(root: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join("audit-archive")) else { return Vec::new() };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn sealed_months_and_the_live_trail_verify_as_one_chain_and_edits_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let data = trail(&root);
    let early = {
        let store = data.open_store().unwrap();
        let conn = store.read();
        conn.query_row("SELECT json_extract(record, '$.hash') FROM audit_log WHERE seq = 5", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap()
    };
    let anchored: serde_json::Value = serde_json::from_str(&ok(&["audit", "checkpoint", "--data", s(&root)])).unwrap();
    let head = anchored["hash"].as_str().unwrap().to_owned();

    let sealed = ok(&["audit", "archive", "--data", s(&root), "--keep-months", "1"]);
    assert_eq!(sealed.lines().count(), 6, "{sealed}");
    assert!(sealed.starts_with("sealed 2025-01: records #0 to #129"), "{sealed}");
    assert_eq!(archive_files(&root).len(), 6);
    let verified = ok(&["audit", "verify", "--data", s(&root), "--anchor", &early, "--anchor", &head]);
    assert!(
        verified.starts_with("audit trail intact: 810 records, 8 signed checkpoints, 6 sealed archives"),
        "{verified}"
    );
    {
        let store = data.open_store().unwrap();
        let live: i64 = store
            .read()
            .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(live, 30, "only this month stays live");
    }
    // Archiving again seals nothing more; the records of 2025 are still searchable.
    assert_eq!(ok(&["audit", "archive", "--data", s(&root), "--keep-months", "1"]), "");
    let found = ok(&[
        "audit",
        "query",
        "--data",
        s(&root),
        "--patient",
        "pat-a",
        "--from",
        "2025-03-01T00:00:00Z",
        "--to",
        "2025-03-31T23:59:59Z",
    ]);
    assert_eq!(found.lines().count(), 130);

    // A hash the trail never held.
    refused(&["audit", "verify", "--data", s(&root), "--anchor", &"ab".repeat(32)], "anchored hash");

    // An archive edited (valid JSON, one field changed), then also re-hashed in audit.db by
    // someone holding the master key: the signed seal still catches it.
    let files = archive_files(&root);
    let original = std::fs::read_to_string(&files[2]).unwrap();
    let edited = original.replacen("\"obs-3\"", "\"obs-4\"", 1);
    assert_ne!(edited, original);
    std::fs::write(&files[2], &edited).unwrap();
    refused(&["audit", "verify", "--data", s(&root)], "was edited or replaced");
    note_archive_hash(&data, 260, &edited);
    refused(&["audit", "verify", "--data", s(&root)], "seal does not hold");
    std::fs::write(&files[2], &original).unwrap();
    note_archive_hash(&data, 260, &original);
    ok(&["audit", "verify", "--data", s(&root)]);

    // An archive removed; an archive's place taken by another (renamed over it).
    let aside = dir.path().join("aside.jsonl");
    std::fs::rename(&files[1], &aside).unwrap();
    refused(&["audit", "verify", "--data", s(&root)], "missing");
    std::fs::copy(&files[0], &files[1]).unwrap();
    refused(&["audit", "verify", "--data", s(&root)], "was edited or replaced");
    std::fs::rename(&aside, &files[1]).unwrap();
    // Its note removed from audit.db too: the chain then has a hole.
    {
        let store = data.open_store().unwrap();
        store
            .lock()
            .execute("DELETE FROM audit.audit_archives WHERE first_seq = 130", [])
            .unwrap();
    }
    refused(&["audit", "verify", "--data", s(&root)], "does not start where the archive before it ended");
}

#[test]
fn a_live_record_altered_before_archiving_is_never_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let data = trail(&root);
    {
        let store = data.open_store().unwrap();
        store
            .lock()
            .execute("UPDATE audit_log SET record = replace(record, '\"obs-7\"', '\"obs-8\"') WHERE seq = 7", [])
            .unwrap();
    }
    refused(&["audit", "archive", "--data", s(&root), "--keep-months", "1"], "nothing was archived");
    assert!(archive_files(&root).is_empty());
}

#[test]
fn a_month_whose_tail_was_rewritten_and_relinked_to_its_end_is_never_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let data = trail(&root);
    // An insider with the master key (not the signing key) rewrites January's last five
    // records, after its last checkpoint (#99), relinking each to the next up to #129: the
    // run of January is a valid chain on its own; only #130, in February, breaks.
    {
        let store = data.open_store().unwrap();
        let conn = store.lock();
        let mut prev: AuditRecord = serde_json::from_str(
            &conn
                .query_row("SELECT record FROM audit_log WHERE seq = 124", [], |r| r.get::<_, String>(0))
                .unwrap(),
        )
        .unwrap();
        for seq in 125..130 {
            let mut record: AuditRecord = serde_json::from_str(
                &conn
                    .query_row("SELECT record FROM audit_log WHERE seq = ?1", [seq], |r| r.get::<_, String>(0))
                    .unwrap(),
            )
            .unwrap();
            record.event.ip = Some("203.0.113.66".into());
            record.prev_hash = prev.hash;
            record.hash = AuditRecord::compute_hash(record.seq, &record.prev_hash, &record.event);
            conn.execute(
                "UPDATE audit_log SET record = ?1 WHERE seq = ?2",
                rusqlite::params![serde_json::to_string(&record).unwrap(), seq],
            )
            .unwrap();
            prev = record;
        }
    }
    refused(&["audit", "archive", "--data", s(&root), "--keep-months", "1"], "nothing was archived");
    assert!(archive_files(&root).is_empty());
}

#[test]
fn notes_that_point_outside_or_misname_the_last_record_are_refused_and_times_are_times() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let data = trail(&root);
    ok(&["audit", "archive", "--data", s(&root), "--keep-months", "1"]);
    // `audit query` reads times as times: 02:00 at +02:00 is midnight UTC.
    let found = ok(&[
        "audit",
        "query",
        "--data",
        s(&root),
        "--patient",
        "pat-a",
        "--from",
        "2025-03-01T02:00:00+02:00",
        "--to",
        "2025-04-01T01:59:59+02:00",
    ]);
    assert_eq!(found.lines().count(), 130);
    refused(
        &[
            "audit",
            "query",
            "--data",
            s(&root),
            "--patient",
            "pat-a",
            "--from",
            "March",
            "--to",
            "2025-04-01T00:00:00Z",
        ],
        "RFC 3339",
    );
    let edit = |sql: &str| data.open_store().unwrap().lock().execute_batch(sql).unwrap();
    let query_2025 = ["audit", "query", "--data", s(&root), "--patient", "pat-a"]
        .into_iter()
        .chain(["--from", "2025-01-01T00:00:00Z", "--to", "2025-12-31T00:00:00Z"])
        .collect::<Vec<_>>();
    // The note of March's archive moved to a file elsewhere (copied there first).
    let files = archive_files(&root);
    std::fs::copy(&files[2], dir.path().join("2025-03.260.jsonl")).unwrap();
    edit("UPDATE audit.audit_archives SET file = '../2025-03.260.jsonl' WHERE first_seq = 260");
    refused(&["audit", "verify", "--data", s(&root)], "names no file of the archive folder");
    refused(&query_2025, "names no file");
    edit("UPDATE audit.audit_archives SET file = '2025-03.260.jsonl' WHERE first_seq = 260");
    ok(&["audit", "verify", "--data", s(&root)]);
    // The note's last hash changed: the next archive would have continued from it.
    edit(
        "UPDATE audit.audit_archives SET last_hash = (SELECT last_hash FROM audit.audit_archives WHERE first_seq = 520) WHERE first_seq = 650",
    );
    refused(&["audit", "verify", "--data", s(&root)], "does not name its last record");
    // An archive edited: `audit query` will not read it.
    edit(
        "UPDATE audit.audit_archives SET last_hash = (SELECT json_extract(record, '$.prev_hash') FROM audit.audit_log ORDER BY seq LIMIT 1) WHERE first_seq = 650",
    );
    ok(&["audit", "verify", "--data", s(&root)]);
    let text = std::fs::read_to_string(&files[0])
        .unwrap()
        .replacen("\"obs-3\"", "\"obs-4\"", 1);
    std::fs::write(&files[0], text).unwrap();
    refused(&query_2025, "not the file that was sealed");
}

#[tokio::test(flavor = "multi_thread")]
async fn archives_travel_in_backups_and_the_server_starts_on_an_archived_trail() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    trail(&root);
    ok(&["audit", "archive", "--data", s(&root), "--keep-months", "1"]);
    let key = dir.path().join("key.txt");
    let file = dir.path().join("b.ckb");
    ok(&["backup", "key", "--data", s(&root), "--out", s(&key)]);
    ok(&["backup", "--data", s(&root), "--out", s(&file)]);
    let restored = dir.path().join("restored");
    ok(&["restore", "--from", s(&file), "--key", s(&key), "--data", s(&restored)]);
    assert_eq!(archive_files(&restored).len(), 6);
    assert!(ok(&["audit", "verify", "--data", s(&restored)]).contains("810 records"));
    // The server starts on it (its head is live) and appends.
    let data = DataDir::open(&restored).unwrap();
    let running = carekeep_server::http::Running::start(&data, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    drop(running);
    assert!(ok(&["audit", "verify", "--data", s(&restored)]).contains("6 sealed archives"));
}

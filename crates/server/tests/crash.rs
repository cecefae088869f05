//! The server killed with SIGKILL while clinicians write: no committed write is left
//! without its audit record, and none gets two. A write puts its record into store.db's
//! outbox in its own transaction; the trail takes it from there, after a restart if need be.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use carekeep_protocol::auth::Role;
use carekeep_server::DataDir;
use carekeep_server::records::{Records, Writer};
use serde_json::{Value, json};

const PASSWORD: &str = "a clinician's long password";

/// A little randomness without a dependency: the clock's nanoseconds.
fn random_below(n: u64) -> u64 {
    u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos(),
    ) % n
}

/// Creates readings as fast as the server answers, until it is gone; returns the ids of
/// those it answered, counting each in `done`.
fn write_until_gone(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    patient: &str,
    writer: u32,
    done: &Arc<std::sync::atomic::AtomicUsize>,
) -> impl std::future::Future<Output = Vec<Value>> + use<> {
    let (http, base, token, patient, done) =
        (http.clone(), base.to_owned(), token.to_owned(), patient.to_owned(), done.clone());
    async move {
        let mut ids = Vec::new();
        for i in 0.. {
            let sent = http
                .post(format!("{base}/fhir/Observation"))
                .bearer_auth(&token)
                .json(&common::reading(&patient, writer * 1000 + i))
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 201 => {
                    ids.push(r.json::<Value>().await.unwrap()["id"].clone());
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(r) => panic!("a write was refused: {}", r.status()),
                Err(_) => break,
            }
        }
        ids
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_during_writes_leaves_every_write_with_exactly_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let (data, _) = DataDir::init(&root, "localhost").unwrap();
    let (patient, clinician) = {
        let store = Arc::new(data.open_store().unwrap());
        carekeep_server::admin::add_tenant(&store, "clinic-1", "Clinic One", 0).unwrap();
        let records = Records::new(store.clone(), zeroize::Zeroizing::new(*data.master_keys().unwrap().documents));
        let body = json!({"resourceType": "Patient", "name": [{"family": "Crashtest"}]});
        let checked = records.check(body, "Patient").unwrap();
        let patient = records.create("clinic-1", checked, &Writer::CLINIC).unwrap().0.id;
        let clinician =
            carekeep_server::admin::add_user(&store, "clinic-1", "dr.crash", Role::Clinician, PASSWORD, 0).unwrap();
        records.link("clinic-1", &clinician.id, &patient, "care-team").unwrap();
        (patient, clinician)
    };
    let http = common::client_for(&data);
    let (mut child, mut base) = common::serve_binary(&root);
    let token = common::sign_in(&http, &base, "dr.crash", PASSWORD, &clinician.totp_base32, 0)
        .await
        .tokens["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut answered = Vec::new();
    for round in 0..12_u32 {
        if round > 0 {
            (child, base) = common::serve_binary(&root);
        }
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Eight clinicians' devices write as fast as they can until the server dies.
        let writers: Vec<_> = (0..8)
            .map(|w| tokio::spawn(write_until_gone(&http, &base, &token, &patient, w, &done)))
            .collect();
        // Once writes flow, at a random moment.
        while done.load(std::sync::atomic::Ordering::Relaxed) < 8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(random_below(300))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        for writer in writers {
            answered.extend(writer.await.unwrap());
        }
    }
    // One more start moves what the last kill left in the outbox into the trail.
    let (mut last, _) = common::serve_binary(&root);
    last.kill().unwrap();
    last.wait().unwrap();

    let store = data.open_store().unwrap();
    let conn = store.read();
    let written: Vec<String> = conn
        .prepare("SELECT id FROM resources WHERE type = 'Observation' AND written_by = ?1")
        .unwrap()
        .query_map([&clinician.id], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let recorded: Vec<String> = conn
        .prepare(
            "SELECT json_extract(record, '$.event.resource_id') FROM audit_log
             WHERE json_extract(record, '$.event.action') = 'POST /fhir/{type}'
               AND json_extract(record, '$.event.outcome') = 'success'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let outbox: i64 = conn.query_row("SELECT count(*) FROM audit_outbox", [], |r| r.get(0)).unwrap();
    drop(conn);
    assert!(written.len() >= 12 * 8, "the writers wrote: {}", written.len());
    assert!(answered.len() <= written.len());
    let mut missing: Vec<&String> = written.iter().filter(|id| !recorded.contains(id)).collect();
    missing.sort();
    assert!(missing.is_empty(), "{} committed writes have no audit record: {missing:?}", missing.len());
    let unique: std::collections::HashSet<&String> = recorded.iter().collect();
    assert_eq!(unique.len(), recorded.len(), "a write was recorded twice");
    assert_eq!(recorded.len(), written.len());
    assert_eq!(outbox, 0, "the outbox was emptied into the trail");
    let verified = Command::new(env!("CARGO_BIN_EXE_carekeep-server"))
        .args(["audit", "verify", "--data"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
}

//! Two `carekeep-server serve --database` processes on one PostgreSQL, reached over HTTPS
//! as a load balancer would spread a device's requests: a sign-in and a write through one
//! are good at the other, a device revoked through one is refused at the other, writes
//! through both at once leave one audit chain that verifies, and failed sign-ins spread over
//! both trip the one network limit.

use std::process::Child;

use carekeep_protocol::audit::{AuditEvent, AuditRecord, Outcome};
use carekeep_protocol::auth::Role;
use carekeep_protocol::sync::{DeviceAuditUpload, DeviceStream, READ_FROM_CACHE};
use carekeep_server::DataDir;
use carekeep_server::auth::PgAccounts;
use carekeep_server::pg::{self, records::PgRecords};
use serde_json::{Value, json};

use super::{Database, database};

const PASSWORD: &str = "two nodes, one database";

/// A node's process, stopped when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A deployment: a data directory (every node's copy), tenant `clinic-1` with patient `p1`,
/// a patient user linked to them, and two nodes serving it; their addresses.
struct Deployment {
    data: DataDir,
    /// The data directory's path.
    root: std::path::PathBuf,
    _dir: tempfile::TempDir,
    /// Each user's TOTP secret (base32), by username: in `clinic-1`, `pat.one` (linked to
    /// p1), `dr.one` (a clinician, not on p1's care team) and `admin.one`; in `clinic-2`,
    /// `pat.two` (linked to q1), `dr.two` and `admin.two`.
    totp: std::collections::HashMap<&'static str, String>,
    nodes: Vec<(Node, String)>,
}

async fn deployment(db: &Database) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let (data, _) = DataDir::init(&root, "localhost").unwrap();
    let keys = data.master_keys().unwrap();
    let records = PgRecords::new(pg::app_pool(&db.app_url, 2).await.unwrap(), &keys, data.signing_key().unwrap());
    let accounts = PgAccounts::connect(&db.app_url, 1, &keys).await.unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut totp = std::collections::HashMap::new();
    for (tenant, patient, users) in [
        ("clinic-1", "p1", [("pat.one", Role::Patient), ("dr.one", Role::Clinician), ("admin.one", Role::Admin)]),
        ("clinic-2", "q1", [("pat.two", Role::Patient), ("dr.two", Role::Clinician), ("admin.two", Role::Admin)]),
    ] {
        records.add_tenant(tenant, tenant).await.unwrap();
        let body = json!({"resourceType": "Patient", "id": patient, "name": [{"family": "Twonode"}]});
        records
            .import(tenant, vec![(records.check(body, "Patient").unwrap(), patient.into())])
            .await
            .unwrap();
        for (username, role) in users {
            let user = accounts.add_user(tenant, username, role, PASSWORD, now).await.unwrap();
            if role == Role::Patient {
                records.link(tenant, &user.id, patient, "self").await.unwrap();
            }
            totp.insert(username, user.totp_base32);
        }
    }
    let nodes = (0..2)
        .map(|_| {
            let (child, base) = super::common::serve_binary_with(&root, &[("CAREKEEP_DATABASE", &db.app_url)]);
            (Node(child), base)
        })
        .collect();
    Deployment { data, root, _dir: dir, totp, nodes }
}

fn reading(value: u32) -> Value {
    super::common::reading("p1", value)
}

/// A device's chain of `n` reads of `p1` from its cache, as it uploads them.
fn cache_reads(n: usize) -> DeviceAuditUpload {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let read = AuditEvent {
        recorded_at: now.clone(),
        occurred_at: Some(now),
        tenant: "clinic-1".into(),
        user: None,
        role: None,
        device: None,
        ip: None,
        action: READ_FROM_CACHE.into(),
        resource_type: Some("Observation".into()),
        resource_id: None,
        patient: Some("p1".into()),
        outcome: Outcome::Success,
        break_glass: false,
    };
    let mut kept: Vec<AuditRecord> = Vec::new();
    for _ in 0..n {
        let next = AuditRecord::append(kept.last(), read.clone());
        kept.push(next);
    }
    DeviceAuditUpload { stream: DeviceStream::Access, records: kept }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_serve_processes_on_one_database_answer_as_one() {
    let db = database().await;
    let deployment = deployment(&db).await;
    let (a, b) = (&deployment.nodes[0].1, &deployment.nodes[1].1);
    let http = super::common::client_for(&deployment.data);

    // Signed in through A; the token is good at B, and a write through A reads back at B.
    let signed = super::common::sign_in(&http, a, "pat.one", PASSWORD, &deployment.totp["pat.one"], 0).await;
    let token = signed.tokens["access_token"].as_str().unwrap().to_owned();
    let created = http
        .post(format!("{a}/fhir/Observation"))
        .bearer_auth(&token)
        .json(&reading(61))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let written: Value = created.json().await.unwrap();
    let id = written["id"].as_str().unwrap();
    let read = http
        .get(format!("{b}/fhir/Observation/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.unwrap(), written);

    // Twenty writes at once, alternating nodes: each stored once, all found through either.
    let mut writes = Vec::new();
    for n in 0..20u32 {
        let (http, base, token) = (http.clone(), deployment.nodes[(n % 2) as usize].1.clone(), token.clone());
        writes.push(tokio::spawn(async move {
            let response = http
                .post(format!("{base}/fhir/Observation"))
                .bearer_auth(&token)
                .header("Idempotency-Key", format!("write-{n}"))
                .json(&reading(70 + n))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }));
    }
    for write in writes {
        assert_eq!(write.await.unwrap(), 201);
    }
    for base in [a, b] {
        let found: Value = http
            .get(format!("{base}/fhir/Observation?patient=p1&_count=100"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(found["total"], 21, "{base}");
    }

    // The device's reads from its cache, uploaded through B: in the trail once, and the
    // same batch again through A (an answer lost) appends nothing.
    let upload = cache_reads(2);
    for (base, appended) in [(b, 2), (a, 0)] {
        let receipt: Value = http
            .post(format!("{base}/audit/device"))
            .bearer_auth(&token)
            .json(&upload)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(receipt["appended"], appended, "{base}: {receipt}");
    }

    // The device revoked through A: refused at B on its next request.
    let device = signed.tokens["device_id"].as_str().unwrap();
    let revoked = http
        .post(format!("{a}/devices/{device}/revoke"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    let refused = http
        .get(format!("{b}/fhir/Observation/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    the_trail_holds_every_write_and_verifies(&db, &deployment).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_sign_ins_spread_over_two_serve_processes_trip_the_one_limit() {
    let db = database().await;
    let deployment = deployment(&db).await;
    let http = super::common::client_for(&deployment.data);
    // The limit counts per minute: start early in one, so all 31 attempts fall in it.
    let second = time::OffsetDateTime::now_utc().second();
    if second > 20 {
        tokio::time::sleep(std::time::Duration::from_secs(u64::from(61 - second))).await;
    }
    let attempt = |n: usize| {
        let (http, base) = (http.clone(), deployment.nodes[n % 2].1.clone());
        async move {
            http.post(format!("{base}/auth/login"))
                .json(&json!({"username": format!("nobody-{n}"), "password": "wrong wrong wrong"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut statuses = Vec::new();
    for n in 0..30 {
        statuses.push(attempt(n).await);
    }
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    // The 31st, at either node, is over the network's limit for the minute.
    assert_eq!(attempt(30).await, 429);
    assert_eq!(attempt(31).await, 429);
    // Each attempt is in the trail of unknown callers, which verifies.
    let key = deployment.data.signing_key().unwrap().verifying_key();
    let mut client = pg::connect(&db.app_url).await.unwrap();
    let chain = pg::audit::verify(&mut client, &key, "-").await.unwrap();
    assert!(chain.iter().filter(|r| r.event.action == "POST /auth/login").count() >= 32);
}

/// The tenant's one chain holds every write through either node, and the device's cache
/// reads once; `audit verify --database` checks every chain, and names one edited.
async fn the_trail_holds_every_write_and_verifies(db: &Database, deployment: &Deployment) {
    // One chain for the tenant, every request through either node in it, verified.
    let key = deployment.data.signing_key().unwrap().verifying_key();
    let mut client = pg::connect(&db.app_url).await.unwrap();
    let chain = pg::audit::verify(&mut client, &key, "clinic-1").await.unwrap();
    let writes = chain.iter().filter(|r| r.event.action == "POST /fhir/{type}").count();
    assert_eq!(writes, 21, "one record per write, whichever node took it");
    assert!(chain.iter().any(|r| r.event.action == "GET /fhir/{type}/{id}"), "reads are audited too");
    // `audit verify --database` checks every chain; one record edited (by someone who can
    // write the table: the nodes' role cannot) is named.
    let root = deployment.root.to_str().unwrap();
    let env = [("CAREKEEP_DATABASE", db.app_url.as_str())];
    let anchor = serde_json::to_value(chain[5].hash).unwrap();
    let anchor = anchor.as_str().unwrap();
    let (ok, out, err) = super::cli(&["audit", "verify", "--data", root, "--anchor", anchor], &env, "");
    assert!(ok && out.contains("audit trail intact") && out.contains("anchored hashes found: 1"), "{out}{err}");
    // Without --database, the directory's own (empty) store is refused, never reported on:
    // no "intact: 0 records", no "nobody accessed".
    for args in [
        &["audit", "verify", "--data", root][..],
        &[
            "audit",
            "query",
            "--data",
            root,
            "--patient",
            "p1",
            "--from",
            "2020-01-01T00:00:00Z",
            "--to",
            "2030-01-01T00:00:00Z",
        ],
        &["audit", "checkpoint", "--data", root],
    ] {
        let (ok, out, err) = super::cli(args, &[], "");
        assert!(!ok && err.contains("belongs to a PostgreSQL deployment") && out.is_empty(), "{args:?}: {out}{err}");
    }
    let elsewhere = "0".repeat(64);
    let (ok, out, err) = super::cli(&["audit", "verify", "--data", root, "--anchor", &elsewhere], &env, "");
    assert!(!ok && err.contains("in no chain"), "{out}{err}");
    let superuser = pg::connect(&db.superuser_url).await.unwrap();
    superuser
        .batch_execute(
            "UPDATE audit_log SET record = replace(record, '\"outcome\":\"success\"', '\"outcome\":\"denied\"')
             WHERE tenant = 'clinic-1' AND seq = 3",
        )
        .await
        .unwrap();
    let (ok, out, err) = super::cli(&["audit", "verify", "--data", root], &env, "");
    assert!(!ok && err.contains("clinic-1"), "{out}{err}");
    let from_cache = chain
        .iter()
        .filter(|r| r.event.action.starts_with("device access") && r.event.patient.as_deref() == Some("p1"))
        .count();
    assert_eq!(from_cache, 2, "the device's reads, once");
}

const REASON: &str = "Unresponsive in the emergency room, pg-sentinel-bg-reason";

#[tokio::test(flavor = "multi_thread")]
async fn break_glass_over_two_nodes_keeps_one_hourly_limit_and_its_reasons_sealed() {
    let db = database().await;
    let deployment = deployment(&db).await;
    let (a, b) = (&deployment.nodes[0].1, &deployment.nodes[1].1);
    let http = super::common::client_for(&deployment.data);
    let doctor = super::common::sign_in(&http, a, "dr.one", PASSWORD, &deployment.totp["dr.one"], 0).await;
    let token = doctor.tokens["access_token"].as_str().unwrap().to_owned();
    let read_p1 = |base: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            http.get(format!("{base}/fhir/Patient/p1"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_ne!(read_p1(b.clone()).await, 200, "outside the care team, without a grant");

    // Eight openings at once, alternating nodes: five in the hour, three refused.
    let mut openings = Vec::new();
    for n in 0..8 {
        let (http, base, token) = (http.clone(), deployment.nodes[n % 2].1.clone(), token.clone());
        openings.push(tokio::spawn(async move {
            http.post(format!("{base}/break-glass"))
                .bearer_auth(token)
                .json(&json!({"patient": "p1", "reason": REASON}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for opening in openings {
        statuses.push(opening.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 3, "{statuses:?}");
    assert_eq!((read_p1(a.clone()).await, read_p1(b.clone()).await), (200, 200), "the grant holds at both nodes");

    // An admin, at either node, sees the grants with their reasons and the alerts.
    let admin = super::common::sign_in(&http, b, "admin.one", PASSWORD, &deployment.totp["admin.one"], 0).await;
    let admin = admin.tokens["access_token"].as_str().unwrap().to_owned();
    let listed = |path: &'static str, base: String| {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            let got: Value = http
                .get(format!("{base}{path}"))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            got.as_array().cloned().unwrap_or_default()
        }
    };
    let grants = listed("/break-glass", a.clone()).await;
    assert_eq!(grants.len(), 5);
    assert!(
        grants
            .iter()
            .all(|g| g["username"] == "dr.one" && g["reason"] == REASON && g["patient"] == "p1")
    );
    let alerts = listed("/alerts", b.clone()).await;
    assert_eq!(alerts.len(), 3);
    assert!(
        alerts
            .iter()
            .all(|a| a["username"] == "dr.one" && a["kind"] == "break-glass-rate")
    );

    // The patient, at either node, sees who opened their record and that it was break-glass.
    let patient = super::common::sign_in(&http, b, "pat.one", PASSWORD, &deployment.totp["pat.one"], 0).await;
    let patient = patient.tokens["access_token"].as_str().unwrap().to_owned();
    let history: Value = http
        .get(format!("{a}/fhir/AuditEvent?patient=p1&_count=100"))
        .bearer_auth(&patient)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = history["entry"].as_array().cloned().unwrap_or_default();
    let broken_glass = entries
        .iter()
        .filter(|e| {
            e["resource"]["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"
                && e["resource"]["agent"][0]["who"]["display"] == "dr.one"
        })
        .count();
    assert!(broken_glass >= 2, "{history}");
    assert!(history["total"].as_u64().unwrap() >= 10, "{history}");

    // The reason is free text: sealed, not in a dump.
    let dump = std::process::Command::new(super::pg_bin("pg_dump"))
        .arg("--dbname")
        .arg(&db.superuser_url)
        .output()
        .unwrap();
    assert!(dump.status.success());
    assert!(!String::from_utf8_lossy(&dump.stdout).contains("pg-sentinel-bg-reason"));
}

/// A node killed (SIGKILL) in the middle of writes: every write it answered is stored,
/// every stored write has its audit record (they commit together), the chain verifies, and
/// the other node serves on.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_during_writes_leaves_no_write_without_its_record() {
    let db = database().await;
    let mut deployment = deployment(&db).await;
    let (a, b) = (deployment.nodes[0].1.clone(), deployment.nodes[1].1.clone());
    let http = super::common::client_for(&deployment.data);
    let signed = super::common::sign_in(&http, &b, "pat.one", PASSWORD, &deployment.totp["pat.one"], 0).await;
    let token = signed.tokens["access_token"].as_str().unwrap().to_owned();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let (http, a, token, answered) = (http.clone(), a.clone(), token.clone(), answered.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let sent = http
                    .post(format!("{a}/fhir/Observation"))
                    .bearer_auth(&token)
                    .json(&reading(w * 1000 + n))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() == 201
                    && let Ok(body) = response.json::<Value>().await
                {
                    answered
                        .lock()
                        .unwrap()
                        .push(body["id"].as_str().unwrap_or_default().to_owned());
                }
            }
        }));
    }
    while answered.lock().unwrap().len() < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    deployment.nodes[0].0.0.kill().unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();

    let keys = deployment.data.master_keys().unwrap();
    let records =
        PgRecords::new(pg::app_pool(&db.app_url, 1).await.unwrap(), &keys, deployment.data.signing_key().unwrap());
    let mut all = carekeep_server::records::search::Search::parse("Observation", &[]).unwrap();
    all.count = 500;
    let stored: std::collections::BTreeSet<String> = records
        .search("clinic-1", &all, &carekeep_server::records::access::PatientFilter::Any, None)
        .await
        .unwrap()
        .resources
        .into_iter()
        .map(|s| s.id)
        .collect();
    let key = deployment.data.signing_key().unwrap().verifying_key();
    let mut client = pg::connect(&db.app_url).await.unwrap();
    let chain = pg::audit::verify(&mut client, &key, "clinic-1").await.unwrap();
    let audited: std::collections::BTreeSet<String> = chain
        .iter()
        .filter(|r| r.event.action == "POST /fhir/{type}")
        .filter_map(|r| r.event.resource_id.clone())
        .collect();
    assert!(answered.iter().all(|id| stored.contains(id)), "an answered write is missing");
    assert_eq!(stored, audited, "every stored write has its record, and no record names a write not stored");

    // The other node serves on.
    let found: Value = http
        .get(format!("{b}/fhir/Observation?patient=p1&_count=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"].as_u64(), Some(stored.len() as u64));
}

/// `seed-demo --database` fills a PostgreSQL deployment with the demo clinic; a node serves
/// it (the demo clinician sees their care team), a second seeding is refused, and `user link
/// --database` puts a patient on the demo nurse's care team.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_seeds_into_postgres_and_a_node_serves_it() {
    let db = database().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let (data, _) = DataDir::init(&root, "localhost").unwrap();
    let root_text = root.to_str().unwrap();
    let env = [("CAREKEEP_DATABASE", db.app_url.as_str())];
    let (ok, out, err) = super::cli(&["seed-demo", "--data", root_text], &env, "");
    assert!(ok, "{err}");
    let users: std::collections::HashMap<&str, Vec<&str>> = out
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[0], fields)
        })
        .collect();
    let (again, _, err) = super::cli(&["seed-demo", "--data", root_text], &env, "");
    assert!(!again && err.contains("already holds the demo tenant"), "{err}");

    let (node, base) = super::common::serve_binary_with(&root, &env);
    let _node = Node(node);
    let http = super::common::client_for(&data);
    // `step` picks the TOTP step: one code signs in once.
    let patients = |username: &'static str, step: u64| {
        let (http, base, user) = (http.clone(), base.clone(), users[username].clone());
        async move {
            let signed = super::common::sign_in(&http, &base, username, user[2], user[3], step).await;
            let token = signed.tokens["access_token"].as_str().unwrap().to_owned();
            let found: Value = http
                .get(format!("{base}/fhir/Patient?_count=100"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            found["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                .collect::<Vec<String>>()
        }
    };
    let team = patients("demo.clinician", 0).await;
    assert_eq!(team.len(), 10, "the demo clinician's care team");
    let nurse = patients("demo.nurse", 0).await;
    assert_eq!(nurse.len(), 5);
    let outsider = team.iter().find(|p| !nurse.contains(p)).unwrap().clone();
    let (ok, _, err) = super::cli(
        &["user", "link", "--data", root_text, "--username", "demo.nurse", "--patient", &outsider, "--as", "care-team"],
        &env,
        "",
    );
    assert!(ok, "{err}");
    let (refused, _, err) = super::cli(
        &["user", "link", "--data", root_text, "--username", "demo.nurse", "--patient", "no-such", "--as", "care-team"],
        &env,
        "",
    );
    assert!(!refused && err.contains("no user demo.nurse with that patient"), "{err}");
    assert!(patients("demo.nurse", 1).await.contains(&outsider));
}

/// Signs `username` in at `base` (TOTP step `step`); its access token.
async fn token(http: &reqwest::Client, base: &str, deployment: &Deployment, username: &str, step: u64) -> String {
    let signed = super::common::sign_in(http, base, username, PASSWORD, &deployment.totp[username], step).await;
    signed.tokens["access_token"].as_str().unwrap().to_owned()
}

/// GET `path` at `base` as `token`: the status and the body.
async fn get(http: &reqwest::Client, base: &str, path: &str, token: &str) -> (u16, Value) {
    let response = http.get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Two tenants on two nodes: neither sees the other's grants, alerts, patients or access
/// history; a tenant whose lock is held (a long write) delays nobody else's audited reads;
/// and a clinician's transaction Bundle through one node is read through the other, audited
/// per patient, its new patient on the clinician's care team.
#[tokio::test(flavor = "multi_thread")]
async fn tenants_stay_apart_on_two_nodes_and_a_bundle_is_audited_per_patient() {
    let db = database().await;
    let deployment = deployment(&db).await;
    let (a, b) = (deployment.nodes[0].1.clone(), deployment.nodes[1].1.clone());
    let http = super::common::client_for(&deployment.data);
    let doctor = token(&http, &a, &deployment, "dr.one", 0).await;
    let opened = http
        .post(format!("{a}/break-glass"))
        .bearer_auth(&doctor)
        .json(&json!({"patient": "p1", "reason": REASON}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 201);
    let (admin_one, admin_two) =
        (token(&http, &b, &deployment, "admin.one", 0).await, token(&http, &b, &deployment, "admin.two", 0).await);
    assert_eq!(get(&http, &b, "/break-glass", &admin_one).await.1.as_array().map(Vec::len), Some(1));
    assert_eq!(get(&http, &a, "/break-glass", &admin_two).await.1, json!([]));
    assert_eq!(get(&http, &a, "/alerts", &admin_two).await.1, json!([]));
    let one = token(&http, &a, &deployment, "pat.one", 0).await;
    assert_eq!(get(&http, &b, "/fhir/Patient/q1", &one).await.0, 404);
    assert_eq!(get(&http, &b, "/fhir/AuditEvent?patient=q1", &one).await.0, 403);

    // clinic-1's lock held (as by a long Bundle): clinic-2's audited reads answer at once.
    let holder = pg::connect(&db.superuser_url).await.unwrap();
    holder
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(1635083380, hashtext('clinic-1'))")
        .await
        .unwrap();
    let two = token(&http, &b, &deployment, "pat.two", 0).await;
    // A clinic-1 read at A now waits for its record; clinic-2's at the same node must not.
    let waiting = tokio::spawn({
        let (http, a, one) = (http.clone(), a.clone(), one.clone());
        async move { get(&http, &a, "/fhir/Patient/p1", &one).await.0 }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "clinic-1's read waits for its tenant's lock");
    let read = tokio::time::timeout(std::time::Duration::from_secs(4), get(&http, &a, "/fhir/Patient/q1", &two)).await;
    assert_eq!(read.map(|(status, _)| status).ok(), Some(200), "clinic-2 waited for clinic-1's lock");
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(waiting.await.unwrap(), 200, "and answers once the lock is free");

    // A transaction Bundle from clinic-2's clinician through A: read through B, its new
    // patient on their care team, one audit record per patient touched.
    let clinician = token(&http, &a, &deployment, "dr.two", 0).await;
    let new_patient = "urn:uuid:6b1f6a1e-0000-4000-8000-00000000000a";
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": new_patient, "resource": {"resourceType": "Patient", "name": [{"family": "Bundled"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": new_patient}, "effectiveDateTime": "2026-04-01T08:00:00Z",
            "valueQuantity": {"value": 64, "unit": "/min"}},
         "request": {"method": "POST", "url": "Observation"}}]});
    let answer: Value = http
        .post(format!("{a}/fhir"))
        .bearer_auth(&clinician)
        .json(&bundle)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let location = answer["entry"][0]["response"]["location"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    let patient = location.split('/').nth(1).unwrap().to_owned();
    assert_eq!(get(&http, &b, &format!("/fhir/Patient/{patient}"), &clinician).await.0, 200);
    assert_eq!(
        get(&http, &b, &format!("/fhir/Observation?patient={patient}"), &clinician)
            .await
            .1["total"],
        1
    );
    let key = deployment.data.signing_key().unwrap().verifying_key();
    let mut client = pg::connect(&db.app_url).await.unwrap();
    let chain = pg::audit::verify(&mut client, &key, "clinic-2").await.unwrap();
    let bundled = chain
        .iter()
        .filter(|r| r.event.action == "POST /fhir" && r.event.patient.as_deref() == Some(patient.as_str()))
        .count();
    assert_eq!(bundled, 1, "one record for the Bundle's one patient");
}

/// A Bulk Data export kicked off at one node is followed and fetched at the other: every
/// record of the tenant (a document inline), none of the other tenant's; the files are
/// sealed with the patients they name, so a row edited to name others does not open.
#[tokio::test(flavor = "multi_thread")]
async fn an_export_started_at_one_node_is_fetched_at_the_other() {
    let db = database().await;
    let deployment = deployment(&db).await;
    let (a, b) = (deployment.nodes[0].1.clone(), deployment.nodes[1].1.clone());
    let keys = deployment.data.master_keys().unwrap();
    let records =
        PgRecords::new(pg::app_pool(&db.app_url, 1).await.unwrap(), &keys, deployment.data.signing_key().unwrap());
    let document = json!({"resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "text/plain",
            "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "exported-bytes")}}]});
    let checked = records.check(document, "DocumentReference").unwrap();
    records
        .create("clinic-1", checked, &carekeep_server::records::Writer::CLINIC)
        .await
        .unwrap();
    let http = super::common::client_for(&deployment.data);
    let admin = token(&http, &a, &deployment, "admin.one", 0).await;

    let kicked = http
        .get(format!("{a}/fhir/$export"))
        .bearer_auth(&admin)
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(kicked.status(), 202);
    let status = kicked.headers()["content-location"].to_str().unwrap().to_owned();
    let status_path = status.split_once("/exports/").map(|(_, id)| format!("/exports/{id}")).unwrap();
    let mut manifest = Value::Null;
    for _ in 0..300 {
        let (code, body) = get(&http, &b, &status_path, &admin).await;
        if code == 200 {
            manifest = body;
            break;
        }
        assert_eq!(code, 202, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let outputs = manifest["output"].as_array().cloned().unwrap_or_else(|| panic!("{manifest}"));
    let mut by_type = std::collections::BTreeMap::new();
    for output in &outputs {
        let url = output["url"].as_str().unwrap();
        let path = url.split_once("/exports/").map(|(_, rest)| format!("/exports/{rest}")).unwrap();
        let text = http
            .get(format!("{b}{path}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        by_type.insert(output["type"].as_str().unwrap().to_owned(), text);
    }
    assert!(by_type["Patient"].contains("\"id\":\"p1\"") && !by_type["Patient"].contains("\"id\":\"q1\""));
    let inline = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "exported-bytes");
    assert!(by_type["DocumentReference"].contains(&inline), "the document travels inline");

    // A file row edited to name another patient (whose fetch would then be audited in the
    // wrong history): it no longer opens.
    let superuser = pg::connect(&db.superuser_url).await.unwrap();
    superuser
        .batch_execute("UPDATE export_files SET patients = '[\"q1\"]' WHERE type = 'Patient'")
        .await
        .unwrap();
    let patient_file = outputs.iter().find(|o| o["type"] == "Patient").unwrap()["url"]
        .as_str()
        .unwrap();
    let path = patient_file
        .split_once("/exports/")
        .map(|(_, rest)| format!("/exports/{rest}"))
        .unwrap();
    let refused = http.get(format!("{a}{path}")).bearer_auth(&admin).send().await.unwrap();
    assert!(!refused.status().is_success(), "{}", refused.status());
}

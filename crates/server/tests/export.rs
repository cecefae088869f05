//! Records out: FHIR Bulk Data `$export` for the clinic's administrators, against a real
//! server on 127.0.0.1, and the round trip — a tenant exported, imported into a fresh data
//! directory, comes back equal (new ids, every reference still resolving, documents byte for
//! byte). Only an administrator, freshly signed in, exports; files are fetched through
//! signed, expiring links bound to that user, and each fetch is audited per patient.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use carekeep_protocol::auth::Role;
use carekeep_server::DataDir;
use carekeep_server::records::Records;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthea-style")
}

fn records(data: &DataDir) -> Records {
    Records::new(Arc::new(data.open_store().unwrap()), zeroize::Zeroizing::new(*data.master_keys().unwrap().documents))
}

/// A data directory with tenant `clinic`, the Synthea-shaped files imported, an admin and
/// a clinician (care team: every patient).
fn clinic(dir: &Path) -> (DataDir, Vec<(&'static str, String, String)>) {
    let (data, _) = DataDir::init(&dir.join("server"), "localhost").unwrap();
    let store = data.open_store().unwrap();
    carekeep_server::admin::add_tenant(&store, "clinic", "Clinic", 0).unwrap();
    let mut users = Vec::new();
    for (name, role) in [("admin", Role::Admin), ("clinician", Role::Clinician), ("admin2", Role::Admin)] {
        let password = format!("{name} password, long enough");
        let user = carekeep_server::admin::add_user(&store, "clinic", name, role, &password, 0).unwrap();
        users.push((name, password, user.totp_base32));
    }
    let files: Vec<PathBuf> =
        ["hospitalInformation.json", "practitionerInformation.json", "patient-00.json", "patient-01.json"]
            .iter()
            .map(|f| fixtures().join(f))
            .collect();
    let summary =
        carekeep_server::import::run(&records(&data), "clinic", &files, Some("clinician"), &mut |_, _| {}).unwrap();
    assert!(!summary.refused_any(), "{}", carekeep_server::import::report(&summary));
    (data, users)
}

struct Client {
    http: reqwest::Client,
    base: String,
    tokens: HashMap<&'static str, String>,
}

impl Client {
    async fn get(&self, user: Option<&str>, url: &str, prefer: bool) -> reqwest::Response {
        let url = if url.starts_with("https://") { url.to_owned() } else { format!("{}{url}", self.base) };
        let mut request = self.http.get(url);
        if let Some(user) = user {
            request = request.bearer_auth(&self.tokens[user]);
        }
        if prefer {
            request = request.header("prefer", "respond-async");
        }
        request.send().await.unwrap()
    }

    /// Kicks off `path` as `user` and waits for the manifest.
    async fn export(&self, user: &str, path: &str) -> Value {
        let kicked = self.get(Some(user), path, true).await;
        assert_eq!(kicked.status(), 202, "{}", kicked.text().await.unwrap());
        let status_url = kicked.headers()["content-location"].to_str().unwrap().to_owned();
        for _ in 0..300 {
            let status = self.get(Some(user), &status_url, false).await;
            match status.status().as_u16() {
                202 => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                200 => return status.json().await.unwrap(),
                other => panic!("export status {other}: {}", status.text().await.unwrap()),
            }
        }
        panic!("the export did not finish");
    }
}

async fn signed_in(data: &DataDir, users: &[(&'static str, String, String)]) -> (common::Running, Client) {
    let server = common::start(data).await;
    let base = format!("https://localhost:{}", server.port());
    let http = common::client_for(data);
    let mut tokens = HashMap::new();
    for (name, password, totp) in users {
        let signed = common::sign_in(&http, &base, name, password, totp, 0).await;
        tokens.insert(*name, signed.tokens["access_token"].as_str().unwrap().to_owned());
    }
    (server, Client { http, base, tokens })
}

/// The manifest's files, fetched as `user`, written as `Type.ndjson` into `dir`.
async fn download(client: &Client, user: &str, manifest: &Value, dir: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut by_type = BTreeMap::new();
    for output in manifest["output"].as_array().unwrap() {
        let response = client.get(Some(user), output["url"].as_str().unwrap(), false).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/fhir+ndjson");
        let text = response.text().await.unwrap();
        let t = output["type"].as_str().unwrap().to_owned();
        std::fs::write(dir.join(format!("{t}.ndjson")), &text).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len() as u64, output["count"].as_u64().unwrap());
        by_type.insert(t, lines);
    }
    by_type
}

/// A resource without what a server assigns (id, version, time) and with its references
/// mapped through `ids` (old `Type/id` to new), for comparing across stores.
fn comparable(resource: &Value, ids: &HashMap<String, String>) -> Value {
    let mut value = resource.clone();
    let object = value.as_object_mut().unwrap();
    object.remove("id");
    if let Some(meta) = object.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
    }
    // Documents are compared byte for byte apart; their links are each store's own.
    for content in object.get_mut("content").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(a) = content.get_mut("attachment").and_then(Value::as_object_mut) {
            a.remove("data");
            a.remove("url");
            a.remove("size");
        }
    }
    remap(&mut value, ids);
    value
}

fn remap(value: &mut Value, ids: &HashMap<String, String>) {
    match value {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                match (k.as_str(), v) {
                    ("reference", Value::String(r)) => {
                        if let Some(new) = ids.get(r.as_str()) {
                            r.clone_from(new);
                        }
                    }
                    ("text", _) => {}
                    (_, v) => remap(v, ids),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| remap(v, ids)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_exported_and_imported_elsewhere_comes_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let (data, users) = clinic(dir.path());
    let (_server, client) = signed_in(&data, &users).await;
    let manifest = client.export("admin", "/fhir/$export").await;
    assert_eq!(manifest["requiresAccessToken"], true);
    let out = tempfile::tempdir().unwrap();
    let exported = download(&client, "admin", &manifest, out.path()).await;
    let counts = |files: &BTreeMap<String, Vec<Value>>| -> BTreeMap<String, usize> {
        files.iter().map(|(t, lines)| (t.clone(), lines.len())).collect()
    };
    assert!(exported.contains_key("Claim") && exported.contains_key("Practitioner"), "{:?}", counts(&exported));
    let stored: i64 = data
        .open_store()
        .unwrap()
        .read()
        .query_row("SELECT count(*) FROM resources", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        i64::try_from(counts(&exported).values().sum::<usize>()).unwrap(),
        stored,
        "everything the tenant holds"
    );

    // Into a fresh data directory, through the import.
    let elsewhere = tempfile::tempdir().unwrap();
    let (copy, _) = DataDir::init(&elsewhere.path().join("server"), "localhost").unwrap();
    carekeep_server::admin::add_tenant(&copy.open_store().unwrap(), "copy", "Copy", 0).unwrap();
    let copy_records = records(&copy);
    let summary =
        carekeep_server::import::run(&copy_records, "copy", &[out.path().to_owned()], None, &mut |_, _| {}).unwrap();
    assert!(!summary.refused_any(), "{}", carekeep_server::import::report(&summary));

    // Old `Type/id` to new, from where the import remembered each record came from.
    let mut ids = HashMap::new();
    {
        let store = copy.open_store().unwrap();
        let conn = store.read();
        let mut stmt = conn
            .prepare("SELECT type, id, value FROM resource_identifiers WHERE system = 'urn:carekeep:source'")
            .unwrap();
        for row in stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .unwrap()
        {
            let (t, new, source) = row.unwrap();
            let old = source.split_once(' ').unwrap().1.to_owned();
            ids.insert(old, format!("{t}/{new}"));
        }
    }
    let store = copy.open_store().unwrap();
    let conn = store.read();
    let mut compared = 0;
    for (t, lines) in &exported {
        for old in lines {
            let old_ref = format!("{t}/{}", old["id"].as_str().unwrap());
            let new_ref = ids.get(&old_ref).unwrap_or_else(|| panic!("{old_ref} did not come back"));
            let new_id = new_ref.split_once('/').unwrap().1;
            let json: String = conn
                .query_row(
                    "SELECT json FROM resources WHERE tenant = 'copy' AND type = ?1 AND id = ?2",
                    [t, new_id],
                    |r| r.get(0),
                )
                .unwrap();
            let new: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(comparable(old, &ids), comparable(&new, &HashMap::new()), "{t} differs after the round trip");
            if t == "DocumentReference" {
                let sent = old["content"][0]["attachment"]["data"].as_str().unwrap();
                let url = new["content"][0]["attachment"]["url"].as_str().unwrap();
                let bytes = copy_records
                    .document("copy", url.strip_prefix("/documents/").unwrap())
                    .unwrap()
                    .unwrap()
                    .bytes;
                assert_eq!(base64::engine::general_purpose::STANDARD.decode(sent).unwrap(), *bytes);
            }
            compared += 1;
        }
    }
    assert_eq!(i64::from(compared), stored);
    // Every reference of the copy resolves in the copy.
    let dangling: i64 = conn
        .query_row(
            "SELECT count(*) FROM resources r, json_tree(r.json) t
             WHERE r.tenant = 'copy' AND t.key = 'reference' AND t.type = 'text' AND t.fullkey NOT LIKE '$.text%'
               AND NOT EXISTS (SELECT 1 FROM resources x WHERE x.tenant = 'copy' AND x.type || '/' || x.id = t.atom)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dangling, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_admin_who_asked_fetches_the_files_and_each_fetch_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (data, users) = clinic(dir.path());
    let (_server, client) = signed_in(&data, &users).await;
    // Who may kick off, and how.
    assert_eq!(client.get(Some("clinician"), "/fhir/$export", true).await.status(), 403);
    assert_eq!(client.get(Some("admin"), "/fhir/$export", false).await.status(), 400, "Prefer: respond-async");
    assert_eq!(client.get(None, "/fhir/$export", true).await.status(), 401);
    assert_eq!(client.get(Some("admin"), "/fhir/$export?_type=AuditEvent", true).await.status(), 400);
    assert_eq!(client.get(Some("admin"), "/fhir/$export?_since=SENTINEL", true).await.status(), 400);
    assert_eq!(
        client
            .get(Some("admin"), "/fhir/Group/no-such-user/$export", true)
            .await
            .status(),
        404
    );

    // A care team's export holds that team's patients only, and no directory.
    let clinician_id: String = data
        .open_store()
        .unwrap()
        .read()
        .query_row("SELECT id FROM users WHERE username = 'clinician'", [], |r| r.get(0))
        .unwrap();
    let team = client
        .export("admin", &format!("/fhir/Group/{clinician_id}/$export?_type=Patient,Observation"))
        .await;
    let types: Vec<&str> = team["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Patient", "Observation"]);

    let manifest = client.export("admin", "/fhir/Patient/$export").await;
    let outputs = manifest["output"].as_array().unwrap();
    assert!(outputs.iter().all(|o| o["type"] != "Practitioner"), "a patient-level export holds no directory");
    let patient_file = outputs.iter().find(|o| o["type"] == "Patient").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    // The link is the asking admin's: not another admin's, not without the token, not a
    // clinician's, not with its expiry moved, not after the export is deleted.
    assert_eq!(client.get(Some("admin2"), &patient_file, false).await.status(), 403);
    assert_eq!(client.get(None, &patient_file, false).await.status(), 401);
    assert_eq!(client.get(Some("clinician"), &patient_file, false).await.status(), 403);
    let moved = patient_file.replacen("expires=", "expires=9", 1);
    assert_eq!(client.get(Some("admin"), &moved, false).await.status(), 403);
    let status_url = manifest["request"].as_str().unwrap().to_owned();
    assert!(status_url.ends_with("/fhir/Patient/$export"));
    let fetched = client.get(Some("admin"), &patient_file, false).await;
    assert_eq!(fetched.status(), 200);
    let patients: Vec<String> = fetched
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(patients.len(), 2);
    // One audit record per patient in the file, naming the admin.
    let store = data.open_store().unwrap();
    for patient in &patients {
        let trail = carekeep_server::audit::query(&store, patient, "2000-01-01T00:00:00Z", "9999").unwrap();
        let downloads: Vec<_> = trail
            .iter()
            .filter(|r| r.event.action == "GET /exports/{id}/files/{n}")
            .collect();
        assert_eq!(downloads.len(), 1, "{trail:?}");
        assert_eq!(downloads[0].event.role.as_deref(), Some("admin"));
    }
    drop(store);
    let export_id = patient_file
        .split("/exports/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let deleted = client
        .http
        .delete(format!("{}/exports/{export_id}", client.base))
        .bearer_auth(&client.tokens["admin"])
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    assert_eq!(client.get(Some("admin"), &patient_file, false).await.status(), 404);
}

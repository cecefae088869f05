//! `carekeep-server import`, run as an operator would, on real SQLCipher files: Synthea-shaped
//! Bundles and a Bulk Data export come in with every reference resolved; the same import run
//! again, or an import killed with SIGKILL at random points and run again, ends with the same
//! records and no duplicate; files that cannot be read stop it before anything is stored;
//! resources that cannot be stored are named by file, entry or line and rule, never by value.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use carekeep_protocol::auth::Role;
use carekeep_server::DataDir;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthea-style")
}

fn synthea_files() -> Vec<PathBuf> {
    ["hospitalInformation.json", "practitionerInformation.json", "patient-00.json", "patient-01.json"]
        .iter()
        .map(|f| fixtures().join(f))
        .collect()
}

struct Clinic {
    _dir: tempfile::TempDir,
    path: PathBuf,
    data: DataDir,
}

impl Clinic {
    fn new() -> Clinic {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server");
        let (data, _) = DataDir::init(&path, "localhost").unwrap();
        let store = data.open_store().unwrap();
        for tenant in ["clinic", "other"] {
            carekeep_server::admin::add_tenant(&store, tenant, tenant, 0).unwrap();
        }
        carekeep_server::admin::add_user(&store, "clinic", "dr.import", Role::Clinician, "a long password here", 0)
            .unwrap();
        carekeep_server::admin::add_user(&store, "clinic", "billing", Role::Billing, "a long password here", 0)
            .unwrap();
        Clinic { _dir: dir, path, data }
    }

    fn import(&self, tenant: &str, extra: &[&str], paths: &[PathBuf]) -> Output {
        self.import_command(tenant, extra, paths).output().unwrap()
    }

    /// The `import` command, not yet run: for tests that run it beside something else or
    /// kill it half-way.
    fn import_command(&self, tenant: &str, extra: &[&str], paths: &[PathBuf]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_carekeep-server"));
        command
            .args(["import", "--data"])
            .arg(&self.path)
            .args(["--tenant", tenant])
            .args(extra)
            .args(paths);
        command
    }

    /// [`Clinic::import_command`] started with its output discarded.
    fn spawn_import(&self, paths: &[PathBuf]) -> std::process::Child {
        self.import_command("clinic", &[], paths)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    fn counts(&self, tenant: &str) -> BTreeMap<String, i64> {
        common::resource_counts(&self.data, tenant)
    }

    /// Every reference in `tenant`'s records that points at no record of `tenant`.
    fn dangling(&self, tenant: &str) -> Vec<String> {
        let store = self.data.open_store().unwrap();
        let conn = store.read();
        let mut stmt = conn
            .prepare(
                "SELECT r.type, t.atom FROM resources r, json_tree(r.json) t
                 WHERE r.tenant = ?1 AND t.key = 'reference' AND t.type = 'text'
                   AND t.fullkey NOT LIKE '$.text%'
                   AND NOT EXISTS (SELECT 1 FROM resources x WHERE x.tenant = r.tenant
                                   AND x.type || '/' || x.id = t.atom)",
            )
            .unwrap();
        stmt.query_map([tenant], |r| Ok(format!("{}: {}", r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// The import's audit events still in the outbox (the server moves them into the trail
    /// when it next commits), by patient.
    fn import_events(&self) -> BTreeMap<String, usize> {
        let store = self.data.open_store().unwrap();
        let conn = store.read();
        let mut stmt = conn.prepare("SELECT event FROM audit_outbox").unwrap();
        let mut by_patient = BTreeMap::new();
        for event in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
            let event: Value = serde_json::from_str(&event.unwrap()).unwrap();
            if event["action"] == "import" {
                *by_patient
                    .entry(event["patient"].as_str().unwrap_or("-").to_owned())
                    .or_default() += 1;
            }
        }
        by_patient
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Resources per type in `files` (Bundles), each `fullUrl` once (the patients' files share
/// their medication's entry).
fn expected(files: &[PathBuf]) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for file in files {
        let bundle: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        for e in bundle["entry"].as_array().unwrap() {
            if seen.insert(e["fullUrl"].as_str().unwrap().to_owned()) {
                *counts
                    .entry(e["resource"]["resourceType"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
    }
    counts
}

#[test]
fn synthea_bundles_and_a_bulk_export_come_in_whole_and_only_once() {
    let clinic = Clinic::new();
    let files = synthea_files();
    let first = clinic.import("clinic", &["--care-team", "dr.import"], &files);
    assert!(first.status.success(), "{}", text(&first));
    let want = expected(&files);
    assert_eq!(clinic.counts("clinic"), want);
    assert!(clinic.dangling("clinic").is_empty(), "{:?}", clinic.dangling("clinic"));
    let report = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(report.contains("Claim: 2 stored"), "{report}");
    assert!(!report.contains("on no care team"), "{report}");
    // One audit record per patient touched (the patients' files are one unit each).
    let mut events = clinic.import_events();
    events.remove("-"); // the directory's records name no patient
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.values().all(|n| *n == 1), "{events:?}");

    // The same files again: nothing new.
    let again = clinic.import("clinic", &[], &files);
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("Stored 0 resources"), "{}", text(&again));
    assert_eq!(clinic.counts("clinic"), want);

    // The second patient and the directory as a Bulk Data export, into another tenant, twice.
    let bulk = fixtures().join("bulk");
    for run in 0..2 {
        let output = clinic.import("other", &[], std::slice::from_ref(&bulk));
        assert!(output.status.success(), "run {run}: {}", text(&output));
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(report.contains("on no care team"), "the summary says who is reachable by break-glass only: {report}");
    }
    let want_bulk = expected(
        &synthea_files()[..2]
            .iter()
            .chain(&synthea_files()[3..])
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(clinic.counts("other"), want_bulk);
    assert!(clinic.dangling("other").is_empty(), "{:?}", clinic.dangling("other"));
}

#[test]
fn files_that_cannot_be_read_stop_the_import_before_anything_is_stored() {
    let clinic = Clinic::new();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let good = fixtures().join("patient-00.json");
    let cases = [
        (write("broken.json", "{\"resourceType\": \"Bundle\", \"SENTINEL"), "broken.json: not JSON"),
        (
            write("search.json", r#"{"resourceType": "Bundle", "type": "searchset", "entry": []}"#),
            "search.json: Bundle.type must be transaction, batch or collection",
        ),
        (
            write("Patient.ndjson", "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\nSENTINEL not json\n"),
            "Patient.ndjson: line 2: not one JSON resource",
        ),
        (write("Thing.ndjson", "{\"resourceType\":\"SENTINEL\"}\n"), "Thing.ndjson: line 1: not a FHIR R4 resource"),
        (write("notes.txt", "SENTINEL"), "notes.txt: not a .json Bundle or a .ndjson file"),
    ];
    for (bad, says) in cases {
        let output = clinic.import("clinic", &[], &[good.clone(), bad.clone()]);
        assert!(!output.status.success());
        let printed = text(&output);
        assert!(printed.contains(says), "{printed}");
        assert!(!printed.contains("SENTINEL"), "{printed}");
        assert!(clinic.counts("clinic").is_empty(), "{bad:?}: something was stored");
    }
    let missing = clinic.import("clinic", &["--care-team", "billing"], std::slice::from_ref(&good));
    assert!(text(&missing).contains("billing is not a clinician or nurse"), "{}", text(&missing));
    assert!(clinic.counts("clinic").is_empty());
}

#[test]
fn resources_that_cannot_be_stored_are_named_and_the_rest_comes_in() {
    let clinic = Clinic::new();
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        r#"{"resourceType":"Patient","id":"p1","name":[{"family":"SENTINEL-NAME"}],"birthDate":"1970-01-01"}"#,
        r#"{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"valueQuantity":"SENTINEL-VALUE"}"#,
        r#"{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/not-in-this-import"}}"#,
        r#"{"resourceType":"AdverseEvent","id":"a1","actuality":"actual","subject":{"reference":"Patient/p1"}}"#,
        r#"{"resourceType":"Observation","id":"o3","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}"#,
    ];
    let ndjson = dir.path().join("mixed.ndjson");
    std::fs::write(&ndjson, lines.join("\n")).unwrap();
    // A transaction with one bad entry: none of it is stored.
    let mut bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("patient-00.json")).unwrap()).unwrap();
    let obs = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| e["resource"]["resourceType"] == "Observation")
        .unwrap();
    bundle["entry"][obs]["resource"]["status"] = Value::String("SENTINEL-STATUS".into());
    let transaction = dir.path().join("bad-transaction.json");
    std::fs::write(&transaction, bundle.to_string()).unwrap();
    let directory = synthea_files()[..2].to_vec();
    let output = clinic.import("clinic", &[], &[directory, vec![ndjson, transaction]].concat());
    assert!(!output.status.success());
    let printed = text(&output);
    assert!(!printed.contains("SENTINEL"), "{printed}");
    for says in [
        "mixed.ndjson line 2: Observation.valueQuantity: wrong JSON type",
        "mixed.ndjson line 3: Observation.subject: references a patient that does not exist",
        "mixed.ndjson line 4: ",
        &format!("bad-transaction.json entry {obs}: Observation.status"),
        "not stored: another entry of its transaction Bundle was refused",
        "Refused AdverseEvent: 1",
    ] {
        assert!(printed.contains(says), "missing {says:?} in:\n{printed}");
    }
    let stored = clinic.counts("clinic");
    assert_eq!((stored["Patient"], stored["Observation"]), (1, 1), "{stored:?}");
    assert!(
        stored.keys().all(|t| [
            "Patient",
            "Observation",
            "Organization",
            "Location",
            "Practitioner",
            "PractitionerRole"
        ]
        .contains(&t.as_str())),
        "{stored:?}"
    );
}

/// Each run is killed at a random moment; the last run completes. The records are exactly
/// those of one clean import.
#[test]
fn an_import_killed_at_random_points_and_run_again_ends_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let bulk = twenty_copies(dir.path());
    let clean = Clinic::new();
    let output = clean.import("clinic", &[], std::slice::from_ref(&bulk));
    assert!(output.status.success(), "{}", text(&output));
    let want = clean.counts("clinic");
    assert!(want.values().sum::<i64>() > 1000, "{want:?}");

    let killed = Clinic::new();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    for _ in 0..4 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let delay = std::time::Duration::from_millis(u64::from(200 + seed % 1500));
        let mut child = killed.spawn_import(std::slice::from_ref(&bulk));
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let last = killed.import("clinic", &[], std::slice::from_ref(&bulk));
    assert!(last.status.success(), "{}", text(&last));
    assert_eq!(killed.counts("clinic"), want);
    assert!(killed.dangling("clinic").is_empty());
}

/// Twenty copies of the Bulk export's patient, under other ids (the directory once), in a
/// folder under `dir`: a few thousand records.
fn twenty_copies(dir: &Path) -> PathBuf {
    let bulk = dir.join("bulk");
    std::fs::create_dir(&bulk).unwrap();
    for entry in std::fs::read_dir(fixtures().join("bulk")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let directory = ["Organization", "Location", "Practitioner", "PractitionerRole", "Medication"]
            .iter()
            .any(|t| path.file_stem().unwrap() == *t);
        let copies = if directory { 1 } else { 20 };
        let mut out = String::new();
        for copy in 0..copies {
            for line in text.lines() {
                let mut value: Value = serde_json::from_str(line).unwrap();
                suffix_ids(&mut value, copy, directory);
                out.push_str(&value.to_string());
                out.push('\n');
            }
        }
        std::fs::write(bulk.join(path.file_name().unwrap()), out).unwrap();
    }
    bulk
}

/// Gives the ids (and the references to them) of copy `copy` a suffix, except the
/// directory's, which every copy shares.
fn suffix_ids(value: &mut Value, copy: u32, directory: bool) {
    if directory {
        return;
    }
    if let Some(Value::String(id)) = value.get_mut("id") {
        *id = format!("{id}-{copy}");
    }
    suffix_references(value, copy);
}

fn suffix_references(value: &mut Value, copy: u32) {
    let shared = ["Organization/", "Location/", "Practitioner/", "PractitionerRole/", "Medication/"];
    match value {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if k == "reference"
                    && let Value::String(r) = v
                    && !shared.iter().any(|s| r.starts_with(s))
                {
                    *r = format!("{r}-{copy}");
                } else {
                    suffix_references(v, copy);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| suffix_references(v, copy)),
        _ => {}
    }
}

/// A user cannot plant a record that an import would take for its own: the server's source
/// system in a resource's identifiers is not indexed, and in a Bundle's condition it is
/// refused.
#[test]
fn no_one_can_plant_what_an_import_will_take_for_its_own() {
    use carekeep_server::records::{Records, Writer};
    let clinic = Clinic::new();
    let dir = tempfile::tempdir().unwrap();
    let patient = r#"{"resourceType":"Patient","id":"p1","birthDate":"1970-01-01"}"#;
    let reading = r#"{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}"#;
    std::fs::write(dir.path().join("Patient.ndjson"), patient).unwrap();
    let first = clinic.import("clinic", &[], &[dir.path().join("Patient.ndjson")]);
    assert!(first.status.success(), "{}", text(&first));
    let stored_patient = {
        let store = clinic.data.open_store().unwrap();
        let conn = store.read();
        conn.query_row("SELECT id FROM resources WHERE type = 'Patient'", [], |r| r.get::<_, String>(0))
            .unwrap()
    };
    // A clinician's own Observation, claiming the import's source key for o1.
    {
        let store = std::sync::Arc::new(clinic.data.open_store().unwrap());
        let records = Records::new(store, zeroize::Zeroizing::new(*clinic.data.master_keys().unwrap().documents));
        let planted = serde_json::json!({"resourceType": "Observation", "status": "final", "code": {"text": "planted"},
            "subject": {"reference": format!("Patient/{stored_patient}")},
            "identifier": [{"system": "urn:carekeep:source", "value": "Observation Observation/o1"}]});
        let checked = records.check(planted, "Observation").unwrap();
        records.create("clinic", checked, &Writer::user("dr.import", None)).unwrap();
        let plan = serde_json::json!({"resourceType": "Bundle", "type": "batch", "entry": [{
            "request": {"method": "POST", "url": "Observation",
                        "ifNoneExist": "identifier=urn:carekeep:source|Observation Observation/o2"},
            "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}}]});
        let refused = carekeep_server::records::bundle::Plan::read(plan).unwrap_err();
        assert_eq!(refused[0].path, "Bundle.entry[0].request.ifNoneExist");
    }
    std::fs::write(dir.path().join("Observation.ndjson"), reading).unwrap();
    let second =
        clinic.import("clinic", &[], &[dir.path().join("Patient.ndjson"), dir.path().join("Observation.ndjson")]);
    assert!(second.status.success(), "{}", text(&second));
    let report = String::from_utf8_lossy(&second.stdout);
    assert!(report.contains("Observation: 1 stored, 0 already there"), "{report}");
    assert!(report.contains("Patient: 0 stored, 1 already there"), "{report}");
    assert_eq!(clinic.counts("clinic")["Observation"], 2);
}

/// A patient whose generalPractitioner is a user's own Practitioner record joins that
/// user's care team on import; one whose practitioner is no user's stays on none.
#[test]
fn patients_join_the_care_team_of_their_general_practitioner() {
    let clinic = Clinic::new();
    let directory = clinic.import("clinic", &[], &synthea_files()[..2]);
    assert!(directory.status.success(), "{}", text(&directory));
    let store = clinic.data.open_store().unwrap();
    let practitioner: String = store
        .read()
        .query_row("SELECT id FROM resources WHERE type = 'Practitioner'", [], |r| r.get(0))
        .unwrap();
    let refused = carekeep_server::admin::set_practitioner(&store, "billing", &practitioner).unwrap_err();
    assert!(refused.to_string().contains("no clinician or nurse"), "{refused}");
    carekeep_server::admin::set_practitioner(&store, "dr.import", &practitioner).unwrap();
    drop(store);
    let output = clinic.import("clinic", &[], &synthea_files()[2..3]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(!String::from_utf8_lossy(&output.stdout).contains("on no care team"), "{}", text(&output));
    let store = clinic.data.open_store().unwrap();
    let linked: i64 = store
        .read()
        .query_row(
            "SELECT count(*) FROM patient_links l JOIN users u ON u.id = l.user_id
             WHERE u.username = 'dr.import' AND l.relation = 'care-team'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(linked, 1);
}

/// A patient registered through the API with someone's record number does not receive that
/// person's chart when the clinic imports it: the import matches only what the clinic
/// loaded.
#[test]
fn a_planted_patient_does_not_receive_an_imported_chart() {
    use carekeep_server::records::{Records, Writer};
    let clinic = Clinic::new();
    let file = fixtures().join("patient-00.json");
    let bundle: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let patient = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .unwrap();
    let identifier = patient["resource"]["identifier"].clone();
    let planted = {
        let store = std::sync::Arc::new(clinic.data.open_store().unwrap());
        let records = Records::new(store, zeroize::Zeroizing::new(*clinic.data.master_keys().unwrap().documents));
        let checked = records
            .check(serde_json::json!({"resourceType": "Patient", "identifier": identifier}), "Patient")
            .unwrap();
        records
            .create("clinic", checked, &Writer::user("dr.import", None))
            .unwrap()
            .0
            .id
    };
    let output = clinic.import("clinic", &[], &[synthea_files()[0].clone(), synthea_files()[1].clone(), file]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("Patient: 1 stored, 0 already there"),
        "{}",
        text(&output)
    );
    assert_eq!(clinic.counts("clinic")["Patient"], 2);
    let store = clinic.data.open_store().unwrap();
    let under_planted: i64 = store
        .read()
        .query_row("SELECT count(*) FROM resources WHERE patient = ?1 AND type != 'Patient'", [&planted], |r| r.get(0))
        .unwrap();
    assert_eq!(under_planted, 0, "nothing of the chart is filed under the planted patient");
}

/// What the clinic deleted after an import stays deleted when the same files are imported
/// again.
#[test]
fn a_second_import_does_not_bring_back_what_was_deleted() {
    use carekeep_server::records::{Records, Writer};
    let clinic = Clinic::new();
    let files = synthea_files();
    assert!(clinic.import("clinic", &[], &files).status.success());
    let before = clinic.counts("clinic");
    let (id, version): (String, i64) = clinic
        .data
        .open_store()
        .unwrap()
        .read()
        .query_row("SELECT id, version FROM resources WHERE type = 'Goal' LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    {
        let store = std::sync::Arc::new(clinic.data.open_store().unwrap());
        let records = Records::new(store, zeroize::Zeroizing::new(*clinic.data.master_keys().unwrap().documents));
        records.delete("clinic", "Goal", &id, version, 0, &Writer::CLINIC).unwrap();
    }
    let again = clinic.import("clinic", &[], &files);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("Goal: 1 deleted at the clinic since an earlier import"),
        "{}",
        text(&again)
    );
    let mut expected = before;
    *expected.get_mut("Goal").unwrap() -= 1;
    assert_eq!(clinic.counts("clinic"), expected);
}

/// The 20 carebundle patients (transaction Bundles of `urn:uuid:` entries, each with its own
/// practitioner) come in through the import whole: 929 resources, every reference resolved,
/// and the same again stores nothing.
#[test]
fn the_carebundle_patients_come_in_through_the_import() {
    let clinic = Clinic::new();
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/carebundle");
    let first = clinic.import("clinic", &["--care-team", "dr.import"], std::slice::from_ref(&folder));
    assert!(first.status.success(), "{}", text(&first));
    let counts = clinic.counts("clinic");
    assert_eq!(counts.values().sum::<i64>(), 929, "{counts:?}");
    assert_eq!((counts["Patient"], counts["Observation"]), (20, 680));
    assert!(clinic.dangling("clinic").is_empty(), "{:?}", clinic.dangling("clinic"));
    let again = clinic.import("clinic", &[], &[folder]);
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("Stored 0 resources"), "{}", text(&again));
    assert_eq!(clinic.counts("clinic"), counts);
}

/// An import beside the running server: the server's writes wait for the import's short
/// units (its busy timeout) instead of failing with "database is locked". Reads never wait.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_keeps_writing_while_an_import_runs_beside_it() {
    let clinic = Clinic::new();
    let dir = tempfile::tempdir().unwrap();
    let bulk = twenty_copies(dir.path());
    let store = clinic.data.open_store().unwrap();
    let patient =
        carekeep_server::admin::add_user(&store, "clinic", "someone", Role::Patient, "a long password here", 0)
            .unwrap();
    drop(store);
    let seeded = clinic.import("clinic", &[], &synthea_files()[..3]);
    assert!(seeded.status.success(), "{}", text(&seeded));
    let own: String = clinic
        .data
        .open_store()
        .unwrap()
        .read()
        .query_row("SELECT id FROM resources WHERE type = 'Patient'", [], |r| r.get(0))
        .unwrap();
    carekeep_server::admin::link_user(&clinic.data.open_store().unwrap(), "someone", &own, "self").unwrap();
    let running = common::start(&clinic.data).await;
    let base = format!("https://localhost:{}", running.port());
    let http = common::client_for(&clinic.data);
    let signed = common::sign_in(&http, &base, "someone", "a long password here", &patient.totp_base32, 0).await;
    let token = signed.tokens["access_token"].as_str().unwrap().to_owned();
    let mut import = clinic.spawn_import(std::slice::from_ref(&bulk));
    let mut failed = Vec::new();
    let mut writes = 0;
    while import.try_wait().unwrap().is_none() {
        let reading = serde_json::json!({"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": format!("Patient/{own}")}, "effectiveDateTime": "2026-11-01T08:00:00Z",
            "valueQuantity": {"value": 70.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}});
        let response = http
            .post(format!("{base}/fhir/Observation"))
            .bearer_auth(&token)
            .json(&reading)
            .send()
            .await
            .unwrap();
        writes += 1;
        if response.status() != 201 {
            failed.push(response.status().as_u16());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(import.wait().unwrap().success());
    assert!(writes > 5, "the import ended before the server was asked to write ({writes})");
    assert!(failed.is_empty(), "{} of {writes} writes failed during the import: {failed:?}", failed.len());
}

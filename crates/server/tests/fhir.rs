//! The FHIR API over real TLS against a real store seeded with the demo tenant and a second
//! tenant: the role × tenant × endpoint matrix, IDOR, break-glass, validation outcomes,
//! versioned updates, paging, documents with signed links, and output checked against HL7's
//! official R4 JSON schema.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use carekeep_protocol::auth::Role;
use carekeep_server::DataDir;
use carekeep_server::records::Records;
use serde_json::{Value, json};

const SCHEMA: &str = include_str!("../fhir-schema/fhir.schema.json");

/// Checks `resource` against the official schema's definition for its type (validators
/// cached per type: compiling one takes a moment).
fn assert_schema_valid(resource: &Value) {
    static VALIDATORS: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    static DEFINITIONS: OnceLock<Value> = OnceLock::new();
    let resource_type = resource["resourceType"].as_str().unwrap().to_owned();
    let validator = {
        let mut cache = VALIDATORS.get_or_init(Mutex::default).lock().unwrap();
        cache
            .entry(resource_type.clone())
            .or_insert_with(|| {
                let definitions = DEFINITIONS.get_or_init(|| {
                    let mut schema: Value = serde_json::from_str(SCHEMA).unwrap();
                    schema["definitions"].take()
                });
                let schema = json!({"$ref": format!("#/definitions/{resource_type}"), "definitions": definitions});
                Arc::new(
                    jsonschema::options()
                        .with_draft(jsonschema::Draft::Draft6)
                        .build(&schema)
                        .unwrap(),
                )
            })
            .clone()
    };
    let errors: Vec<String> = validator
        .iter_errors(resource)
        .map(|e| format!("{} {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{resource_type} from the server is not valid R4: {errors:?}");
}

struct World {
    base: String,
    http: reqwest::Client,
    tokens: HashMap<&'static str, String>,
    patients: Vec<String>,
    _server: common::Running,
    dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let (data, _) = DataDir::init(&dir.path().join("server"), "localhost").unwrap();
        let store = Arc::new(data.open_store().unwrap());
        let records = Records::new(store.clone(), zeroize::Zeroizing::new(*data.master_keys().unwrap().documents));
        let users = carekeep_server::seed::seed_demo(&store, &records, 0).unwrap();
        // A second clinic holding a copy of the first demo bundle: the same patient ids, other rows.
        carekeep_server::admin::add_tenant(&store, "other", "Other clinic", 0).unwrap();
        let bundle = include_str!("../../core/tests/fixtures/carebundle/mixed-42-0000.json");
        let other_patients = carekeep_server::seed::import_bundle(&records, "other", bundle).unwrap();
        let other = carekeep_server::admin::add_user(
            &store,
            "other",
            "other.clinician",
            Role::Clinician,
            "other clinic password",
            0,
        )
        .unwrap();
        records.link("other", &other.id, &other_patients[0], "care-team").unwrap();
        let patients: Vec<String> = {
            let conn = store.lock();
            let mut stmt = conn
                .prepare("SELECT patient FROM patient_links l JOIN users u ON u.id = l.user_id WHERE u.username = 'demo.clinician' ORDER BY l.rowid")
                .unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        let all_patients: Vec<String> = {
            let conn = store.lock();
            let mut stmt = conn
                .prepare("SELECT id FROM resources WHERE tenant = 'demo' AND type = 'Patient'")
                .unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        let outsider = all_patients.iter().find(|p| !patients.contains(p)).unwrap().clone();
        drop(records);
        drop(store);
        let server = common::start(&data).await;
        let base = format!("https://localhost:{}", server.port());
        let http = common::client_for(&data);
        let mut tokens = HashMap::new();
        for user in &users {
            let signed = common::sign_in(&http, &base, &user.username, &user.password, &user.totp_base32, 0).await;
            let name: &'static str = Box::leak(user.username.clone().into_boxed_str());
            tokens.insert(name, signed.tokens["access_token"].as_str().unwrap().to_owned());
        }
        let signed =
            common::sign_in(&http, &base, "other.clinician", "other clinic password", &other.totp_base32, 0).await;
        tokens.insert("other.clinician", signed.tokens["access_token"].as_str().unwrap().to_owned());
        // patients[0]: the demo patient's own record (and on both care teams); patients[6]:
        // the clinician's care team only; the last: an outsider.
        let mut ordered = patients.clone();
        ordered.push(outsider);
        World { base, http, tokens, patients: ordered, _server: server, dir }
    }

    async fn get(&self, user: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.tokens[user])
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, user: &str, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.tokens[user])
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

fn glucose(patient: &str) -> Value {
    json!({
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2026-11-01T08:00:00Z",
        "valueQuantity": {"value": 5.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    })
}

fn entries(bundle: &Value) -> Vec<&Value> {
    bundle["entry"]
        .as_array()
        .map(|e| e.iter().map(|x| &x["resource"]).collect())
        .unwrap_or_default()
}

const USERS: [&str; 6] =
    ["demo.patient", "demo.clinician", "demo.nurse", "demo.billing", "demo.admin", "other.clinician"];

#[tokio::test(flavor = "multi_thread")]
async fn every_role_tenant_and_endpoint_gets_exactly_what_the_table_says() {
    let w = World::new().await;
    let (own, team_only, outsider) = (&w.patients[0], &w.patients[6], w.patients.last().unwrap());
    // A reading the demo clinician records now: it exists in the demo tenant only.
    let (status, created) = w.post("demo.clinician", "/fhir/Observation", &glucose(own)).await;
    assert_eq!(status, 201, "{created}");
    assert_schema_valid(&created);
    let x = created["id"].as_str().unwrap().to_owned();

    // Each endpoint, and per user: the status, and for searches whether anything came back.
    let cells: Vec<(String, [(u16, bool); 6])> = vec![
        (
            format!("/fhir/Patient/{own}"),
            [(200, true), (200, true), (200, true), (200, true), (403, false), (200, true)],
        ),
        (
            format!("/fhir/Observation/{x}"),
            [(200, true), (200, true), (200, true), (403, false), (403, false), (404, false)],
        ),
        (
            format!("/fhir/Observation?patient={own}&code=2339-0&date=ge2026-11-01"),
            [(200, true), (200, true), (200, true), (403, false), (403, false), (200, false)],
        ),
        (
            format!("/fhir/Condition?patient={team_only}"),
            [(200, false), (200, true), (200, false), (403, false), (403, false), (200, false)],
        ),
        (
            format!("/fhir/Patient/{outsider}"),
            [(404, false), (403, false), (404, false), (200, true), (403, false), (404, false)],
        ),
        (
            format!("/fhir/Encounter?patient={own}"),
            [(200, true), (200, true), (200, true), (200, true), (403, false), (200, true)],
        ),
        (
            format!("/fhir/Patient/{own}/$everything"),
            [(200, true), (200, true), (200, true), (200, true), (404, false), (200, true)],
        ),
        (
            "/fhir/AuditEvent".to_owned(),
            [(200, true), (403, false), (403, false), (403, false), (200, true), (403, false)],
        ),
        (
            "/fhir/Practitioner?_count=1".to_owned(),
            [(200, true), (200, true), (200, true), (200, true), (403, false), (200, true)],
        ),
    ];
    let mut unexpected = Vec::new();
    for (path, expected) in &cells {
        for (user, (status, anything)) in USERS.iter().zip(expected) {
            let (got, body) = w.get(user, path).await;
            let got_anything = match body["resourceType"].as_str() {
                Some("Bundle") => !entries(&body).is_empty(),
                Some("OperationOutcome") | None => false,
                Some(_) => true,
            };
            // Another tenant's search must never return the demo tenant's new reading.
            if user.starts_with("other") && body.to_string().contains(&x) {
                unexpected.push(format!("{user} {path}: saw another tenant's resource"));
            }
            if (got, got_anything) != (*status, *anything) {
                unexpected.push(format!("{user} GET {path}: expected {status}/{anything}, got {got}/{got_anything}"));
            }
            if got == 200 {
                assert_schema_valid(&body);
                for resource in entries(&body) {
                    assert_schema_valid(resource);
                }
            }
        }
    }
    // Writes of a clinician's result: nobody writes outside their reach, and a patient never
    // writes a laboratory result, not even into their own record (see the author matrix).
    let writes = [
        ("demo.patient", own, 422),
        ("demo.patient", outsider, 422),
        ("demo.nurse", own, 201),
        ("demo.nurse", team_only, 422),
        ("demo.billing", own, 403),
        ("demo.admin", own, 403),
        ("other.clinician", &x, 422),
    ];
    for (user, patient, status) in writes {
        let (got, body) = w.post(user, "/fhir/Observation", &glucose(patient)).await;
        if got != status {
            unexpected.push(format!("{user} POST Observation for a patient: expected {status}, got {got}: {body}"));
        }
    }
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn break_glass_opens_with_a_reason_is_flagged_and_listed_for_review() {
    let w = World::new().await;
    let outsider = w.patients.last().unwrap().clone();
    assert_eq!(w.get("demo.clinician", &format!("/fhir/Patient/{outsider}")).await.0, 403);
    let (status, _) = w
        .post("demo.clinician", "/break-glass", &json!({"patient": outsider, "reason": "short"}))
        .await;
    assert_eq!(status, 422);
    let (status, _) = w
        .post("demo.nurse", "/break-glass", &json!({"patient": outsider, "reason": "unconscious in A&E"}))
        .await;
    assert_eq!(status, 403);
    let (status, _) = w
        .post("demo.clinician", "/break-glass", &json!({"patient": outsider, "reason": "unconscious in A&E, no team"}))
        .await;
    assert_eq!(status, 201);
    let (status, patient) = w.get("demo.clinician", &format!("/fhir/Patient/{outsider}")).await;
    assert_eq!((status, patient["id"].as_str()), (200, Some(outsider.as_str())));
    let (status, review) = w.get("demo.admin", "/break-glass").await;
    assert_eq!(status, 200);
    assert_eq!(review[0]["patient"], outsider.as_str());
    assert_eq!(review[0]["username"], "demo.clinician");
    assert_eq!(w.get("demo.clinician", "/break-glass").await.0, 403);
    let (_, trail) = w.get("demo.admin", &format!("/fhir/AuditEvent?patient={outsider}")).await;
    let flagged: Vec<&Value> = entries(&trail)
        .into_iter()
        .filter(|e| e["purposeOfEvent"][0]["coding"][0]["code"] == "BTG")
        .collect();
    assert!(flagged.len() >= 2, "the grant and the read are flagged: {trail}");
    for event in entries(&trail) {
        assert_schema_valid(event);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_resources_get_an_outcome_naming_the_problem() {
    let w = World::new().await;
    let own = w.patients[0].clone();
    let patient = |extra: Value| {
        let mut p = json!({"resourceType": "Patient", "name": [{"family": "Testperson"}], "gender": "female"});
        p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        p
    };
    let mut two_values = glucose(&own);
    two_values["valueString"] = json!("high");
    let mut number_as_string = glucose(&own);
    number_as_string["valueQuantity"]["value"] = json!("5.4");
    let mut missing_required = glucose(&own);
    missing_required.as_object_mut().unwrap().remove("code");
    // A patient of another server, by absolute URL: not filed under the local patient of
    // the same id.
    let elsewhere_as = |reference: String| {
        let mut r = glucose(&own);
        r["subject"]["reference"] = json!(reference);
        r
    };
    let elsewhere = elsewhere_as(format!("https://ehr.elsewhere.example/fhir/Patient/{own}"));
    let scheme_relative = elsewhere_as(format!("//ehr.elsewhere.example/fhir/Patient/{own}"));
    let one_slash = elsewhere_as(format!("http:/ehr.elsewhere.example/fhir/Patient/{own}"));
    let nested = elsewhere_as(format!("Group/x/Patient/{own}"));
    let cases = [
        ("Patient", patient(json!({"gender": "x"})), "Patient.gender"),
        ("Patient", patient(json!({"birthDate": "2020-13-01"})), "Patient.birthDate"),
        ("Patient", patient(json!({"birthDate": "2023-02-30"})), "Patient.birthDate"),
        ("Observation", two_values, "Observation.value[x]"),
        ("Observation", number_as_string, "Observation.valueQuantity.value"),
        ("Patient", patient(json!({"id": "has space"})), "Patient.id"),
        ("Observation", missing_required, "Observation.code"),
        ("Observation", elsewhere, "Observation.subject"),
        ("Observation", scheme_relative, "Observation.subject"),
        ("Observation", one_slash, "Observation.subject"),
        ("Observation", nested, "Observation.subject"),
    ];
    for (resource_type, body, path) in cases {
        let (status, outcome) = w.post("demo.clinician", &format!("/fhir/{resource_type}"), &body).await;
        assert_eq!(status, 422, "{path}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_schema_valid(&outcome);
        let issues = outcome["issue"].as_array().unwrap();
        assert!(
            issues
                .iter()
                .any(|i| i["expression"][0].as_str().is_some_and(|e| e.starts_with(path))),
            "{path} not named: {outcome}"
        );
        assert!(!outcome.to_string().contains("Testperson"), "the outcome quotes the data: {outcome}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_need_the_current_version_and_pages_link_opaquely() {
    let w = World::new().await;
    let own = w.patients[0].clone();
    let (_, created) = w.post("demo.nurse", "/fhir/Observation", &glucose(&own)).await;
    let id = created["id"].as_str().unwrap();
    let url = format!("{}/fhir/Observation/{id}", w.base);
    let put = |etag: Option<&str>, body: Value| {
        let mut request = w.http.put(&url).bearer_auth(&w.tokens["demo.nurse"]).json(&body);
        if let Some(etag) = etag {
            request = request.header("If-Match", etag);
        }
        request.send()
    };
    let mut changed = created.clone();
    changed["valueQuantity"]["value"] = json!(6.1);
    assert_eq!(put(None, changed.clone()).await.unwrap().status(), 428);
    let ok = put(Some("W/\"1\""), changed.clone()).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["etag"], "W/\"2\"");
    assert_eq!(put(Some("W/\"1\""), changed.clone()).await.unwrap().status(), 412);
    // Billing may not change it; nor may the patient, who reads it but did not write it.
    let as_patient = w
        .http
        .put(&url)
        .bearer_auth(&w.tokens["demo.patient"])
        .header("If-Match", "W/\"2\"")
        .json(&changed);
    assert_eq!(as_patient.send().await.unwrap().status(), 403);
    let as_billing = w
        .http
        .put(&url)
        .bearer_auth(&w.tokens["demo.billing"])
        .header("If-Match", "W/\"2\"")
        .json(&changed);
    assert_eq!(as_billing.send().await.unwrap().status(), 403);

    // Paging: pages of two, linked by opaque tokens that carry no patient id.
    let path = format!("/fhir/Observation?patient={own}&_count=2");
    let total = walk_pages(&w, "demo.clinician", "demo.nurse", &path, &own).await;
    assert!(total > 4);
    // The audit trail pages the same way, newest first.
    let path = format!("/fhir/AuditEvent?patient={own}&_count=3");
    let total = walk_pages(&w, "demo.admin", "demo.clinician", &path, &own).await;
    assert!(total > 6, "the reads above were audited");
}

/// Follows `path`'s next links to the end as `user`: each is opaque (no `secret` in it),
/// refused to `other`, and together the pages hold every match once. Returns the total.
async fn walk_pages(w: &World, user: &str, other: &str, path: &str, secret: &str) -> u64 {
    let (status, first) = w.get(user, path).await;
    assert_eq!(status, 200, "{first}");
    let total = first["total"].as_u64().unwrap();
    let mut seen = entries(&first)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    let mut next = first["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .cloned();
    while let Some(link) = next {
        let url = link["url"].as_str().unwrap();
        assert!(!url.contains(secret), "a next link carries the patient id");
        let path = url.trim_start_matches(&w.base);
        let (status, page) = w.get(user, path).await;
        assert_eq!(status, 200);
        assert_schema_valid(&page);
        assert_eq!(w.get(other, path).await.0, 410, "a page token is bound to its user");
        seen.extend(entries(&page).iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        next = page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .cloned();
    }
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len() as u64, unique.len() as u64), (total, total));
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_are_encrypted_and_downloaded_through_signed_links() {
    let w = World::new().await;
    let own = w.patients[0].clone();
    let pdf = b"%PDF-1.4 SENTINEL-DOCUMENT-BYTES".to_vec();
    let doc = json!({
        "resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": format!("Patient/{own}")},
        "content": [{"attachment": {"contentType": "application/pdf",
            "data": base64::engine::general_purpose::STANDARD.encode(&pdf)}}]
    });
    let (status, stored) = w.post("demo.clinician", "/fhir/DocumentReference", &doc).await;
    assert_eq!(status, 201, "{stored}");
    assert_schema_valid(&stored);
    assert!(stored["content"][0]["attachment"].get("data").is_none());
    let doc_url = stored["content"][0]["attachment"]["url"].as_str().unwrap().to_owned();
    let (status, link) = w.get("demo.patient", &format!("{doc_url}/link")).await;
    assert_eq!(status, 200, "{link}");
    let signed = link["url"].as_str().unwrap().to_owned();
    let fetch =
        |user: &'static str, path: String| w.http.get(format!("{}{path}", w.base)).bearer_auth(&w.tokens[user]).send();
    let ok = fetch("demo.patient", signed.clone()).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.unwrap().to_vec(), pdf);
    // Another user with the same link, a tampered signature, a moved expiry: all refused.
    assert_eq!(fetch("demo.nurse", signed.clone()).await.unwrap().status(), 403);
    let tampered = signed.replace("sig=", "sig=A");
    assert_eq!(fetch("demo.patient", tampered).await.unwrap().status(), 403);
    let expires: i64 = link["expires_at"].as_i64().unwrap();
    let later = signed.replace(&format!("expires={expires}"), &format!("expires={}", expires + 3600));
    assert_eq!(fetch("demo.patient", later).await.unwrap().status(), 403);
    // Billing cannot even ask for a link.
    assert_eq!(w.get("demo.billing", &format!("{doc_url}/link")).await.0, 404);
    // An expired link: signed for the past with the server's own key is covered by the unit
    // test in records::links; here, the stored bytes are not in the database in the clear.
    let db = std::fs::read(w.dir.path().join("server/store.db")).unwrap();
    assert!(!db.windows(8).any(|win| win == b"SENTINEL"));
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_apply_once_per_key_deletions_leave_tombstones_and_status_lists_the_care_team() {
    let w = World::new().await;
    let own = w.patients[0].clone();
    let send = |method: reqwest::Method, path: &str, key: Option<&str>, body: Option<&Value>| {
        let mut request = w
            .http
            .request(method, format!("{}{path}", w.base))
            .bearer_auth(&w.tokens["demo.nurse"]);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send()
    };
    // The same key twice: one resource, the same answer.
    let first = send(reqwest::Method::POST, "/fhir/Observation", Some("key-1"), Some(&glucose(&own)))
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send(reqwest::Method::POST, "/fhir/Observation", Some("key-1"), Some(&glucose(&own)))
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    // The key for another kind of request is refused; a malformed key too.
    let other = send(reqwest::Method::POST, "/fhir/Communication", Some("key-1"), Some(&glucose(&own)))
        .await
        .unwrap();
    assert!(matches!(other.status().as_u16(), 400 | 422), "{}", other.status());
    let bad = send(reqwest::Method::POST, "/fhir/Observation", Some("a key"), Some(&glucose(&own)))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Deletion: refused to billing, refused for a patient, done by the nurse; the tombstone
    // reaches those who could read it and no one else.
    let id = first["id"].as_str().unwrap();
    let path = format!("/fhir/Observation/{id}");
    let as_billing = w
        .http
        .delete(format!("{}{path}", w.base))
        .bearer_auth(&w.tokens["demo.billing"]);
    assert_eq!(as_billing.send().await.unwrap().status(), 403);
    let patient = w
        .http
        .delete(format!("{}/fhir/Patient/{own}", w.base))
        .bearer_auth(&w.tokens["demo.clinician"]);
    assert_eq!(patient.send().await.unwrap().status(), 422, "a patient's record is not deleted");
    assert_eq!(send(reqwest::Method::DELETE, &path, None, None).await.unwrap().status(), 204);
    assert_eq!(w.get("demo.nurse", &path).await.0, 404);
    let (status, removed) = w.get("demo.clinician", "/sync/removed?after=0").await;
    assert_eq!(status, 200);
    assert_eq!(removed["removed"], json!([{"resourceType": "Observation", "id": id}]));
    let (_, elsewhere) = w.get("other.clinician", "/sync/removed?after=0").await;
    assert_eq!(elsewhere["removed"], json!([]), "another tenant learns of nothing");

    // Status: the clinician's care team (ten patients), each with its latest change, and
    // the newest deletion they could see.
    let (status, sync) = w.get("demo.clinician", "/sync/status").await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = sync["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 10);
    assert!(listed.contains(&own.as_str()));
    assert!(!listed.contains(&w.patients.last().unwrap().as_str()), "not the outsider");
    assert_eq!(sync["removed_through"], removed["after"]);
    let (_, mine) = w.get("demo.patient", "/sync/status").await;
    assert_eq!(mine["patients"].as_array().unwrap().len(), 2, "own record and the proxied one");
    assert_eq!(mine["removed_through"], removed["after"], "their own record's deletion");

    // Another patient's deletion moves neither the patient's status nor their pages: a
    // patient polling cannot count what happens to others' records.
    let (_, page) = w.get("demo.patient", "/sync/removed?after=0").await;
    assert_eq!((&page["removed"], &page["after"]), (&removed["removed"], &removed["after"]));
    let someone_else = &w.patients[6];
    let (status, theirs) = w
        .send(reqwest::Method::POST, "demo.clinician", "/fhir/Observation", Some(&glucose(someone_else)), None)
        .await;
    assert_eq!(status, 201, "{theirs}");
    let theirs = format!("/fhir/Observation/{}", theirs["id"].as_str().unwrap());
    assert_eq!(w.send(reqwest::Method::DELETE, "demo.clinician", &theirs, None, None).await.0, 204);
    let (_, after) = w.get("demo.patient", "/sync/status").await;
    assert_eq!(after["removed_through"], mine["removed_through"]);
    let (_, later) = w.get("demo.patient", "/sync/removed?after=0").await;
    assert_eq!(later, page);
    let (_, team) = w.get("demo.clinician", "/sync/status").await;
    assert!(team["removed_through"].as_i64() > sync["removed_through"].as_i64(), "the care team sees it");
    // Billing reads every patient's demographics but no clinical record: the readings'
    // deletions move neither its status nor its pages (the third review counted them).
    let (_, billing) = w.get("demo.billing", "/sync/removed?after=0").await;
    assert_eq!(billing, json!({"removed": [], "after": 0, "more": false}));
    let (_, billing) = w.get("demo.billing", "/sync/status").await;
    assert_eq!(billing["removed_through"], 0);
}

impl World {
    /// `method path` as `user`, with a body and `If-Match` when given.
    async fn send(
        &self,
        method: reqwest::Method,
        user: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.tokens[user]);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(etag) = if_match {
            request = request.header("If-Match", etag);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

fn home_reading(patient: &str) -> Value {
    json!({
        "resourceType": "Observation", "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]},
            {"coding": [{"system": "urn:carekeep:observation-category", "code": "patient-reported"}]}
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2026-11-01T08:00:00Z",
        "valueQuantity": {"value": 70.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}
    })
}

/// A home blood pressure reading; `extra` is merged into its systolic part.
fn blood_pressure(patient: &str, extra: &Value) -> Value {
    let loinc = |code: &str| json!({"coding": [{"system": "http://loinc.org", "code": code}]});
    let mm_hg =
        |value: u16| json!({"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"});
    let mut systolic = json!({"code": loinc("8480-6"), "valueQuantity": mm_hg(128)});
    for (key, value) in extra.as_object().unwrap() {
        systolic[key] = value.clone();
    }
    let mut reading = home_reading(patient);
    let reading_fields = reading.as_object_mut().unwrap();
    reading_fields.remove("valueQuantity");
    reading_fields.insert("code".into(), loinc("85354-9"));
    reading_fields.insert("component".into(), json!([systolic, {"code": loinc("8462-4"), "valueQuantity": mm_hg(84)}]));
    reading
}

fn appointment(patient: &str, status: &str, with: Option<&str>) -> Value {
    let mut participants = vec![json!({"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"})];
    if let Some(other) = with {
        participants.push(json!({"actor": {"reference": other}, "status": "accepted"}));
    }
    json!({
        "resourceType": "Appointment", "status": status, "description": "Check-up",
        "start": "2026-12-01T09:00:00Z", "end": "2026-12-01T09:30:00Z", "participant": participants
    })
}

fn message(patient: &str, sender: &str) -> Value {
    json!({
        "resourceType": "Communication", "status": "completed",
        "subject": {"reference": format!("Patient/{patient}")}, "sender": {"reference": sender},
        "payload": [{"contentString": "About my results"}]
    })
}

/// Allow-lists, not deny-lists (the second review): a result under a home category, free
/// text, extensions and elements no home reading, request or message has.
fn reading_cases(own: &str) -> Vec<(&'static str, &'static str, Value, u16)> {
    vec![
        (
            "an HbA1c filed as a vital sign",
            "Observation",
            with(home_reading(own), "/code", json!({"coding": [{"system": "http://loinc.org", "code": "4548-4"}]})),
            422,
        ),
        (
            "a code from another system",
            "Observation",
            with(home_reading(own), "/code/coding/0/system", json!("http://snomed.info/sct")),
            422,
        ),
        (
            "a second coding that is a result",
            "Observation",
            with(home_reading(own), "/code/coding/1", json!({"system": "http://loinc.org", "code": "2339-0"})),
            422,
        ),
        (
            "an extension",
            "Observation",
            with(home_reading(own), "/extension", json!([{"url": "urn:x", "valueString": "lab"}])),
            422,
        ),
        (
            "a modifier extension",
            "Observation",
            with(home_reading(own), "/modifierExtension", json!([{"url": "urn:x", "valueBoolean": true}])),
            422,
        ),
        (
            "a narrative (dropped)",
            "Observation",
            with(
                home_reading(own),
                "/text",
                json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Lab result</div>"}),
            ),
            201,
        ),
        ("an issued time", "Observation", with(home_reading(own), "/issued", json!("2026-11-01T09:00:00Z")), 422),
        (
            "a value with an extension",
            "Observation",
            with(home_reading(own), "/valueQuantity/extension", json!([{"url": "urn:x", "valueString": "lab"}])),
            422,
        ),
        ("a note of their own", "Observation", with(home_reading(own), "/note", json!([{"text": "After a run"}])), 201),
        // Inside the allowed elements too (the third review).
        (
            "a note signed by a practitioner",
            "Observation",
            with(
                home_reading(own),
                "/note",
                json!([{"authorReference": {"reference": "Practitioner/x"}, "text": "Confirmed by the lab"}]),
            ),
            422,
        ),
        (
            "a note signed in words",
            "Observation",
            with(home_reading(own), "/note", json!([{"authorString": "Dr. House", "text": "Start insulin"}])),
            422,
        ),
        (
            "a subject with a display",
            "Observation",
            with(home_reading(own), "/subject/display", json!("LabCorp Central Laboratory")),
            422,
        ),
        ("a weight in percent", "Observation", with(home_reading(own), "/valueQuantity/code", json!("%")), 422),
        (
            "a value without its UCUM system",
            "Observation",
            with(home_reading(own), "/valueQuantity/system", json!("urn:lab")),
            422,
        ),
        (
            "a period with an extension",
            "Observation",
            with(
                home_reading(own),
                "/effectivePeriod",
                json!({"start": "2026-11-01T08:00:00Z", "extension": [{"url": "urn:x", "valueString": "lab"}]}),
            ),
            422,
        ),
        ("a blood pressure", "Observation", blood_pressure(own, &json!({})), 201),
        (
            "a blood pressure part with an interpretation",
            "Observation",
            blood_pressure(own, &json!({"interpretation": [{"coding": [{"code": "H"}]}]})),
            422,
        ),
    ]
}

/// The same for requests and messages.
fn request_and_message_cases(own: &str, me: &str) -> Vec<(&'static str, &'static str, Value, u16)> {
    vec![
        (
            "a request with a time it would like",
            "Appointment",
            with(
                appointment(own, "proposed", None),
                "/requestedPeriod",
                json!([{"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T09:30:00Z"}]),
            ),
            201,
        ),
        (
            "a request naming a service",
            "Appointment",
            with(appointment(own, "proposed", None), "/serviceType", json!([{"text": "Oncology"}])),
            422,
        ),
        (
            "a participant with a role",
            "Appointment",
            with(appointment(own, "proposed", None), "/participant/0/type", json!([{"text": "attender"}])),
            422,
        ),
        (
            "a message to a practitioner",
            "Communication",
            with(message(own, me), "/recipient", json!([{"reference": "Practitioner/someone"}])),
            201,
        ),
        (
            "a request period with an extension",
            "Appointment",
            with(
                appointment(own, "proposed", None),
                "/requestedPeriod",
                json!([{"start": "2026-12-01T09:00:00Z", "extension": [{"url": "urn:x", "valueString": "booked"}]}]),
            ),
            422,
        ),
        (
            "a message whose subject has a display",
            "Communication",
            with(message(own, me), "/subject/display", json!("From Dr. House")),
            422,
        ),
        (
            "a message to a patient dressed as a practitioner",
            "Communication",
            with(message(own, me), "/recipient", json!([{"reference": format!("Practitioner/../Patient/{own}")}])),
            422,
        ),
        (
            "a message to a relative",
            "Communication",
            with(message(own, me), "/recipient", json!([{"reference": "RelatedPerson/someone"}])),
            422,
        ),
        (
            "a recipient with a display",
            "Communication",
            with(message(own, me), "/recipient", json!([{"reference": "Practitioner/someone", "display": "Dr. X"}])),
            422,
        ),
        (
            "a message carrying an attachment",
            "Communication",
            with(message(own, me), "/payload/0", json!({"contentAttachment": {"contentType": "text/plain"}})),
            422,
        ),
        (
            "a message tied to an order",
            "Communication",
            with(message(own, me), "/basedOn", json!([{"reference": "ServiceRequest/x"}])),
            422,
        ),
    ]
}

/// Collects the cells of a matrix that did not come out as expected.
#[derive(Default)]
struct Mismatches(Vec<String>);

impl Mismatches {
    /// Notes `what` unless it answered `status`; returns the body.
    fn expect(&mut self, what: &str, got: (u16, Value), status: u16) -> Value {
        if got.0 != status {
            self.0.push(format!("{what}: expected {status}, got {}: {}", got.0, got.1));
        }
        got.1
    }
}

/// `value` with `pointer` set to `to` (creating the last step: an object key or, for an
/// array index one past the end, a new element).
fn with(mut value: Value, pointer: &str, to: Value) -> Value {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let container = if parent.is_empty() { &mut value } else { value.pointer_mut(parent).unwrap() };
    match container {
        Value::Array(items) => {
            let i: usize = last.parse().unwrap();
            if i == items.len() { items.push(to) } else { items[i] = to }
        }
        Value::Object(fields) => {
            fields.insert(last.to_owned(), to);
        }
        _ => panic!("{pointer}: not in an object or array"),
    }
    value
}

/// What a patient may create, whatever their reach: one of each accepted kind is returned.
async fn patient_creates(w: &World, m: &mut Mismatches) -> HashMap<&'static str, Value> {
    let (own, proxied) = (&w.patients[0], &w.patients[1]);
    let me = &format!("Patient/{own}");
    let cases = [
        ("home reading", "Observation", home_reading(own), 201),
        ("home reading for the proxied record", "Observation", home_reading(proxied), 201),
        ("laboratory result", "Observation", glucose(own), 422),
        (
            "reading performed by a practitioner",
            "Observation",
            with(home_reading(own), "/performer", json!([{"reference": "Practitioner/someone"}])),
            422,
        ),
        (
            "reading without a category",
            "Observation",
            {
                let mut r = home_reading(own);
                r.as_object_mut().unwrap().remove("category");
                r
            },
            422,
        ),
        ("appointment request", "Appointment", appointment(own, "proposed", None), 201),
        ("booked appointment", "Appointment", appointment(own, "booked", None), 422),
        ("request naming a practitioner", "Appointment", appointment(own, "proposed", Some("Practitioner/x")), 422),
        ("message as themselves", "Communication", message(own, me), 201),
        ("message as a practitioner", "Communication", message(own, "Practitioner/someone"), 422),
        // Dressing a reading up as a result, element by element (the review's list).
        (
            "category text 'Laboratory'",
            "Observation",
            with(home_reading(own), "/category/0/text", json!("Laboratory")),
            422,
        ),
        (
            "category display 'Laboratory'",
            "Observation",
            with(home_reading(own), "/category/0/coding/0/display", json!("Laboratory")),
            422,
        ),
        (
            "an interpretation",
            "Observation",
            with(home_reading(own), "/interpretation", json!([{"coding": [{"code": "HH"}]}])),
            422,
        ),
        (
            "an order it answers",
            "Observation",
            with(home_reading(own), "/basedOn", json!([{"reference": "ServiceRequest/x"}])),
            422,
        ),
        ("a contained result", "Observation", with(home_reading(own), "/contained", json!([glucose(own)])), 422),
        ("members", "Observation", with(home_reading(own), "/hasMember", json!([{"reference": "#lab"}])), 422),
        (
            "a performer with an identifier",
            "Observation",
            with(home_reading(own), "/performer", json!([{"reference": me, "identifier": {"value": "lab-7"}}])),
            422,
        ),
        (
            "a participant named by display",
            "Appointment",
            with(
                appointment(own, "proposed", None),
                "/participant/1",
                json!({"actor": {"display": "Dr. Smith"}, "status": "needs-action"}),
            ),
            422,
        ),
        (
            "a sender with a display",
            "Communication",
            with(message(own, me), "/sender/display", json!("Dr. Smith")),
            422,
        ),
        (
            "a message to another patient",
            "Communication",
            with(message(own, me), "/recipient", json!([{"reference": format!("Patient/{}", w.patients[3])}])),
            422,
        ),
    ];
    let mut accepted = HashMap::new();
    for (what, resource_type, body, status) in cases
        .into_iter()
        .chain(reading_cases(own))
        .chain(request_and_message_cases(own, me))
    {
        let path = format!("/fhir/{resource_type}");
        let got = w.send(reqwest::Method::POST, "demo.patient", &path, Some(&body), None).await;
        let stored = m.expect(&format!("patient POST {what}"), got, status);
        if status == 201 {
            accepted.entry(resource_type).or_insert(stored);
        }
    }
    accepted
}

/// Observation, Appointment and Communication hold both what a patient records and what the
/// care team records: the role × type × author matrix. A patient (or proxy) creates only
/// their own readings, requests and messages, and changes or deletes only what they wrote
/// themselves — never a clinician's result, booking or message, nor an imported one — while
/// staff change what their care team reaches.
#[tokio::test(flavor = "multi_thread")]
async fn patients_create_and_change_only_what_they_author() {
    use reqwest::Method;
    let w = World::new().await;
    let own = &w.patients[0];
    let mut m = Mismatches::default();
    let mine = patient_creates(&w, &mut m).await;
    // Whatever meta a patient sends, what they wrote is marked as theirs for staff to see.
    let claimed = with(home_reading(own), "/meta", json!({"source": "urn:lab:quest", "tag": [{"code": "lab"}]}));
    let (_, stored) = w
        .send(Method::POST, "demo.patient", "/fhir/Observation", Some(&claimed), None)
        .await;
    assert_eq!(
        stored["meta"]["tag"],
        json!([{"system": "urn:carekeep:provenance", "code": "patient-authored", "display": "Recorded by the patient"}])
    );
    assert!(stored["meta"].get("source").is_none());
    // A weight labelled as something else is stored with the standard label.
    let relabelled = with(home_reading(own), "/code/coding/0/display", json!("Hemoglobin A1c"));
    let relabelled = with(relabelled, "/code/text", json!("HbA1c"));
    let (_, stored) = w
        .send(Method::POST, "demo.patient", "/fhir/Observation", Some(&relabelled), None)
        .await;
    assert_eq!(stored["code"]["coding"][0]["display"], "Body weight", "{stored}");
    assert_eq!(stored["code"]["text"], "Body weight", "{stored}");
    // Its unit label is the unit's, and its narrative is dropped.
    let relabelled = with(home_reading(own), "/valueQuantity/unit", json!("% HbA1c (lab verified)"));
    let narrative =
        json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Lab result</div>"});
    let relabelled = with(relabelled, "/text", narrative);
    let (_, stored) = w
        .send(Method::POST, "demo.patient", "/fhir/Observation", Some(&relabelled), None)
        .await;
    assert_eq!(stored["valueQuantity"]["unit"], "kg", "{stored}");
    assert!(stored.get("text").is_none(), "{stored}");
    // Only the server marks what a patient wrote: staff cannot pass a note off as the
    // patient's own, nor can anyone add the mark on an update.
    let (system, code) = ("urn:carekeep:provenance", "patient-authored");
    let posing = with(glucose(own), "/meta", json!({"tag": [{"system": system, "code": code}, {"code": "kept"}]}));
    let (status, stored) = w
        .send(Method::POST, "demo.clinician", "/fhir/Observation", Some(&posing), None)
        .await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["meta"]["tag"], json!([{"code": "kept"}]), "{stored}");

    // Authors: the patient, a clinician, the clinic's import.
    let mut by_clinician = HashMap::new();
    for (resource_type, body) in [
        ("Observation", glucose(own)),
        ("Appointment", appointment(own, "booked", Some("Practitioner/x"))),
        ("Communication", message(own, "Practitioner/someone")),
    ] {
        let (status, stored) = w
            .send(Method::POST, "demo.clinician", &format!("/fhir/{resource_type}"), Some(&body), None)
            .await;
        assert_eq!(status, 201, "{stored}");
        by_clinician.insert(resource_type, stored);
    }
    let (_, imported) = w
        .get("demo.patient", &format!("/fhir/Observation?patient={own}&_count=1"))
        .await;
    let imported = entries(&imported)[0].clone();
    for (author, resources) in [("the patient", &mine), ("a clinician", &by_clinician)] {
        for (resource_type, resource) in resources {
            let path = format!("/fhir/{resource_type}/{}", resource["id"].as_str().unwrap());
            let (put, delete) = if author == "the patient" { (200, 204) } else { (403, 403) };
            let mut changed = resource.clone();
            match *resource_type {
                "Appointment" => changed["status"] = json!("cancelled"),
                "Communication" => changed["payload"][0]["contentString"] = json!("Changed"),
                _ => changed["status"] = json!("amended"),
            }
            let version = format!("W/\"{}\"", resource["meta"]["versionId"].as_str().unwrap());
            let got = w.send(Method::PUT, "demo.patient", &path, Some(&changed), Some(&version)).await;
            m.expect(&format!("patient PUT {resource_type} by {author}"), got, put);
            let got = w.send(Method::DELETE, "demo.patient", &path, None, None).await;
            m.expect(&format!("patient DELETE {resource_type} by {author}"), got, delete);
        }
    }
    let path = format!("/fhir/Observation/{}", imported["id"].as_str().unwrap());
    let mut forged = imported.clone();
    forged["valueQuantity"]["value"] = json!(4.2);
    let version = format!("W/\"{}\"", imported["meta"]["versionId"].as_str().unwrap());
    let got = w.send(Method::PUT, "demo.patient", &path, Some(&forged), Some(&version)).await;
    m.expect("patient PUT an imported result", got, 403);
    m.expect("patient DELETE an imported result", w.send(Method::DELETE, "demo.patient", &path, None, None).await, 403);
    let (_, unchanged) = w.get("demo.clinician", &path).await;
    assert_eq!(unchanged["valueQuantity"], imported["valueQuantity"], "the clinician still reads the original");

    // A reading the patient wrote, then a nurse corrected: the nurse's now, no longer theirs.
    let (_, reading) = w
        .send(Method::POST, "demo.patient", "/fhir/Observation", Some(&home_reading(own)), None)
        .await;
    let path = format!("/fhir/Observation/{}", reading["id"].as_str().unwrap());
    let mut turned = reading.clone();
    turned["category"] = glucose(own)["category"].clone();
    let got = w.send(Method::PUT, "demo.patient", &path, Some(&turned), Some("W/\"1\"")).await;
    m.expect("patient PUT own reading turned into a lab result", got, 422);
    let mut corrected = reading.clone();
    corrected["valueQuantity"]["value"] = json!(71.0);
    let got = w
        .send(Method::PUT, "demo.nurse", &path, Some(&corrected), Some("W/\"1\""))
        .await;
    m.expect("nurse PUT the patient's reading", got, 200);
    let got = w
        .send(Method::PUT, "demo.patient", &path, Some(&reading), Some("W/\"2\""))
        .await;
    m.expect("patient PUT a reading the nurse corrected", got, 403);
    let got = w.send(Method::DELETE, "demo.patient", &path, None, None).await;
    m.expect("patient DELETE a reading the nurse corrected", got, 403);
    assert!(m.0.is_empty(), "{}", m.0.join("\n"));
}

impl World {
    /// The server's store, opened beside it (to change what only the clinic's tools change).
    fn store(&self) -> carekeep_server::store::Store {
        DataDir::open(&self.dir.path().join("server")).unwrap().open_store().unwrap()
    }

    /// A signed link to the first attachment of DocumentReference `stored`, for the patient.
    async fn signed_link(&self, stored: &Value) -> String {
        let url = stored["content"][0]["attachment"]["url"].as_str().unwrap();
        let (status, link) = self.get("demo.patient", &format!("{url}/link")).await;
        assert_eq!(status, 200);
        link["url"].as_str().unwrap().to_owned()
    }

    /// The status of downloading `path` (a signed link) as the patient.
    async fn download(&self, path: &str) -> u16 {
        let request = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.tokens["demo.patient"]);
        request.send().await.unwrap().status().as_u16()
    }

    /// How many records devices uploaded about `patient` are in their access history.
    async fn device_history(&self, patient: &str) -> usize {
        let (_, trail) = self
            .get("demo.admin", &format!("/fhir/AuditEvent?patient={patient}&_count=500"))
            .await;
        entries(&trail)
            .iter()
            .filter(|e| e["outcomeDesc"].as_str().is_some_and(|a| a.starts_with("device")))
            .count()
    }

    /// `user` leaves `patient`'s care team (there is no API for it yet: the clinic's tools).
    fn leave_care_team(&self, user: &str, patient: &str) {
        self.store()
            .lock()
            .execute(
                "DELETE FROM patient_links WHERE patient = ?1 AND user_id = (SELECT id FROM users WHERE username = ?2)",
                [patient, user],
            )
            .unwrap();
    }

    /// The `next` link of a searchset, as a path.
    fn next_of(&self, bundle: &Value) -> Option<String> {
        let link = bundle["link"].as_array()?.iter().find(|l| l["relation"] == "next")?;
        Some(link["url"].as_str()?.trim_start_matches(&self.base).to_owned())
    }
}

/// A next link is a position, not a permission: every page applies the caller's access as
/// it is then. A nurse who left the care team, or a clinician whose break-glass grant
/// expired, gets nothing more from an old link; what break-glass did open is flagged.
#[tokio::test(flavor = "multi_thread")]
async fn next_links_reapply_the_callers_access_on_every_page() {
    let w = World::new().await;
    let own = w.patients[0].clone();
    let (status, first) = w.get("demo.nurse", &format!("/fhir/Patient/{own}/$everything?_count=5")).await;
    assert_eq!(status, 200);
    let next = w.next_of(&first).expect("more than one page");
    assert_eq!(w.get("demo.nurse", &next).await.0, 200, "still on the care team");
    w.leave_care_team("demo.nurse", &own);
    let (status, after) = w.get("demo.nurse", &next).await;
    assert_eq!(status, 404, "left the care team, an old link still gave {} resources", entries(&after).len());

    let outsider = w.patients.last().unwrap().clone();
    let reason = json!({"patient": outsider, "reason": "unconscious in A&E, no team"});
    assert_eq!(w.post("demo.clinician", "/break-glass", &reason).await.0, 201);
    let (status, first) = w
        .get("demo.clinician", &format!("/fhir/Patient/{outsider}/$everything?_count=5"))
        .await;
    assert_eq!(status, 200);
    let next = w.next_of(&first).expect("more than one page");
    assert_eq!(w.get("demo.clinician", &next).await.0, 200);
    w.store()
        .lock()
        .execute("UPDATE break_glass SET expires_at = 0 WHERE patient = ?1", [&outsider])
        .unwrap();
    let (status, after) = w.get("demo.clinician", &next).await;
    assert_eq!(status, 404, "an expired grant's old link still gave {} resources", entries(&after).len());
    // The pages the grant did open are flagged in the trail; the refused one is a denial.
    let (_, trail) = w.get("demo.admin", &format!("/fhir/AuditEvent?patient={outsider}")).await;
    let everything: Vec<&Value> = entries(&trail)
        .into_iter()
        .filter(|e| e["outcomeDesc"].as_str().is_some_and(|a| a.starts_with("GET /fhir")))
        .collect();
    let flagged = |e: &&Value| e["purposeOfEvent"][0]["coding"][0]["code"] == "BTG";
    let opened = everything.iter().filter(|e| e["outcome"] == "0" && flagged(e)).count();
    let refused = everything.iter().filter(|e| e["outcome"] == "4").count();
    assert_eq!((opened, refused), (2, 1), "flagged pages, refused pages");

    // Another tenant's patient id, and a made-up one, are not found alike (no "break-glass").
    let registered = json!({"resourceType": "Patient", "name": [{"family": "Elsewhere"}]});
    let (status, theirs) = w.post("other.clinician", "/fhir/Patient", &registered).await;
    assert_eq!(status, 201);
    let theirs = theirs["id"].as_str().unwrap().to_owned();
    for id in [theirs.as_str(), "no-such-patient"] {
        let (status, _) = w.get("demo.clinician", &format!("/fhir/Patient/{id}/$everything")).await;
        assert_eq!(status, 404, "{id}");
    }
}

/// An idempotency key answers only its own request, and only to a caller who may still
/// read what it made: a nurse off the care team replaying her old key (with its body, or
/// with another patient's) gets neither the resource nor the clinician's later note.
#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_key_answers_only_its_own_request_and_only_while_readable() {
    use reqwest::Method;
    let w = World::new().await;
    let (own, other) = (w.patients[0].clone(), w.patients[2].clone());
    let post = |body: &Value, key: &str| {
        w.http
            .post(format!("{}/fhir/Observation", w.base))
            .bearer_auth(&w.tokens["demo.nurse"])
            .header("Idempotency-Key", key)
            .json(body)
            .send()
    };
    let first = post(&glucose(&own), "nurse-key-1").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again: Value = post(&glucose(&own), "nurse-key-1").await.unwrap().json().await.unwrap();
    assert_eq!(again["id"], first["id"], "the same request again: the same resource");
    let mut changed = glucose(&own);
    changed["valueQuantity"]["value"] = json!(9.9);
    let other_body = post(&changed, "nurse-key-1").await.unwrap();
    assert_eq!(other_body.status(), 422, "the key with another body");

    // A clinician adds a value and a note; the nurse leaves the care team.
    let path = format!("/fhir/Observation/{}", first["id"].as_str().unwrap());
    let mut noted = first.clone();
    noted["valueQuantity"]["value"] = json!(7.7);
    noted["note"] = json!([{"text": "SENTINEL-CLINICIAN-NOTE"}]);
    assert_eq!(
        w.send(Method::PUT, "demo.clinician", &path, Some(&noted), Some("W/\"1\""))
            .await
            .0,
        200
    );
    w.leave_care_team("demo.nurse", &own);
    for body in [glucose(&own), glucose(&other)] {
        let replay = post(&body, "nurse-key-1").await.unwrap();
        let status = replay.status();
        let text = replay.text().await.unwrap();
        assert!(matches!(status.as_u16(), 404 | 422), "{status}");
        assert!(!text.contains("SENTINEL-CLINICIAN-NOTE") && !text.contains("7.7"), "the replay gave the resource");
    }
}

/// Deleting a DocumentReference deletes its bytes in the same transaction: the signed link
/// handed out before stops working at once, and so does one for an attachment a new
/// version of the reference no longer carries.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_or_replaced_attachment_cannot_be_downloaded_any_more() {
    use reqwest::Method;
    let w = World::new().await;
    let own = w.patients[0].clone();
    let document = |text: &str| {
        json!({
            "resourceType": "DocumentReference", "status": "current",
            "subject": {"reference": format!("Patient/{own}")},
            "content": [{"attachment": {"contentType": "text/plain",
                "data": base64::engine::general_purpose::STANDARD.encode(text)}}]
        })
    };
    let documents = || -> i64 {
        w.store()
            .read()
            .query_row("SELECT count(*) FROM documents WHERE tenant = 'demo'", [], |r| r.get(0))
            .unwrap()
    };
    let before = documents();

    let (status, deleted) = w.post("demo.clinician", "/fhir/DocumentReference", &document("a letter")).await;
    assert_eq!(status, 201);
    let link = w.signed_link(&deleted).await;
    assert_eq!(w.download(&link).await, 200);
    let path = format!("/fhir/DocumentReference/{}", deleted["id"].as_str().unwrap());
    assert_eq!(w.send(Method::DELETE, "demo.clinician", &path, None, None).await.0, 204);
    assert_eq!(w.download(&link).await, 404, "the bytes of a deleted reference");
    assert_eq!(documents(), before, "nothing left behind");

    let (_, replaced) = w
        .post("demo.clinician", "/fhir/DocumentReference", &document("version one"))
        .await;
    let old_link = w.signed_link(&replaced).await;
    let mut second = document("version two");
    second["id"] = replaced["id"].clone();
    let path = format!("/fhir/DocumentReference/{}", replaced["id"].as_str().unwrap());
    let (status, updated) = w
        .send(Method::PUT, "demo.clinician", &path, Some(&second), Some("W/\"1\""))
        .await;
    assert_eq!(status, 200);
    assert_eq!(w.download(&old_link).await, 404, "an attachment the new version dropped");
    assert_eq!(w.download(&w.signed_link(&updated).await).await, 200);
    assert_eq!(documents(), before + 1);
}

/// A device's audit records name a patient only if its account could read that patient
/// when the record says it happened. A patient uploading "read from the device cache"
/// records about someone else — flagged break-glass, dated 2020 — gets them appended as
/// refusals for review, never into that person's access history; an unknown id and a
/// forbidden one are answered alike. A clinician's records under a real grant are flagged.
#[tokio::test(flavor = "multi_thread")]
async fn device_audit_records_name_only_patients_the_account_could_read_then() {
    use carekeep_protocol::audit::{AuditEvent, AuditRecord, Outcome};
    use carekeep_protocol::sync::{DeviceAuditUpload, DeviceStream, READ_FROM_CACHE};
    let w = World::new().await;
    let (own, outsider) = (w.patients[0].clone(), w.patients.last().unwrap().clone());
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let read = |patient: &str, at: &str, break_glass: bool| AuditEvent {
        recorded_at: at.to_owned(),
        occurred_at: Some(at.to_owned()),
        tenant: "demo".into(),
        user: None,
        role: None,
        device: None,
        ip: None,
        action: READ_FROM_CACHE.into(),
        resource_type: Some("Observation".into()),
        resource_id: None,
        patient: Some(patient.to_owned()),
        outcome: Outcome::Success,
        break_glass,
    };
    let upload = |events: Vec<AuditEvent>| {
        let mut records: Vec<AuditRecord> = Vec::new();
        for event in events {
            let next = AuditRecord::append(records.last(), event);
            records.push(next);
        }
        serde_json::to_value(DeviceAuditUpload { stream: DeviceStream::Access, records }).unwrap()
    };

    let before = w.device_history(&outsider).await;
    let mut another_device = read(&own, &now, false);
    another_device.device = Some("dev-not-one-of-hers".into());
    let forged = upload(vec![
        read(&own, &now, false),
        read(&outsider, "2020-01-01T00:00:00Z", true),
        read(&outsider, &now, false),
        read("no-such-patient", &now, false),
        another_device,
    ]);
    let (status, receipt) = w.post("demo.patient", "/audit/device", &forged).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!((receipt["appended"].as_u64(), receipt["refused"].as_u64()), (Some(5), Some(4)), "{receipt}");
    assert_eq!(w.device_history(&outsider).await, before, "nothing entered the other patient's history");
    assert_eq!(w.device_history(&own).await, 1, "the patient's own read did");

    // Times are the only free-form fields a device sends: text in one refuses the upload.
    let mut smuggled = read(&own, &now, false);
    smuggled.occurred_at = Some("Jane Sentineldoe 1980-01-01".into());
    let (status, refusal) = w.post("demo.patient", "/audit/device", &upload(vec![smuggled])).await;
    assert_eq!(status, 422, "{refusal}");
    assert!(!refusal.to_string().contains("Sentineldoe"), "{refusal}");

    // A clinician under a real break-glass grant: the server flags the read itself; a flag
    // the server never granted is refused.
    let reason = json!({"patient": outsider, "reason": "unconscious in A&E, no team"});
    assert_eq!(w.post("demo.clinician", "/break-glass", &reason).await.0, 201);
    let (status, receipt) = w
        .post(
            "demo.clinician",
            "/audit/device",
            &upload(vec![read(&outsider, &now, false), read(&w.patients[6], &now, true)]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(receipt["refused"], 1, "{receipt}");
    let (_, trail) = w.get("demo.admin", &format!("/fhir/AuditEvent?patient={outsider}")).await;
    let device_read = entries(&trail)
        .into_iter()
        .find(|e| e["outcomeDesc"].as_str().is_some_and(|a| a.starts_with("device access")))
        .expect("the clinician's read is in the patient's history");
    assert_eq!(device_read["purposeOfEvent"][0]["coding"][0]["code"], "BTG");
}

/// Break-glass is held to the rules of a high-risk action by the server itself: a full
/// sign-in within five minutes, a reason in words, and a limit per clinician — ten requests
/// at the same instant open five grants, and the tenant's admins are alerted.
#[tokio::test(flavor = "multi_thread")]
async fn break_glass_needs_a_fresh_sign_in_a_reason_and_stays_under_a_limit() {
    let w = World::new().await;
    let outsider = w.patients.last().unwrap().clone();
    let ask = |reason: &str| json!({"patient": outsider, "reason": reason});
    let (status, _) = w.post("demo.clinician", "/break-glass", &ask("xxxxxxxxxx")).await;
    assert_eq!(status, 422, "a reason that says nothing");

    let w = &w;
    let requests = (0..10).map(|i| {
        let body = ask(&format!("emergency admission number {i}, no team reachable"));
        async move { w.post("demo.clinician", "/break-glass", &body).await.0 }
    });
    let statuses = futures_join_all(requests).await;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 5, "{statuses:?}");
    let (status, alerts) = w.get("demo.admin", "/alerts").await;
    assert_eq!(status, 200);
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["username"] == "demo.clinician" && a["kind"] == "break-glass-rate")
    );
    assert_eq!(w.get("demo.clinician", "/alerts").await.0, 403);

    // Five minutes after the last full sign-in, the server asks for one again.
    w.store().lock().execute("UPDATE devices SET full_auth_at = 0", []).unwrap();
    let (status, refused) = w
        .post("demo.clinician", "/break-glass", &ask("unconscious in A&E, no team"))
        .await;
    assert_eq!((status, refused["error"].as_str()), (403, Some("step_up_required")));
}

/// Runs `futures` at once and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in pinned.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => *slot = Some(out),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    done.into_iter().map(Option::unwrap).collect()
}

/// A patient deletes their reading at the instant a clinician corrects it: never both.
/// The right to delete is checked against one version, and the deletion happens only if
/// that version is still the current one, in the same transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_racing_a_clinicians_update_never_deletes_the_update() {
    use reqwest::Method;
    let w = World::new().await;
    let own = w.patients[0].clone();
    for round in 0..20 {
        let (status, reading) = w
            .send(Method::POST, "demo.patient", "/fhir/Observation", Some(&home_reading(&own)), None)
            .await;
        assert_eq!(status, 201);
        let path = format!("/fhir/Observation/{}", reading["id"].as_str().unwrap());
        let mut corrected = reading.clone();
        corrected["valueQuantity"]["value"] = json!(72.0);
        let (update, delete) = tokio::join!(
            w.send(Method::PUT, "demo.clinician", &path, Some(&corrected), Some("W/\"1\"")),
            w.send(Method::DELETE, "demo.patient", &path, None, None),
        );
        assert!(!(update.0 == 200 && delete.0 == 204), "round {round}: the patient deleted the clinician's version");
    }
}

/// The same race for updates: a patient's PUT naming the version a clinician is writing at
/// that instant (If-Match one ahead) must not overwrite the clinician's correction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_racing_a_clinicians_correction_never_overwrites_it() {
    use reqwest::Method;
    let w = World::new().await;
    let own = w.patients[0].clone();
    for round in 0..8 {
        let (_, reading) = w
            .send(Method::POST, "demo.patient", "/fhir/Observation", Some(&home_reading(&own)), None)
            .await;
        let path = format!("/fhir/Observation/{}", reading["id"].as_str().unwrap());
        let mut corrected = reading.clone();
        corrected["status"] = json!("entered-in-error");
        let mut mine = reading.clone();
        mine["valueQuantity"]["value"] = json!(99.0);
        let patient_puts = async {
            let mut wins = 0;
            for _ in 0..6 {
                if w.send(Method::PUT, "demo.patient", &path, Some(&mine), Some("W/\"2\"")).await.0 == 200 {
                    wins += 1;
                }
            }
            wins
        };
        let (clinician, patient_wins) =
            tokio::join!(w.send(Method::PUT, "demo.clinician", &path, Some(&corrected), Some("W/\"1\"")), patient_puts);
        assert_eq!(clinician.0, 200);
        assert_eq!(patient_wins, 0, "round {round}: the patient overwrote the clinician's version");
        let (_, now) = w.get("demo.clinician", &path).await;
        assert_eq!(now["status"], "entered-in-error");
    }
}

/// Whatever a client types where a patient id goes — a path, a subject — is not a patient
/// the trail records unless it is one of the tenant's: a refused request naming
/// "SMITH JOHN DOB 1970" leaves a denied record without it.
#[tokio::test(flavor = "multi_thread")]
async fn made_up_patient_ids_never_reach_the_audit_trail() {
    let w = World::new().await;
    let typed = "SENTINEL%20SMITH%20DOB%201970-01-01";
    assert_eq!(w.get("demo.patient", &format!("/fhir/Patient/{typed}/$everything")).await.0, 404);
    let (status, _) = w
        .post("demo.clinician", "/fhir/Observation", &glucose("SENTINEL-SMITH-DOB-1970"))
        .await;
    assert_eq!(status, 422);
    let store = w.store();
    let conn = store.read();
    let leaked: i64 = conn
        .query_row("SELECT count(*) FROM audit_log WHERE record LIKE '%SENTINEL%'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(leaked, 0, "typed text reached the audit trail");
    let denied: i64 = conn
        .query_row("SELECT count(*) FROM audit_log WHERE json_extract(record, '$.event.outcome') = 'denied'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(denied >= 2, "the refusals are recorded, without the made-up patient");
}

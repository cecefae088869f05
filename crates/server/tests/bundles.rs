//! Records in: `POST /fhir` with transaction and batch Bundles, against a real server on
//! 127.0.0.1, with Synthea-shaped patients (`fixtures/synthea-style/`). A transaction is all
//! or nothing; references between entries and conditional references resolve; a conditional
//! create finds what is already there, even when two arrive at once; every entry is decided
//! by the same table as the single-resource routes, type by type; one audit record per
//! patient; refusals name the entry and element, never a value.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use carekeep_protocol::auth::Role;
use carekeep_server::DataDir;
use carekeep_server::records::Records;
use carekeep_server::records::bundle::{Clinic, Outcome, Plan};
use serde_json::{Value, json};

const HOSPITAL: &str = include_str!("fixtures/synthea-style/hospitalInformation.json");
const PRACTITIONERS: &str = include_str!("fixtures/synthea-style/practitionerInformation.json");
const PATIENT_0: &str = include_str!("fixtures/synthea-style/patient-00.json");
const PATIENT_1: &str = include_str!("fixtures/synthea-style/patient-01.json");

const USERS: [(&str, Role); 6] = [
    ("patient", Role::Patient),
    ("clinician", Role::Clinician),
    ("nurse", Role::Nurse),
    ("billing", Role::Billing),
    ("admin", Role::Admin),
    ("other.clinician", Role::Clinician),
];

struct World {
    base: String,
    http: reqwest::Client,
    tokens: HashMap<&'static str, String>,
    data: DataDir,
    _server: common::Running,
    _dir: tempfile::TempDir,
}

impl World {
    /// A clinic whose directory (hospital, practitioners) the clinic itself loaded, one user
    /// per role, and a second clinic with a clinician of its own.
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let (data, _) = DataDir::init(&dir.path().join("server"), "localhost").unwrap();
        let mut users = Vec::new();
        {
            let store = Arc::new(data.open_store().unwrap());
            let records = Records::new(store.clone(), zeroize::Zeroizing::new(*data.master_keys().unwrap().documents));
            for tenant in ["clinic", "other"] {
                carekeep_server::admin::add_tenant(&store, tenant, tenant, 0).unwrap();
            }
            for (tenant, directory) in
                [("clinic", HOSPITAL), ("clinic", PRACTITIONERS), ("other", HOSPITAL), ("other", PRACTITIONERS)]
            {
                let plan = Plan::read(serde_json::from_str(directory).unwrap()).unwrap();
                let outcome = records.apply_bundle(tenant, plan, &Clinic, None).unwrap();
                assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
            }
            for (name, role) in USERS {
                let tenant = if name.starts_with("other") { "other" } else { "clinic" };
                let password = format!("{name} password, long enough");
                let user = carekeep_server::admin::add_user(&store, tenant, name, role, &password, 0).unwrap();
                users.push((name, password, user.totp_base32));
            }
        }
        let server = common::start(&data).await;
        let base = format!("https://localhost:{}", server.port());
        let http = common::client_for(&data);
        let mut tokens = HashMap::new();
        for (name, password, totp) in users {
            let signed = common::sign_in(&http, &base, name, &password, &totp, 0).await;
            tokens.insert(name, signed.tokens["access_token"].as_str().unwrap().to_owned());
        }
        World { base, http, tokens, data, _server: server, _dir: dir }
    }

    async fn send(
        &self,
        user: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(user) = user {
            request = request.bearer_auth(&self.tokens[user]);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/fhir+json").body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post_bundle(&self, user: &str, bundle: &Value) -> (u16, Value) {
        self.send(Some(user), reqwest::Method::POST, "/fhir", Some(bundle.to_string()))
            .await
    }

    async fn get(&self, user: &str, path: &str) -> (u16, Value) {
        self.send(Some(user), reqwest::Method::GET, path, None).await
    }

    /// Every resource of `tenant`, by type.
    fn counts(&self, tenant: &str) -> BTreeMap<String, i64> {
        common::resource_counts(&self.data, tenant)
    }

    /// Loads a whole Synthea patient as the clinic does (every type, no user): the patient's id.
    fn load_whole(&self, text: &str) -> String {
        let store = Arc::new(self.data.open_store().unwrap());
        let records = Records::new(store, zeroize::Zeroizing::new(*self.data.master_keys().unwrap().documents));
        let plan = Plan::read(whole(text)).unwrap();
        let Outcome::Applied { answers, .. } = records.apply_bundle("clinic", plan, &Clinic, None).unwrap() else {
            panic!("the clinic's load was refused")
        };
        answers
            .iter()
            .filter_map(|a| a.stored.as_ref())
            .find(|s| s.resource_type == "Patient")
            .unwrap()
            .id
            .clone()
    }

    fn link(&self, user: &str, patient: &str, relation: &str) {
        carekeep_server::admin::link_user(&self.data.open_store().unwrap(), user, patient, relation).unwrap();
    }
}

/// A Synthea patient as a clinician sends it: the clinical record, without the insurance and
/// claims (billing's, not care's) or the medication catalogue entries (the directory's),
/// which the clinic loads with `carekeep-server import`.
fn bundle(text: &str) -> Value {
    let mut bundle: Value = serde_json::from_str(text).unwrap();
    let not_clinical = ["Coverage", "Claim", "ExplanationOfBenefit", "Medication"];
    let entries = bundle["entry"].as_array_mut().unwrap();
    let dropped: Vec<(String, Value)> = entries
        .iter()
        .filter(|e| not_clinical.contains(&e["resource"]["resourceType"].as_str().unwrap()))
        .map(|e| (e["fullUrl"].as_str().unwrap().to_owned(), e["resource"].clone()))
        .collect();
    entries.retain(|e| !not_clinical.contains(&e["resource"]["resourceType"].as_str().unwrap()));
    for entry in entries.iter_mut() {
        let resource = entry["resource"].as_object_mut().unwrap();
        if let Some(medication) = resource.remove("medicationReference") {
            let (_, catalogue) = dropped.iter().find(|(url, _)| medication["reference"] == *url).unwrap();
            resource.insert("medicationCodeableConcept".into(), catalogue["code"].clone());
        }
        if let Some(targets) = resource.get_mut("target").and_then(Value::as_array_mut) {
            targets.retain(|t| !dropped.iter().any(|(url, _)| t["reference"] == *url));
        }
    }
    bundle
}

/// A Synthea patient whole, as the clinic loads it.
fn whole(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn entries(bundle: &Value) -> &Vec<Value> {
    bundle["entry"].as_array().unwrap()
}

/// The id an entry of a response was stored under (`Type/id/_history/n`).
fn stored_id(entry: &Value) -> String {
    let location = entry["response"]["location"].as_str().unwrap();
    location.split('/').nth(1).unwrap().to_owned()
}

fn patient_id(sent: &Value, answer: &Value) -> String {
    let index = entries(sent)
        .iter()
        .position(|e| e["resource"]["resourceType"] == "Patient")
        .unwrap();
    stored_id(&entries(answer)[index])
}

/// Every `reference` in `value`.
fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(o) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("reference", Value::String(r)) => out.push(r.clone()),
                    ("text", _) => {}
                    _ => references(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_synthea_patient_comes_in_whole_with_every_reference_resolved() {
    let w = World::new().await;
    let sent = bundle(PATIENT_0);
    let (status, answer) = w.post_bundle("clinician", &sent).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "transaction-response");
    let statuses: Vec<&str> = entries(&answer)
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert!(statuses.iter().all(|s| *s == "201 Created"), "{statuses:?}");
    assert_eq!(statuses.len(), entries(&sent).len());
    for e in entries(&answer) {
        assert_eq!(e["response"]["etag"], "W/\"1\"");
    }
    // Every type the bundle carries is stored, and each is one the server serves.
    let mut sent_types: BTreeMap<String, i64> = BTreeMap::new();
    for e in entries(&sent) {
        *sent_types
            .entry(e["resource"]["resourceType"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let counts = w.counts("clinic");
    for (t, n) in &sent_types {
        assert_eq!(counts.get(t).copied().unwrap_or(0), *n, "{t}");
    }
    // The clinician who registered the patient is on the care team: the whole record reads
    // back, and every reference in it points at a record that exists.
    let patient = patient_id(&sent, &answer);
    let mut everything = Vec::new();
    let mut next = Some(format!("/fhir/Patient/{patient}/$everything?_count=500"));
    while let Some(path) = next.take() {
        let (status, page) = w.get("clinician", &path).await;
        assert_eq!(status, 200, "{page}");
        everything.extend(entries(&page).iter().map(|e| e["resource"].clone()));
        next = page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| {
                let url = l["url"].as_str().unwrap();
                url[url.find("/fhir").unwrap()..].to_owned()
            });
    }
    // Financial data is not the clinician's: everything but Coverage, Claim and EOB.
    let financial = ["Coverage", "Claim", "ExplanationOfBenefit"];
    let expected: i64 = sent_types
        .iter()
        .filter(|(t, _)| !financial.contains(&t.as_str()) && *t != "Medication")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(i64::try_from(everything.len()).unwrap(), expected);
    let mut refs = Vec::new();
    for resource in &everything {
        references(resource, &mut refs);
    }
    refs.sort();
    refs.dedup();
    assert!(refs.len() > 20, "{refs:?}");
    for reference in &refs {
        assert!(!reference.starts_with("urn:") && !reference.contains('?'), "left unresolved: {reference}");
        let (t, _) = reference.split_once('/').unwrap();
        if financial.contains(&t) {
            continue;
        }
        let (status, _) = w.get("clinician", &format!("/fhir/{reference}")).await;
        assert_eq!(status, 200, "{reference} does not resolve");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conditional_create_finds_the_record_already_there_even_two_at_once() {
    let w = World::new().await;
    let sent = bundle(PATIENT_1);
    // The same patient twice at the same instant: one registers the patient, the other
    // finds them (or is told to send again); never two patients with one MRN.
    let (a, b) = tokio::join!(w.post_bundle("clinician", &sent), w.post_bundle("clinician", &sent));
    let mut statuses = vec![a.0, b.0];
    statuses.sort_unstable();
    assert!(statuses == [200, 200] || statuses == [200, 409], "{statuses:?}: {} {}", a.1, b.1);
    assert_eq!(w.counts("clinic")["Patient"], 1);
    let first = if a.0 == 200 { &a.1 } else { &b.1 };
    let patient = patient_id(&sent, first);
    // Sent again: the patient entry is the existing record (200, same id), not a new one.
    let (status, again) = w.post_bundle("clinician", &sent).await;
    assert_eq!(status, 200, "{again}");
    let index = entries(&sent)
        .iter()
        .position(|e| e["resource"]["resourceType"] == "Patient")
        .unwrap();
    assert_eq!(entries(&again)[index]["response"]["status"], "200 OK");
    assert_eq!(stored_id(&entries(&again)[index]), patient);
    assert_eq!(w.counts("clinic")["Patient"], 1);
    // The directory was loaded once, and conditional references found it each time.
    assert_eq!(w.counts("clinic")["Practitioner"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_with_one_bad_entry_stores_nothing_and_says_where() {
    let w = World::new().await;
    let before = w.counts("clinic");
    let good = bundle(PATIENT_0);
    let with = |pointer: &str, to: Value| {
        let mut b = good.clone();
        *b.pointer_mut(pointer).unwrap() = to;
        b
    };
    let observation = entries(&good)
        .iter()
        .position(|e| e["resource"]["resourceType"] == "Observation")
        .unwrap();
    let at = |element: &str| format!("/entry/{observation}/{element}");
    // Another clinic's patient, as the other clinic's clinician registers them.
    let (status, other) = w.post_bundle("other.clinician", &bundle(PATIENT_1)).await;
    assert_eq!(status, 200, "{other}");
    let foreign = patient_id(&bundle(PATIENT_1), &other);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"resourceType\": \"Bundle\", ".to_owned(), 400, ""),
        ("a collection", json!({"resourceType": "Bundle", "type": "collection"}).to_string(), 400, "Bundle.type"),
        (
            "an invalid value",
            with(&at("resource/valueQuantity"), json!("SENTINEL-VALUE")).to_string(),
            422,
            "resource.valueQuantity",
        ),
        ("a type not served", with(&at("request/url"), json!("AdverseEvent")).to_string(), 400, "request.url"),
        (
            "a urn:uuid no entry defines",
            with(&at("resource/subject/reference"), json!("urn:uuid:SENTINEL-NOWHERE")).to_string(),
            422,
            "resource.subject.reference",
        ),
        (
            "another clinic's patient",
            with(&at("resource/subject/reference"), json!(format!("Patient/{foreign}"))).to_string(),
            422,
            "resource.subject",
        ),
        (
            "a directory entry a clinician may not write",
            {
                let mut b = good.clone();
                b["entry"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"request": {"method": "POST", "url": "Location"},
                    "resource": {"resourceType": "Location", "name": "SENTINEL-PLACE"}}));
                b.to_string()
            },
            403,
            "request.url",
        ),
    ];
    for (what, body, status, element) in cases {
        let (got, answer) = w.send(Some("clinician"), reqwest::Method::POST, "/fhir", Some(body)).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["resourceType"], "OperationOutcome", "{what}");
        let text = answer.to_string();
        assert!(!text.contains("SENTINEL"), "{what}: a value was echoed: {text}");
        if !element.is_empty() {
            let expressions: Vec<&str> = answer["issue"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|i| i["expression"].as_array().unwrap())
                .map(|e| e.as_str().unwrap())
                .collect();
            assert!(
                expressions.iter().any(|e| e.ends_with(element) && e.starts_with("Bundle")),
                "{what}: {expressions:?}"
            );
        }
        assert_eq!(w.counts("clinic"), before, "{what}: something was stored");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_entries_stand_alone_and_each_is_decided_as_its_own_route() {
    let w = World::new().await;
    let (_, answer) = w.post_bundle("clinician", &bundle(PATIENT_0)).await;
    let own = patient_id(&bundle(PATIENT_0), &answer);
    let (_, other) = w.post_bundle("other.clinician", &bundle(PATIENT_1)).await;
    let foreign = patient_id(&bundle(PATIENT_1), &other);
    let reading = |patient: &str| {
        json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
            "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": "2026-11-01T08:00:00Z",
            "valueQuantity": {"value": 5.5, "unit": "mmol/L"}})
    };
    let post =
        |resource: Value| json!({"request": {"method": "POST", "url": resource["resourceType"]}, "resource": resource});
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        post(reading(&own)),
        post(reading(&foreign)),
        post(json!({"resourceType": "Observation", "status": "SENTINEL", "code": {"text": "x"},
            "subject": {"reference": format!("Patient/{own}")}})),
        {"request": {"method": "GET", "url": format!("Patient/{own}")}},
        {"request": {"method": "GET", "url": format!("Patient/{foreign}")}},
        {"request": {"method": "DELETE", "url": "Observation/no-such-reading"}},
    ]});
    let before = w.counts("clinic")["Observation"];
    let (status, answer) = w.post_bundle("clinician", &batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "batch-response");
    let statuses: Vec<&str> = entries(&answer)
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "201 Created",
            "422 Unprocessable Entity",
            "422 Unprocessable Entity",
            "200 OK",
            "404 Not Found",
            "404 Not Found"
        ]
    );
    assert_eq!(entries(&answer)[3]["resource"]["id"], own);
    assert!(!answer.to_string().contains("SENTINEL"));
    assert_eq!(w.counts("clinic")["Observation"], before + 1);
    // A patient's batch is held to what a patient may author: their own home reading only.
    w.link("patient", &own, "self");
    let home = json!({"resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": format!("Patient/{own}")}, "effectiveDateTime": "2026-11-01T08:00:00Z",
        "valueQuantity": {"value": 70.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}});
    let mut lab = reading(&own);
    lab["category"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}]);
    let claim = entries(&bundle(PATIENT_0))
        .iter()
        .find(|e| e["resource"]["resourceType"] == "CarePlan")
        .unwrap()["resource"]
        .clone();
    let mut care_plan = claim;
    care_plan["subject"] = json!({"reference": format!("Patient/{own}")});
    care_plan
        .as_object_mut()
        .unwrap()
        .retain(|k, _| ["resourceType", "status", "intent", "subject"].contains(&k.as_str()));
    let mine = json!({"resourceType": "Bundle", "type": "batch", "entry": [post(home), post(lab), post(care_plan)]});
    let (status, answer) = w.post_bundle("patient", &mine).await;
    assert_eq!(status, 200, "{answer}");
    let statuses: Vec<&str> = entries(&answer)
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201 Created", "422 Unprocessable Entity", "403 Forbidden"], "{answer}");
}

/// The role × type matrix, for every type a Synthea patient brings: who reads what, by
/// minimum necessary. Financial data for the patient and billing; clinical data for the
/// care team; the directory for everyone but admins.
#[tokio::test(flavor = "multi_thread")]
async fn every_role_reads_each_imported_type_as_the_table_says() {
    let w = World::new().await;
    let sent = whole(PATIENT_0);
    let patient = w.load_whole(PATIENT_0);
    w.link("patient", &patient, "self");
    w.link("clinician", &patient, "care-team");
    w.link("nurse", &patient, "care-team");
    let clinical = [
        "Condition",
        "MedicationRequest",
        "AllergyIntolerance",
        "Immunization",
        "DiagnosticReport",
        "DocumentReference",
        "Procedure",
        "CarePlan",
        "CareTeam",
        "Goal",
        "ImagingStudy",
        "Device",
        "MedicationAdministration",
        "MedicationStatement",
        "ServiceRequest",
        "QuestionnaireResponse",
        "Consent",
        "SupplyDelivery",
        "Provenance",
        "Observation",
    ];
    let financial = ["Coverage", "Claim", "ExplanationOfBenefit"];
    let directory = ["Practitioner", "PractitionerRole", "Organization", "Location", "Medication"];
    // (status, anything) for patient, clinician, nurse, billing, admin, other clinician.
    let mut expected: Vec<(&str, [(u16, bool); 6])> = Vec::new();
    for t in clinical {
        expected.push((t, [(200, true), (200, true), (200, true), (403, false), (403, false), (200, false)]));
    }
    for t in financial {
        expected.push((t, [(200, true), (403, false), (403, false), (200, true), (403, false), (403, false)]));
    }
    // (The other clinic has a directory of its own, loaded from the same files.)
    for t in directory {
        let theirs = t != "Medication";
        expected.push((t, [(200, true), (200, true), (200, true), (200, true), (403, false), (200, theirs)]));
    }
    expected.push(("Encounter", [(200, true), (200, true), (200, true), (200, true), (403, false), (200, false)]));
    expected.push(("Patient", [(200, true), (200, true), (200, true), (200, true), (403, false), (200, false)]));
    let mut wrong = Vec::new();
    for (t, cells) in &expected {
        let query = if directory.contains(t) { format!("/fhir/{t}") } else { format!("/fhir/{t}?patient={patient}") };
        for ((user, _), (status, anything)) in USERS.iter().zip(cells) {
            let (got, body) = w.get(user, &query).await;
            let got_anything = body["entry"].as_array().is_some_and(|e| !e.is_empty());
            if (got, got_anything) != (*status, *anything) {
                wrong.push(format!("{user} {t}: expected {status}/{anything}, got {got}/{got_anything}"));
            }
        }
    }
    wrong.extend(writes_of_new_types(&w, &sent, &patient).await);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Writes of the new types: only the care team writes clinical records; nobody writes
/// financial data or the directory through the API. The mismatches.
async fn writes_of_new_types(w: &World, sent: &Value, patient: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    let writes = [
        ("clinician", "CarePlan", 201),
        ("nurse", "Goal", 201),
        ("clinician", "Claim", 403),
        ("billing", "Coverage", 403),
        ("patient", "Consent", 403),
        ("clinician", "Location", 403),
    ];
    for (user, t, status) in writes {
        let resource = entries(sent)
            .iter()
            .find(|e| e["resource"]["resourceType"] == *t)
            .map(|e| e["resource"].clone());
        let mut resource = resource.unwrap_or_else(|| json!({"resourceType": t, "name": "x"}));
        let mut refs = Vec::new();
        references(&resource, &mut refs);
        // Only the patient is kept among its references (the others were bundle-local).
        let keep = |v: &mut Value| {
            if let Some(o) = v.as_object_mut() {
                o.retain(|k, _| {
                    ![
                        "encounter",
                        "addresses",
                        "goal",
                        "careTeam",
                        "activity",
                        "context",
                        "request",
                        "claim",
                        "insurance",
                        "diagnosis",
                        "item",
                        "provider",
                        "insurer",
                        "payor",
                        "participant",
                        "managingOrganization",
                        "target",
                        "agent",
                        "performer",
                        "requester",
                        "author",
                    ]
                    .contains(&k.as_str())
                });
            }
        };
        keep(&mut resource);
        for field in ["subject", "patient", "beneficiary"] {
            if resource.get(field).is_some() {
                resource[field] = json!({"reference": format!("Patient/{patient}")});
            }
        }
        let (got, body) = w
            .send(Some(user), reqwest::Method::POST, &format!("/fhir/{t}"), Some(resource.to_string()))
            .await;
        if got != status {
            wrong.push(format!("{user} POST {t}: expected {status}, got {got}: {body}"));
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread")]
async fn one_audit_record_per_patient_and_large_bundles_only_from_the_signed_in() {
    let w = World::new().await;
    let from = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let sent = bundle(PATIENT_0);
    let (_, answer) = w.post_bundle("clinician", &sent).await;
    let patient = patient_id(&sent, &answer);
    let store = w.data.open_store().unwrap();
    let records = carekeep_server::audit::query(&store, &patient, &from, "9999").unwrap();
    let bundle_records: Vec<_> = records.iter().filter(|r| r.event.action == "POST /fhir").collect();
    assert_eq!(bundle_records.len(), 1, "{records:?}");
    assert_eq!(bundle_records[0].event.user.as_deref(), Some(w.user_id("clinician").as_str()));
    drop(store);
    // A body over a resource's worth: refused unread without a session, taken with one.
    let mut large = sent.clone();
    let filler = "x".repeat(2 * 1024 * 1024);
    large["id"] = json!("large");
    large["meta"] = json!({"tag": [{"code": "filler", "display": filler}]});
    let body = large.to_string();
    // Refused before a byte of it is read: the answer is 413, or — when the server's answer
    // and close overtake the client still writing — the connection ends under the upload.
    let unsigned = w
        .http
        .post(format!("{}/fhir", w.base))
        .header("content-type", "application/fhir+json")
        .body(body.clone())
        .send()
        .await;
    match unsigned {
        Ok(response) => assert_eq!(response.status(), 413),
        Err(e) => assert!(e.is_request() && !e.is_timeout(), "{e}"),
    }
    let (status, answer) = w.send(Some("clinician"), reqwest::Method::POST, "/fhir", Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

impl World {
    fn user_id(&self, username: &str) -> String {
        let store = self.data.open_store().unwrap();
        let conn = store.read();
        conn.query_row("SELECT id FROM users WHERE username = ?1", [username], |r| r.get(0))
            .unwrap()
    }
}

/// The CapabilityStatement names every type a Synthea patient and its directory carry, and
/// the transaction and batch interactions; a type the server does not store stays out.
#[tokio::test(flavor = "multi_thread")]
async fn the_capability_statement_lists_what_comes_in() {
    let w = World::new().await;
    let response = w.http.get(format!("{}/fhir/metadata", w.base)).send().await.unwrap();
    let statement: Value = response.json().await.unwrap();
    let rest = &statement["rest"][0];
    let listed: Vec<&str> = rest["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    for text in [PATIENT_0, PATIENT_1, HOSPITAL, PRACTITIONERS] {
        for e in entries(&whole(text)) {
            let t = e["resource"]["resourceType"].as_str().unwrap();
            assert!(listed.contains(&t), "{t} is not in the CapabilityStatement");
        }
    }
    for t in ["ServiceRequest", "MedicationStatement", "QuestionnaireResponse", "Consent"] {
        assert!(listed.contains(&t), "{t}");
    }
    assert!(!listed.contains(&"AdverseEvent"));
    let interactions: Vec<&str> = rest["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert_eq!(interactions, ["transaction", "batch"]);
    let claim = rest["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Claim")
        .unwrap();
    assert!(!claim.to_string().contains("\"create\""), "financial data is not written through the API");
}

/// A conditional create tells nothing of what is on file: a record the sender could not
/// open is as if it were not there (a new one is made, as for an unknown identifier), and a
/// role that may not write the type is refused before any lookup.
#[tokio::test(flavor = "multi_thread")]
async fn a_condition_is_no_way_to_learn_whether_an_identifier_is_on_file() {
    let w = World::new().await;
    let hidden = w.load_whole(PATIENT_0); // on no one's care team
    let mrn = whole(PATIENT_0)["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .unwrap()["resource"]["identifier"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let probe = |value: &str| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
            "request": {"method": "POST", "url": "Patient",
                        "ifNoneExist": format!("identifier=http://hospital.smarthealthit.org|{value}")},
            "resource": {"resourceType": "Patient", "identifier": [{"system": "http://hospital.smarthealthit.org", "value": value}]}}]})
    };
    let (on_file, answer) = w.post_bundle("clinician", &probe(&mrn)).await;
    let (unknown, other) = w.post_bundle("clinician", &probe("NO-SUCH-MRN")).await;
    assert_eq!((on_file, unknown), (200, 200));
    assert_eq!(entries(&answer)[0]["response"]["status"], "201 Created", "{answer}");
    assert_eq!(entries(&other)[0]["response"]["status"], "201 Created");
    assert_ne!(stored_id(&entries(&answer)[0]), hidden, "never the hidden record");
    for user in ["patient", "nurse", "billing", "admin"] {
        let (status, _) = w.post_bundle(user, &probe(&mrn)).await;
        assert_eq!(status, 403, "{user}");
    }
}

/// What the single routes insist on, a Bundle insists on too: an update names the version it
/// changes, one resource stays within a resource's size, and a Bundle is not sent "once per
/// key" (ifNoneExist makes it safe to repeat instead).
#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_keeps_the_single_routes_rules() {
    let w = World::new().await;
    let (_, answer) = w.post_bundle("clinician", &bundle(PATIENT_0)).await;
    let condition = entries(&answer)
        .iter()
        .find(|e| e["response"]["location"].as_str().unwrap().starts_with("Condition/"))
        .map(stored_id)
        .unwrap();
    let (_, current) = w.get("clinician", &format!("/fhir/Condition/{condition}")).await;
    let put = |if_match: Option<&str>| {
        let mut request = json!({"method": "PUT", "url": format!("Condition/{condition}")});
        if let Some(tag) = if_match {
            request["ifMatch"] = json!(tag);
        }
        json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": request, "resource": current.clone()}]})
    };
    let (_, without) = w.post_bundle("clinician", &put(None)).await;
    assert_eq!(entries(&without)[0]["response"]["status"], "428 Precondition Required", "{without}");
    let (_, with) = w.post_bundle("clinician", &put(Some("W/\"1\""))).await;
    assert_eq!(entries(&with)[0]["response"]["status"], "200 OK", "{with}");
    let (_, stale) = w.post_bundle("clinician", &put(Some("W/\"1\""))).await;
    assert_eq!(entries(&stale)[0]["response"]["status"], "412 Precondition Failed");

    let mut heavy = current.clone();
    heavy.as_object_mut().unwrap().remove("id");
    heavy["note"] = json!([{"text": "x".repeat(1_100_000)}]);
    let big = json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "POST", "url": "Condition"}, "resource": heavy}]});
    let (status, answer) = w.post_bundle("clinician", &big).await;
    assert_eq!(status, 200);
    assert_eq!(entries(&answer)[0]["response"]["status"], "413 Payload Too Large", "{answer}");

    let keyed = w
        .http
        .post(format!("{}/fhir", w.base))
        .bearer_auth(&w.tokens["clinician"])
        .header("idempotency-key", "once")
        .json(&put(Some("W/\"2\"")))
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 400);
}

/// A batch's successes hide no refused attempt: an entry refused for a patient outside the
/// sender's care team is recorded as denied under that patient, beside the write it came
/// with; a refused transaction is recorded under the patient it was about.
#[tokio::test(flavor = "multi_thread")]
async fn refused_entries_are_audited_under_their_patient() {
    let w = World::new().await;
    let from = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let outside = w.load_whole(PATIENT_0);
    let (_, answer) = w.post_bundle("clinician", &bundle(PATIENT_1)).await;
    let own = patient_id(&bundle(PATIENT_1), &answer);
    let note = |patient: &str| {
        json!({"request": {"method": "POST", "url": "Condition"}, "resource": {"resourceType": "Condition",
            "code": {"text": "x"}, "subject": {"reference": format!("Patient/{patient}")}}})
    };
    let mixed = json!({"resourceType": "Bundle", "type": "batch", "entry": [note(&own), note(&outside)]});
    let (_, answer) = w.post_bundle("clinician", &mixed).await;
    let statuses: Vec<&str> = entries(&answer)
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201 Created", "403 Forbidden"]);
    let alone = json!({"resourceType": "Bundle", "type": "transaction", "entry": [note(&outside)]});
    let (status, _) = w.post_bundle("clinician", &alone).await;
    assert_eq!(status, 403);
    let store = w.data.open_store().unwrap();
    let trail = carekeep_server::audit::query(&store, &outside, &from, "9999").unwrap();
    let denied: Vec<_> = trail
        .iter()
        .filter(|r| r.event.action == "POST /fhir" && r.event.outcome == carekeep_protocol::audit::Outcome::Denied)
        .collect();
    assert_eq!(denied.len(), 2, "{trail:#?}");
}

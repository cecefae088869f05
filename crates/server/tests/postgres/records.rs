//! The records service on PostgreSQL, beside the embedded one: the same writes read,
//! search, page and delete alike on both engines; and on PostgreSQL, as an attacker meets
//! it with two nodes: two updates from one version store one, one idempotency key sent to
//! both nodes writes once, stamps and the audit chain follow commit order, a write whose
//! audit record cannot be kept is not kept, a connection lost mid-write leaves nothing,
//! every table with a tenant is closed without one, and a dump holds no identifier, note
//! or document.

use std::collections::BTreeMap;
use std::sync::Arc;

use carekeep_protocol::audit::AuditEvent;
use carekeep_protocol::auth::Role;
use carekeep_server::DataDir;
use carekeep_server::admin;
use carekeep_server::auth::PgAccounts;
use carekeep_server::keys::MasterKeys;
use carekeep_server::pg::{self, records::PgRecords};
use carekeep_server::records::access::PatientFilter;
use carekeep_server::records::removed::DeletionScope;
use carekeep_server::records::search::{After, Search};
use carekeep_server::records::{Access, Checked, RecordError, Records, Stored, Writer};
use serde_json::{Value, json};

use super::{Database, database, event, message, pg_bin, records};

const MRN: &str = "MRN-SENTINEL-4711";
const DOCUMENT_TEXT: &str = "pg-sentinel-document-bytes";
const T0: i64 = 1_790_000_000;

/// The records service of either engine, as the test drives both.
enum Engine {
    /// The service, and the data directory it lives in (removed when dropped).
    Embedded(Records, #[expect(dead_code, reason = "held to keep the directory")] tempfile::TempDir),
    Shared(PgRecords),
}

impl Engine {
    fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (data, _) = DataDir::init(dir.path(), "localhost").unwrap();
        let store = Arc::new(data.open_store().unwrap());
        admin::add_tenant(&store, "clinic-a", "Clinic A", T0).unwrap();
        Engine::Embedded(Records::new(store, data.master_keys().unwrap().documents.clone()), dir)
    }

    async fn shared(db: &Database) -> Self {
        let store = records(db, &[7; 32]).await;
        store.add_tenant("clinic-a", "Clinic A").await.unwrap();
        Engine::Shared(store)
    }

    async fn add_user(&self, db: Option<&Database>, username: &str, role: Role) -> String {
        match self {
            Engine::Embedded(records, _) => {
                admin::add_user(records.store("users").unwrap(), "clinic-a", username, role, "a long password here", T0)
                    .unwrap()
                    .id
            }
            Engine::Shared(_) => {
                let accounts = PgAccounts::connect(&db.unwrap().app_url, 1, &MasterKeys::derive(&[7; 32]))
                    .await
                    .unwrap();
                accounts
                    .add_user("clinic-a", username, role, "a long password here", T0)
                    .await
                    .unwrap()
                    .id
            }
        }
    }

    fn check(&self, value: Value) -> Result<Checked, RecordError> {
        let resource_type = value["resourceType"].as_str().unwrap().to_owned();
        match self {
            Engine::Embedded(records, _) => records.check(value, &resource_type),
            Engine::Shared(store) => store.check(value, &resource_type),
        }
    }

    /// Imports `values` in one batch (one stamp for all: ties that only the id orders).
    async fn import(&self, values: Vec<Value>) {
        let batch: Vec<(Checked, String)> = values
            .into_iter()
            .map(|value| {
                let id = value["id"].as_str().unwrap().to_owned();
                (self.check(value).unwrap(), id)
            })
            .collect();
        match self {
            Engine::Embedded(records, _) => {
                records.import("clinic-a", batch, time::OffsetDateTime::now_utc()).unwrap();
            }
            Engine::Shared(store) => {
                store.import("clinic-a", batch).await.unwrap();
            }
        }
    }

    async fn create(&self, value: Value, writer: &Writer<'_>) -> Result<(Stored, bool), RecordError> {
        let checked = self.check(value)?;
        match self {
            Engine::Embedded(records, _) => records.create("clinic-a", checked, writer),
            Engine::Shared(store) => store.create("clinic-a", checked, writer).await,
        }
    }

    async fn update(&self, id: &str, value: Value, version: i64, writer: &Writer<'_>) -> Result<Stored, RecordError> {
        let checked = self.check(value)?;
        match self {
            Engine::Embedded(records, _) => records.update("clinic-a", id, checked, version, writer),
            Engine::Shared(store) => store.update("clinic-a", id, checked, version, writer).await,
        }
        .map(|(stored, _)| stored)
    }

    async fn delete(&self, resource_type: &str, id: &str, version: i64) -> Result<Stored, RecordError> {
        match self {
            Engine::Embedded(records, _) => records.delete("clinic-a", resource_type, id, version, T0, &Writer::CLINIC),
            Engine::Shared(store) => store.delete("clinic-a", resource_type, id, version, T0, &Writer::CLINIC).await,
        }
    }

    async fn read(&self, resource_type: &str, id: &str) -> Option<Stored> {
        match self {
            Engine::Embedded(records, _) => records.read("clinic-a", resource_type, id).unwrap(),
            Engine::Shared(store) => store.read("clinic-a", resource_type, id).await.unwrap(),
        }
    }

    async fn search(
        &self,
        search: &Search,
        filter: &PatientFilter,
        after: Option<&After>,
    ) -> (Vec<Stored>, u64, Option<After>) {
        let page = match self {
            Engine::Embedded(records, _) => records.search("clinic-a", search, filter, after).unwrap(),
            Engine::Shared(store) => store.search("clinic-a", search, filter, after).await.unwrap(),
        };
        (page.resources, page.total, page.next)
    }

    async fn link(&self, user: &str, patient: &str, relation: &str) {
        match self {
            Engine::Embedded(records, _) => records.link("clinic-a", user, patient, relation).unwrap(),
            Engine::Shared(store) => store.link("clinic-a", user, patient, relation).await.unwrap(),
        }
    }

    async fn access(&self, user: &str, role: Role) -> Access {
        match self {
            Engine::Embedded(records, _) => records.access("clinic-a", user, role, T0).unwrap(),
            Engine::Shared(store) => store.access("clinic-a", user, role, None, T0).await.unwrap(),
        }
    }

    /// Applies `bundle` as the clinic's own tools do; the outcome, with every id the engine
    /// assigned replaced by the entry that made it, and its times left out.
    async fn apply_bundle(&self, bundle: Value) -> String {
        use carekeep_server::records::bundle::{Clinic, Outcome, Plan};
        let plan = Plan::read(bundle).unwrap();
        let outcome = match self {
            Engine::Embedded(records, _) => records.apply_bundle("clinic-a", plan, &Clinic, None),
            Engine::Shared(store) => {
                let records = Records::postgres(store.clone(), tokio::runtime::Handle::current());
                tokio::task::spawn_blocking(move || records.apply_bundle("clinic-a", plan, &Clinic, None))
                    .await
                    .unwrap()
            }
        };
        match outcome {
            Ok(Outcome::Applied { answers, .. }) => {
                let assigned: Vec<(String, String)> = answers
                    .iter()
                    .filter_map(|a| a.stored.as_ref().map(|s| (s.id.clone(), format!("#{}", a.index))))
                    .collect();
                let shown: Vec<String> = answers
                    .iter()
                    .map(|a| {
                        let mut text = match &a.stored {
                            Some(stored) => {
                                let mut json: Value = serde_json::from_str(&stored.json).unwrap();
                                json["meta"]["lastUpdated"] = Value::Null;
                                format!("{} {json}", a.status)
                            }
                            None => format!("{} {:?}", a.status, a.refusal),
                        };
                        for (id, label) in &assigned {
                            text = text.replace(id.as_str(), label);
                        }
                        text
                    })
                    .collect();
                shown.join(" | ")
            }
            other => format!("{other:?}"),
        }
    }

    async fn deletions(&self, access: &Access) -> (Vec<(String, String)>, Vec<String>) {
        let scope = DeletionScope::of(access);
        let filter = access.read_filter(carekeep_server::records::access::Data::Clinical);
        match self {
            Engine::Embedded(records, _) => {
                let (patients, _) = records.sync_status("clinic-a", &filter, &scope).unwrap();
                let removed = records.removed_after("clinic-a", &scope, 0, 100).unwrap();
                (patients, removed.into_iter().map(|r| r.id).collect())
            }
            Engine::Shared(store) => {
                let (patients, _) = store.sync_status("clinic-a", &filter, &scope).await.unwrap();
                let removed = store.removed_after("clinic-a", &scope, 0, 100).await.unwrap();
                (patients, removed.into_iter().map(|r| r.id).collect())
            }
        }
    }
}

fn patient(id: &str, family: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": family, "given": ["Ada"]}],
           "identifier": [{"system": "urn:clinic:mrn", "value": format!("{MRN}-{id}")}], "birthDate": "1937-04-29"})
}

fn reading(patient: &str, code: &str, category: &str, when: &str, value: u32) -> Value {
    json!({"resourceType": "Observation", "status": "final",
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
           "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
           "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": when,
           "valueQuantity": {"value": value, "unit": "/min"}})
}

/// What one engine answered, with its own ids (random per engine) replaced by the labels
/// the script gave them, and the write times (the engine's clock) left out.
#[derive(Debug, PartialEq)]
struct Answers(Vec<(String, String)>);

/// One run of the script on one engine.
struct Run<'e> {
    engine: &'e Engine,
    answers: Vec<(String, String)>,
    /// Engine id → the script's label (users, and resources the engine named).
    labels: BTreeMap<String, String>,
    /// The script's label → engine id.
    ids: BTreeMap<&'static str, String>,
    clinician: String,
    patient_user: String,
}

/// Runs the script on `engine`; every answer, labelled.
async fn script(engine: &Engine, db: Option<&Database>) -> Answers {
    let clinician = engine.add_user(db, "dr.one", Role::Clinician).await;
    let patient_user = engine.add_user(db, "pat.two", Role::Patient).await;
    let labels =
        BTreeMap::from([(clinician.clone(), "clinician".into()), (patient_user.clone(), "patient-user".into())]);
    engine.import(vec![patient("p1", "Lovelace")]).await;
    engine.import(vec![patient("p2", "Byron")]).await;
    // Ids whose byte order and linguistic order differ, stamped alike.
    engine
        .import(vec![patient("a1", "Ames"), patient("B1", "Bell"), patient("Z9", "Zorn"), patient("b2", "Bax")])
        .await;
    engine.link(&clinician, "p1", "care-team").await;
    engine.link(&patient_user, "p2", "self").await;
    let mut run = Run { engine, answers: Vec::new(), labels, ids: BTreeMap::new(), clinician, patient_user };
    run.writes().await;
    run.reads().await;
    run.searches().await;
    run.access().await;
    run.bundles().await;
    Answers(run.answers)
}

impl Run<'_> {
    /// Creates, replays, updates and deletes, each answer kept.
    async fn writes(&mut self) {
        let readings = [
            ("r1", "p1", "8867-4", "vital-signs", "2026-01-05T08:00:00Z", 61),
            ("r2", "p1", "8867-4", "vital-signs", "2026-02-05T08:00:00Z", 64),
            ("r3", "p1", "2339-0", "laboratory", "2026-02-20T08:00:00Z", 99),
            ("r4", "p1", "2339-0", "laboratory", "2026-03-01T08:00:00Z", 105),
            ("r5", "p2", "8867-4", "vital-signs", "2026-01-10T08:00:00Z", 70),
            ("r6", "p2", "2339-0", "laboratory", "2026-02-11T08:00:00Z", 88),
        ];
        for (n, (label, patient, code, category, when, value)) in readings.iter().enumerate() {
            let key = format!("key-{n}");
            let writer = Writer::user(&self.patient_user, Some(&key));
            let (stored, replayed) = self
                .engine
                .create(reading(patient, code, category, when, *value), &writer)
                .await
                .unwrap();
            assert!(!replayed);
            self.labels.insert(stored.id.clone(), (*label).to_owned());
            self.ids.insert(*label, stored.id);
        }
        // The same key again: the same write, not a second one; with another body: refused.
        let writer = Writer::user(&self.patient_user, Some("key-0"));
        let (again, replayed) = self
            .engine
            .create(reading("p1", "8867-4", "vital-signs", "2026-01-05T08:00:00Z", 61), &writer)
            .await
            .unwrap();
        self.answers
            .push(("replayed".into(), format!("{replayed} {}", self.labels[&again.id])));
        let refused = self
            .engine
            .create(reading("p1", "8867-4", "vital-signs", "2026-01-05T08:00:00Z", 62), &writer)
            .await;
        self.answers.push(("key reused".into(), format!("{refused:?}")));
        // An update, a stale one, a delete, a stale delete, a reading of nobody.
        let updated = self
            .engine
            .update(
                &self.ids["r2"],
                reading("p1", "8867-4", "vital-signs", "2026-02-05T08:00:00Z", 66),
                1,
                &Writer::user(&self.clinician, None),
            )
            .await
            .unwrap();
        self.answers.push((
            "updated".into(),
            format!("{} {:?}", updated.version, updated.written_by.map(|w| self.labels[&w].clone())),
        ));
        let stale = self
            .engine
            .update(
                &self.ids["r2"],
                reading("p1", "8867-4", "vital-signs", "2026-02-05T08:00:00Z", 67),
                1,
                &Writer::CLINIC,
            )
            .await;
        self.answers.push(("stale update".into(), format!("{stale:?}")));
        self.answers.push((
            "stale delete".into(),
            format!("{:?}", self.engine.delete("Observation", &self.ids["r3"], 2).await.map(|s| s.version)),
        ));
        self.answers.push((
            "delete".into(),
            format!("{:?}", self.engine.delete("Observation", &self.ids["r3"], 1).await.map(|s| s.version)),
        ));
        self.answers.push((
            "delete a patient".into(),
            format!("{:?}", self.engine.delete("Patient", "p1", 1).await.map(|s| s.version)),
        ));
        let nobody = self
            .engine
            .create(reading("p9", "8867-4", "vital-signs", "2026-01-05T08:00:00Z", 61), &Writer::CLINIC)
            .await;
        self.answers
            .push(("nobody's".into(), format!("{:?}", nobody.map(|(s, _)| s.version))));
        let nul = self.engine.check(json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "a\u{0}b"}, "subject": {"reference": "Patient/p1"}}));
        self.answers.push(("NUL".into(), format!("{:?}", nul.map(|_| ()))));
    }

    /// Reads: each resource whole, but for the engine's id and clock.
    async fn reads(&mut self) {
        for label in ["r1", "r2", "r3", "r4", "r5", "r6"] {
            let found = self.engine.read("Observation", &self.ids[label]).await;
            self.answers
                .push((format!("read {label}"), found.map(|s| shown(&s, &self.labels)).unwrap_or_default()));
        }
        self.answers.push((
            "read p1".into(),
            self.engine
                .read("Patient", "p1")
                .await
                .map(|s| shown(&s, &self.labels))
                .unwrap_or_default(),
        ));
        self.answers
            .push(("read elsewhere".into(), format!("{:?}", self.engine.read("Observation", "nope").await)));
    }

    /// Searches with each filter, page by page (two a page), and `$everything`.
    async fn searches(&mut self) {
        let pairs =
            |list: &[(&str, &str)]| list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect::<Vec<_>>();
        let searches = [
            ("Observation", pairs(&[("patient", "p1")])),
            ("Observation", pairs(&[("code", "http://loinc.org|8867-4")])),
            ("Observation", pairs(&[("code", "2339-0")])),
            ("Observation", pairs(&[("code", "other|2339-0")])),
            ("Observation", pairs(&[("category", "laboratory")])),
            ("Observation", pairs(&[("date", "2026-02")])),
            ("Observation", pairs(&[("date", "ge2026-02-05"), ("date", "lt2026-03")])),
            ("Observation", pairs(&[("date", "gt2026-02"), ("patient", "p2")])),
            ("Observation", pairs(&[("date", "le2026-01")])),
            ("Observation", pairs(&[("date", "2026-01-05")])),
            ("Observation", pairs(&[("date", "le2026-02-05")])),
            ("Observation", pairs(&[("date", "gt2026-02-05T08:00:00Z")])),
            ("Observation", pairs(&[("_id", &self.ids["r4"])])),
            ("Observation", pairs(&[("_lastUpdated", "ge2000-01-01")])),
            ("Patient", pairs(&[])),
        ];
        let clinician_access = self.engine.access(&self.clinician, Role::Clinician).await;
        let filters = [
            PatientFilter::Any,
            PatientFilter::Only(vec!["p2".into()]),
            PatientFilter::Nothing,
            clinician_access.read_filter(carekeep_server::records::access::Data::Clinical),
        ];
        for (resource_type, query) in &searches {
            for filter in &filters {
                let mut search = Search::parse(resource_type, query).unwrap();
                search.count = 2;
                let (mut after, mut pages) = (None, Vec::new());
                loop {
                    let (found, total, next) = self.engine.search(&search, filter, after.as_ref()).await;
                    let labelled: Vec<&str> = found
                        .iter()
                        .map(|s| self.labels.get(&s.id).map_or(s.id.as_str(), String::as_str))
                        .collect();
                    pages.push(format!("{total}:{}", labelled.join(",")));
                    match next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                let asked: Vec<String> = query
                    .iter()
                    .map(|(name, value)| format!("{name}={}", self.labels.get(value).unwrap_or(value)))
                    .collect();
                self.answers
                    .push((format!("search {resource_type} {asked:?} {filter:?}"), pages.join(" | ")));
            }
        }
        let mut everything = Search::parse_everything(vec!["Observation".into(), "Patient".into()], "p1", &[]).unwrap();
        everything.count = 3;
        let (found, total, _) = self.engine.search(&everything, &PatientFilter::Any, None).await;
        self.answers.push((
            "everything".into(),
            format!(
                "{total} {:?}",
                found
                    .iter()
                    .map(|s| self.labels.get(&s.id).cloned().unwrap_or(s.id.clone()))
                    .collect::<Vec<_>>()
            ),
        ));
    }

    /// Transaction and batch Bundles: references resolved, a conditional create matching
    /// what the first run stored, a batch with a refused entry, a transaction refused whole.
    async fn bundles(&mut self) {
        let patient = json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "MRN-77"}],
            "name": [{"family": "Bundleson"}]});
        let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0f7c5a3e-0000-4000-8000-000000000001", "resource": patient,
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|MRN-77"}},
            {"fullUrl": "urn:uuid:0f7c5a3e-0000-4000-8000-000000000002",
             "resource": reading("p1", "8867-4", "vital-signs", "2026-04-01T08:00:00Z", 72)
                 .as_object().cloned().map(|mut o| { o.insert("subject".into(),
                     json!({"reference": "urn:uuid:0f7c5a3e-0000-4000-8000-000000000001"})); Value::Object(o) }).unwrap(),
             "request": {"method": "POST", "url": "Observation"}}]});
        for run in ["first", "again"] {
            let answer = self.engine.apply_bundle(transaction.clone()).await;
            self.answers.push((format!("transaction, {run}"), answer));
        }
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": reading("p2", "2339-0", "laboratory", "2026-04-02T08:00:00Z", 91),
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": reading("p9", "2339-0", "laboratory", "2026-04-02T08:00:00Z", 91),
             "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "GET", "url": "Patient/p2"}}]});
        let answer = self.engine.apply_bundle(batch).await;
        self.answers.push(("batch".into(), answer));
        let refused = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": reading("p2", "2339-0", "laboratory", "2026-04-03T08:00:00Z", 93),
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": reading("p9", "2339-0", "laboratory", "2026-04-03T08:00:00Z", 93),
             "request": {"method": "POST", "url": "Observation"}}]});
        let answer = self.engine.apply_bundle(refused).await;
        self.answers.push(("transaction refused".into(), answer));
        let all = Search::parse("Observation", &[]).unwrap();
        let (_, total, _) = self.engine.search(&all, &PatientFilter::Any, None).await;
        self.answers.push(("after the bundles".into(), total.to_string()));
    }

    /// Access, and what each caller learns at sync.
    async fn access(&mut self) {
        let clinician_access = self.engine.access(&self.clinician, Role::Clinician).await;
        let patient_access = self.engine.access(&self.patient_user, Role::Patient).await;
        for (who, access) in [("clinician", &clinician_access), ("patient", &patient_access)] {
            let mut care_team: Vec<_> = access.care_team.iter().cloned().collect();
            let mut linked: Vec<_> = access.linked.iter().cloned().collect();
            care_team.sort();
            linked.sort();
            self.answers
                .push((format!("access {who}"), format!("{care_team:?} {linked:?} {:?}", access.break_glass)));
            let (patients, removed) = self.engine.deletions(access).await;
            let patients: Vec<&str> = patients.iter().map(|(p, _)| p.as_str()).collect();
            let removed: Vec<&str> = removed.iter().map(|id| self.labels[id].as_str()).collect();
            self.answers.push((format!("sync {who}"), format!("{patients:?} {removed:?}")));
        }
    }
}

/// A stored resource as compared: its JSON without the engine's id and clock, its
/// version, patient and author.
fn shown(stored: &Stored, labels: &BTreeMap<String, String>) -> String {
    let mut json: Value = serde_json::from_str(&stored.json).unwrap();
    assert_eq!(json["id"], stored.id.as_str());
    assert_eq!(json["meta"]["versionId"], stored.version.to_string());
    json["id"] = Value::Null;
    json["meta"]["lastUpdated"] = Value::Null;
    let author = stored.written_by.as_ref().map(|w| labels[w].clone());
    format!("{json} v{} {:?} {author:?}", stored.version, stored.patient)
}

#[tokio::test]
async fn the_same_writes_read_search_page_and_delete_alike_on_both_engines() {
    let db = database().await;
    let embedded = script(&Engine::embedded(), None).await;
    let shared = script(&Engine::shared(&db).await, Some(&db)).await;
    assert!(embedded.0.len() > 60, "the script ran");
    for ((what, left), (_, right)) in embedded.0.iter().zip(&shared.0) {
        assert_eq!(left, right, "{what}: the embedded engine answered {left}, PostgreSQL {right}");
    }
    assert_eq!(embedded, shared);
    // The answers are not all alike: the script tells writes apart.
    let answer = |what: &str| embedded.0.iter().find(|(w, _)| w == what).map(|(_, a)| a.clone()).unwrap();
    for (what, holds) in [
        ("stale update", "VersionConflict"),
        ("key reused", "conflict"),
        ("NUL", "NUL character"),
        ("transaction, again", "\"reference\":\"Patient/#0\""),
        ("batch", " | 422 "),
    ] {
        assert!(answer(what).contains(holds), "{what}: {}", answer(what));
    }
    assert!(answer("transaction, first").starts_with("201 "), "{}", answer("transaction, first"));
    assert!(answer("transaction, again").starts_with("200 "), "{}", answer("transaction, again"));
    assert!(answer("transaction refused").starts_with("Ok(Refused("), "{}", answer("transaction refused"));
}

/// Two nodes: two services over one database.
async fn two_nodes(db: &Database) -> (PgRecords, PgRecords) {
    let a = records(db, &[7; 32]).await;
    a.add_tenant("clinic-a", "Clinic A").await.unwrap();
    super::put(&a, "clinic-a", patient("p1", "Lovelace")).await;
    (a, records(db, &[7; 32]).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_store_one_of_two_updates_and_one_write_per_key() {
    let db = database().await;
    let (a, b) = two_nodes(&db).await;
    let (first, _) = a
        .create(
            "clinic-a",
            a.check(reading("p1", "8867-4", "vital-signs", "2026-01-05T08:00:00Z", 61), "Observation")
                .unwrap(),
            &Writer::CLINIC,
        )
        .await
        .unwrap();
    // Ten updates from version 1, half through each node, at once: one is stored.
    let mut tasks = Vec::new();
    for n in 0..10u32 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        let (id, value) = (first.id.clone(), reading("p1", "8867-4", "vital-signs", "2026-01-05T08:00:00Z", 70 + n));
        tasks.push(tokio::spawn(async move {
            let checked = node.check(value, "Observation").unwrap();
            node.update("clinic-a", &id, checked, 1, &Writer::CLINIC)
                .await
                .map(|(s, _)| s.version)
        }));
    }
    let results = super::futures_join(tasks.into_iter()).await;
    assert_eq!(results.iter().filter(|r| matches!(r, Ok(2))).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(2) | Err(RecordError::VersionConflict))), "{results:?}");
    assert_eq!(a.read("clinic-a", "Observation", &first.id).await.unwrap().unwrap().version, 2);

    // One key sent to both nodes at once, five times each: one resource, every answer it.
    let mut tasks = Vec::new();
    for n in 0..10 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let checked = node
                .check(reading("p1", "2339-0", "laboratory", "2026-02-01T08:00:00Z", 90), "Observation")
                .unwrap();
            node.create("clinic-a", checked, &Writer::user("usr-1", Some("one-key")))
                .await
                .unwrap()
        }));
    }
    let results = super::futures_join(tasks.into_iter()).await;
    assert!(results.iter().all(|(s, _)| s.id == results[0].0.id), "one resource for one key");
    assert_eq!(results.iter().filter(|(_, replayed)| !replayed).count(), 1);
    let search = Search::parse("Observation", &[("code".into(), "2339-0".into())]).unwrap();
    assert_eq!(a.search("clinic-a", &search, &PatientFilter::Any, None).await.unwrap().total, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn stamps_and_the_audit_chain_follow_commit_order_across_nodes() {
    let db = database().await;
    let (a, b) = two_nodes(&db).await;
    let template = event("clinic-a", "write");
    let mut tasks = Vec::new();
    for n in 0..24u32 {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            let checked = node
                .check(reading("p1", "8867-4", "vital-signs", "2026-01-05T08:00:00Z", n), "Observation")
                .unwrap();
            let writer = Writer::user("usr-1", None).audited(&template);
            node.create("clinic-a", checked, &writer).await.unwrap().0
        }));
    }
    let written = super::futures_join(tasks.into_iter()).await;
    // Order of the stamps (what `_lastUpdated` and sync page by) is the chain's order, which
    // is commit order: each write appended its record under the tenant's lock.
    let mut by_stamp: Vec<(String, String)> = written
        .iter()
        .map(|s| {
            let json: Value = serde_json::from_str(&s.json).unwrap();
            (json["meta"]["lastUpdated"].as_str().unwrap().to_owned(), s.id.clone())
        })
        .collect();
    by_stamp.sort();
    let stamps: std::collections::BTreeSet<&String> = by_stamp.iter().map(|(t, _)| t).collect();
    assert_eq!(stamps.len(), written.len(), "no two writes share a stamp");
    let mut client = pg::connect(&db.app_url).await.unwrap();
    let chain =
        pg::audit::verify(&mut client, &ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key(), "clinic-a")
            .await
            .unwrap();
    let in_chain: Vec<String> = chain.iter().filter_map(|r| r.event.resource_id.clone()).collect();
    let in_stamps: Vec<String> = by_stamp.into_iter().map(|(_, id)| id).collect();
    assert_eq!(in_chain, in_stamps, "the chain and the stamps disagree on the order of writes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_is_kept_with_its_audit_record_or_not_at_all() {
    let db = database().await;
    let (a, _) = two_nodes(&db).await;
    let value = || reading("p1", "8867-4", "vital-signs", "2026-01-05T08:00:00Z", 61);
    // An audit record that cannot join this tenant's chain: the write is not kept either.
    let foreign: AuditEvent = event("clinic-b", "x");
    let refused = a
        .create(
            "clinic-a",
            a.check(value(), "Observation").unwrap(),
            &Writer::user("usr-1", Some("k1")).audited(&foreign),
        )
        .await;
    assert!(matches!(refused, Err(RecordError::Store(_))), "{refused:?}");
    let all = Search::parse("Observation", &[]).unwrap();
    assert_eq!(a.search("clinic-a", &all, &PatientFilter::Any, None).await.unwrap().total, 0);

    // The connection lost while the write waits for the tenant's lock: nothing written,
    // the caller told to try again, and the retry (same key) writes once.
    let superuser = pg::connect(&db.superuser_url).await.unwrap();
    let holder = pg::connect(&db.superuser_url).await.unwrap();
    holder
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(1635083380, hashtext('clinic-a'))")
        .await
        .unwrap();
    let template = event("clinic-a", "write");
    let node = a.clone();
    let write = tokio::spawn(async move {
        let writer = Writer::user("usr-1", Some("k2")).audited(&template);
        node.create("clinic-a", node.check(value(), "Observation").unwrap(), &writer)
            .await
            .map(|(s, _)| s.id)
    });
    let app_role = db
        .app_url
        .split_whitespace()
        .find_map(|p| p.strip_prefix("user="))
        .unwrap()
        .to_owned();
    let mut killed = 0;
    for _ in 0..100 {
        killed = superuser
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE usename = $1 AND wait_event_type = 'Lock' AND query LIKE '%advisory%'",
                &[&app_role],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if killed > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(killed, 1, "the write waited for the lock");
    let lost = write.await.unwrap();
    assert!(matches!(lost, Err(RecordError::Unavailable)), "{lost:?}");
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(a.search("clinic-a", &all, &PatientFilter::Any, None).await.unwrap().total, 0);
    let template = event("clinic-a", "write");
    let writer = Writer::user("usr-1", Some("k2")).audited(&template);
    let (kept, _) = a
        .create("clinic-a", a.check(value(), "Observation").unwrap(), &writer)
        .await
        .unwrap();
    let mut client = pg::connect(&db.app_url).await.unwrap();
    let chain =
        pg::audit::verify(&mut client, &ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key(), "clinic-a")
            .await
            .unwrap();
    let audited: Vec<Option<String>> = chain.iter().map(|r| r.event.resource_id.clone()).collect();
    assert_eq!(audited, [Some(kept.id)], "one write, one record; none for what was not kept");
}

/// A tenant with a row in every records table: a care-team link, a document (its
/// DocumentReference, as written, and the document's id), a deletion, an idempotency key,
/// an Observation with codes and the patients' identifiers.
async fn every_kind_of_row(db: &Database) -> (PgRecords, Stored, String, Value) {
    let (a, _) = two_nodes(db).await;
    let accounts = PgAccounts::connect(&db.app_url, 1, &MasterKeys::derive(&[7; 32]))
        .await
        .unwrap();
    let user = accounts
        .add_user("clinic-a", "dr.two", Role::Clinician, "a long password here", T0)
        .await
        .unwrap();
    a.link("clinic-a", &user.id, "p1", "care-team").await.unwrap();
    let document = json!({"resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "text/plain",
            "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, DOCUMENT_TEXT)}}]});
    let (stored, _) = a
        .create(
            "clinic-a",
            a.check(document.clone(), "DocumentReference").unwrap(),
            &Writer::user(&user.id, Some("doc-key")),
        )
        .await
        .unwrap();
    let url = serde_json::from_str::<Value>(&stored.json).unwrap()["content"][0]["attachment"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc_id = url.strip_prefix("/documents/").unwrap().to_owned();
    let (observation, _) = a
        .create(
            "clinic-a",
            a.check(reading("p1", "8867-4", "vital-signs", "2026-01-05T08:00:00Z", 61), "Observation")
                .unwrap(),
            &Writer::CLINIC,
        )
        .await
        .unwrap();
    a.delete("clinic-a", "Observation", &observation.id, 1, T0, &Writer::CLINIC)
        .await
        .unwrap();
    let kept = a
        .check(reading("p1", "2339-0", "laboratory", "2026-01-05T08:00:00Z", 90), "Observation")
        .unwrap();
    a.create("clinic-a", kept, &Writer::CLINIC).await.unwrap();
    (a, stored, doc_id, document)
}

#[tokio::test]
async fn every_table_with_a_tenant_is_closed_without_one_and_tombstones_stay() {
    let db = database().await;
    let (a, _, doc_id, _) = every_kind_of_row(&db).await;
    assert_eq!(&*a.document("clinic-a", &doc_id).await.unwrap().unwrap().bytes, DOCUMENT_TEXT.as_bytes());
    assert_eq!(a.document_patient("clinic-a", &doc_id).await.unwrap().as_deref(), Some("p1"));

    // Every table holding a tenant's rows forces its policy, and shows nothing without one.
    let app = pg::connect(&db.app_url).await.unwrap();
    // Each policy the nodes' role meets is the one tenant filter, reading and writing.
    let policies = app
        .query(
            "SELECT tablename::text, coalesce(qual, ''), coalesce(with_check, '') FROM pg_policies
             WHERE schemaname = 'public' AND (roles @> '{public}' OR roles @> '{carekeep_app}')",
            &[],
        )
        .await
        .unwrap();
    assert!(policies.len() >= 17, "{} policies", policies.len());
    for row in &policies {
        let (table, qual, check): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let column = if table == "tenants" { "id" } else { "tenant" };
        let filter = format!("({column} = current_setting('carekeep.tenant'::text, true))");
        assert_eq!((qual.as_str(), check.as_str()), (filter.as_str(), filter.as_str()), "{table}");
    }
    let tables: Vec<(String, bool)> = app
        .query(
            "SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r'
               AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname IN ('tenant', 'id')
                           AND c.relname NOT IN ('schema_version', 'deployment', 'sign_in_budgets', 'sign_in_windows',
                                                 'sign_in_failures'))
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let names: Vec<&str> = tables.iter().map(|(t, _)| t.as_str()).collect();
    for table in [
        "resources",
        "resource_codes",
        "resource_identifiers",
        "patient_links",
        "break_glass",
        "idempotency",
        "removed",
        "documents",
        "users",
        "devices",
        "audit_log",
    ] {
        assert!(names.contains(&table), "{table} was not checked: {names:?}");
    }
    for (table, forced) in &tables {
        assert!(forced, "{table} does not force row-level security");
        let n: i64 = app
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} shows rows with no tenant set");
    }
    // Every one of them has rows in this tenant: the check above looked at something.
    for table in ["resource_codes", "resource_identifiers", "patient_links", "idempotency", "removed", "documents"] {
        let tx_client = &app;
        tx_client
            .batch_execute("BEGIN; SELECT set_config('carekeep.tenant', 'clinic-a', true)")
            .await
            .unwrap();
        let n: i64 = tx_client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        tx_client.batch_execute("ROLLBACK").await.unwrap();
        assert!(n > 0, "{table} is empty in the tenant");
    }
    // Tombstones and the tenant's key and clock cannot be undone by the nodes' role.
    for statement in [
        "DELETE FROM removed",
        "UPDATE removed SET id = 'x'",
        "UPDATE tenants SET written_at = 0",
        "UPDATE tenants SET wrapped_key = '\\x00'",
    ] {
        app.batch_execute("BEGIN; SELECT set_config('carekeep.tenant', 'clinic-a', true)")
            .await
            .unwrap();
        let refused = app
            .batch_execute(statement)
            .await
            .map_or_else(|e| message(&e), |()| "done".to_owned());
        app.batch_execute("ROLLBACK").await.unwrap();
        assert!(refused.contains("permission denied") || refused.contains("cannot change"), "{statement}: {refused}");
    }
}

#[tokio::test]
async fn a_dump_holds_no_identifier_or_document_and_unlinked_bytes_go() {
    let db = database().await;
    let (a, stored, doc_id, document) = every_kind_of_row(&db).await;
    // The identifier is found through its keyed hash only; neither it nor the document is
    // in a dump.
    let dump = std::process::Command::new(pg_bin("pg_dump"))
        .arg("--dbname")
        .arg(&db.superuser_url)
        .output()
        .unwrap();
    assert!(dump.status.success());
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("urn:clinic:mrn") && text.contains(&doc_id), "the dump is of the test database");
    for secret in [MRN, DOCUMENT_TEXT, "Lovelace", "1937-04-29"] {
        assert!(!text.contains(secret), "the dump holds {secret}");
    }
    // An update that no longer links the attachment takes its bytes; so does a deletion.
    let mut unlinked = document;
    unlinked["content"][0]["attachment"] = json!({"contentType": "text/plain", "url": "https://elsewhere.example/x"});
    let updated = a
        .update("clinic-a", &stored.id, a.check(unlinked, "DocumentReference").unwrap(), 1, &Writer::CLINIC)
        .await
        .unwrap()
        .0;
    assert!(a.document("clinic-a", &doc_id).await.unwrap().is_none());
    a.delete("clinic-a", "DocumentReference", &updated.id, 2, T0, &Writer::CLINIC)
        .await
        .unwrap();
}

/// Someone with the nodes' database credential (not the master key) adds a link or a
/// break-glass grant, or files a record under another patient or author: none of it grants
/// anything — the access check refuses the forged row, the moved body does not open.
#[tokio::test]
async fn rows_the_server_did_not_write_grant_nothing() {
    let db = database().await;
    let (a, _) = two_nodes(&db).await;
    super::put(&a, "clinic-a", patient("p2", "Byron")).await;
    let accounts = PgAccounts::connect(&db.app_url, 1, &MasterKeys::derive(&[7; 32]))
        .await
        .unwrap();
    let thief = accounts
        .add_user("clinic-a", "pat.thief", Role::Patient, "a long password here", T0)
        .await
        .unwrap()
        .id;
    a.link("clinic-a", &thief, "p2", "self").await.unwrap();
    let (theirs, _) = a
        .create(
            "clinic-a",
            a.check(reading("p1", "8867-4", "vital-signs", "2026-01-05T08:00:00Z", 61), "Observation")
                .unwrap(),
            &Writer::CLINIC,
        )
        .await
        .unwrap();
    let linked = a.access("clinic-a", &thief, Role::Patient, None, T0).await.unwrap();
    assert_eq!(linked.linked.iter().collect::<Vec<_>>(), ["p2"], "the server's own link is honoured");

    let app = pg::connect(&db.app_url).await.unwrap();
    let as_node = |statement: String| {
        let app = &app;
        async move {
            app.batch_execute(&format!(
                "BEGIN; SELECT set_config('carekeep.tenant', 'clinic-a', true); {statement}; COMMIT"
            ))
            .await
            .unwrap();
        }
    };
    // A link of their own to p1, with a made-up MAC: refused, not honoured.
    as_node(format!(
        "INSERT INTO patient_links (tenant, user_id, patient, relation, mac) VALUES ('clinic-a', '{thief}', 'p1', 'proxy', '\\x00')"
    ))
    .await;
    let refused = a.access("clinic-a", &thief, Role::Patient, None, T0).await.unwrap_err();
    assert!(refused.to_string().contains("integrity check"), "{refused}");
    as_node(format!("DELETE FROM patient_links WHERE user_id = '{thief}' AND patient = 'p1'")).await;
    // A break-glass grant they wrote themselves: refused the same way.
    as_node(format!(
        "INSERT INTO break_glass (id, tenant, user_id, patient, reason_sealed, opened_at, expires_at, mac)
         VALUES ('bg-1', 'clinic-a', '{thief}', 'p1', '\\x00', {T0}, {}, '\\x00')",
        T0 + 3600
    ))
    .await;
    let refused = a.access("clinic-a", &thief, Role::Patient, Some("p1"), T0).await.unwrap_err();
    assert!(refused.to_string().contains("integrity check"), "{refused}");

    // p1's document refiled under p2, or under another reference: it no longer opens, and
    // its patient is not taken from the row.
    let document = json!({"resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "text/plain",
            "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, DOCUMENT_TEXT)}}]});
    let (reference, _) = a
        .create("clinic-a", a.check(document, "DocumentReference").unwrap(), &Writer::CLINIC)
        .await
        .unwrap();
    let url = serde_json::from_str::<Value>(&reference.json).unwrap()["content"][0]["attachment"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc_id = url.strip_prefix("/documents/").unwrap().to_owned();
    assert_eq!(a.document_patient("clinic-a", &doc_id).await.unwrap().as_deref(), Some("p1"));
    // (The nodes' role may not update document rows; it may delete and insert them.)
    for (patient, reference) in [("'p2'", "resource_id"), ("'p1'", "'elsewhere'")] {
        as_node(format!(
            "WITH d AS (DELETE FROM documents WHERE id = '{doc_id}' RETURNING *)
             INSERT INTO documents SELECT tenant, id, {patient}, content_type, wrapped_key, ciphertext, {reference} FROM d"
        ))
        .await;
        let edit = format!("{patient} {reference}");
        let refused = a.document("clinic-a", &doc_id).await.err().unwrap();
        assert!(refused.to_string().contains("integrity check"), "{edit}: {refused}");
        assert!(a.document_patient("clinic-a", &doc_id).await.is_err(), "{edit}");
    }

    // p1's reading filed under p2 (whom the thief may read), or as written by the thief (so
    // a patient could change it): the body no longer opens, by read or by search.
    as_node(format!("UPDATE resources SET patient = 'p2' WHERE id = '{}'", theirs.id)).await;
    let all = Search::parse("Observation", &[]).unwrap();
    let refused = a
        .search("clinic-a", &all, &PatientFilter::Only(vec!["p2".into()]), None)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("altered or moved"), "{refused}");
    for edit in ["patient = 'p2'".to_owned(), format!("patient = 'p1', written_by = '{thief}'")] {
        as_node(format!("UPDATE resources SET {edit} WHERE id = '{}'", theirs.id)).await;
        let refused = a.read("clinic-a", "Observation", &theirs.id).await.unwrap_err();
        assert!(refused.to_string().contains("altered or moved"), "{edit}: {refused}");
    }
}

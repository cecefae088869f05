//! The FHIR store: official HL7 examples and the synthetic carebundle patients round-trip
//! unchanged; search, trends and the outbox work; invalid input is refused whole.

mod common;

use carekeep_core::Error;
use carekeep_core::error::RecordsError;
use carekeep_core::store::{CodeFilter, PendingWrite, ResourceQuery, WriteMethod};
use common::*;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Bundle<'a> {
    #[serde(borrow)]
    entry: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(rename = "fullUrl")]
    full_url: &'a str,
    #[serde(borrow)]
    resource: &'a RawValue,
}

#[test]
fn all_carebundle_patients_round_trip_exactly() {
    let (_dir, _profile, _keychain, mut vault) = new_vault();
    let mut total = 0;
    for file in fixture_files("carebundle") {
        let text = std::fs::read_to_string(&file).unwrap();
        let summary = vault.store().unwrap().ingest_bundle(&text).unwrap();
        let bundle: Bundle<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(summary.stored, bundle.entry.len());
        total += bundle.entry.len();
        let store = vault.store().unwrap();
        for entry in &bundle.entry {
            let original: Value = serde_json::from_str(entry.resource.get()).unwrap();
            let rtype = original["resourceType"].as_str().unwrap();
            let id = entry.full_url.strip_prefix("urn:uuid:").unwrap();
            let stored = store.get(rtype, id).unwrap().unwrap_or_else(|| panic!("{rtype}/{id} missing"));
            assert_eq!(stored.json, entry.resource.get(), "byte-for-byte");
            assert_eq!(serde_json::from_str::<Value>(&stored.json).unwrap(), original);
        }
    }
    assert_eq!(total, 929, "the fixture README's count");
    assert_eq!(vault.store().unwrap().count().unwrap(), 929);
}

#[test]
fn all_hl7_examples_round_trip_exactly() {
    let (_dir, _profile, _keychain, mut vault) = new_vault();
    let files = fixture_files("hl7-r4-examples");
    assert_eq!(files.len(), 190);
    let mut store = vault.store().unwrap();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let stored = store.put(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let back = store.get(&stored.resource_type, &stored.id).unwrap().unwrap();
        assert_eq!(back.json, text);
        assert_eq!(serde_json::from_str::<Value>(&back.json).unwrap(), serde_json::from_str::<Value>(&text).unwrap());
    }
    assert_eq!(store.count().unwrap(), 190);
}

/// The first Patient of a carebundle file and the number of each type it has.
fn first_patient(vault: &mut carekeep_core::Vault) -> (String, usize) {
    let text = std::fs::read_to_string(&fixture_files("carebundle")[0]).unwrap();
    vault.store().unwrap().ingest_bundle(&text).unwrap();
    let bundle: Value = serde_json::from_str(&text).unwrap();
    let entries = bundle["entry"].as_array().unwrap();
    let patient = entries.iter().find(|e| e["resource"]["resourceType"] == "Patient").unwrap();
    let uuid = patient["fullUrl"].as_str().unwrap().strip_prefix("urn:uuid:").unwrap();
    let observations = entries
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Observation")
        .count();
    (format!("Patient/{uuid}"), observations)
}

#[test]
fn search_by_patient_type_code_and_date() {
    let (_dir, _profile, _keychain, mut vault) = new_vault();
    let (patient, observations) = first_patient(&mut vault);
    let store = vault.store().unwrap();
    let all =
        ResourceQuery { patient: Some(patient.clone()), resource_type: "Observation".into(), ..Default::default() };
    assert_eq!(store.search(&all).unwrap().len(), observations);

    let sodium = ResourceQuery { code: Some(CodeFilter::parse("http://loinc.org|2951-2").unwrap()), ..all.clone() };
    let found = store.search(&sodium).unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0].json.contains("2951-2"));
    let wrong_system =
        ResourceQuery { code: Some(CodeFilter::parse("http://snomed.info/sct|2951-2").unwrap()), ..all.clone() };
    assert!(store.search(&wrong_system).unwrap().is_empty());

    let labs = ResourceQuery { category: Some("laboratory".into()), ..all.clone() };
    let lab_count = store.search(&labs).unwrap().len();
    assert!(lab_count > 0 && lab_count < observations, "labs are a subset of the observations");
    let vitals = ResourceQuery { category: Some("vital-signs".into()), ..all.clone() };
    assert_eq!(store.search(&vitals).unwrap().len() + lab_count, observations);

    let before = ResourceQuery { to: Some("2000-01-01".into()), ..all.clone() };
    assert!(store.search(&before).unwrap().is_empty());
    let after = ResourceQuery { from: Some("2000-01-01".into()), ..all.clone() };
    assert_eq!(store.search(&after).unwrap().len(), observations);
    let bad_date = ResourceQuery { from: Some("2000-13-01".into()), ..all.clone() };
    assert!(matches!(store.search(&bad_date), Err(Error::InvalidArgument { .. })));

    let other = ResourceQuery { patient: Some("Patient/someone-else".into()), ..all };
    assert!(store.search(&other).unwrap().is_empty());
}

#[test]
fn lab_trend_is_ordered_by_time_across_zones_with_values_and_units() {
    let (_dir, _profile, _keychain, mut vault) = new_vault();
    // Written out of order and in different zones; the trend must come back in real time order.
    let points = [
        ("2024-03-01T08:00:00+02:00", 5.9), // 06:00Z
        ("2024-01-15T09:30:00Z", 5.1),
        ("2024-03-01T07:00:00Z", 6.2), // after the first one
        ("2023-12-01", 4.8),
    ];
    let entries: Vec<Value> = points
        .iter()
        .enumerate()
        .map(|(i, (when, value))| {
            serde_json::json!({"resource": {
                "resourceType": "Observation", "id": format!("glu-{i}"), "status": "final",
                "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
                "effectiveDateTime": when, "valueQuantity": {"value": value, "unit": "mmol/L"}
            }})
        })
        .chain([serde_json::json!({"resource": {
            "resourceType": "Observation", "id": "other", "status": "final", "subject": {"reference": "Patient/p2"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "effectiveDateTime": "2024-02-01", "valueQuantity": {"value": 9.9, "unit": "mmol/L"}
        }})])
        .collect();
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": entries}).to_string();
    let mut store = vault.store().unwrap();
    store.ingest_bundle(&bundle).unwrap();
    let trend = store
        .lab_trend("Patient/p1", &CodeFilter::parse("http://loinc.org|2345-7").unwrap())
        .unwrap();
    let values: Vec<f64> = trend.iter().map(|p| p.value).collect();
    assert_eq!(values, [4.8, 5.1, 5.9, 6.2]);
    assert!(trend.iter().all(|p| p.unit.as_deref() == Some("mmol/L")));
    assert_eq!(trend[2].effective, "2024-03-01T06:00:00.000000Z");
}

#[test]
fn an_invalid_entry_rejects_the_whole_bundle_naming_its_path() {
    let (_dir, _profile, _keychain, mut vault) = new_vault();
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "ok"}},
        {"resource": {"resourceType": "Observation", "id": "o1", "effectiveDateTime": "2024-02-30"}},
    ]})
    .to_string();
    let mut store = vault.store().unwrap();
    match store.ingest_bundle(&bundle) {
        Err(Error::Records(RecordsError::InvalidResource { path, .. })) => {
            assert_eq!(path, "entry[1].resource.effectiveDateTime");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.count().unwrap(), 0, "nothing stored half-way");

    for (text, path) in [
        ("[1,2]", "Bundle"),
        (r#"{"resourceType":"Patient","id":"x"}"#, "Bundle.resourceType"),
        (r#"{"resourceType":"Bundle","entry":[{"fullUrl":"x"}]}"#, "entry[0].resource"),
        (
            r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Nonsense","id":"x"}}]}"#,
            "entry[0].resource.resourceType",
        ),
        (r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient"}}]}"#, "entry[0].resource.id"),
    ] {
        match store.ingest_bundle(text) {
            Err(Error::Records(RecordsError::InvalidResource { path: p, .. })) => assert_eq!(p, path, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    assert!(matches!(store.put("not json"), Err(Error::Records(RecordsError::InvalidResource { .. }))));
    assert_eq!(store.count().unwrap(), 0);
}

#[test]
fn reingest_replaces_and_delete_removes() {
    let (_dir, _profile, _keychain, mut vault) = new_vault();
    let mut store = vault.store().unwrap();
    store.put(r#"{"resourceType":"Observation","id":"o","meta":{"versionId":"1"},"subject":{"reference":"Patient/p"},"code":{"coding":[{"code":"a"}]}}"#).unwrap();
    store.put(r#"{"resourceType":"Observation","id":"o","meta":{"versionId":"2"},"subject":{"reference":"Patient/p"},"code":{"coding":[{"code":"b"}]}}"#).unwrap();
    assert_eq!(store.count().unwrap(), 1);
    assert_eq!(store.get("Observation", "o").unwrap().unwrap().version_id.as_deref(), Some("2"));
    let q = |code: &str| ResourceQuery {
        patient: Some("Patient/p".into()),
        resource_type: "Observation".into(),
        code: Some(CodeFilter::parse(code).unwrap()),
        ..Default::default()
    };
    assert!(store.search(&q("a")).unwrap().is_empty(), "old codes are re-indexed away");
    assert_eq!(store.search(&q("b")).unwrap().len(), 1);
    assert!(store.delete("Observation", "o").unwrap());
    assert!(!store.delete("Observation", "o").unwrap());
    assert!(store.search(&q("b")).unwrap().is_empty());
}

#[test]
fn outbox_keeps_writes_in_order_across_lock_and_acks_them() {
    let (_dir, profile, keychain, mut vault) = new_vault();
    let reading = |v: u32| PendingWrite {
        method: WriteMethod::Create,
        body: format!(
            r#"{{"resourceType":"Observation","status":"final","code":{{"text":"home glucose"}},"valueQuantity":{{"value":{v}}}}}"#
        ),
        if_match: None,
    };
    {
        let mut store = vault.store().unwrap();
        let mut outbox = store.outbox();
        for v in [5, 6, 7] {
            outbox.enqueue(&reading(v), 1_800_000_000).unwrap();
        }
        let update = PendingWrite {
            method: WriteMethod::Update,
            body: r#"{"resourceType":"Appointment","id":"a1","status":"proposed","participant":[]}"#.into(),
            if_match: Some("3".into()),
        };
        outbox.enqueue(&update, 1_800_000_001).unwrap();
        let invalid = PendingWrite {
            method: WriteMethod::Update,
            body: r#"{"resourceType":"Appointment"}"#.into(),
            if_match: None,
        };
        assert!(matches!(outbox.enqueue(&invalid, 0), Err(Error::Records(RecordsError::InvalidResource { .. }))));
    }
    vault.lock();
    let mut vault = carekeep_core::Vault::open(&profile, keychain).unwrap();
    vault.unlock_with_device_key().unwrap();
    let mut store = vault.store().unwrap();
    let mut outbox = store.outbox();
    let pending = outbox.peek(10).unwrap();
    assert_eq!(pending.len(), 4);
    assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(pending[0].body.contains("\"value\":5"));
    assert_eq!(pending[3].method, WriteMethod::Update);
    assert_eq!(pending[3].id.as_deref(), Some("a1"));
    assert_eq!(pending[3].if_match.as_deref(), Some("3"));
    let keys: std::collections::HashSet<_> = pending.iter().map(|p| p.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), 4, "idempotency keys are unique");
    assert!(outbox.ack(pending[0].seq).unwrap());
    assert!(!outbox.ack(pending[0].seq).unwrap());
    assert_eq!(outbox.peek(1).unwrap()[0].seq, pending[1].seq);
    assert_eq!(outbox.len().unwrap(), 3);
}

/// The types a clinic's export brings are filed under their patient, dated and coded in the
/// cache, so the app's lists of visits, care plans, insurance... read by index. (Conditional
/// references to the directory stay as they are: the app keeps patients' records only.)
#[test]
fn a_synthea_patients_types_are_indexed_by_patient_date_and_code() {
    let (_dir, _profile, _keychain, mut vault) = new_vault();
    let text = include_str!("../../server/tests/fixtures/synthea-style/patient-00.json");
    let summary = vault.store().unwrap().ingest_bundle(text).unwrap();
    let bundle: Value = serde_json::from_str(text).unwrap();
    assert_eq!(summary.stored, bundle["entry"].as_array().unwrap().len());
    let patient = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .map(|e| format!("Patient/{}", e["fullUrl"].as_str().unwrap().strip_prefix("urn:uuid:").unwrap()))
        .unwrap();
    let store = vault.store().unwrap();
    for t in [
        "Coverage",
        "Claim",
        "ExplanationOfBenefit",
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
        "Procedure",
        "Immunization",
    ] {
        let query =
            ResourceQuery { resource_type: t.into(), patient: Some(patient.clone()), ..ResourceQuery::default() };
        let found = store.search(&query).unwrap();
        assert_eq!(found.len(), 1, "{t} is found under its patient");
    }
    let goal = ResourceQuery {
        resource_type: "Goal".into(),
        patient: Some(patient.clone()),
        from: Some("2026-01-01".into()),
        ..ResourceQuery::default()
    };
    assert_eq!(store.search(&goal).unwrap().len(), 1, "dated by its start");
    let later = ResourceQuery { from: Some("2027-01-01".into()), ..goal };
    assert!(store.search(&later).unwrap().is_empty());
}

//! A large cache: a clinician with 2 000 synthetic patients (about 93 000 resources) on
//! their care team syncs them all, the records stay searchable, and a second sync with
//! nothing new is one request.
//!
//! Ignored by a plain `cargo test`: seeding 93 000 resources through the server's FHIR
//! schema check takes minutes in a debug build. `cargo xtask test` runs it in release:
//! `cargo test --release -p carekeep-e2e --test large_cache -- --ignored`.

use std::sync::Arc;

use carekeep_core::SystemClock;
use carekeep_core::account::sync::Phase;
use carekeep_core::store::{CodeFilter, ResourceQuery};
use carekeep_e2e::{Device, Running, World, seed_care_team};
use carekeep_protocol::auth::Role;

const PATIENTS: usize = 2_000;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "93 000 resources: run in release by `cargo xtask test`"]
async fn two_thousand_patients_sync_and_stay_searchable() {
    let world = World::new(Role::Clinician);
    let started = std::time::Instant::now();
    let patients = seed_care_team(&world, 0..PATIENTS);
    assert_eq!(patients.len(), PATIENTS);
    let on_server: i64 = {
        let store = world.data.open_store().unwrap();
        let conn = store.read();
        conn.query_row("SELECT count(*) FROM resources", [], |r| r.get(0)).unwrap()
    };
    eprintln!("seeded {PATIENTS} patients, {on_server} resources, in {:?}", started.elapsed());
    let running = Running::start(&world.data).await;
    let device = Device::new();
    let mut account = device.sign_in(&world, &running, Arc::new(SystemClock), 0).await.unwrap();

    let started = std::time::Instant::now();
    let mut last_records = (0, 0);
    let report = account
        .sync(&mut |p| {
            if p.phase == Phase::Records {
                assert!(p.done >= last_records.0, "progress only moves forward");
                last_records = (p.done, p.total);
            }
        })
        .await
        .unwrap();
    eprintln!("synced in {:?}: {report:?}", started.elapsed());
    assert_eq!(report.patients, PATIENTS);
    assert_eq!(last_records, (PATIENTS, PATIENTS));
    let cached = account.store().unwrap().count().unwrap();
    // Everything in the compartments of the care team (practitioners are outside them).
    assert!(cached * 10 >= u64::try_from(on_server).unwrap() * 9, "{cached} of {on_server}");

    // Searchable: any patient's results, and a lab trend, straight from the cache.
    {
        let store = account.store().unwrap();
        for patient in [&patients[0], &patients[PATIENTS / 2], &patients[PATIENTS - 1]] {
            let query = ResourceQuery {
                resource_type: "Observation".into(),
                patient: Some(format!("Patient/{patient}")),
                ..ResourceQuery::default()
            };
            let observations = store.search(&query).unwrap();
            assert!(!observations.is_empty(), "{patient}");
            let code =
                serde_json::from_str::<serde_json::Value>(&observations[0].json).unwrap()["code"]["coding"][0]["code"]
                    .as_str()
                    .unwrap()
                    .to_owned();
            let trend = store
                .lab_trend(&format!("Patient/{patient}"), &CodeFilter::parse(&code).unwrap())
                .unwrap();
            assert!(!trend.is_empty() || observations.iter().all(|o| !o.json.contains("valueQuantity")));
        }
    }

    let quiet = account.sync(&mut |_| {}).await.unwrap();
    assert_eq!((quiet.requests, quiet.resources_pulled), (1, 0), "{quiet:?}");
}

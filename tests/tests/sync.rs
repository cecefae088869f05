//! Offline-first sync end to end, against the real server (through a faulty TLS proxy where
//! the network misbehaves) and the real Secret Service (run inside `cargo xtask
//! keyring-run`): pulls that increment, writes applied exactly once, conflicts and refusals
//! kept, deletions and lost access honoured, remote wipe before anything moves, offline
//! reads audited, and typed, retried failures that lose nothing.

use std::sync::Arc;
use std::time::Duration;

use carekeep_core::Clock;
use carekeep_core::account::sync::{Phase, Retry};
use carekeep_core::account::{Account, HomeReading};
use carekeep_core::error::{ConnectionError, ServerError};
use carekeep_core::store::{PendingWrite, Resolution, ResourceQuery, SetAsideKind, WriteMethod};
use carekeep_core::{Error, SystemClock};
use carekeep_e2e::proxy::{Fault, FaultyProxy};
use carekeep_e2e::{Device, Running, SyncedDevice, World};
use carekeep_protocol::auth::Role;
use carekeep_server::records::Writer;
use serde_json::json;

const DEMO: &str = carekeep_server::seed::DEMO_TENANT;

fn server_count(world: &World, resource_type: &str) -> i64 {
    let store = world.data.open_store().unwrap();
    let conn = store.read();
    conn.query_row("SELECT count(*) FROM resources WHERE type = ?1", [resource_type], |r| r.get(0))
        .unwrap()
}

/// An Observation for `patient`, as a clinician would record it at the practice.
fn observation(patient: &str, value: f64) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2026-11-01T08:00:00Z",
        "valueQuantity": {"value": value, "unit": "mg/dL"}
    })
}

fn now() -> i64 {
    SystemClock.now_unix()
}

fn kept(account: &mut Account) -> Vec<String> {
    account
        .store()
        .unwrap()
        .sync_patients()
        .unwrap()
        .into_iter()
        .map(|p| p.patient)
        .collect()
}

/// The demo patient, signed in on a fresh device and synced once.
struct Synced {
    world: World,
    _running: Running,
    device: Device,
    account: Account,
    /// The patient's own record's id.
    me: String,
}

async fn synced_patient() -> Synced {
    let SyncedDevice { world, running, device, mut account } = SyncedDevice::start(World::demo(Role::Patient)).await;
    let me = kept(&mut account)[0].clone();
    Synced { world, _running: running, device, account, me }
}

fn quick_retries(account: &mut Account) {
    account.set_retry(Retry { attempts: 3, base: Duration::from_millis(20), cap: Duration::from_millis(100) });
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_sync_pulls_everything_and_later_ones_only_what_changed() {
    let world = World::demo(Role::Patient);
    // Past the pull's overlap window, so the seeded records count as old.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let running = Running::start(&world.data).await;
    let device = Device::new();
    let mut account = device.sign_in(&world, &running, Arc::new(SystemClock), 0).await.unwrap();
    let mut heard = Vec::new();
    let first = account.sync(&mut |p| heard.push(p)).await.unwrap();
    // The demo patient: their own record, and the one they are proxy for.
    assert_eq!(first.patients, 2);
    assert!(first.resources_pulled > 20, "{first:?}");
    let phases: Vec<Phase> = heard.iter().map(|p| p.phase).fold(Vec::new(), |mut v, p| {
        if v.last() != Some(&p) {
            v.push(p);
        }
        v
    });
    assert_eq!(
        phases,
        [Phase::Contact, Phase::Audit, Phase::Upload, Phase::Patients, Phase::Removals, Phase::Records, Phase::Done]
    );
    let records_progress: Vec<(usize, usize)> = heard
        .iter()
        .filter(|p| p.phase == Phase::Records)
        .map(|p| (p.done, p.total))
        .collect();
    assert_eq!(records_progress, [(0, 2), (1, 2), (2, 2)]);
    let count = account.store().unwrap().count().unwrap();
    assert_eq!(count, u64::try_from(first.resources_pulled).unwrap());

    // Nothing new: one request, nothing pulled.
    let quiet = account.sync(&mut |_| {}).await.unwrap();
    assert_eq!((quiet.requests, quiet.resources_pulled), (1, 0), "{quiet:?}");

    // One new result at the practice: exactly that one comes down.
    let patient = kept(&mut account)[0].clone();
    let records = world.records();
    let checked = records.check(observation(&patient, 101.0), "Observation").unwrap();
    let (created, _) = records.create(DEMO, checked, &Writer::CLINIC).unwrap();
    let next = account.sync(&mut |_| {}).await.unwrap();
    assert_eq!(next.resources_pulled, 1, "{next:?}");
    assert!(account.store().unwrap().get("Observation", &created.id).unwrap().is_some());
    assert_eq!(account.store().unwrap().count().unwrap(), count + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_are_sent_once_and_refusals_and_conflicts_are_kept_with_their_reasons() {
    let Synced { world, _running, device: _device, mut account, me } = synced_patient().await;
    let before = (server_count(&world, "Observation"), server_count(&world, "Communication"));

    let reading = account
        .record_reading(&me, HomeReading::BloodPressure { systolic: 128, diastolic: 82 }, now())
        .unwrap();
    account
        .request_appointment(&me, "Follow-up on blood pressure", now() + 86_400)
        .unwrap();
    account
        .message_care_team(&me, "My readings are higher in the morning.", now())
        .unwrap();
    // A write the server will refuse: a reading for a patient that does not exist.
    account
        .record_reading("no-such-patient", HomeReading::Glucose { mmol_per_l: 5.4 }, now())
        .unwrap();
    assert_eq!(account.pending_writes().unwrap().len(), 4, "shown at once as pending");

    // The first write reaches the server but its answer is lost (as if the app died then).
    let token = account.access_token().await.unwrap();
    let lost = account.server().push(&token, &reading).await.unwrap();
    assert!(matches!(lost, carekeep_core::net::Pushed::Stored(_)));

    let report = account.sync(&mut |_| {}).await.unwrap();
    assert_eq!((report.writes_sent, report.rejected, report.conflicts), (3, 1, 0), "{report:?}");
    assert!(account.pending_writes().unwrap().is_empty());
    // Exactly once: the replayed reading was recognised by its key.
    assert_eq!(server_count(&world, "Observation"), before.0 + 1);
    assert_eq!(server_count(&world, "Communication"), before.1 + 1);
    let aside = account.set_aside_writes().unwrap();
    assert_eq!(aside.len(), 1);
    assert_eq!(aside[0].kind, SetAsideKind::Rejected);
    assert!(aside[0].reason.contains("subject"), "the server's reason: {}", aside[0].reason);

    // A conflict: this device edits its reading while another device changed it first.
    let stored: Vec<_> = account
        .read_records(&ResourceQuery {
            resource_type: "Observation".into(),
            patient: Some(format!("Patient/{me}")),
            code: Some(carekeep_core::store::CodeFilter::parse("http://loinc.org|85354-9").unwrap()),
            ..ResourceQuery::default()
        })
        .unwrap();
    // Its own reading (the clinic's history has blood pressures too, which are not its to edit).
    let mine = stored
        .into_iter()
        .find(|r| r.json.contains("patient-reported"))
        .expect("the reading came back down");
    let records = world.records();
    let mut elsewhere: serde_json::Value = serde_json::from_str(&mine.json).unwrap();
    elsewhere["status"] = "amended".into();
    // The server's version carries a narrative, as server resources do: markup no view of
    // this device may show (the pending screen showed it once).
    let narrative =
        json!({"status": "generated", "div": "<div><img src=x onerror=alert('NARRATIVE-SENTINEL')/></div>"});
    elsewhere["text"] = narrative.clone();
    let checked = records.check(elsewhere, "Observation").unwrap();
    // The patient's other device: the same author, so the edit below meets a conflict, not a
    // refusal to change someone else's record.
    records
        .update(DEMO, &mine.id, checked, 1, &Writer::user(&world.user_id, None))
        .unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&mine.json).unwrap();
    edited["component"][0]["valueQuantity"]["value"] = 131.into();
    edited["text"] = narrative;
    account
        .queue_write(&PendingWrite {
            method: WriteMethod::Update,
            body: edited.to_string(),
            if_match: mine.version_id.clone(),
        })
        .unwrap();
    let pending = account.pending_writes().unwrap();
    assert!(pending.iter().all(|w| !w.body.contains("NARRATIVE-SENTINEL")), "a pending write shows no narrative");
    let report = account.sync(&mut |_| {}).await.unwrap();
    assert_eq!(report.conflicts, 1, "{report:?}");
    let conflict = account
        .set_aside_writes()
        .unwrap()
        .into_iter()
        .find(|s| s.kind == SetAsideKind::Conflict)
        .unwrap();
    assert!(conflict.write.body.contains("131"), "this device's version is kept");
    assert!(conflict.server_version.as_deref().unwrap().contains("amended"), "and the server's");
    for shown in [conflict.write.body.as_str(), conflict.server_version.as_deref().unwrap()] {
        assert!(!shown.contains("NARRATIVE-SENTINEL"), "a set-aside write shows no narrative");
    }
    let records = account
        .read_records(&ResourceQuery { resource_type: "Observation".into(), ..ResourceQuery::default() })
        .unwrap();
    assert!(records.iter().all(|r| !r.json.contains("NARRATIVE-SENTINEL")), "records show no narrative");
    assert!(records.iter().any(|r| r.json.contains("amended")), "the server's version is in the cache");
    // Keeping mine sends it again on top of the server's version: nothing was overwritten
    // without the person deciding.
    account.resolve(conflict.seq, Resolution::KeepMine).unwrap();
    let report = account.sync(&mut |_| {}).await.unwrap();
    assert_eq!((report.writes_sent, report.conflicts), (1, 0), "{report:?}");
    let current = account.store().unwrap().get("Observation", &mine.id).unwrap().unwrap();
    assert_eq!(current.version_id.as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_wipe_is_honoured_before_any_data_moves() {
    let Synced { world, _running, device, mut account, me } = synced_patient().await;
    account
        .record_reading(&me, HomeReading::Glucose { mmol_per_l: 6.1 }, now())
        .unwrap();
    let observations = server_count(&world, "Observation");
    let token = account.access_token().await.unwrap();
    let store = Arc::new(world.data.open_store().unwrap());
    let auth = carekeep_server::auth::Auth::new(store, carekeep_server::auth::AuthPolicy::default(), 1);
    let principal = auth.authenticate(token.expose(), now()).await.unwrap();
    assert!(auth.revoke(&principal, &principal.device_id.clone(), true).await.unwrap());

    assert!(matches!(account.sync(&mut |_| {}).await, Err(Error::Server(ServerError::RemoteWipe))));
    assert!(!device.profile.has_vault(), "the cache is erased");
    assert_eq!(server_count(&world, "Observation"), observations, "the queued write never left");
}

#[tokio::test(flavor = "multi_thread")]
async fn deletions_and_lost_access_remove_records_from_the_cache() {
    let world = World::demo(Role::Clinician);
    let running = Running::start(&world.data).await;
    let device = Device::new();
    let mut account = device.sign_in(&world, &running, Arc::new(SystemClock), 0).await.unwrap();
    let first = account.sync(&mut |_| {}).await.unwrap();
    assert_eq!(first.patients, 10, "the care team");
    let patients = kept(&mut account);
    let (stays, leaves) = (patients[0].clone(), patients[1].clone());
    let query = |patient: &str| ResourceQuery {
        resource_type: "Observation".into(),
        patient: Some(format!("Patient/{patient}")),
        ..ResourceQuery::default()
    };
    let observation = account.store().unwrap().search(&query(&stays)).unwrap().remove(0);
    assert!(!account.store().unwrap().search(&query(&leaves)).unwrap().is_empty());

    // At the practice: one result deleted, one patient leaves this clinician's care team.
    let version = observation.version_id.as_deref().unwrap().parse().unwrap();
    world
        .records()
        .delete(DEMO, "Observation", &observation.id, version, now(), &Writer::CLINIC)
        .unwrap();
    let store = world.data.open_store().unwrap();
    store
        .lock()
        .execute("DELETE FROM patient_links WHERE patient = ?1 AND relation = 'care-team'", [&leaves])
        .unwrap();

    let next = account.sync(&mut |_| {}).await.unwrap();
    assert_eq!((next.resources_removed, next.patients_removed, next.patients), (1, 1, 9), "{next:?}");
    let cache = account.store().unwrap();
    assert!(cache.get("Observation", &observation.id).unwrap().is_none());
    assert!(cache.search(&query(&leaves)).unwrap().is_empty(), "nothing of the patient stays");
    assert!(cache.get("Patient", &leaves).unwrap().is_none());
    assert!(!cache.search(&query(&stays)).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn break_glass_fetches_a_patient_on_demand_until_the_grant_ends() {
    let SyncedDevice { world, running: _running, device: _device, mut account } =
        SyncedDevice::start(World::demo(Role::Clinician)).await;
    let team = kept(&mut account);
    let store = world.data.open_store().unwrap();
    let outsider: String = store
        .read()
        .query_row(
            "SELECT id FROM resources WHERE type = 'Patient' AND id NOT IN
             (SELECT patient FROM patient_links WHERE relation = 'care-team') LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!team.contains(&outsider));
    let short = account.break_glass(&outsider, "urgent").await;
    assert!(matches!(short, Err(Error::InvalidArgument { what: "reason", .. })), "{short:?}");
    let fetched = account
        .break_glass(&outsider, "Unconscious in the emergency department")
        .await
        .unwrap();
    assert!(fetched > 0);
    assert!(account.store().unwrap().get("Patient", &outsider).unwrap().is_some());
    // While the grant lasts, sync keeps the patient; once it ends, they leave the cache.
    assert_eq!(account.sync(&mut |_| {}).await.unwrap().patients, team.len() + 1);
    store.lock().execute("UPDATE break_glass SET expires_at = 0", []).unwrap();
    let after = account.sync(&mut |_| {}).await.unwrap();
    assert_eq!(after.patients_removed, 1, "{after:?}");
    assert!(account.store().unwrap().get("Patient", &outsider).unwrap().is_none());
    let flagged = world.audit_events().into_iter().filter(|e| e["break_glass"] == true).count();
    assert!(flagged > 0, "accesses under break-glass are flagged");
}

#[tokio::test(flavor = "multi_thread")]
async fn records_read_offline_reach_the_servers_audit_trail_once() {
    let Synced { world, _running, device, mut account, me } = synced_patient().await;
    // Offline (the server is not asked): the person reads their results from the cache.
    let query = ResourceQuery {
        resource_type: "Observation".into(),
        patient: Some(format!("Patient/{me}")),
        ..ResourceQuery::default()
    };
    assert!(!account.read_records(&query).unwrap().is_empty());
    // The access log names the patient, so it is kept inside the encrypted vault: neither
    // the patient's id nor their name is in any file of the profile in clear.
    let patient = account.store().unwrap().get("Patient", &me).unwrap().unwrap();
    let family: serde_json::Value = serde_json::from_str(&patient.json).unwrap();
    let family = family["name"][0]["family"].as_str().unwrap().to_owned();
    let files = device.files();
    // Long enough that ciphertext cannot hold one by chance (the demo names have 7 or more).
    assert!(family.len() >= 7, "{family}");
    for sentinel in [me.as_str(), family.as_str()] {
        assert!(!files.windows(sentinel.len()).any(|w| w == sentinel.as_bytes()), "{sentinel} in clear");
    }
    account.lock().unwrap();
    account
        .unlock_with_password(&carekeep_core::Password::new(world.password.as_str()))
        .unwrap();

    let report = account.sync(&mut |_| {}).await.unwrap();
    assert!(report.audit_uploaded >= 2, "the read and the session records: {report:?}");
    let trail = world.audit_events();
    let offline_read: Vec<_> = trail
        .iter()
        .filter(|e| e["action"] == "device access: read from the device cache")
        .collect();
    assert_eq!(offline_read.len(), 1, "{trail:#?}");
    assert_eq!(offline_read[0]["patient"], me.as_str());
    assert!(offline_read[0]["occurred_at"].is_string(), "the device's time is kept beside the upload time");
    assert!(
        trail
            .iter()
            .any(|e| e["action"].as_str().unwrap().starts_with("device session: session locked"))
    );
    // A device can add nothing but the shared vocabulary and real ids: free text (which
    // could carry a name) is refused whole.
    let mut forged = trail_record(&world, "device access: read from the device cache");
    forged.action = "read Jane Doe's chart".into();
    let record = carekeep_protocol::audit::AuditRecord::append(None, forged);
    let upload = carekeep_protocol::sync::DeviceAuditUpload {
        stream: carekeep_protocol::sync::DeviceStream::Access,
        records: vec![record],
    };
    let token = account.access_token().await.unwrap();
    let refused = account.server().upload_audit(&token, &upload).await;
    assert!(matches!(refused, Err(Error::Server(ServerError::ServerRefused { status: 422 }))), "{refused:?}");
    // The next sync sends nothing again.
    let again = account.sync(&mut |_| {}).await.unwrap();
    assert_eq!(again.audit_uploaded, 0, "{again:?}");
    assert_eq!(
        world
            .audit_events()
            .iter()
            .filter(|e| e["action"] == offline_read[0]["action"])
            .count(),
        1
    );
}

/// The first event in the server's trail with `action`, as an event a device could send.
fn trail_record(world: &World, action: &str) -> carekeep_protocol::audit::AuditEvent {
    let event = world.audit_events().into_iter().find(|e| e["action"] == action).unwrap();
    let mut event: carekeep_protocol::audit::AuditEvent = serde_json::from_value(event).unwrap();
    event.action = carekeep_protocol::sync::READ_FROM_CACHE.into();
    event
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_network_gives_typed_errors_after_retries_and_loses_nothing() {
    let world = World::demo(Role::Patient);
    let running = Running::start(&world.data).await;
    let proxy = FaultyProxy::start(&world.data, running.port_number(), 0);
    let device = Device::new();
    let mut account = device.sign_in_at(&world, proxy.url(), Arc::new(SystemClock), 0).await.unwrap();
    quick_retries(&mut account);
    account.sync(&mut |_| {}).await.unwrap();
    let me = kept(&mut account)[0].clone();
    account
        .record_reading(&me, HomeReading::Glucose { mmol_per_l: 7.2 }, now())
        .unwrap();
    let cached = account.store().unwrap().count().unwrap();

    expect_failure(&mut account, &proxy, cached, Fault::Status(503), |e| {
        matches!(e, Error::Server(ServerError::ServerRefused { status: 503 }))
    })
    .await;
    expect_failure(&mut account, &proxy, cached, Fault::Malformed, |e| {
        matches!(e, Error::Server(ServerError::ServerMalformed))
    })
    .await;
    account.set_request_timeout(Duration::from_millis(500));
    expect_failure(&mut account, &proxy, cached, Fault::Slow(Duration::from_secs(2)), |e| {
        matches!(e, Error::Connection(ConnectionError::ServerTimeout))
    })
    .await;
    account.set_request_timeout(carekeep_core::net::REQUEST_TIMEOUT);
    // A server paging forever: the pull (of a patient with news) stops; the write went up
    // before it.
    let records = world.records();
    records
        .create(DEMO, records.check(observation(&me, 99.0), "Observation").unwrap(), &Writer::CLINIC)
        .unwrap();
    expect_failure(&mut account, &proxy, cached, Fault::RepeatPage, |e| {
        matches!(e, Error::Server(ServerError::PagingLoop))
    })
    .await;

    // Down: the port refuses connections.
    let port = proxy.port();
    drop(proxy);
    let result = account.sync(&mut |_| {}).await;
    assert!(matches!(result, Err(Error::Connection(ConnectionError::ServerUnreachable))), "{result:?}");
    assert!(account.store().unwrap().count().unwrap() >= cached);
    // Back up: the sync completes.
    let proxy = FaultyProxy::start(&world.data, running.port_number(), port);
    let done = account.sync(&mut |_| {}).await.unwrap();
    assert!(done.resources_pulled > 0);
    assert!(account.pending_writes().unwrap().is_empty());
    drop(proxy);
}

/// Syncs through `proxy` doing `fault`: the sync fails with the error `is_expected` accepts
/// (after three tries, unless the fault is a paging loop), the queued write is still queued
/// (the paging loop comes after it went up), and the cached records are all there.
async fn expect_failure(
    account: &mut Account,
    proxy: &FaultyProxy,
    cached: u64,
    fault: Fault,
    is_expected: fn(&Error) -> bool,
) {
    proxy.set(fault);
    let before = proxy.requests();
    let result = account.sync(&mut |_| {}).await;
    assert!(result.as_ref().is_err_and(is_expected), "{fault:?}: {result:?}");
    if fault != Fault::RepeatPage {
        assert_eq!(proxy.requests() - before, 3, "{fault:?}: tried three times");
    }
    let queued = account.pending_writes().unwrap().len();
    assert_eq!(queued, usize::from(fault != Fault::RepeatPage), "{fault:?}");
    assert!(account.store().unwrap().count().unwrap() >= cached, "{fault:?}");
}

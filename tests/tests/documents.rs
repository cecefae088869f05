//! Documents end to end, against the real server and the real Secret Service (run inside
//! `cargo xtask keyring-run`): downloaded through the server's signed link into the
//! encrypted cache, opened again offline (where one never downloaded asks for the
//! network), gone with the patient, refused past the size limit, and never fetched from an
//! address the server did not give.

use std::sync::Arc;
use std::time::Duration;

use carekeep_core::account::Account;
use carekeep_core::account::sync::Retry;
use carekeep_core::error::RecordsError;
use carekeep_core::store::ResourceQuery;
use carekeep_core::{Error, SystemClock};
use carekeep_e2e::proxy::FaultyProxy;
use carekeep_e2e::{Device, Running, SyncedDevice, World};
use carekeep_protocol::auth::Role;

/// A line of the demo discharge letter.
const LETTER_LINE: &str = "community-acquired pneumonia";

/// The cached DocumentReferences of `patient`, by their attachment's title.
fn documents(account: &mut Account, patient: &str) -> Vec<(String, String)> {
    let query = ResourceQuery {
        resource_type: "DocumentReference".into(),
        patient: Some(format!("Patient/{patient}")),
        ..ResourceQuery::default()
    };
    let found = account.store().unwrap().search(&query).unwrap();
    found
        .iter()
        .map(|r| {
            let value: serde_json::Value = serde_json::from_str(&r.json).unwrap();
            (
                value["content"][0]["attachment"]["title"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                r.id.clone(),
            )
        })
        .collect()
}

fn titled(documents: &[(String, String)], title: &str) -> String {
    documents.iter().find(|(t, _)| t == title).map(|(_, id)| id.clone()).unwrap()
}

fn first_patient(account: &mut Account) -> String {
    account.store().unwrap().sync_patients().unwrap()[0].patient.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_download_into_the_encrypted_cache_and_open_offline_once_downloaded() {
    let world = World::demo(Role::Patient);
    let running = Running::start(&world.data).await;
    let proxy = FaultyProxy::start(&world.data, running.port_number(), 0);
    let device = Device::new();
    let mut account = device.sign_in_at(&world, proxy.url(), Arc::new(SystemClock), 0).await.unwrap();
    account.set_retry(Retry { attempts: 2, base: Duration::from_millis(20), cap: Duration::from_millis(50) });
    account.sync(&mut |_| {}).await.unwrap();
    let me = first_patient(&mut account);
    let docs = documents(&mut account, &me);
    assert_eq!(docs.len(), 3, "the letter, the immunisation record and the image: {docs:?}");
    let (letter, image) = (titled(&docs, "Discharge letter"), titled(&docs, "Chest image"));
    assert_eq!(account.store().unwrap().document_count().unwrap(), 0, "a sync fetches no document bytes");

    let opened = account.open_document(&letter, 0).await.unwrap();
    assert_eq!(opened.content_type, "text/plain");
    assert!(String::from_utf8_lossy(&opened.bytes).contains(LETTER_LINE));
    assert!(!format!("{opened:?}").contains(LETTER_LINE), "Debug shows the type and size only");
    let png = account.open_document(&image, 0).await.unwrap();
    assert_eq!((png.content_type.as_str(), &png.bytes[..8]), ("image/png", &b"\x89PNG\r\n\x1a\n"[..]));
    assert_eq!(account.store().unwrap().document_count().unwrap(), 2);
    // Kept inside the SQLCipher vault: not one readable byte of it on disk.
    assert!(!contains(&device.files(), LETTER_LINE.as_bytes()), "the letter is encrypted at rest");
    // The server logged both downloads, by document, for this patient.
    let downloads = world
        .audit_events()
        .into_iter()
        .filter(|e| e["resource_type"] == "Binary")
        .count();
    assert!(downloads >= 4, "a link and a download each");

    // Offline: the downloaded letter still opens (and that view is logged on the device).
    drop(proxy);
    let logged = account.store().unwrap().access_log(1000).unwrap().len();
    let again = account.open_document(&letter, 0).await.unwrap();
    assert_eq!(again.bytes, opened.bytes);
    assert_eq!(account.store().unwrap().access_log(1000).unwrap().len(), logged + 1);
    // One never downloaded says what to do instead of failing vaguely.
    let result = account.open_document(&titled(&docs, "Immunisation record"), 0).await;
    assert!(matches!(result, Err(Error::Records(RecordsError::DocumentNotDownloaded))), "{result:?}");
    assert_eq!(account.store().unwrap().document_count().unwrap(), 2);
    // An export offline carries the two documents on this device inside the Bundle, and
    // says the third could not be included.
    let export = account.export_patient(&me).await.unwrap();
    assert_eq!(export.documents_missing, 1);
    let bundle: serde_json::Value = serde_json::from_str(&export.bundle).unwrap();
    let inline: Vec<Vec<u8>> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "DocumentReference")
        .filter_map(|e| e["resource"]["content"][0]["attachment"]["data"].as_str())
        .map(|data| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).unwrap())
        .collect();
    assert_eq!(inline.len(), 2);
    assert!(inline.iter().any(|bytes| String::from_utf8_lossy(bytes).contains(LETTER_LINE)));
    assert!(export.summary_html.contains("<h2>Documents</h2>") && !export.summary_html.contains("<script"));
    drop(running);
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_leave_with_their_patient_and_oversized_ones_are_refused() {
    let SyncedDevice { world, running: _running, device: _device, mut account } =
        SyncedDevice::start(World::demo(Role::Clinician)).await;
    // The demo documents belong to the first demo patient, on this clinician's care team.
    let kept: Vec<String> = account
        .store()
        .unwrap()
        .sync_patients()
        .unwrap()
        .into_iter()
        .map(|p| p.patient)
        .collect();
    let (patient, letter) = kept
        .into_iter()
        .find_map(|p| {
            let docs = documents(&mut account, &p);
            (!docs.is_empty()).then(|| (p, titled(&docs, "Discharge letter")))
        })
        .unwrap();
    account.open_document(&letter, 0).await.unwrap();
    // An attachment bigger than the app downloads: refused, nothing kept.
    let big = vec![b'x'; carekeep_core::net::DOCUMENT_LIMIT + 1];
    let oversized = carekeep_e2e::seed_document(&world.records(), &patient, "Scan archive", &big);
    account.sync(&mut |_| {}).await.unwrap();
    let result = account.open_document(&oversized, 0).await;
    assert!(matches!(result, Err(Error::Records(RecordsError::DocumentTooLarge { limit_mib: 25 }))), "{result:?}");
    assert_eq!(account.store().unwrap().document_count().unwrap(), 1);

    // The patient leaves the care team: their documents leave the device with them.
    let store = world.data.open_store().unwrap();
    store
        .lock()
        .execute("DELETE FROM patient_links WHERE patient = ?1 AND relation = 'care-team'", [&patient])
        .unwrap();
    account.sync(&mut |_| {}).await.unwrap();
    assert_eq!(account.store().unwrap().document_count().unwrap(), 0);
    assert!(matches!(account.open_document(&letter, 0).await, Err(Error::Records(RecordsError::DocumentUnavailable))));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_servers_own_document_addresses_are_fetched() {
    let SyncedDevice { world: _world, running: _running, device: _device, mut account } =
        SyncedDevice::start(World::demo(Role::Patient)).await;
    let me = first_patient(&mut account);
    // A DocumentReference that points elsewhere (another host, a path that climbs out).
    for url in ["https://attacker.example/steal", "/documents/../fhir/Patient", "/fhir/Patient"] {
        let id = format!("evil-{}", url.len());
        let resource = serde_json::json!({
            "resourceType": "DocumentReference", "id": id, "status": "current",
            "subject": {"reference": format!("Patient/{me}")},
            "content": [{"attachment": {"contentType": "text/plain", "url": url}}]
        });
        account.store().unwrap().put(&resource.to_string()).unwrap();
        let result = account.open_document(&id, 0).await;
        assert!(matches!(result, Err(Error::Records(RecordsError::DocumentUnavailable))), "{url}: {result:?}");
    }
    // A DocumentReference not in the cache, or an attachment past its end: no document.
    assert!(matches!(
        account.open_document("no-such-document", 0).await,
        Err(Error::Records(RecordsError::DocumentUnavailable))
    ));
    let letter = titled(&documents(&mut account, &me), "Discharge letter");
    assert!(matches!(account.open_document(&letter, 7).await, Err(Error::Records(RecordsError::DocumentUnavailable))));
    assert_eq!(account.store().unwrap().document_count().unwrap(), 0);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

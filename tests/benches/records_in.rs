//! Records in (issue 16), each beside a baseline in the same run, on Synthea-sized patients
//! (`carekeep_e2e::synthea_sized_patient`: ~2 000 resources each, every type an export
//! carries):
//!
//! - **import** of ten such patients (~20 000 resources) with `carekeep-server import`'s
//!   engine into a fresh data directory (every resource schema-checked, references
//!   resolved, remembered by source, audited per patient); baseline: the app vault's own
//!   bulk ingest of the same Bundles (no schema check, no access rules);
//! - a **1 000-entry transaction** through `POST /fhir` over TLS as a clinician, and the p99
//!   of single reads other clients make while it runs; baseline: the p99 of the same reads
//!   with no transaction running;
//! - a clinician's **first sync** of those ten patients into an empty cache; baseline: the
//!   same pages fetched and dropped.
//!
//! Inside `cargo xtask keyring-run` (the vault needs the Secret Service), or `cargo xtask
//! bench`. The table is printed and written to `target/bench-records-in.md`. Under `cargo
//! test` each part runs once on a small input, as a smoke test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carekeep_core::{DeviceId, Keychain, Password, Profile, SystemClock, UserId, Vault};
use carekeep_e2e::bench_table::long_runs;
use carekeep_e2e::{Device, Running, SYNTHEA_DIRECTORY, World, synthea_sized_patient};
use carekeep_protocol::auth::Role;
use carekeep_server::DataDir;
use carekeep_server::records::Records;
use carekeep_server::records::bundle::{Clinic, Plan};
use criterion::Criterion;

/// (items, elapsed) of every timed run of one (workload, variant).
type Runs = Vec<(usize, Duration)>;

/// Every timed run, per (workload, variant).
static SAMPLES: Mutex<BTreeMap<(&'static str, &'static str), Runs>> = Mutex::new(BTreeMap::new());

fn record(workload: &'static str, variant: &'static str, items: usize, elapsed: Duration) -> Duration {
    SAMPLES
        .lock()
        .unwrap()
        .entry((workload, variant))
        .or_default()
        .push((items, elapsed));
    elapsed
}

fn records_of(data: &DataDir) -> Records {
    Records::new(Arc::new(data.open_store().unwrap()), zeroize::Zeroizing::new(*data.master_keys().unwrap().documents))
}

fn load_directory(records: &Records, tenant: &str) {
    for text in SYNTHEA_DIRECTORY {
        let plan = Plan::read(serde_json::from_str(text).unwrap()).unwrap();
        records.apply_bundle(tenant, plan, &Clinic, None).unwrap();
    }
}

fn entries(bundle: &str) -> usize {
    serde_json::from_str::<serde_json::Value>(bundle).unwrap()["entry"]
        .as_array()
        .unwrap()
        .len()
}

fn main() {
    let real = std::env::args().any(|a| a == "--bench");
    let (patients, visits) = if real { (10, 29) } else { (1, 2) };
    let bundles: Vec<String> = (0..patients).map(|n| synthea_sized_patient(n, visits)).collect();
    let resources: usize = bundles.iter().map(|b| entries(b)).sum();
    let files = tempfile::tempdir().unwrap();
    for (n, bundle) in bundles.iter().enumerate() {
        std::fs::write(files.path().join(format!("patient-{n:02}.json")), bundle).unwrap();
    }
    eprintln!("{patients} Synthea-sized patients: {resources} resources");
    let mut c = Criterion::default().configure_from_args();
    bench_import(&mut c, real, files.path(), &bundles, resources);
    bench_transaction(real);
    bench_first_sync(&mut c, real, files.path(), resources);
    c.final_summary();
    let table = summary();
    println!("\nRecords in (issue 16), each beside its baseline in the same run\n\n{table}");
    if real {
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-records-in.md");
        let _ = std::fs::write(target, &table);
    }
}

fn bench_import(c: &mut Criterion, real: bool, files: &std::path::Path, bundles: &[String], resources: usize) {
    let keychain = Keychain::with_service(format!("carekeep-bench-records-{}", std::process::id()));
    let mut group = long_runs(c, "import", real, 60);
    group.bench_function(format!("carekeep-server import, {resources} resources, fresh data directory"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let (data, _) = DataDir::init(&dir.path().join("server"), "localhost").unwrap();
                carekeep_server::admin::add_tenant(&data.open_store().unwrap(), "clinic", "Clinic", 0).unwrap();
                let records = records_of(&data);
                load_directory(&records, "clinic");
                let started = Instant::now();
                let summary =
                    carekeep_server::import::run(&records, "clinic", &[files.to_owned()], None, &mut |_, _| {})
                        .unwrap();
                total += record("import", "measured", resources, started.elapsed());
                assert!(!summary.refused_any(), "{}", carekeep_server::import::report(&summary));
            }
            total
        });
    });
    group.bench_function("baseline: the app vault's bulk ingest of the same Bundles", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let profile = Profile::new(dir.path().join("profile"));
                let device = DeviceId::new("bench-device").unwrap();
                let mut vault = Vault::create(
                    &profile,
                    keychain.clone(),
                    &UserId::new("bench").unwrap(),
                    &device,
                    &Password::new("bench pass"),
                )
                .unwrap();
                let started = Instant::now();
                let mut store = vault.store().unwrap();
                for bundle in bundles {
                    store.ingest_bundle(bundle).unwrap();
                }
                total += record("import", "baseline", resources, started.elapsed());
                let _ = vault.wipe();
            }
            total
        });
    });
    group.finish();
}

/// A reqwest client that trusts `data`'s certificate.
fn client_for(data: &DataDir) -> reqwest::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&std::fs::read(data.cert_path()).unwrap()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(config).build().unwrap()
}

/// Readers `GET url` one after another until `stop`; each latency.
async fn read_until(http: reqwest::Client, url: String, token: String, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let response = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

/// A 1 000-entry transaction (a new patient each time) while eight clients read; then the
/// same reads alone for as long. Custom-timed: the figures are a latency and a p99.
fn bench_transaction(real: bool) {
    let world = World::new(Role::Clinician);
    load_directory(&world.records(), carekeep_e2e::TENANT);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let running = runtime.block_on(Running::start(&world.data));
    let device = Device::new();
    let mut account = runtime
        .block_on(device.sign_in(&world, &running, Arc::new(SystemClock), 0))
        .unwrap();
    let token = runtime.block_on(account.access_token()).unwrap().expose().to_owned();
    let http = client_for(&world.data);
    let base = format!("https://localhost:{}", running.port_number());
    let (size, rounds) = if real { (1_000, 5) } else { (50, 1) };
    let transaction = |n: usize| {
        let mut bundle: serde_json::Value =
            serde_json::from_str(&synthea_sized_patient(1_000 + n, size / 50 + 1)).unwrap();
        // What a clinician sends: the clinical record (insurance and claims are billing's,
        // the medication catalogue the directory's; Provenance would name entries beyond
        // the cut).
        let entries = bundle["entry"].as_array_mut().unwrap();
        entries.retain(|e| {
            !["Coverage", "Claim", "ExplanationOfBenefit", "Medication", "Provenance"]
                .contains(&e["resource"]["resourceType"].as_str().unwrap_or_default())
        });
        for entry in entries.iter_mut() {
            if let Some(medication) = entry["resource"].as_object_mut().unwrap().remove("medicationReference") {
                entry["resource"]["medicationCodeableConcept"] = serde_json::json!({"text": medication["display"]});
            }
        }
        entries.truncate(size);
        bundle.to_string()
    };
    // A record to read: the first transaction's patient.
    let first: serde_json::Value = runtime.block_on(async {
        http.post(format!("{base}/fhir"))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .body(transaction(0))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let patient = first["entry"][0]["response"]["location"]
        .as_str()
        .unwrap()
        .split('/')
        .nth(1)
        .unwrap()
        .to_owned();
    let read_url = format!("{base}/fhir/Patient/{patient}");
    for round in 1..=rounds {
        let body = transaction(round);
        let entries_sent = entries(&body);
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..8)
            .map(|_| runtime.spawn(read_until(http.clone(), read_url.clone(), token.clone(), stop.clone())))
            .collect();
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
        let started = Instant::now();
        let response = runtime.block_on(async {
            http.post(format!("{base}/fhir"))
                .bearer_auth(&token)
                .header("content-type", "application/fhir+json")
                .body(body)
                .send()
                .await
                .unwrap()
        });
        let took = started.elapsed();
        assert_eq!(response.status(), 200);
        stop.store(true, Ordering::Relaxed);
        let mut during: Vec<Duration> = readers.into_iter().flat_map(|r| runtime.block_on(r).unwrap()).collect();
        record("transaction", "measured", entries_sent, took);
        record("reads during", "measured", 1, p99(&mut during));
        // The same reads, for as long, with nothing else running.
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..8)
            .map(|_| runtime.spawn(read_until(http.clone(), read_url.clone(), token.clone(), stop.clone())))
            .collect();
        runtime.block_on(async { tokio::time::sleep(took.max(Duration::from_millis(200))).await });
        stop.store(true, Ordering::Relaxed);
        let mut alone: Vec<Duration> = readers.into_iter().flat_map(|r| runtime.block_on(r).unwrap()).collect();
        record("reads during", "baseline", 1, p99(&mut alone));
        eprintln!(
            "transaction of {entries_sent}: {took:.2?}; p99 read during {:.2?}, alone {:.2?}",
            p99(&mut during),
            p99(&mut alone)
        );
    }
    drop(running);
}

fn bench_first_sync(c: &mut Criterion, real: bool, files: &std::path::Path, resources: usize) {
    let world = World::new(Role::Clinician);
    let records = world.records();
    load_directory(&records, carekeep_e2e::TENANT);
    let summary = carekeep_server::import::run(
        &records,
        carekeep_e2e::TENANT,
        &[files.to_owned()],
        Some(&world.username),
        &mut |_, _| {},
    )
    .unwrap();
    let patients: Vec<String> = summary.patients.iter().cloned().collect();
    drop(records);
    // Past the pull's overlap window (changes this recent are fetched again next time).
    std::thread::sleep(Duration::from_secs(6));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let running = runtime.block_on(Running::start(&world.data));
    let device = Device::new();
    let mut account = runtime
        .block_on(device.sign_in(&world, &running, Arc::new(SystemClock), 0))
        .unwrap();
    let mut group = long_runs(c, "first sync", real, 60);
    group.bench_function(format!("clinician's first sync, {resources} resources"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                {
                    let mut store = account.store().unwrap();
                    for p in &patients {
                        store.forget_patient(p).unwrap();
                    }
                }
                let started = Instant::now();
                let report = runtime.block_on(account.sync(&mut |_| {})).unwrap();
                total += record("first sync", "measured", report.resources_pulled, started.elapsed());
            }
            total
        });
    });
    group.bench_function("baseline: the same pages fetched, not stored", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                for p in &patients {
                    let mut page = Some(carekeep_core::net::Page {
                        path: format!("/fhir/Patient/{p}/$everything"),
                        query: vec![("_count".into(), "500".into())],
                    });
                    while let Some(current) = page {
                        let token = runtime.block_on(account.access_token()).unwrap();
                        let (_, next) = runtime.block_on(account.server().fhir_page(&token, &current)).unwrap();
                        page = next;
                    }
                }
                total += record("first sync", "baseline", resources, started.elapsed());
            }
            total
        });
    });
    group.finish();
    drop(running);
}

fn median(samples: &[(usize, Duration)]) -> (usize, Duration) {
    let mut sorted: Vec<(usize, Duration)> = samples.to_vec();
    sorted.sort_by_key(|(_, d)| *d);
    sorted[sorted.len() / 2]
}

/// The table: per workload, the measured median beside its baseline.
fn summary() -> String {
    let samples = SAMPLES.lock().unwrap();
    let mut out = String::from("| workload | measured | baseline | ratio | note |\n|---|---|---|---|---|\n");
    let rate =
        |(items, took): (usize, Duration)| f64::from(u32::try_from(items).unwrap_or(u32::MAX)) / took.as_secs_f64();
    if let (Some(m), Some(b)) = (samples.get(&("import", "measured")), samples.get(&("import", "baseline"))) {
        let (m, b) = (rate(median(m)), rate(median(b)));
        let note = if m >= 20_000.0 {
            "within budget (≥ 20 000 resources/s)"
        } else {
            "over the budget (≥ 20 000 resources/s): see below"
        };
        writeln!(
            out,
            "| import ({} resources) | {m:.0} resources/s | vault ingest {b:.0} resources/s | {:.2} | {note} |",
            median(samples.get(&("import", "measured")).unwrap()).0,
            m / b
        )
        .unwrap();
    }
    if let Some(t) = samples.get(&("transaction", "measured")) {
        let (n, took) = median(t);
        writeln!(out, "| transaction of {n} entries | {took:.2?} | — | — | latency, median of rounds |").unwrap();
    }
    if let (Some(m), Some(b)) = (samples.get(&("reads during", "measured")), samples.get(&("reads during", "baseline")))
    {
        let (m, b) = (median(m).1, median(b).1);
        writeln!(
            out,
            "| p99 single read while it runs | {m:.2?} | {b:.2?} with no transaction | {:.2} | 8 readers |",
            m.as_secs_f64() / b.as_secs_f64()
        )
        .unwrap();
    }
    if let (Some(m), Some(b)) = (samples.get(&("first sync", "measured")), samples.get(&("first sync", "baseline"))) {
        let (mm, bb) = (median(m), median(b));
        writeln!(out, "| clinician's first sync ({} resources) | {:.2?} ({:.0} resources/s) | fetch only {:.2?} | {:.2} | throughput ÷ fetch-only |", mm.0, mm.1, rate(mm), bb.1, bb.1.as_secs_f64() / mm.1.as_secs_f64()).unwrap();
    }
    out
}

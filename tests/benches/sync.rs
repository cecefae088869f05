//! Sync (issue 5), over TLS on 127.0.0.1 against the real server, from the core's pinned
//! client into a real SQLCipher vault. Side by side in the same run:
//!
//! - a full sync of a care team holding about 10 000 resources, and beside it the same
//!   pages fetched but not stored (what the network and server cost; the difference is the
//!   cache's ingest and the sync's bookkeeping);
//! - a sync with nothing new, and beside it the one request it makes (`GET /sync/status`)
//!   made bare.
//!
//! After criterion's report, a table of medians beside their baselines is printed and
//! written to `target/bench-sync.md` (for `docs/benchmarks.md`).
//! `cargo bench -p carekeep-e2e --bench sync` inside `cargo xtask keyring-run` (or `cargo
//! xtask bench`); under `cargo test` it runs once, as a smoke test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use carekeep_core::SystemClock;
use carekeep_core::account::Account;
use carekeep_core::net::Page;
use carekeep_e2e::bench_table::{Timings, long_runs, publish};
use carekeep_e2e::{Device, Running, World, seed_care_team};
use carekeep_protocol::auth::Role;
use criterion::Criterion;

/// 215 synthetic patients: about 10 000 resources.
const PATIENTS: usize = 215;

fn main() {
    let real = std::env::args().any(|a| a == "--bench");
    let world = World::new(Role::Clinician);
    let patients = seed_care_team(&world, 0..if real { PATIENTS } else { 5 });
    // Past the pull's overlap window (changes this recent are fetched again next time).
    std::thread::sleep(Duration::from_secs(6));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let running = runtime.block_on(Running::start(&world.data));
    let device = Device::new();
    let mut account = runtime
        .block_on(device.sign_in(&world, &running, Arc::new(SystemClock), 0))
        .expect("sign-in for the bench");
    let first = runtime.block_on(account.sync(&mut |_| {})).unwrap();
    let resources = first.resources_pulled;
    eprintln!("the care team: {} patients, {resources} resources", first.patients);

    let timings = Timings::default();
    let mut c = Criterion::default().configure_from_args();
    let mut group = long_runs(&mut c, "sync", real, 30);
    group.bench_function(format!("full sync, {resources} resources, into an empty cache"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                forget_everything(&mut account, &patients);
                let started = Instant::now();
                runtime.block_on(account.sync(&mut |_| {})).unwrap();
                total += timings.record(FULL, started.elapsed());
            }
            total
        });
    });
    group.bench_function("baseline: the same pages fetched, not stored", |b| {
        b.iter_custom(|iters| {
            timed(iters, &timings, FETCH_ONLY, || runtime.block_on(fetch_only(&mut account, &patients)))
        });
    });
    group.measurement_time(Duration::from_secs(if real { 5 } else { 1 }));
    group.bench_function("sync with nothing new", |b| {
        b.iter_custom(|iters| {
            timed(iters, &timings, QUIET, || {
                let quiet = runtime.block_on(account.sync(&mut |_| {})).unwrap();
                assert_eq!(quiet.requests, 1);
            })
        });
    });
    group.bench_function("baseline: its one request (GET /sync/status), bare", |b| {
        b.iter_custom(|iters| {
            timed(iters, &timings, BARE_STATUS, || {
                let token = runtime.block_on(account.access_token()).unwrap();
                runtime.block_on(account.server().status(&token)).unwrap()
            })
        });
    });
    group.finish();
    c.final_summary();

    forget_everything(&mut account, &patients);
    let started = Instant::now();
    let report = runtime.block_on(account.sync(&mut |_| {})).unwrap();
    let took = started.elapsed();
    eprintln!(
        "full sync: {} resources in {took:.2?}: {:.0} resources/s end to end",
        report.resources_pulled,
        f64::from(u32::try_from(report.resources_pulled).unwrap_or(u32::MAX)) / took.as_secs_f64()
    );
    drop(running);
    if real {
        publish("sync", "Sync beside its baselines (criterion, same run)", &table(&timings, resources));
    }
}

const FULL: &str = "full sync";
const FETCH_ONLY: &str = "fetch only";
const QUIET: &str = "nothing new";
const BARE_STATUS: &str = "status alone";

/// Runs `operation` `iters` times, recording each under `workload`; the total for criterion.
fn timed<T>(iters: u64, timings: &Timings, workload: &'static str, mut operation: impl FnMut() -> T) -> Duration {
    (0..iters)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(operation());
            timings.record(workload, started.elapsed())
        })
        .sum()
}

/// The medians, each beside its baseline, for `docs/benchmarks.md`.
fn table(timings: &Timings, resources: usize) -> String {
    let median = |workload| timings.median(workload).unwrap_or_default();
    let (full, fetch) = (median(FULL), median(FETCH_ONLY));
    let rate = |took: Duration| f64::from(u32::try_from(resources).unwrap_or(u32::MAX)) / took.as_secs_f64();
    format!(
        "| workload | measured | baseline | ratio |\n|---|---|---|---|\n\
         | full sync, {resources} resources, into an empty cache | {full:.2?} ({:.0} resources/s end to end) | the same pages fetched, not stored: {fetch:.2?} | {:.2} (throughput ÷ fetch-only; budget ≥ 0.6) |\n\
         | sync with nothing new (one request) | {:.2?} | that request (`GET /sync/status`) made bare: {:.2?} | {:.2} |\n",
        rate(full),
        fetch.as_secs_f64() / full.as_secs_f64(),
        median(QUIET),
        median(BARE_STATUS),
        median(QUIET).as_secs_f64() / median(BARE_STATUS).as_secs_f64(),
    )
}

/// Empties the cache of the care team's records, so the next sync pulls everything.
fn forget_everything(account: &mut Account, patients: &[String]) {
    let mut store = account.store().unwrap();
    for patient in patients {
        store.forget_patient(patient).unwrap();
    }
}

/// Fetches every patient's `$everything`, page by page, and drops it.
async fn fetch_only(account: &mut Account, patients: &[String]) -> usize {
    let mut bytes = 0;
    for patient in patients {
        let mut page = Some(Page {
            path: format!("/fhir/Patient/{patient}/$everything"),
            query: vec![("_count".into(), "500".into())],
        });
        while let Some(current) = page {
            let token = account.access_token().await.unwrap();
            let (json, next) = account.server().fhir_page(&token, &current).await.unwrap();
            bytes += json.len();
            page = next;
        }
    }
    bytes
}

//! Vault benchmarks against the budgets of DESIGN.md §8, each beside the same workload on
//! plain SQLite (same schema and pragmas, no key) in the same run.
//!
//! `cargo xtask bench` runs them inside a private keyring session (the unlock benchmark needs
//! the Secret Service); `cargo bench -p carekeep-core` works too and skips only that one when
//! no keychain is reachable. After criterion's own report a table prints medians, p95, the
//! SQLCipher/plain ratio and the budget; it is also written to `target/bench-vault.md`.
//! Under `cargo test` the benchmarks run once each on small inputs, as a smoke test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use carekeep_core::store::CodeFilter;
use carekeep_core::store::dangerous::PlaintextBaseline;
use carekeep_core::{DeviceId, Keychain, Password, Profile, UserId, Vault};
use criterion::{Criterion, Throughput};

/// Every timed iteration, per (workload, variant).
static SAMPLES: Mutex<BTreeMap<(String, &'static str), Vec<Duration>>> = Mutex::new(BTreeMap::new());

const CIPHER: &str = "sqlcipher";
const PLAIN: &str = "plain";

fn timed<T>(workload: &str, variant: &'static str, f: impl FnOnce() -> T) -> Duration {
    let start = Instant::now();
    std::hint::black_box(f());
    let elapsed = start.elapsed();
    SAMPLES
        .lock()
        .unwrap()
        .entry((workload.to_owned(), variant))
        .or_default()
        .push(elapsed);
    elapsed
}

fn is_real_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A Bundle of `n` Observations shaped like the carebundle lab results (~700 bytes each),
/// spread over 20 patients and 30 codes; `trend` of them share one patient and code.
fn observations(n: usize, trend: usize) -> String {
    let mut out = String::with_capacity(n * 800);
    out.push_str(r#"{"resourceType":"Bundle","type":"collection","entry":["#);
    for i in 0..n {
        let (patient, code) = if i < trend { (0, 0) } else { (i % 20, 1 + i % 30) };
        let day = 1 + i % 28;
        let month = 1 + (i / 28) % 12;
        let year = 2000 + (i / 336) % 25;
        if i > 0 {
            out.push(',');
        }
        write!(
            out,
            r#"{{"resource":{{"resourceType":"Observation","id":"obs-{i}","meta":{{"versionId":"1","lastUpdated":"2026-01-01T00:00:00Z"}},"text":{{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Synthetic result {i}</p></div>"}},"status":"final","category":[{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory","display":"Laboratory"}}]}}],"code":{{"coding":[{{"system":"http://loinc.org","code":"code-{code}","display":"Synthetic analyte {code}"}}]}},"subject":{{"reference":"Patient/patient-{patient}"}},"effectiveDateTime":"{year}-{month:02}-{day:02}T{hour:02}:15:00+01:00","valueQuantity":{{"value":{value}.{frac},"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"}}}}}}"#,
            hour = i % 24,
            value = 3 + i % 7,
            frac = i % 10,
        )
        .unwrap();
    }
    out.push_str("]}");
    out
}

fn new_vault(dir: &std::path::Path, keychain: &Keychain) -> Vault {
    let profile = Profile::new(dir.join("profile"));
    let device = DeviceId::new(format!("bench-{}", std::process::id())).unwrap();
    Vault::create(&profile, keychain.clone(), &UserId::new("bench").unwrap(), &device, &Password::new("bench pass"))
        .unwrap()
}

fn bench_unlock(c: &mut Criterion, keychain: &Keychain) {
    let dir = tempfile::tempdir().unwrap();
    let mut vault = new_vault(dir.path(), keychain);
    if !vault.has_device_key().unwrap() {
        eprintln!("unlock: skipped, no Secret Service reachable (run `cargo xtask bench`)");
        let _ = vault.wipe();
        return;
    }
    vault.store().unwrap().ingest_bundle(&observations(2_000, 0)).unwrap();
    vault.lock();
    let profile = Profile::new(dir.path().join("profile"));
    let plain_path = dir.path().join("plain.db");
    PlaintextBaseline::create(&plain_path)
        .unwrap()
        .store()
        .ingest_bundle(&observations(2_000, 0))
        .unwrap();

    let workload = "unlock → first query";
    let mut group = c.benchmark_group("unlock");
    group.bench_function(CIPHER, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let mut opened = None;
                    let t = timed(workload, CIPHER, || {
                        let mut v = Vault::open(&profile, keychain.clone()).unwrap();
                        v.unlock_with_device_key().unwrap();
                        let n = v.store().unwrap().count().unwrap();
                        opened = Some(v);
                        n
                    });
                    drop(opened);
                    t
                })
                .sum()
        });
    });
    group.bench_function(PLAIN, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    timed(workload, PLAIN, || PlaintextBaseline::open(&plain_path).unwrap().store().count().unwrap())
                })
                .sum()
        });
    });
    group.finish();
    let _ = Vault::open(&profile, keychain.clone()).unwrap().wipe();
}

fn bench_ingest(c: &mut Criterion, keychain: &Keychain, n: usize) {
    let bundle = observations(n, 0);
    let workload = format!("ingest {n} Observations");
    let mut group = c.benchmark_group(format!("ingest-{n}"));
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.bench_function(CIPHER, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let dir = tempfile::tempdir().unwrap();
                    let mut vault = new_vault(dir.path(), keychain);
                    let t = timed(&workload, CIPHER, || vault.store().unwrap().ingest_bundle(&bundle).unwrap());
                    let _ = vault.wipe();
                    t
                })
                .sum()
        });
    });
    group.bench_function(PLAIN, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let dir = tempfile::tempdir().unwrap();
                    let mut plain = PlaintextBaseline::create(&dir.path().join("plain.db")).unwrap();
                    timed(&workload, PLAIN, || plain.store().ingest_bundle(&bundle).unwrap())
                })
                .sum()
        });
    });
    group.finish();
}

fn bench_trend(c: &mut Criterion, keychain: &Keychain, points: usize, others: usize) {
    let bundle = observations(points + others, points);
    let dir = tempfile::tempdir().unwrap();
    let mut vault = new_vault(dir.path(), keychain);
    vault.store().unwrap().ingest_bundle(&bundle).unwrap();
    let mut plain = PlaintextBaseline::create(&dir.path().join("plain.db")).unwrap();
    plain.store().ingest_bundle(&bundle).unwrap();
    let code = CodeFilter::parse("http://loinc.org|code-0").unwrap();
    assert_eq!(vault.store().unwrap().lab_trend("Patient/patient-0", &code).unwrap().len(), points);

    let workload = format!("lab trend, {points} points");
    let mut group = c.benchmark_group(format!("lab-trend-{points}"));
    group.bench_function(CIPHER, |b| {
        let store = vault.store().unwrap();
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| timed(&workload, CIPHER, || store.lab_trend("Patient/patient-0", &code).unwrap()))
                .sum()
        });
    });
    group.bench_function(PLAIN, |b| {
        let store = plain.store();
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| timed(&workload, PLAIN, || store.lab_trend("Patient/patient-0", &code).unwrap()))
                .sum()
        });
    });
    group.finish();
    let _ = vault.wipe();
}

/// Median and 95th percentile of a set of samples.
fn stats(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| {
        let last = samples.len().saturating_sub(1);
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a quantile's index: non-negative and below the sample count"
        )]
        samples[((last as f64) * q).round() as usize]
    };
    (at(0.5), at(0.95))
}

/// The table: per workload, SQLCipher and plain side by side, their ratio, and the budget.
fn summary() -> String {
    let mut samples = SAMPLES.lock().unwrap();
    let mut out = String::from(
        "| workload | SQLCipher median | SQLCipher p95 | plain median | ratio (median) | budget | verdict |\n|---|---|---|---|---|---|---|\n",
    );
    let workloads: Vec<String> = samples
        .keys()
        .map(|(w, _)| w.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for workload in workloads {
        let Some(mut cipher) = samples.remove(&(workload.clone(), CIPHER)) else { continue };
        let Some(mut plain) = samples.remove(&(workload.clone(), PLAIN)) else { continue };
        let (c_med, c_p95) = stats(&mut cipher);
        let (p_med, _) = stats(&mut plain);
        let ratio = c_med.as_secs_f64() / p_med.as_secs_f64();
        let (budget, ok) = if workload.starts_with("unlock") {
            ("≤ 50 ms p95".to_owned(), c_p95 <= Duration::from_millis(50))
        } else if workload.starts_with("lab trend") {
            ("≤ 5 ms".to_owned(), c_med <= Duration::from_millis(5))
        } else {
            let n: f64 = workload.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(1.0);
            let rate = n / c_med.as_secs_f64();
            (format!("≥ 20 000/s (here {rate:.0}/s)"), rate >= 20_000.0)
        };
        let ratio_ok = workload.starts_with("unlock") || ratio <= 1.15;
        let verdict = match (ok, ratio_ok) {
            (true, true) => "within budget",
            (true, false) => "over the 1.15× ratio",
            (false, _) => "OVER BUDGET",
        };
        writeln!(out, "| {workload} | {c_med:.2?} | {c_p95:.2?} | {p_med:.2?} | {ratio:.2}× | {budget} | {verdict} |")
            .unwrap();
    }
    out
}

fn main() {
    let real = is_real_run();
    let keychain = Keychain::with_service(format!("carekeep-bench-{}", std::process::id()));
    let mut c = Criterion::default().configure_from_args();
    bench_unlock(&mut c, &keychain);
    if real {
        bench_ingest(&mut c, &keychain, 10_000);
        bench_ingest(&mut c, &keychain, 100_000);
        bench_trend(&mut c, &keychain, 5_000, 15_000);
    } else {
        bench_ingest(&mut c, &keychain, 500);
        bench_trend(&mut c, &keychain, 200, 300);
    }
    c.final_summary();
    if real {
        let table = summary();
        println!("\nCarekeep vault vs DESIGN.md §8 (SQLCipher beside plain SQLite, same run)\n\n{table}");
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-vault.md");
        let _ = std::fs::write(target, &table);
    }
}

//! Backup and restore of the demo store plus 100 000 resources (issue 18), each beside a
//! baseline measured in the same run:
//!
//! - **Backup**: `backup::create` (a consistent snapshot through SQLite's online backup API,
//!   SHA-256 of every file, sealing under AES-256-GCM). Baseline: copying `store.db` and
//!   `audit.db` as plain files — the floor for moving the same bytes.
//! - **Restore**: `backup::restore` (opening the envelope, checking every file, opening the
//!   store and verifying the audit trail). Baseline: the same plain copy.
//!
//! Rates are MB/s of the data directory's databases. A table is printed after criterion's
//! report and written to `target/bench-backup.md`. Under `cargo test` it runs once on a
//! small store, as a smoke test.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use carekeep_server::DataDir;
use carekeep_server::backup::{self, BackupKey};
use criterion::Criterion;

/// Resources added to the demo tenant for a real run.
const RESOURCES: usize = 100_000;

/// (workload, variant) → every timed run.
static SAMPLES: Mutex<Vec<(&'static str, &'static str, Duration)>> = Mutex::new(Vec::new());

fn is_real_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

struct Fixture {
    _dir: tempfile::TempDir,
    work: PathBuf,
    data: DataDir,
    root: PathBuf,
    key: BackupKey,
    megabytes: f64,
}

/// The demo tenant plus `extra` Observations of its first patient, written straight into
/// the store in one transaction (the import path is measured elsewhere; this is the bytes).
fn fixture(extra: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("server");
    let (data, _) = DataDir::init(&root, "localhost").unwrap();
    {
        let store = std::sync::Arc::new(data.open_store().unwrap());
        let records = carekeep_server::records::Records::new(
            store.clone(),
            zeroize::Zeroizing::new(*data.master_keys().unwrap().documents),
        );
        carekeep_server::seed::seed_demo(&store, &records, 0).unwrap();
        let mut conn = store.lock();
        let tx = conn.transaction().unwrap();
        let patient: String = tx
            .query_row("SELECT id FROM resources WHERE type = 'Patient' ORDER BY id LIMIT 1", [], |r| r.get(0))
            .unwrap();
        let tenant: String = tx.query_row("SELECT id FROM tenants LIMIT 1", [], |r| r.get(0)).unwrap();
        let mut insert = tx
            .prepare(
                "INSERT INTO resources (tenant, type, id, version, last_updated, patient, category, effective, json)
                 VALUES (?1, 'Observation', ?2, 1, '2026-11-30T00:00:00Z', ?3, 'vital-signs', ?4, ?5)",
            )
            .unwrap();
        for i in 0..extra {
            let id = format!("bench-{i:06}");
            let effective = format!("2026-{:02}-{:02}T08:00:00Z", 1 + i % 12, 1 + i % 28);
            let json = serde_json::json!({
                "resourceType": "Observation", "id": id, "status": "final",
                "meta": {"versionId": "1", "lastUpdated": "2026-11-30T00:00:00Z"},
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
                "subject": {"reference": format!("Patient/{patient}")},
                "effectiveDateTime": effective,
                "valueQuantity": {"value": 60 + i % 40, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
            });
            insert
                .execute(rusqlite::params![tenant, id, patient, effective, json.to_string()])
                .unwrap();
        }
        drop(insert);
        tx.commit().unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    }
    let key_file = dir.path().join("key.txt");
    backup::create_key(&data, &key_file).unwrap();
    let key = BackupKey::read(&key_file).unwrap();
    let bytes: u64 = ["store.db", "audit.db"]
        .iter()
        .map(|f| std::fs::metadata(root.join(f)).unwrap().len())
        .sum();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    #[expect(clippy::cast_precision_loss, reason = "a file size in MB, for a rate")]
    let megabytes = bytes as f64 / 1e6;
    Fixture { work, data, root, key, megabytes, _dir: dir }
}

/// Copies the two databases as plain files into a fresh folder of `work`.
fn plain_copy(root: &Path, work: &Path, n: usize) -> Duration {
    let to = work.join(format!("copy-{n}"));
    std::fs::create_dir(&to).unwrap();
    let start = Instant::now();
    for file in ["store.db", "audit.db"] {
        std::fs::copy(root.join(file), to.join(file)).unwrap();
    }
    let elapsed = start.elapsed();
    std::fs::remove_dir_all(&to).unwrap();
    elapsed
}

fn timed(
    workload: &'static str,
    variant: &'static str,
    iters: u64,
    mut run: impl FnMut(usize) -> Duration,
) -> Duration {
    let mut total = Duration::ZERO;
    for n in 0..usize::try_from(iters).unwrap() {
        let elapsed = run(n);
        SAMPLES.lock().unwrap().push((workload, variant, elapsed));
        total += elapsed;
    }
    total
}

fn bench(c: &mut Criterion, f: &Fixture) {
    let mut group = c.benchmark_group("backup");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let next = || counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    group.bench_function("backup: snapshot, hash, seal", |b| {
        b.iter_custom(|iters| {
            timed("backup", "measured", iters, |_| {
                let out = f.work.join(format!("b-{}.ckb", next()));
                let start = Instant::now();
                backup::create(&f.data, &out).unwrap();
                let elapsed = start.elapsed();
                std::fs::remove_file(&out).unwrap();
                elapsed
            })
        });
    });
    let sealed = f.work.join("restore-from.ckb");
    backup::create(&f.data, &sealed).unwrap();
    group.bench_function("restore: open, check, prove", |b| {
        b.iter_custom(|iters| {
            timed("restore", "measured", iters, |_| {
                let target = f.work.join(format!("r-{}", next()));
                let start = Instant::now();
                backup::restore(&sealed, &f.key, &target).unwrap();
                let elapsed = start.elapsed();
                std::fs::remove_dir_all(&target).unwrap();
                elapsed
            })
        });
    });
    group.bench_function("baseline: plain copy of both files", |b| {
        b.iter_custom(|iters| timed("copy", "baseline", iters, |_| plain_copy(&f.root, &f.work, next())));
    });
    group.finish();
}

fn median(workload: &str) -> Option<Duration> {
    let mut runs: Vec<Duration> = SAMPLES
        .lock()
        .unwrap()
        .iter()
        .filter(|(w, ..)| *w == workload)
        .map(|(.., d)| *d)
        .collect();
    runs.sort();
    runs.get(runs.len() / 2).copied()
}

fn summary(f: &Fixture) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "Databases: {:.0} MB (the demo tenant and {RESOURCES} Observations).\n\n\
         | workload | measured | baseline (plain copy) | ratio | budget |\n|---|---|---|---|---|\n",
        f.megabytes
    );
    let Some(copy) = median("copy") else { return out };
    let rate = |d: Duration| f.megabytes / d.as_secs_f64();
    for workload in ["backup", "restore"] {
        if let Some(m) = median(workload) {
            writeln!(
                out,
                "| {workload} | {:.0} MB/s ({m:.2?}) | {:.0} MB/s ({copy:.2?}) | {:.1}× the copy's time | reported |",
                rate(m),
                rate(copy),
                m.as_secs_f64() / copy.as_secs_f64()
            )
            .unwrap();
        }
    }
    out
}

fn main() {
    let f = fixture(if is_real_run() { RESOURCES } else { 1_000 });
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &f);
    c.final_summary();
    // A run filtered to one workload has no baseline beside it: it writes no table.
    if is_real_run() && ["backup", "restore", "copy"].iter().all(|w| median(w).is_some()) {
        let table = summary(&f);
        println!("\nCarekeep backups (each beside a plain copy of the same files, same run)\n\n{table}");
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-backup.md");
        let _ = std::fs::write(target, &table);
    }
}

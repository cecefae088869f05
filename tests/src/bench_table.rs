//! What the end-to-end benchmarks measured, per workload, for the tables `cargo xtask bench`
//! puts in `docs/benchmarks.md`: criterion prints its own report, but a table of medians
//! beside their baselines is what a reader compares, so each bench records its timings here.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};

/// Per-operation timings of each workload, in the order they were first recorded.
#[derive(Default)]
pub struct Timings {
    runs: Mutex<BTreeMap<&'static str, Vec<Duration>>>,
}

impl Timings {
    /// Adds one timed operation of `workload`; returns `elapsed` for criterion's `iter_custom`.
    pub fn record(&self, workload: &'static str, elapsed: Duration) -> Duration {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(workload)
            .or_default()
            .push(elapsed);
        elapsed
    }

    /// The median of `workload`'s operations, if it ran.
    pub fn median(&self, workload: &str) -> Option<Duration> {
        let runs = self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut times = runs.get(workload)?.clone();
        times.sort_unstable();
        times.get(times.len() / 2).copied()
    }
}

/// A criterion group for workloads that take a second or more each: ten flat samples, no
/// warm-up to speak of, measured for `seconds` in a real run and one second under `cargo test`.
pub fn long_runs<'a>(c: &'a mut Criterion, name: &str, real: bool, seconds: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(if real { seconds } else { 1 }));
    group
}

/// Prints `table` under `title` and writes it to `target/bench-<name>.md`, where `cargo xtask
/// bench` picks it up for `docs/benchmarks.md`.
pub fn publish(name: &str, title: &str, table: &str) {
    println!("\n{title}\n\n{table}");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/bench-{name}.md"));
    if let Err(error) = std::fs::write(&target, table) {
        eprintln!("could not write {}: {error}", target.display());
    }
}

//! The app against DESIGN §8: the release binary's size (≤ 15 MB), cold start to the lock
//! screen, and idle memory (≤ 100 MB), measured on the release build under Xvfb through
//! tauri-driver. Side by side in the same run, the same binary's cold start to its sign-in
//! screen on a fresh profile (no account to open): the difference is what opening the
//! account costs; the rest is the webview's start and the WebDriver session.
//!
//! `cargo xtask bench` builds the release app and runs this in a keyring session under
//! `xvfb-run`; the table is printed and written to `target/bench-app.md`. Under `cargo
//! test` (no `--bench`), it only says how to run it: it needs the release app and a display.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carekeep_core::account::{Account, SignIn};
use carekeep_core::{Keychain, Password, Profile, SystemClock};
use carekeep_e2e::app_driver::{App, target_dir, write_config};
use carekeep_e2e::{Running, World};
use carekeep_protocol::auth::Role;

/// Starts of each kind.
const RUNS: usize = 5;
/// The budgets of DESIGN §8.
const MAX_BINARY_BYTES: u64 = 15 * 1024 * 1024;
const MAX_IDLE_BYTES: u64 = 100 * 1024 * 1024;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("app bench: run it with `cargo xtask bench` (it needs the release app, tauri-driver and a display)");
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}

async fn run() {
    let (profile_dir, target) = target_dir();
    let binary = profile_dir.join("carekeep-app");
    let size = std::fs::metadata(&binary)
        .unwrap_or_else(|_| panic!("build the release app first: cargo build --release -p carekeep-app"))
        .len();
    let world = World::demo(Role::Patient);
    let running = Running::start(&world.data).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &world, &running);
    // A signed-in profile, as the app finds it at every later start: locked.
    let profile = dir.path().join("profile");
    let password = Password::new(world.password.as_str());
    let request = SignIn {
        url: running.url(),
        pins: world.pins(),
        username: &world.username,
        password: &password,
        code: &world.code(0),
        device_name: "bench",
    };
    drop(Account::sign_in(&Profile::new(&profile), Keychain::os(), Arc::new(SystemClock), request).await.unwrap());

    let (mut to_sign_in, mut to_lock, mut idle) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        let started = Instant::now();
        let app = App::launch(&config, &dir.path().join(format!("fresh-{run}"))).await;
        app.wait("#signin-title").await;
        to_sign_in.push(started.elapsed());
        app.quit().await;

        let started = Instant::now();
        let app = App::launch(&config, &profile).await;
        app.wait("#lock-title").await;
        to_lock.push(started.elapsed());
        // Idle: the lock screen shown, nothing happening.
        tokio::time::sleep(Duration::from_secs(3)).await;
        idle.push(memory_of(&binary));
        app.quit().await;
    }

    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (sign_in, lock) = (median(&mut to_sign_in), median(&mut to_lock));
    idle.sort_by_key(|m| m.total);
    let memory = idle[idle.len() / 2];
    // Sizes in tenths of a MiB, in integers (exact for anything a process could hold).
    let mib = |b: u64| {
        let tenths = b * 10 / (1024 * 1024);
        format!("{}.{} MiB", tenths / 10, tenths % 10)
    };
    let verdict = |ok: bool| if ok { "within budget" } else { "OVER BUDGET" };
    let table = format!(
        "| measure | value | beside it | budget | verdict |\n|---|---|---|---|---|\n\
         | release binary | {} | | ≤ 15 MB | {} |\n\
         | cold start → lock screen (median of {RUNS}) | {:.0} ms | → sign-in screen, fresh profile: {:.0} ms | — | measured |\n\
         | idle memory on the lock screen (PSS, app + its web processes) | {} | app process alone: {} | ≤ 100 MB | {} |\n",
        mib(size),
        verdict(size <= MAX_BINARY_BYTES),
        lock.as_secs_f64() * 1000.0,
        sign_in.as_secs_f64() * 1000.0,
        mib(memory.total),
        mib(memory.app),
        verdict(memory.total <= MAX_IDLE_BYTES),
    );
    println!("\n{table}");
    std::fs::write(target.join("bench-app.md"), &table).unwrap();
}

/// Proportional set sizes: the app's process, and with every process below it (WebKit's
/// web and network processes).
#[derive(Clone, Copy)]
struct Memory {
    app: u64,
    total: u64,
}

fn memory_of(binary: &Path) -> Memory {
    let processes: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let app = processes
        .iter()
        .map(|(pid, _)| *pid)
        .find(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == binary))
        .expect("the app is running");
    let mut family = vec![app];
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        family.extend(processes.iter().filter(|(_, p)| *p == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    Memory { app: pss(app), total: family.iter().map(|pid| pss(*pid)).sum() }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

fn pss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

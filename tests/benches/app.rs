//! The app against DESIGN §8: the shipped binary's size (≤ 15 MB), cold start to the lock
//! screen, and idle memory (on Linux ≤ 32 MiB above WebKitGTK's own floor), measured on the `dist` build under Xvfb through
//! tauri-driver. Side by side in the same run: the same binary's cold start to its sign-in
//! screen on a fresh profile (no account to open): the difference is what opening the
//! account costs; the rest is the webview's start and the WebDriver session. And WebKitGTK's
//! own floor: its MiniBrowser showing an empty page, whose memory no app built on this
//! webview goes below.
//!
//! `cargo xtask bench` builds the release app and runs this in a keyring session under
//! `xvfb-run`; the table is printed and written to `target/bench-app.md`. Under `cargo
//! test` (no `--bench`), it only says how to run it: it needs the release app and a display.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carekeep_core::account::{Account, SignIn};
use carekeep_core::{Keychain, Password, Profile, SystemClock};
use carekeep_e2e::app_driver::{App, processes, target_dir, write_config};
use carekeep_e2e::{Running, World};
use carekeep_protocol::auth::Role;

/// Starts of each kind.
const RUNS: usize = 5;
/// The binary's budget of DESIGN §8, in decimal megabytes as written there (the table shows MiB).
const MAX_BINARY_BYTES: u64 = 15_000_000;
/// DESIGN §8's idle memory budget on Linux: what the app adds to WebKitGTK's MiniBrowser on
/// an empty page, measured in the same run (WebKitGTK alone takes about 225 MiB).
const MAX_IDLE_ABOVE_FLOOR_BYTES: u64 = 32 * 1024 * 1024;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("app bench: run it with `cargo xtask bench` (it needs the release app, tauri-driver and a display)");
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}

async fn run() {
    let (_, target) = target_dir();
    let binary = target.join("dist/carekeep-app");
    let size = std::fs::metadata(&binary)
        .unwrap_or_else(|_| panic!("build the shipped app first: cargo build --profile dist -p carekeep-app"))
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
    drop(
        Account::sign_in(&Profile::new(&profile), Keychain::os(), Arc::new(SystemClock), request)
            .await
            .unwrap(),
    );

    let (mut to_sign_in, mut to_lock, mut idle) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        let started = Instant::now();
        let app = App::launch_binary(&binary, &config, &dir.path().join(format!("fresh-{run}"))).await;
        app.wait("#signin-title").await;
        to_sign_in.push(started.elapsed());
        app.quit().await;

        let started = Instant::now();
        let app = App::launch_binary(&binary, &config, &profile).await;
        app.wait("#lock-title").await;
        to_lock.push(started.elapsed());
        // Idle: the lock screen shown, nothing happening.
        tokio::time::sleep(Duration::from_secs(3)).await;
        idle.push(memory_of(app_process(&binary)));
        app.quit().await;
    }
    let floor = webkit_floor();

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
         | app binary (`dist` profile, stripped) | {} | | ≤ 15 MB (14.3 MiB) | {} |\n\
         | cold start → lock screen (median of {RUNS}) | {:.0} ms | → sign-in screen, fresh profile: {:.0} ms | — | measured |\n\
         | idle memory on the lock screen (PSS, app + its web processes) | {} (app process {}) | WebKitGTK's MiniBrowser, empty page: {} (browser process {}) | ≤ 32 MiB above it (here {}) | {} |\n",
        mib(size),
        verdict(size <= MAX_BINARY_BYTES),
        lock.as_secs_f64() * 1000.0,
        sign_in.as_secs_f64() * 1000.0,
        mib(memory.total),
        mib(memory.app),
        mib(floor.total),
        mib(floor.app),
        mib(memory.total.saturating_sub(floor.total)),
        verdict(memory.total.saturating_sub(floor.total) <= MAX_IDLE_ABOVE_FLOOR_BYTES),
    );
    println!("\n{table}");
    std::fs::write(target.join("bench-app.md"), &table).unwrap();
}

/// WebKitGTK's floor: its MiniBrowser (shipped with the library) on `about:blank`, with
/// the same compositing as the app, measured after the same idle wait.
fn webkit_floor() -> Memory {
    let browser = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|dir| dir.path().join("webkit2gtk-4.1/MiniBrowser"))
        .find(|path| path.exists())
        .expect("WebKitGTK's MiniBrowser (package libwebkit2gtk-4.1-0)");
    let mut child = std::process::Command::new(browser)
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let memory = memory_of(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    memory
}

/// Proportional set sizes: the top process, and with every process below it (WebKit's
/// web and network processes).
#[derive(Clone, Copy)]
struct Memory {
    app: u64,
    total: u64,
}

/// The running app's process id (tauri-driver started it).
fn app_process(binary: &Path) -> u32 {
    processes()
        .iter()
        .map(|(pid, _)| *pid)
        .find(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == binary))
        .expect("the app is running")
}

fn memory_of(app: u32) -> Memory {
    let processes = processes();
    let mut family = vec![app];
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        family.extend(processes.iter().filter(|(_, p)| *p == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    Memory { app: pss(app), total: family.iter().map(|pid| pss(*pid)).sum() }
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

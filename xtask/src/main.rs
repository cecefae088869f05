//! `cargo xtask`: the commands the README gives, so a fresh Debian/Ubuntu machine needs
//! nothing but Rust to build, test and benchmark Carekeep.
//!
//! - `cargo xtask test`: system packages, the UI (ESLint, Prettier's check, Vitest,
//!   type-check, Vite build), `cargo fmt --check`, clippy `-D warnings` (and, on their
//!   targets, the macOS and Windows presence and clipboard modules and the Android and iOS
//!   screen guard), then every test of the workspace inside a private D-Bus session with
//!   an unlocked gnome-keyring (the real Secret Service), the X clipboard test and the
//!   app's end-to-end tests under Xvfb through tauri-driver, and the large-cache sync test
//!   in release.
//! - `cargo xtask bench`: the criterion benchmarks of the vault, the server, sign-in and
//!   sync in the same kind of session, then the app's size, start and idle memory on its
//!   release build under Xvfb (each against the budgets of DESIGN.md §8).
//! - `cargo xtask demo`: the app on a seeded demo server (see `demo.rs`); `cargo xtask totp
//!   USER` prints a demo user's current authenticator code.
//! - `cargo xtask bench-report`: after one benchmark run by hand (`cargo bench -p … --bench
//!   NAME`), puts the tables in `target/` into docs/benchmarks.md.
//! - `cargo xtask setup`: only the system packages.
//! - `cargo xtask keyring-run -- CMD…`: any command inside the private keyring session.
//! - `cargo xtask postgres-run -- CMD…`: any command with a private PostgreSQL running and
//!   named in `CAREKEEP_TEST_POSTGRES` (e.g. `cargo test -p carekeep-server --test postgres`).

mod bench_report;
mod demo;
mod doc_links;
mod keyring_session;
mod postgres;
mod setup;
mod ui;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        Some("bench-report") => bench_report::update(&workspace_root())
            .map(|updated| println!("docs/benchmarks.md: new figures for {}", updated.join(", "))),
        Some("demo") => demo::run(),
        Some("totp") => demo::totp(args.get(1)),
        Some("setup") => setup::ensure_system_packages(),
        Some("keyring-run") => keyring_run(&args[1..]),
        Some("postgres-run") => postgres_run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <test | demo | totp USER | bench [FILTER] | bench-report | setup | keyring-run -- CMD... | postgres-run -- CMD...>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// An error worth showing the person who ran the command.
type Result<T = ()> = std::result::Result<T, String>;

fn test() -> Result {
    setup::ensure_system_packages()?;
    setup::ensure_tauri_driver()?;
    // The app embeds ui/dist at compile time: the UI is built before any cargo step.
    ui::build(true)?;
    step("cargo fmt --check", cargo(&["fmt", "--all", "--", "--check"]))?;
    step("cargo clippy", cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    check_other_platforms()?;
    // Every crate's documentation builds without a broken link or a private item made public.
    let mut doc = cargo(&["doc", "--workspace", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    step("cargo doc (warnings are errors)", doc)?;
    let session = keyring_session::KeyringSession::new()?;
    // The PostgreSQL tests run against a private server started here and stopped after.
    let postgres = postgres::PgCluster::start()?;
    let mut tests = session.wrap(&cargo(&["test", "--workspace", "--all-targets"]));
    tests.envs(postgres.env());
    step("cargo test (in a private keyring session, with a private PostgreSQL)", tests)?;
    drop(postgres);
    step("doc tests", session.wrap(&cargo(&["test", "--workspace", "--doc"])))?;
    // The real app binary under a virtual display (tests of other packages do not build it),
    // with the clipboard's own test against the same X server.
    step("cargo build -p carekeep-app", cargo(&["build", "-p", "carekeep-app"]))?;
    let mut e2e = Command::new("xvfb-run");
    // `--workspace`, like the step above, so features resolve the same and nothing rebuilds.
    e2e.args(["-a", "--server-args=-screen 0 1280x900x24"])
        .arg(cargo_program())
        .args(["test", "--workspace", "--test", "x11", "--test", "app", "--", "--ignored", "--test-threads", "1"]);
    e2e.current_dir(workspace_root());
    step("clipboard and app end-to-end tests (Xvfb, tauri-driver)", session.wrap(&e2e))?;
    // 2 000 patients through the server's schema check: minutes in debug, so in release.
    let large = ["test", "--release", "-p", "carekeep-e2e", "--test", "large_cache", "--", "--ignored"];
    step("large-cache sync test (release)", session.wrap(&cargo(&large)))?;
    Ok(())
}

/// The platform modules of other systems cannot run here, but they must keep compiling:
/// clippy checks the presence and clipboard crates for macOS and Windows, and the screen
/// guard for Android and iOS (rustup adds their standard libraries).
fn check_other_platforms() -> Result {
    const CHECKS: [(&str, &[&str]); 4] = [
        ("aarch64-apple-darwin", &["carekeep-presence", "carekeep-clipboard"]),
        ("x86_64-pc-windows-msvc", &["carekeep-presence", "carekeep-clipboard"]),
        ("aarch64-linux-android", &["carekeep-screen-guard"]),
        ("aarch64-apple-ios", &["carekeep-screen-guard"]),
    ];
    let mut add = Command::new("rustup");
    add.args(["target", "add"]).args(CHECKS.map(|(target, _)| target));
    step("rustup target add (macOS, Windows, Android, iOS)", add)?;
    for (target, packages) in CHECKS {
        let mut args = vec!["clippy"];
        for package in packages {
            args.extend(["-p", package]);
        }
        args.extend(["--target", target, "--", "-D", "warnings"]);
        step(&format!("cargo clippy {} --target {target}", packages.join(" ")), cargo(&args))?;
    }
    Ok(())
}

fn bench(filter: &[String]) -> Result {
    bench_report::clear(&workspace_root())?;
    setup::ensure_system_packages()?;
    setup::ensure_tauri_driver()?;
    ui::build(false)?;
    let session = keyring_session::KeyringSession::new()?;
    // The server bench measures the audit on PostgreSQL too, on a private server.
    let postgres = postgres::PgCluster::start()?;
    for (package, bench) in [
        ("carekeep-core", "vault"),
        ("carekeep-server", "server"),
        ("carekeep-server", "backup"),
        ("carekeep-e2e", "login"),
        ("carekeep-e2e", "sync"),
        ("carekeep-e2e", "records_in"),
    ] {
        let mut args = vec!["bench", "-p", package, "--bench", bench, "--"];
        args.extend(filter.iter().map(String::as_str));
        let mut command = session.wrap(&cargo(&args));
        command.envs(postgres.env());
        step(&format!("cargo bench {bench} (in a private keyring session)"), command)?;
    }
    drop(postgres);
    // The app's size, start and memory: the shipped (`dist`) binary, under a virtual display.
    step("cargo build --profile dist -p carekeep-app", cargo(&["build", "--profile", "dist", "-p", "carekeep-app"]))?;
    let mut app = Command::new("xvfb-run");
    app.args(["-a", "--server-args=-screen 0 1280x900x24"])
        .arg(cargo_program())
        .args(["bench", "-p", "carekeep-e2e", "--bench", "app"])
        .current_dir(workspace_root());
    step("cargo bench app (Xvfb, tauri-driver)", session.wrap(&app))?;
    let updated = bench_report::update(&workspace_root())?;
    println!("docs/benchmarks.md: new figures for {}", updated.join(", "));
    Ok(())
}

fn keyring_run(args: &[String]) -> Result {
    let args = args.strip_prefix(&["--".to_owned()]).unwrap_or(args);
    let (program, rest) = args.split_first().ok_or("keyring-run needs a command after --")?;
    let session = keyring_session::KeyringSession::new()?;
    let mut command = Command::new(program);
    command.args(rest);
    step(program, session.wrap(&command))
}

fn postgres_run(args: &[String]) -> Result {
    let args = args.strip_prefix(&["--".to_owned()]).unwrap_or(args);
    let (program, rest) = args.split_first().ok_or("postgres-run needs a command after --")?;
    let postgres = postgres::PgCluster::start()?;
    let mut command = Command::new(program);
    command.args(rest).envs(postgres.env());
    step(program, command)
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(cargo_program());
    command.args(args).current_dir(workspace_root());
    command
}

fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a prepared command, announcing it and turning a failure into a message.
fn step(name: &str, mut command: Command) -> Result {
    eprintln!("==> {name}");
    let status = command.status().map_err(|e| format!("{name}: could not start: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{name} failed ({status})")) }
}

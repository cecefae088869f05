//! `cargo xtask demo`: the app on its demo server, from nothing. Installs what is missing,
//! builds the UI, the server and the app; creates and seeds a server data directory (once,
//! under `target/demo/`: synthetic patients, one user per role); serves it on 127.0.0.1
//! with its pins written into the app's `server.json`; launches the app and shows each demo
//! user's password and a live authenticator code. Closing the app stops the server.
//!
//! `cargo xtask totp USER` prints a demo user's current code.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Result, cargo, setup, step, ui, workspace_root};

/// A demo user as `seed-demo` printed it.
struct DemoUser {
    username: String,
    role: String,
    password: String,
    totp_base32: String,
}

/// Runs the demo until the app closes.
pub fn run() -> Result {
    setup::ensure_system_packages()?;
    ui::build(false)?;
    step("cargo build (server and app)", cargo(&["build", "-p", "carekeep-server", "-p", "carekeep-app"]))?;
    let binaries = target_dir().join("debug");
    let demo = target_dir().join("demo");
    let data = demo.join("server");
    let users_file = demo.join("users.txt");
    if !users_file.exists() {
        std::fs::create_dir_all(&demo).map_err(|e| format!("cannot create {}: {e}", demo.display()))?;
        if data.exists() {
            // A half-made directory from an interrupted run: start again.
            std::fs::remove_dir_all(&data).map_err(|e| format!("cannot clear {}: {e}", data.display()))?;
        }
        let server = binaries.join("carekeep-server");
        let mut init = Command::new(&server);
        init.args(["init", "--data"]).arg(&data).stdout(Stdio::null());
        step("carekeep-server init", init)?;
        let seeded = Command::new(&server)
            .args(["seed-demo", "--data"])
            .arg(&data)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("seed-demo: {e}"))?;
        if !seeded.status.success() {
            return Err("carekeep-server seed-demo failed".into());
        }
        write_private(&users_file, &seeded.stdout)?;
    }
    let users = read_users(&users_file)?;
    let pins = server_pins(&binaries.join("carekeep-server"), &data)?;
    let listen = demo_address();
    let mut server = Command::new(binaries.join("carekeep-server"))
        .args(["serve", "--data"])
        .arg(&data)
        .args(["--listen", &listen.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start carekeep-server: {e}"))?;
    let result = run_app(&binaries, &demo, listen, &pins, &users);
    let _ = server.kill();
    let _ = server.wait();
    eprintln!("==> the demo server has stopped");
    result
}

fn run_app(binaries: &Path, demo: &Path, listen: SocketAddr, pins: &[String], users: &[DemoUser]) -> Result {
    wait_until_listening(listen)?;
    let expires = time_plus_days(90);
    let config = format!(
        r#"{{"server":"https://127.0.0.1:{}","pins":["{}","{}"],"pins_expire":"{expires}"}}"#,
        listen.port(),
        pins[0],
        pins[1]
    );
    let config_path = demo.join("server.json");
    write_private(&config_path, config.as_bytes())?;
    let mut app: Child = Command::new(binaries.join("carekeep-app"))
        .env("CAREKEEP_SERVER_CONFIG", &config_path)
        .env("CAREKEEP_PROFILE", demo.join("profile"))
        .spawn()
        .map_err(|e| format!("cannot start the app: {e}"))?;
    println!("\nCarekeep demo: server https://127.0.0.1:{} (pinned), synthetic patients only.", listen.port());
    println!("Sign in as one of these (codes change every 30 s; `cargo xtask totp USER` prints one):\n");
    let mut shown_step = u64::MAX;
    loop {
        if let Some(status) = app.try_wait().map_err(|e| e.to_string())? {
            eprintln!("==> the app closed ({status})");
            return Ok(());
        }
        let step = unix_now() / 30;
        if step != shown_step {
            shown_step = step;
            for user in users {
                println!(
                    "  {:<16} {:<10} password {}  code {}",
                    user.username,
                    user.role,
                    user.password,
                    code_now(&user.totp_base32)?
                );
            }
            println!("  (codes valid for {} more seconds)\n", 30 - unix_now() % 30);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `cargo xtask totp USER`: the demo user's current authenticator code.
pub fn totp(username: Option<&String>) -> Result {
    let username = username.ok_or("usage: cargo xtask totp USER (a demo user, e.g. demo.patient)")?;
    let users = read_users(&target_dir().join("demo/users.txt"))?;
    let user = users.iter().find(|u| &u.username == username).ok_or_else(|| {
        let names: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
        format!("no demo user {username}; the demo users are {}", names.join(", "))
    })?;
    println!("{}", code_now(&user.totp_base32)?);
    Ok(())
}

fn code_now(base32: &str) -> Result<String> {
    let secret = totp_rs::Secret::try_from_base32(base32).map_err(|_| "a demo TOTP secret is not base32".to_owned())?;
    let totp = totp_rs::Builder::new()
        .with_secret(secret.as_bytes())
        .build()
        .map_err(|e| format!("a demo TOTP secret is unusable: {e}"))?;
    Ok(totp.generate(unix_now()).to_string())
}

fn read_users(path: &Path) -> Result<Vec<DemoUser>> {
    let text = std::fs::read_to_string(path)
        .map_err(|_| format!("{} is missing: run `cargo xtask demo` first", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                [username, role, password, secret] => Ok(DemoUser {
                    username: (*username).to_owned(),
                    role: (*role).to_owned(),
                    password: (*password).to_owned(),
                    totp_base32: (*secret).to_owned(),
                }),
                _ => Err(format!("{} is damaged: delete target/demo and run again", path.display())),
            }
        })
        .collect()
}

fn server_pins(server: &Path, data: &Path) -> Result<Vec<String>> {
    let out = Command::new(server)
        .args(["pins", "--data"])
        .arg(data)
        .output()
        .map_err(|e| format!("pins: {e}"))?;
    let pins: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .collect();
    if !out.status.success() || pins.len() < 2 {
        return Err("carekeep-server pins printed no pin pair".into());
    }
    Ok(pins)
}

/// 127.0.0.1:8443, or a free port if that one is taken.
fn demo_address() -> SocketAddr {
    let preferred: SocketAddr = ([127, 0, 0, 1], 8443).into();
    if TcpListener::bind(preferred).is_ok() {
        return preferred;
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or(preferred)
}

fn wait_until_listening(address: SocketAddr) -> Result {
    for _ in 0..100 {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("the demo server did not start listening on {address}"))
}

/// Writes a file only this user can read (it holds the demo users' passwords).
fn write_private(path: &Path, bytes: &[u8]) -> Result {
    carekeep_private_files::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The date `days` from today (YYYY-MM-DD, UTC), for the pins' expiry.
fn time_plus_days(days: i64) -> String {
    let date = (time::OffsetDateTime::now_utc() + time::Duration::days(days)).date();
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

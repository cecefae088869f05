//! Installing the system packages the workspace needs, only when missing.

use std::process::Command;

use crate::Result;

/// Debian/Ubuntu packages: the Secret Service (gnome-keyring) and a session bus to reach it
/// (dbus, dbus-x11), libdbus headers for `keyring`'s Secret Service backend, OpenSSL headers
/// for SQLCipher's crypto, a C toolchain for the bundled SQLCipher; for the app, Tauri 2's
/// webview and its libraries, and for its end-to-end tests a virtual display (xvfb) and
/// WebKitWebDriver (webkit2gtk-driver).
const PACKAGES: &[&str] = &[
    "gnome-keyring",
    "dbus",
    "dbus-x11",
    "libdbus-1-dev",
    "pkg-config",
    "libssl-dev",
    "build-essential",
    "libwebkit2gtk-4.1-dev",
    "libsoup-3.0-dev",
    "libjavascriptcoregtk-4.1-dev",
    "librsvg2-dev",
    "libayatana-appindicator3-dev",
    "xvfb",
    "xauth",
    "webkit2gtk-driver",
    // The end-to-end tests read the X clipboard the app writes and clears, and minimise and
    // switch away from the app under a window manager.
    "xclip",
    "openbox",
    "xdotool",
    "x11-utils",
    // A second, independent TOTP implementation the server's codes are checked against.
    "oathtool",
    // The server's PostgreSQL tests run against a private PostgreSQL server.
    "postgresql",
];

/// Installs whatever of [`PACKAGES`] is missing, with apt, as root or through `sudo -n`.
pub fn ensure_system_packages() -> Result {
    ensure_packages(PACKAGES)
}

/// Installs whatever of `packages` is missing (see [`ensure_system_packages`]).
pub fn ensure_packages(packages: &[&str]) -> Result {
    if which("dpkg-query").is_none() {
        eprintln!(
            "xtask: not a Debian/Ubuntu system; make sure these (or your distribution's equivalents) are installed: {}",
            packages.join(" ")
        );
        return Ok(());
    }
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> installing system packages: {}", missing.join(" "));
    let prefix: Vec<&str> = if is_root() {
        vec![]
    } else if Command::new("sudo").args(["-n", "true"]).status().is_ok_and(|s| s.success()) {
        vec!["sudo", "-n"]
    } else {
        return Err(format!(
            "these system packages are missing and I cannot install them (not root, and sudo needs a password):\n    sudo apt-get install -y {}\nRun that, then try again.",
            missing.join(" ")
        ));
    };
    run_apt(&prefix, &["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&missing);
    run_apt(&prefix, &install)
}

fn run_apt(prefix: &[&str], args: &[&str]) -> Result {
    let mut command = match prefix.split_first() {
        Some((sudo, rest)) => {
            let mut c = Command::new(sudo);
            c.args(rest).arg("apt-get");
            c
        }
        None => Command::new("apt-get"),
    };
    command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    let status = command.status().map_err(|e| format!("could not run apt-get: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("apt-get {} failed ({status})", args.join(" "))) }
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The path of `program` on `PATH`, if any.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(program)).find(|p| p.is_file()))
}

/// `tauri-driver` (the WebDriver bridge to the app), installed with cargo when missing
/// (about 35 s).
pub fn ensure_tauri_driver() -> Result {
    if which("tauri-driver").is_some() {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut install = Command::new(cargo);
    install.args(["install", "tauri-driver", "--locked"]);
    crate::step("cargo install tauri-driver --locked", install)?;
    if which("tauri-driver").is_none() {
        return Err("tauri-driver was installed but is not on PATH: add ~/.cargo/bin to PATH".into());
    }
    Ok(())
}

//! The app's front end (`ui/`): Node.js checked (and installed from apt when missing), the
//! locked npm dependencies installed, then (for tests) ESLint, Prettier's check and Vitest,
//! then type-check and the Vite build into `ui/dist`, which the app embeds at compile time
//! (so this runs before any cargo build).

use std::process::Command;

use crate::{Result, setup, step, workspace_root};

/// The oldest Node.js Vite 7 runs on.
const NODE_MAJOR_MIN: u32 = 20;

/// Builds `ui/dist` (and with `test`, lints, checks the formatting and runs the UI's unit
/// tests first).
pub fn build(test: bool) -> Result {
    ensure_node()?;
    let ui = workspace_root().join("ui");
    let npm = |args: &[&str]| {
        let mut command = Command::new("npm");
        command.args(args).current_dir(&ui);
        command
    };
    // `npm install` with the committed lock installs exactly the locked versions. Not `npm
    // ci`: npm 11 writes a lock holding only this platform's optional packages (rollup's,
    // esbuild's) and then its own `npm ci` refuses that lock as out of sync.
    if !ui.join("node_modules").exists() || std::env::var_os("CI").is_some() {
        step("npm install (ui, locked versions)", npm(&["install", "--no-audit", "--no-fund"]))?;
    }
    if test {
        // typescript-eslint's strict type-checked rules, then Prettier's formatting, as
        // `cargo fmt --check` and clippy hold the Rust code.
        step("eslint (ui)", npm(&["run", "lint"]))?;
        step("prettier --check (ui)", npm(&["run", "format:check"]))?;
        step("vitest (ui)", npm(&["test"]))?;
    }
    step("tsc and vite build (ui)", npm(&["run", "build"]))
}

fn ensure_node() -> Result {
    if setup::which("node").is_none() || setup::which("npm").is_none() {
        setup::ensure_packages(&["nodejs", "npm"])?;
    }
    let version = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node: {e}"))?;
    let version = String::from_utf8_lossy(&version.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < NODE_MAJOR_MIN {
        return Err(format!(
            "Node.js {} is too old for the UI's build (Vite needs {NODE_MAJOR_MIN} or later): install a current Node.js (https://nodejs.org), then run again",
            version.trim()
        ));
    }
    Ok(())
}

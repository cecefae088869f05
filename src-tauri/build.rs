//! Generates the app's permission manifest: one `allow-<command>` per command below, and
//! nothing else, so the window's capability (capabilities/main.json) can grant exactly the
//! app's own commands (an app without a manifest would allow every command to any window).

fn main() {
    let manifest = tauri_build::AppManifest::new().commands(carekeep_commands::ALL);
    tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)).expect("tauri-build failed");
}

#[path = "src/commands/names.rs"]
mod carekeep_commands;

//! Carekeep, the app: a thin Tauri 2 shell over carekeep-core (DESIGN.md §1, §3, §5).
//!
//! The shell decides nothing about security: the core says whether the account is unlocked,
//! what may be shown and when to lock. The shell adapts — it creates the one window
//! (content-protected, no navigation away from the bundled UI), turns window and OS events
//! into the core's lifecycle calls, ticks the core's timers, and exposes the UI's commands
//! (`commands/`), which the window's capability grants and nothing else.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod clipboard;
mod commands;
mod config;
mod lifecycle;
mod messages;
mod platform;
mod shell;
mod views;
mod window;

use tauri::Manager as _;

fn main() {
    let shell = match shell::Shell::from_environment() {
        Ok(shell) => shell,
        Err(message) => {
            eprintln!("carekeep-app: {message}");
            std::process::exit(2);
        }
    };
    let app = tauri::Builder::default()
        .manage(shell)
        .invoke_handler(commands::handler())
        .setup(|app| {
            window::open_main(app.handle())?;
            app.state::<shell::Shell>().clipboard.attach(app.handle());
            lifecycle::start(app.handle());
            Ok(())
        })
        .on_window_event(lifecycle::on_window_event)
        .build(tauri::generate_context!());
    match app {
        Ok(app) => app.run(|_, _| {}),
        Err(e) => {
            eprintln!("carekeep-app: the window could not be created: {e}");
            std::process::exit(1);
        }
    }
}

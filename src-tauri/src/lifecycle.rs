//! Window and OS events to the core's lifecycle (DESIGN §3, §5): the idle timer ticks every
//! second; minimising (Tauri has no event for it: a resize to a minimised window), losing
//! focus (where the person chose lock-on-blur), a mobile app's `Suspended`/`Resumed` and the
//! OS screen lock report to the core,
//! and whenever the core locks, the UI is told at once to wipe its views.

use std::time::Duration;

use carekeep_core::account::Account;
use tauri::{AppHandle, Manager, Window, WindowEvent};

use crate::messages::{LockNotice, LockReason};
use crate::shell::Shell;

/// Starts the idle ticker and the OS screen-lock watcher.
pub fn start(app: &AppHandle) {
    let ticker = app.clone();
    tauri::async_runtime::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            let shell = ticker.state::<Shell>();
            // Busy (a sync, a slow server): the timers wait for the command, unless the idle
            // limit has passed meanwhile — then the command lets go and the lock happens now.
            let Ok(mut slot) = shell.account.try_lock() else {
                if shell.idle_overdue() {
                    // Once: the next tick that holds the account reads the limit again.
                    shell.note_idle_limit(None);
                    apply(&ticker, Account::tick, LockReason::Idle);
                }
                continue;
            };
            shell.note_idle_limit(slot.as_ref().and_then(Account::idle_limit));
            if slot.as_mut().is_some_and(Account::tick) {
                drop(slot);
                shell.notify_locked(LockNotice { reason: LockReason::Idle });
            }
        }
    });
    let watcher = app.clone();
    crate::platform::watch_os_lock(move || apply(&watcher, Account::os_locked, LockReason::OsLocked));
}

/// Window events: minimise and focus loss may lock; protection is re-applied on return.
pub fn on_window_event(window: &Window, event: &WindowEvent) {
    match event {
        WindowEvent::Resized(_) if window.is_minimized().unwrap_or(false) => {
            apply(window.app_handle(), Account::backgrounded, LockReason::Background);
        }
        WindowEvent::Focused(false) if window.state::<Shell>().lock_on_blur() => {
            apply(window.app_handle(), Account::backgrounded, LockReason::FocusLost);
        }
        WindowEvent::Focused(true) => {
            // Some systems drop content protection across minimise and restore.
            crate::window::protect(window);
            apply(window.app_handle(), Account::foregrounded, LockReason::Background);
        }
        // Android's onPause, iOS's applicationWillResignActive: before the app switcher's
        // snapshot, so the cover goes on at once, here on the main thread. (Built for
        // mobile targets only; this machine builds desktop.)
        #[cfg(mobile)]
        WindowEvent::Suspended => {
            crate::platform::cover_for_background(window, true);
            apply(window.app_handle(), Account::backgrounded, LockReason::Background);
        }
        #[cfg(mobile)]
        WindowEvent::Resumed => {
            crate::window::protect(window);
            crate::platform::cover_for_background(window, false);
            apply(window.app_handle(), Account::foregrounded, LockReason::Background);
        }
        _ => {}
    }
}

/// The webview's renderer died (a crash, or the system reclaimed its memory): the page and
/// all it showed are gone. The account locks as a walk-away lock does (password next), and
/// the bundled UI starts again, on the lock screen. Nothing is lost: the records are in the
/// vault and unsent changes in its outbox.
pub fn renderer_lost(app: &AppHandle) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let shell = app.state::<Shell>();
        if let Some(account) = shell.account_for_lock().await.as_mut() {
            // The keys are dropped before anything can fail here.
            let _ = account.lock();
        }
        // The old page cannot hear it: the notice waits for the reloaded one.
        shell.notify_locked_after_reload(LockNotice { reason: LockReason::RendererLost });
        if let Some(window) = app.get_webview_window("main") {
            let _ = window.reload();
        }
    });
}

/// Reports a lifecycle `event` to the account (if one is open) on the async runtime, at
/// once — a command holding the account (a sync, a slow server) is made to let go; if the
/// core locked because of it, tells the UI to wipe its views, naming `reason`.
fn apply(app: &AppHandle, event: fn(&mut Account) -> bool, reason: LockReason) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let shell = app.state::<Shell>();
        let locked = shell.account_for_lock().await.as_mut().is_some_and(event);
        if locked {
            shell.notify_locked(LockNotice { reason });
        }
    });
}

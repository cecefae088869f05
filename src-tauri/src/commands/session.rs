//! Signing in, unlocking, locking, signing out: the session's commands. Passwords arrive as
//! strings from the form and go straight into a [`Password`], which wipes them on drop.

use std::sync::Arc;

use carekeep_core::account::{Account, SignIn};
use carekeep_core::error::CacheError;
use carekeep_core::{Error, Password, SystemClock};
use tauri::State;
use tauri::ipc::Channel;

use super::account;
use crate::messages::{LockNotice, LockReason};
use crate::shell::Shell;
use crate::views::{CommandResult, SessionView};

/// The device's name in the user's device list (no PHI).
const DEVICE_NAME: &str = "Carekeep app";

/// Where things stand: picks the screen (sign-in, lock, records).
#[tauri::command]
pub async fn session(shell: State<'_, Shell>) -> CommandResult<SessionView> {
    let mut slot = shell.account.lock().await;
    match shell.ensure_open(&mut slot) {
        Ok(()) => Ok(SessionView::of(&slot.as_mut().expect("opened").status())),
        Err(Error::Cache(CacheError::NoVault)) => Ok(SessionView::signed_out(shell.server.url.as_str())),
        Err(e) => Err(e.into()),
    }
}

/// A full sign-in (password and authenticator code) at the pinned server: creates the
/// cache at the first one; afterwards it renews the session — re-authentication after the
/// 12-hour window, and step-up before a high-risk action (export, break-glass).
#[tauri::command]
pub async fn sign_in(
    shell: State<'_, Shell>,
    username: String,
    password: String,
    code: String,
) -> CommandResult<SessionView> {
    full_sign_in(&shell, &username, Password::new(password), &code).await
}

async fn full_sign_in(shell: &Shell, username: &str, password: Password, code: &str) -> CommandResult<SessionView> {
    let mut slot = shell.account.lock().await;
    // The account in memory (if any) is replaced: its audit records are queued as it goes.
    slot.take();
    let request = SignIn {
        url: shell.server.url.clone(),
        pins: shell.server.pins.clone(),
        username,
        password: &password,
        code,
        device_name: DEVICE_NAME,
    };
    let signing_in = Account::sign_in(&shell.profile, Shell::keychain(), Arc::new(SystemClock), request);
    let mut account = shell.until_lock(signing_in).await?;
    let view = SessionView::of(&account.status());
    *slot = Some(account);
    Ok(view)
}

/// Unlocks with the password (inside the offline grace; after it, a full sign-in).
#[tauri::command]
pub async fn unlock_with_password(shell: State<'_, Shell>, password: String) -> CommandResult<SessionView> {
    let password = Password::new(password);
    let mut account = account(&shell).await?;
    account.unlock_with_password(&password)?;
    Ok(SessionView::of(&account.status()))
}

/// Unlocks with the system's presence check (polkit / Touch ID / Windows Hello) and the
/// keychain's device key, where the session's rules allow it.
#[tauri::command]
pub async fn unlock_with_presence(shell: State<'_, Shell>) -> CommandResult<SessionView> {
    let mut account = account(&shell).await?;
    let presence = carekeep_core::presence::for_this_os();
    // The check may wait for the person at a system dialog: not on an async worker.
    tokio::task::block_in_place(|| account.unlock_with_device_key(presence.as_ref()))?;
    Ok(SessionView::of(&account.status()))
}

/// Locks now, by the person's choice (the password unlocks next).
#[tauri::command]
pub async fn lock(shell: State<'_, Shell>) -> CommandResult<SessionView> {
    let mut account = account(&shell).await?;
    account.lock()?;
    let view = SessionView::of(&account.status());
    drop(account);
    shell.notify_locked(LockNotice { reason: LockReason::Manual });
    Ok(view)
}

/// The person did something: the idle timer restarts (the UI sends this at most every few
/// seconds while keys or pointer move).
#[tauri::command]
pub async fn user_active(shell: State<'_, Shell>) -> CommandResult<()> {
    shell.note_input();
    if let Some(account) = shell.account.lock().await.as_mut() {
        account.user_input();
    }
    Ok(())
}

/// Where the shell sends lock notices; the UI wipes its views on each.
#[tauri::command]
#[expect(clippy::needless_pass_by_value, reason = "Tauri hands commands their State by value")]
pub fn watch_lock(shell: State<'_, Shell>, on_lock: Channel<LockNotice>) {
    shell.set_lock_channel(on_lock);
}

/// Signs out: the server revokes this device, the keychain items go (and on shared
/// workstations, by policy, the cache). The UI wipes its views.
#[tauri::command]
pub async fn logout(shell: State<'_, Shell>) -> CommandResult<LogoutView> {
    let out = super::end_session(&shell, Account::logout).await?;
    Ok(LogoutView { revoked_at_server: out.revoked_at_server, cache_wiped: out.cache_wiped })
}

/// How a sign-out went.
#[derive(serde::Serialize)]
pub struct LogoutView {
    /// The server ended this device's session (false: unreachable; it ends at its idle limit).
    pub revoked_at_server: bool,
    /// The cache was erased too (shared-workstation policy).
    pub cache_wiped: bool,
}

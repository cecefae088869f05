//! The UI's commands: thin adapters from the webview to the core, one module per concern.
//! Each takes typed arguments, calls the core, and returns a view or a [`CommandError`];
//! none decides anything the core should. `names.rs` lists them for the permission
//! manifest, and a test keeps that list, the handler and the capability in step.

mod documents;
mod names;
mod records;
mod security;
mod session;
mod sync;
mod writes;

use tauri::State;
use tokio::sync::MutexGuard;

use carekeep_core::account::{Account, LoggedOut};

use crate::messages::{ErrorScreen, LockNotice, LockReason};
use crate::shell::Shell;
use crate::views::{CommandError, CommandResult};

/// The invoke handler with every command of [`names::ALL`].
pub fn handler() -> impl Fn(tauri::ipc::Invoke<tauri::Wry>) -> bool + Send + Sync + 'static {
    tauri::generate_handler![
        session::session,
        session::sign_in,
        session::unlock_with_password,
        session::unlock_with_presence,
        session::lock,
        session::user_active,
        session::watch_lock,
        session::logout,
        sync::sync,
        records::records,
        records::lab_trend,
        records::access_log,
        records::export_patient,
        sync::break_glass,
        writes::record_reading,
        writes::request_appointment,
        writes::message_care_team,
        writes::pending,
        writes::resolve_write,
        security::security,
        security::set_lock_on_blur,
        security::devices,
        security::revoke_device,
        security::sign_out_everywhere,
        security::begin_authenticator_change,
        security::confirm_authenticator,
        security::copy_text,
        records::server_access_log,
        documents::open_document,
    ]
}

/// The account, which must exist (someone signed in) — opened locked if not yet in memory.
async fn account<'a>(shell: &'a State<'_, Shell>) -> CommandResult<AccountGuard<'a>> {
    let mut guard = shell.account.lock().await;
    shell.ensure_open(&mut guard)?;
    Ok(AccountGuard(guard))
}

/// Ends the session with `end` (`Account::logout` or `Account::sign_out_everywhere`, which
/// consume the account), then tells the UI to wipe its views.
async fn end_session<Ends>(shell: &State<'_, Shell>, end: impl FnOnce(Account) -> Ends) -> CommandResult<LoggedOut>
where
    Ends: Future<Output = carekeep_core::Result<LoggedOut>>,
{
    let mut slot = shell.account.lock().await;
    shell.ensure_open(&mut slot)?;
    let account = slot.take().expect("ensure_open filled the slot");
    let out = end(account).await?;
    drop(slot);
    shell.notify_locked(LockNotice { reason: LockReason::Manual });
    Ok(out)
}

/// Holds the account while a command uses it.
struct AccountGuard<'a>(MutexGuard<'a, Option<Account>>);

impl std::ops::Deref for AccountGuard<'_> {
    type Target = Account;
    fn deref(&self) -> &Account {
        self.0.as_ref().expect("ensure_open filled the slot")
    }
}

impl std::ops::DerefMut for AccountGuard<'_> {
    fn deref_mut(&mut self) -> &mut Account {
        self.0.as_mut().expect("ensure_open filled the slot")
    }
}

impl From<&'static str> for CommandError {
    /// A problem with what the person typed, with what to change.
    fn from(problem: &'static str) -> Self {
        Self { next: ErrorScreen::Fix, step: None, message: problem.to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::names::ALL;

    /// The capability grants exactly the app's commands: one `allow-` permission per name,
    /// and nothing else (no core, window, event, file-system or shell permission).
    #[test]
    fn the_capability_grants_exactly_the_apps_commands() {
        let capability: serde_json::Value = serde_json::from_str(include_str!("../../capabilities/main.json")).unwrap();
        let granted: Vec<&str> = capability["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let expected: Vec<String> = ALL.iter().map(|c| format!("allow-{}", c.replace('_', "-"))).collect();
        assert_eq!(granted, expected);
        assert_eq!(capability["windows"], serde_json::json!(["main"]));
        assert!(capability.get("remote").is_none(), "no remote origin may call a command");
    }

    /// Every command in the handler is in the manifest list (a command missing from it could
    /// never be granted; one missing from the handler would be a dead permission).
    #[test]
    fn the_handler_and_the_manifest_name_the_same_commands() {
        let source = include_str!("mod.rs");
        let start = source.find("generate_handler![").unwrap() + "generate_handler![".len();
        let end = start + source[start..].find(']').unwrap();
        let mut handled: Vec<&str> = source[start..end]
            .split(',')
            .filter_map(|entry| entry.trim().rsplit("::").next())
            .filter(|name| !name.is_empty())
            .collect();
        let mut listed = ALL.to_vec();
        handled.sort_unstable();
        listed.sort_unstable();
        assert_eq!(handled, listed);
    }
}

//! The security settings screen: the timeouts in force, what this platform can and cannot
//! protect (said plainly), and the user's devices.

use carekeep_core::account::Account;
use carekeep_core::error::ServerError;
use carekeep_protocol::auth::DeviceInfo;
use serde::Serialize;
use tauri::State;

use super::account;
use crate::platform;
use crate::shell::Shell;
use crate::views::CommandResult;

/// What the settings screen shows.
#[derive(Serialize)]
pub struct SecurityView {
    /// Lock after this long without input (seconds).
    pub idle_lock_secs: u64,
    /// Whether this window is kept out of screenshots and screen sharing.
    pub screen_capture_blocked: bool,
    /// Whether a lock of the OS session locks the app.
    pub follows_os_lock: bool,
    /// Whether losing focus locks the app now.
    pub lock_on_blur: bool,
    /// What this platform can and cannot do, one sentence each.
    pub platform_notes: Vec<&'static str>,
}

/// The settings in force.
#[tauri::command]
pub async fn security(shell: State<'_, Shell>) -> CommandResult<SecurityView> {
    let status = account(&shell).await?.status();
    Ok(SecurityView {
        idle_lock_secs: status.idle_lock.as_secs(),
        screen_capture_blocked: platform::CAN_BLOCK_CAPTURE,
        follows_os_lock: platform::FOLLOWS_OS_LOCK,
        lock_on_blur: shell.lock_on_blur(),
        platform_notes: platform::NOTES.to_vec(),
    })
}

/// Turns lock-on-blur on or off.
#[tauri::command]
#[expect(clippy::needless_pass_by_value, reason = "Tauri hands commands their State by value")]
pub fn set_lock_on_blur(shell: State<'_, Shell>, on: bool) {
    shell.set_lock_on_blur(on);
}

/// The user's devices at the server, this one marked.
#[tauri::command]
pub async fn devices(shell: State<'_, Shell>) -> CommandResult<Vec<DeviceInfo>> {
    let mut account = account(&shell).await?;
    Ok(shell.until_lock(account.devices()).await?)
}

/// Signs another of the user's devices out (a lost phone): it erases its copy at its next
/// contact.
#[tauri::command]
pub async fn revoke_device(shell: State<'_, Shell>, device_id: String) -> CommandResult<()> {
    let mut account = account(&shell).await?;
    Ok(shell.until_lock(account.revoke_device(&device_id)).await?)
}

/// A new authenticator to scan: shown once, held by nothing but the screen showing it.
#[derive(Serialize)]
pub struct AuthenticatorSetup {
    /// The QR code, PNG, base64 (shown as a `data:` image).
    pub qr_png_base64: carekeep_protocol::Secret,
    /// The same secret to type in by hand, base32 in groups of four.
    pub setup_key: carekeep_protocol::Secret,
}

/// Starts replacing the authenticator (needs a recent full sign-in: `step-up` otherwise).
#[tauri::command]
pub async fn begin_authenticator_change(shell: State<'_, Shell>) -> CommandResult<AuthenticatorSetup> {
    let mut account = account(&shell).await?;
    let enrollment = shell.until_lock(account.begin_authenticator_change()).await?;
    drop(account);
    let uri = tauri::Url::parse(enrollment.otpauth_uri.expose())
        .map_err(|_| carekeep_core::Error::Server(ServerError::ServerMalformed))?;
    let secret = uri
        .query_pairs()
        .find(|(name, _)| name == "secret")
        .map(|(_, value)| value.into_owned())
        .ok_or(carekeep_core::Error::Server(ServerError::ServerMalformed))?;
    let grouped: Vec<String> = secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    Ok(AuthenticatorSetup {
        qr_png_base64: enrollment.qr_png_base64,
        setup_key: carekeep_protocol::Secret::new(grouped.join(" ")),
    })
}

/// Makes the new authenticator the only one, given a code from it.
#[tauri::command]
pub async fn confirm_authenticator(shell: State<'_, Shell>, code: String) -> CommandResult<()> {
    let mut account = account(&shell).await?;
    Ok(shell.until_lock(account.confirm_authenticator(&code)).await?)
}

/// Signs out every device of the user, this one last; the UI wipes its views.
#[tauri::command]
pub async fn sign_out_everywhere(shell: State<'_, Shell>) -> CommandResult<()> {
    super::end_session(&shell, Account::sign_out_everywhere).await?;
    Ok(())
}

/// Copies text the person selected to the clipboard, to be taken back after
/// [`crate::clipboard::CLEAR_AFTER`] or at the next lock.
#[tauri::command]
#[expect(clippy::needless_pass_by_value, reason = "Tauri hands commands their State by value")]
pub fn copy_text(shell: State<'_, Shell>, text: String) -> CommandResult<()> {
    Ok(shell.clipboard.copy(text)?)
}

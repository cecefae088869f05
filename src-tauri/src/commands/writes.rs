//! Writes a patient makes — a home reading, an appointment request, a message — go to the
//! core's outbox and show at once as pending; the next sync sends them.

use carekeep_core::account::HomeReading;
use carekeep_core::{Clock as _, SystemClock};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tauri::State;

use super::account;
use crate::messages::WriteStatus;
use crate::shell::Shell;
use crate::views::CommandResult;

/// A home reading as the form sends it.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ReadingForm {
    /// Blood pressure, mmHg.
    BloodPressure {
        /// Systolic.
        systolic: u16,
        /// Diastolic.
        diastolic: u16,
    },
    /// Glucose, mmol/L.
    Glucose {
        /// The value.
        mmol_per_l: f64,
    },
}

/// Queues a home reading; returns its place in the outbox.
#[tauri::command]
pub async fn record_reading(shell: State<'_, Shell>, patient: String, reading: ReadingForm) -> CommandResult<i64> {
    let reading = match reading {
        ReadingForm::BloodPressure { systolic, diastolic } => HomeReading::BloodPressure { systolic, diastolic },
        ReadingForm::Glucose { mmol_per_l } => HomeReading::Glucose { mmol_per_l },
    };
    Ok(account(&shell)
        .await?
        .record_reading(&patient, reading, SystemClock.now_unix())?
        .seq)
}

/// Queues an appointment request for a preferred start (Unix seconds).
#[tauri::command]
pub async fn request_appointment(
    shell: State<'_, Shell>,
    patient: String,
    reason: String,
    preferred_start_unix: i64,
) -> CommandResult<i64> {
    Ok(account(&shell)
        .await?
        .request_appointment(&patient, &reason, preferred_start_unix)?
        .seq)
}

/// Queues a message to the care team.
#[tauri::command]
pub async fn message_care_team(shell: State<'_, Shell>, patient: String, text: String) -> CommandResult<i64> {
    Ok(account(&shell)
        .await?
        .message_care_team(&patient, &text, SystemClock.now_unix())?
        .seq)
}

/// One write not yet on the server, or set aside by it.
#[derive(Serialize)]
pub struct PendingView {
    /// Its number on this device.
    pub seq: i64,
    /// Waiting, in conflict, or refused.
    pub status: WriteStatus,
    /// The resource as written here.
    pub resource: Value,
    /// For a conflict: the server's version, to show side by side.
    pub server_version: Option<Value>,
    /// For a set-aside write: the server's reason, in its words.
    pub reason: Option<String>,
}

/// Writes waiting for upload, then those the server refused or found in conflict.
#[tauri::command]
pub async fn pending(shell: State<'_, Shell>) -> CommandResult<Vec<PendingView>> {
    let mut account = account(&shell).await?;
    let parse = |json: &str| serde_json::from_str(json).unwrap_or(Value::Null);
    let mut views: Vec<PendingView> = account
        .pending_writes()?
        .into_iter()
        .map(|w| PendingView {
            seq: w.seq,
            status: WriteStatus::Pending,
            resource: parse(&w.body),
            server_version: None,
            reason: None,
        })
        .collect();
    for aside in account.set_aside_writes()? {
        views.push(PendingView {
            seq: aside.seq,
            status: match aside.kind {
                carekeep_core::store::SetAsideKind::Conflict => WriteStatus::Conflict,
                carekeep_core::store::SetAsideKind::Rejected => WriteStatus::Rejected,
            },
            resource: parse(&aside.write.body),
            server_version: aside.server_version.as_deref().map(parse),
            reason: Some(aside.reason),
        });
    }
    Ok(views)
}

/// Settles a set-aside write as the person chose: keep theirs (sent again over the
/// server's current version) or discard it (the server's version stands).
#[tauri::command]
pub async fn resolve_write(shell: State<'_, Shell>, seq: i64, keep_mine: bool) -> CommandResult<()> {
    use carekeep_core::store::Resolution;
    let resolution = if keep_mine { Resolution::KeepMine } else { Resolution::Discard };
    Ok(account(&shell).await?.resolve(seq, resolution)?)
}

//! Syncing with the server (progress to the UI's bar) and the clinician's break-glass.

use carekeep_core::account::sync::Progress;
use serde::Serialize;
use tauri::State;
use tauri::ipc::Channel;

use super::account;
use crate::shell::Shell;
use crate::views::{CommandResult, SyncProgressView};

/// What a sync did, for the UI's summary line.
#[derive(Serialize)]
pub struct SyncView {
    /// Queued writes the server accepted.
    pub writes_sent: usize,
    /// Writes set aside: the record changed on the server meanwhile.
    pub conflicts: usize,
    /// Writes the server refused (with its reason, under Pending).
    pub rejected: usize,
    /// Patients kept on this device.
    pub patients: usize,
    /// Patients on the list beyond what this device may keep (open them on demand).
    pub patients_over_limit: usize,
    /// Resources stored or refreshed.
    pub resources_pulled: usize,
}

/// Uploads the access log and queued writes, then downloads what changed; each step goes
/// to `on_progress`. Offline, the error says so and the cache keeps working.
#[tauri::command]
pub async fn sync(shell: State<'_, Shell>, on_progress: Channel<SyncProgressView>) -> CommandResult<SyncView> {
    let mut account = account(&shell).await?;
    let mut report_progress = |p: Progress| {
        // A closed channel only means the page stopped listening.
        let _ = on_progress.send(SyncProgressView { phase: p.phase.label(), done: p.done, total: p.total });
    };
    let report = shell.until_lock(account.sync(&mut report_progress)).await?;
    Ok(SyncView {
        writes_sent: report.writes_sent,
        conflicts: report.conflicts,
        rejected: report.rejected,
        patients: report.patients,
        patients_over_limit: report.patients_over_limit,
        resources_pulled: report.resources_pulled,
    })
}

/// Break-glass: a clinician opens a patient outside their care team, with a reason kept for
/// review (the core asks for step-up first, and the server flags every access).
#[tauri::command]
pub async fn break_glass(shell: State<'_, Shell>, patient: String, reason: String) -> CommandResult<usize> {
    let mut account = account(&shell).await?;
    Ok(shell.until_lock(account.break_glass(&patient, &reason)).await?)
}

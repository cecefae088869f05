//! Reading the cache: resources by type, lab trends, the device's access log, and export.
//! Every read goes through the core, which logs it in the access log.
//!
//! FHIR narrative (`text`) is untrusted HTML from the server: the core hands out no view
//! with it (every view is narrative-free), and the UI renders structured fields as
//! text only, so a `<script>` or an `onerror=` in a narrative has nowhere to run.

use carekeep_core::error::CacheError;
use carekeep_core::store::{CodeFilter, ResourceQuery};
use serde::Serialize;
use serde_json::Value;
use tauri::State;

use super::account;
use crate::shell::Shell;
use crate::views::CommandResult;

/// Cached resources of one type (of one patient, or of all the patients kept), oldest first,
/// as the core shows them (without narrative).
#[tauri::command]
pub async fn records(
    shell: State<'_, Shell>,
    resource_type: String,
    patient: Option<String>,
    category: Option<String>,
) -> CommandResult<Vec<Value>> {
    if !is_resource_type(&resource_type) {
        return Err("not a FHIR resource type".into());
    }
    let query = ResourceQuery {
        patient: patient.as_deref().map(carekeep_core::store::patient_reference),
        resource_type,
        category,
        ..ResourceQuery::default()
    };
    let found = account(&shell).await?.read_records(&query)?;
    Ok(found.iter().filter_map(|r| serde_json::from_str(&r.json).ok()).collect())
}

/// One point of a trend chart.
#[derive(Serialize)]
pub struct TrendPointView {
    /// When (sortable UTC, e.g. `2024-03-01T08:00:00Z`).
    pub effective: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: Option<String>,
}

/// One patient's values of one code (`system|code` or `code`), in date order: a chart.
#[tauri::command]
pub async fn lab_trend(shell: State<'_, Shell>, patient: String, code: String) -> CommandResult<Vec<TrendPointView>> {
    let code = CodeFilter::parse(&code)?;
    let points = account(&shell).await?.lab_trend(&patient, &code)?;
    Ok(points
        .into_iter()
        .map(|p| TrendPointView { effective: p.effective, value: p.value, unit: p.unit })
        .collect())
}

/// One record of the device's access log.
#[derive(Serialize)]
pub struct AccessView {
    /// When (RFC 3339).
    pub at: String,
    /// The role that looked.
    pub role: Option<String>,
    /// What was done (`read from the device cache`, `exported …`).
    pub action: String,
    /// Which kind of record.
    pub resource_type: Option<String>,
    /// Whose record (opaque id).
    pub patient: Option<String>,
}

/// The newest views of records made on this device (also uploaded to the server's trail).
#[tauri::command]
pub async fn access_log(shell: State<'_, Shell>) -> CommandResult<Vec<AccessView>> {
    let mut account = account(&shell).await?;
    let log = account.store()?.access_log(200)?;
    Ok(log
        .into_iter()
        .map(|(_, record)| AccessView {
            at: record.event.occurred_at.unwrap_or(record.event.recorded_at),
            role: record.event.role,
            action: record.event.action,
            resource_type: record.event.resource_type,
            patient: record.event.patient,
        })
        .collect())
}

/// The newest accesses to the patient's records in the organisation's audit trail (needs
/// the server: offline, the UI shows this device's log alone).
#[tauri::command]
pub async fn server_access_log(shell: State<'_, Shell>) -> CommandResult<Vec<carekeep_core::account::ServerAccess>> {
    let mut account = account(&shell).await?;
    Ok(shell.until_lock(account.server_access_history()).await?)
}

/// Where an export was saved, and what it could not include.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportView {
    /// The FHIR Bundle (documents inside).
    pub bundle: String,
    /// The summary page a person reads.
    pub summary: String,
    /// Documents not on this device that could not be fetched now.
    pub documents_missing: usize,
}

/// Saves one patient's cached record in the Downloads folder, readable only by this user:
/// the FHIR Bundle with the documents inside, and a summary page beside it. A high-risk
/// action: the core asks for step-up (a full sign-in within minutes) first.
#[tauri::command]
pub async fn export_patient(
    shell: State<'_, Shell>,
    app: tauri::AppHandle,
    patient: String,
) -> CommandResult<ExportView> {
    use tauri::Manager as _;
    let mut account = account(&shell).await?;
    let export = shell.until_lock(account.export_patient(&patient)).await?;
    let dir = app
        .path()
        .download_dir()
        .or_else(|_| app.path().home_dir().map(|home| home.join("Downloads")))
        .map_err(|_| "no Downloads folder was found for this user")?;
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let bundle = dir.join(format!("carekeep-export-{stamp}.json"));
    let summary = dir.join(format!("carekeep-summary-{stamp}.html"));
    for (path, bytes) in [(&bundle, export.bundle.as_bytes()), (&summary, export.summary_html.as_bytes())] {
        crate::platform::write_private_file(path, bytes).map_err(|e| match e.kind() {
            std::io::ErrorKind::StorageFull => carekeep_core::Error::Cache(CacheError::DiskFull),
            kind => carekeep_core::Error::Cache(CacheError::Io { action: "save the export", kind }),
        })?;
    }
    Ok(ExportView {
        bundle: bundle.display().to_string(),
        summary: summary.display().to_string(),
        documents_missing: export.documents_missing,
    })
}

/// A resource type is a capitalised ASCII word (`Observation`): nothing else reaches a query.
fn is_resource_type(name: &str) -> bool {
    name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::is_resource_type;

    #[test]
    fn only_resource_type_names_are_queried() {
        assert!(is_resource_type("Observation"));
        assert!(!is_resource_type("observation") && !is_resource_type("Patient/1") && !is_resource_type(""));
    }
}

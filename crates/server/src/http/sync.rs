//! What devices need to sync besides FHIR: whether anything changed (`GET /sync/status`),
//! the deletions to apply to their cache (`GET /sync/removed`) and the audit records they
//! kept locally (`POST /audit/device`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use carekeep_protocol::sync::{
    DeviceAuditReceipt, DeviceAuditUpload, PatientChanges, RemovedPage, RemovedResource, SyncStatus,
};
use time::format_description::well_known::Rfc3339;

use super::AppState;
use super::audit::AuditSlot;
use super::error::ApiError;
use super::grant::{Ask, authorize};
use crate::audit::device::{self, UploadError};
use crate::auth::Principal;
use crate::records::{Data, Decision, DeletionScope, Intent};

/// Deletions per answer.
const REMOVED_PER_PAGE: u32 = 1000;

/// `after=`: the last deletion the device has applied (0 at first).
#[derive(serde::Deserialize)]
pub struct After {
    #[serde(default)]
    after: i64,
}

/// `GET /sync/status`: the patients the caller may keep (those a Patient search would
/// return), each with its latest change, and the newest deletion — one request tells a
/// device whether it has anything to pull.
pub async fn status(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
) -> Result<Response, ApiError> {
    // Each patient and deletion is decided by the caller's access.
    let grant = authorize(caller, &slot, Ask::PerRecord)?;
    let access = grant.access(&state).await?;
    let filter = access.read_filter(Data::Demographics);
    let (records, tenant) = (state.records.clone(), grant.tenant().to_owned());
    let Ok(Ok((patients, removed_through))) =
        tokio::task::spawn_blocking(move || records.sync_status(&tenant, &filter, &DeletionScope::of(&access))).await
    else {
        tracing::error!("records store failed");
        return Err(ApiError::Internal);
    };
    let patients = patients
        .into_iter()
        .map(|(id, changed_at)| PatientChanges { id, changed_at })
        .collect();
    Ok(Json(SyncStatus { patients, removed_through }).into_response())
}

/// `GET /sync/removed?after=N`: resources deleted since the device's last sync, limited to
/// those the caller may read (the rest were never on the device).
pub async fn removed(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    Query(After { after }): Query<After>,
) -> Result<Response, ApiError> {
    // Each deletion is decided by the caller's access.
    let grant = authorize(caller, &slot, Ask::PerRecord)?;
    let access = grant.access(&state).await?;
    let (records, tenant, scope) = (state.records.clone(), grant.tenant().to_owned(), DeletionScope::of(&access));
    let found =
        tokio::task::spawn_blocking(move || records.removed_after(&tenant, &scope, after, REMOVED_PER_PAGE)).await;
    let Ok(Ok(found)) = found else {
        tracing::error!("records store failed");
        return Err(ApiError::Internal);
    };
    let more = found.len() == REMOVED_PER_PAGE as usize;
    let last = found.last().map_or(after, |r| r.seq);
    let removed = found
        .into_iter()
        .filter(|r| readable(&access, r))
        .map(|r| RemovedResource { resource_type: r.resource_type, id: r.id })
        .collect();
    Ok(Json(RemovedPage { removed, after: last, more }).into_response())
}

/// Whether the caller may read what a deletion removed (so it was, or could have been, on
/// their device).
fn readable(access: &crate::records::Access, removed: &crate::records::Removed) -> bool {
    let data = Data::of(&removed.resource_type).unwrap_or(Data::Clinical);
    matches!(access.decide(data, removed.patient.as_deref(), Intent::Read), Decision::Allow { .. })
}

/// `POST /audit/device`: appends a batch of the caller's device audit records to the trail.
pub async fn upload_device_audit(
    State(state): State<AppState>,
    caller: Principal,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    super::json::Json(upload): super::json::Json<DeviceAuditUpload>,
) -> Response {
    let now = time::OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
    let records = state.records.clone();
    let ip = addr.ip().to_string();
    let accepted = tokio::task::spawn_blocking({
        let records = records.clone();
        move || device::accept(&records, &caller, &ip, &upload, &now)
    })
    .await;
    let accepted = match accepted {
        Ok(Ok(a)) => a,
        Ok(Err(UploadError::Invalid(why))) => {
            return super::operation_outcome(StatusCode::UNPROCESSABLE_ENTITY, "invalid", &why);
        }
        Ok(Err(UploadError::Store(e))) => {
            tracing::error!(error = %e, "device audit upload failed");
            return failed();
        }
        Err(_) => return failed(),
    };
    let (appended, continued, refused) = (accepted.events.len(), accepted.continued, accepted.refused);
    let events = accepted.events.clone();
    if state.audit.record(events).await.is_err() {
        return failed();
    }
    let remembered = tokio::task::spawn_blocking(move || accepted.remember_tip(&records)).await;
    if !matches!(remembered, Ok(Ok(()))) {
        return failed();
    }
    Json(DeviceAuditReceipt { appended, continued, refused }).into_response()
}

fn failed() -> Response {
    super::operation_outcome(
        StatusCode::INTERNAL_SERVER_ERROR,
        "exception",
        "The server could not store the device's audit records; keep them and try again.",
    )
}

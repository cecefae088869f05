//! FHIR Bulk Data export (async pattern, Bulk Data IG v2) for the clinic's administrators:
//! kick-off at `GET /fhir/$export` (the whole tenant), `GET /fhir/Patient/$export` (every
//! patient's compartment) or `GET /fhir/Group/{id}/$export` (the patients on one clinician's
//! or nurse's care team; the group is the user's id), then `GET /exports/{id}` until the
//! manifest is ready, then each file through its signed link, valid 15 minutes, for the
//! user who asked only. Taking a tenant's records out needs a fresh sign-in (step-up), and
//! every file fetched is audited once per patient whose records it holds.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carekeep_protocol::auth::Role;
use serde::Deserialize;

use super::AppState;
use super::audit::{AuditSlot, Touch};
use super::fhir::{base_url, blocking};
use crate::auth::Principal;
use crate::now;
use crate::records::access::{Data, SERVED_TYPES};
use crate::records::export::{Scope, Status};
use crate::records::links::{self, LINK_SECS};

/// The kick-off's parameters.
#[derive(Debug, Default, Deserialize)]
pub struct KickOff {
    #[serde(rename = "_type")]
    types: Option<String>,
    #[serde(rename = "_since")]
    since: Option<String>,
    #[serde(rename = "_outputFormat")]
    output_format: Option<String>,
}

/// `GET /fhir/$export`.
pub async fn system(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Query(query): Query<KickOff>,
) -> Response {
    kick_off(state, caller, slot, &headers, query, Scope::System, "/fhir/$export").await
}

/// `GET /fhir/Patient/$export`.
pub async fn patients(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Query(query): Query<KickOff>,
) -> Response {
    kick_off(state, caller, slot, &headers, query, Scope::Patients, "/fhir/Patient/$export").await
}

/// `GET /fhir/Group/{id}/$export`: the group is a clinician's or nurse's care team.
pub async fn group(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<KickOff>,
) -> Response {
    if caller.role != Role::Admin {
        return only_admins(&slot);
    }
    let (store, tenant, user) = (state.records.store().clone(), caller.tenant.clone(), id.clone());
    let member = tokio::task::spawn_blocking(move || {
        store
            .read()
            .query_row(
                "SELECT 1 FROM users WHERE tenant = ?1 AND id = ?2 AND role IN ('clinician', 'nurse')",
                [tenant, user],
                |_| Ok(()),
            )
            .is_ok()
    })
    .await
    .unwrap_or(false);
    if !member {
        return outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such group: a group is a clinician's or nurse's user id.",
        );
    }
    kick_off(state, caller, slot, &headers, query, Scope::CareTeam(id), "/fhir/Group/{id}/$export").await
}

fn only_admins(slot: &AuditSlot) -> Response {
    slot.deny();
    outcome(StatusCode::FORBIDDEN, "forbidden", "Only the clinic's administrators export records in bulk.")
}

async fn kick_off(
    state: AppState,
    caller: Principal,
    slot: AuditSlot,
    headers: &HeaderMap,
    query: KickOff,
    scope: Scope,
    route: &str,
) -> Response {
    if caller.role != Role::Admin {
        return only_admins(&slot);
    }
    let asks_async = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "respond-async"));
    if !asks_async {
        return outcome(
            StatusCode::BAD_REQUEST,
            "required",
            "Prefer: respond-async is required; an export runs in the background.",
        );
    }
    if query
        .output_format
        .as_deref()
        .is_some_and(|f| !["application/fhir+ndjson", "application/ndjson", "ndjson"].contains(&f))
    {
        return outcome(
            StatusCode::BAD_REQUEST,
            "not-supported",
            "_outputFormat: only application/fhir+ndjson is written.",
        );
    }
    let types: Vec<String> =
        query.types.iter().flat_map(|t| t.split(',')).map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
    if let Some(unknown) =
        types.iter().find(|t| !SERVED_TYPES.contains(&t.as_str()) || Data::of(t) == Some(Data::AuditTrail))
    {
        let named = if carekeep_fhir::is_r4_resource_type(unknown) { unknown.as_str() } else { "a type" };
        return outcome(
            StatusCode::BAD_REQUEST,
            "not-supported",
            &format!("_type: {named} is not exported by this server."),
        );
    }
    let since = match query.since.as_deref() {
        None => None,
        Some(s) if carekeep_fhir::is_valid_instant(s) => carekeep_fhir::sortable_date_time(s),
        Some(_) => {
            return outcome(
                StatusCode::BAD_REQUEST,
                "value",
                "_since: expected a FHIR instant, e.g. 2026-01-01T00:00:00Z.",
            );
        }
    };
    if let Err(e) = state.auth.require_step_up(&caller, now()).await {
        slot.deny();
        return e.into_response();
    }
    let request = route.to_owned();
    let records = state.records.clone();
    let (tenant, user) = (caller.tenant.clone(), caller.user_id.clone());
    let id = match blocking_response(move || records.begin_export(&tenant, &user, &request, now())).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let (records, tenant, job) = (state.records.clone(), caller.tenant.clone(), id.clone());
    tokio::task::spawn_blocking(move || {
        let time =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let files = records.export_files(&tenant, &scope, &types, since.as_deref());
        if let Err(e) = &files {
            tracing::error!(error = %e, "an export failed");
        }
        if let Err(e) = records.finish_export(&tenant, &job, files.ok(), &time) {
            tracing::error!(error = %e, "an export could not be stored");
        }
    });
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(location) = format!("{}/exports/{id}", base_url(headers)).parse() {
        response.headers_mut().insert(header::CONTENT_LOCATION, location);
    }
    response
}

/// `GET /exports/{id}`: in progress (202), or the manifest with a signed link per file.
pub async fn status(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if caller.role != Role::Admin {
        return only_admins(&slot);
    }
    let (records, tenant, export_id) = (state.records.clone(), caller.tenant.clone(), id.clone());
    let export = match blocking_response(move || records.export(&tenant, &export_id)).await {
        Ok(Some(e)) if e.user_id == caller.user_id => e,
        Ok(_) => {
            return outcome(StatusCode::NOT_FOUND, "not-found", "No such export of yours; exports are kept a day.");
        }
        Err(r) => return r,
    };
    match export.status {
        Status::Running => {
            let mut response =
                (StatusCode::ACCEPTED, [("x-progress", "in progress"), ("retry-after", "2")]).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            response
        }
        Status::Failed => outcome(StatusCode::INTERNAL_SERVER_ERROR, "exception", "The export failed; start it again."),
        Status::Complete { transaction_time, files } => {
            let base = base_url(&headers);
            let expires = now() + LINK_SECS;
            let output: Vec<serde_json::Value> = files
                .iter()
                .map(|(n, resource_type, count)| {
                    let object = format!("export:{id}:{n}");
                    let sig = links::sign(&state.keys.links, &caller.user_id, &caller.tenant, &object, expires);
                    serde_json::json!({"type": resource_type, "count": count,
                        "url": format!("{base}/exports/{id}/files/{n}?expires={expires}&sig={sig}")})
                })
                .collect();
            axum::Json(serde_json::json!({
                "transactionTime": transaction_time,
                "request": format!("{base}{}", export.request),
                "requiresAccessToken": true,
                "output": output,
                "error": [],
            }))
            .into_response()
        }
    }
}

/// `DELETE /exports/{id}`: the export and its files, gone now.
pub async fn delete(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    Path(id): Path<String>,
) -> Response {
    if caller.role != Role::Admin {
        return only_admins(&slot);
    }
    let (records, tenant, user) = (state.records.clone(), caller.tenant.clone(), caller.user_id.clone());
    let deleted = blocking_response(move || {
        let mine = records.export(&tenant, &id)?.is_some_and(|e| e.user_id == user);
        Ok(mine && records.delete_export(&tenant, &id)?)
    })
    .await;
    match deleted {
        Ok(true) => StatusCode::ACCEPTED.into_response(),
        Ok(false) => outcome(StatusCode::NOT_FOUND, "not-found", "No such export of yours."),
        Err(r) => r,
    }
}

/// A signed link's query.
#[derive(Deserialize)]
pub struct Signed {
    expires: i64,
    sig: String,
}

/// `GET /exports/{id}/files/{n}?expires=…&sig=…`: one NDJSON file, audited once per
/// patient whose records it holds.
pub async fn file(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    Path((id, n)): Path<(String, i64)>,
    Query(signed): Query<Signed>,
) -> Response {
    if caller.role != Role::Admin {
        return only_admins(&slot);
    }
    let object = format!("export:{id}:{n}");
    if let Err(e) =
        links::verify(&state.keys.links, &caller.user_id, &caller.tenant, &object, signed.expires, &signed.sig, now())
    {
        slot.deny();
        return outcome(StatusCode::FORBIDDEN, "expired", &e.to_string());
    }
    let (records, tenant) = (state.records.clone(), caller.tenant.clone());
    let user = caller.user_id.clone();
    let found = blocking_response(move || {
        let mine = records.export(&tenant, &id)?.is_some_and(|e| e.user_id == user);
        if !mine {
            return Ok(None);
        }
        records.export_file(&tenant, &id, n)
    })
    .await;
    match found {
        Ok(Some(fetched)) => {
            for patient in fetched.patients {
                slot.touch(Touch { patient: Some(patient), ..Touch::default() });
            }
            ([(header::CONTENT_TYPE, "application/fhir+ndjson")], fetched.ndjson.to_vec()).into_response()
        }
        Ok(None) => outcome(StatusCode::NOT_FOUND, "not-found", "No such export file; exports are kept a day."),
        Err(r) => r,
    }
}

fn outcome(status: StatusCode, code: &str, diagnostics: &str) -> Response {
    super::operation_outcome(status, code, diagnostics)
}

/// [`blocking`], answering a failure at once.
async fn blocking_response<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::records::RecordError> + Send + 'static,
) -> Result<T, Response> {
    blocking(work).await.map_err(IntoResponse::into_response)
}

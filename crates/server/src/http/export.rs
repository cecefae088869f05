//! FHIR Bulk Data export (async pattern, Bulk Data IG v2) for the clinic's administrators:
//! kick-off at `GET /fhir/$export` (the whole tenant), `GET /fhir/Patient/$export` (every
//! patient's compartment) or `GET /fhir/Group/{id}/$export` (the patients on one clinician's
//! or nurse's care team; the group is the user's id), then `GET /exports/{id}` until the
//! manifest is ready, then each file through its signed link, valid 15 minutes, for the
//! user who asked only. Taking a tenant's records out needs a fresh sign-in (step-up), and
//! every file fetched is audited once per patient whose records it holds.

use axum::Extension;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::audit::{AuditSlot, Touch};
use super::error::ApiError;
use super::fhir::{base_url, blocking};
use super::grant::{Ask, Grant, authorize};
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

/// A kick-off request, whichever of the three routes it came to: the administrator's
/// grant (anyone else is refused here), the audit slot, the headers and the parameters.
/// The parameters are checked by [`ExportRequest::start`], after the route's own checks.
pub struct ExportRequest {
    grant: Grant,
    slot: AuditSlot,
    headers: HeaderMap,
    query: KickOff,
}

impl FromRequestParts<AppState> for ExportRequest {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Principal::from_request_parts(parts, state).await?;
        let Extension(slot) = Extension::<AuditSlot>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let Query(query) = Query::<KickOff>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let grant = authorize(caller, &slot, Ask::BulkExport).map_err(IntoResponse::into_response)?;
        Ok(Self { grant, slot, headers, query })
    }
}

/// `GET /fhir/$export`.
pub async fn system(State(state): State<AppState>, request: ExportRequest) -> Result<Response, ApiError> {
    request.start(state, Scope::System, "/fhir/$export").await
}

/// `GET /fhir/Patient/$export`.
pub async fn patients(State(state): State<AppState>, request: ExportRequest) -> Result<Response, ApiError> {
    request.start(state, Scope::Patients, "/fhir/Patient/$export").await
}

/// `GET /fhir/Group/{id}/$export`: the group is a clinician's or nurse's care team.
pub async fn group(
    State(state): State<AppState>,
    request: ExportRequest,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (records, tenant, user) = (state.records.clone(), request.grant.tenant().to_owned(), id.clone());
    let member = tokio::task::spawn_blocking(move || records.is_group(&tenant, &user))
        .await
        .unwrap_or(false);
    if !member {
        return Err(ApiError::outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such group: a group is a clinician's or nurse's user id.",
        ));
    }
    request.start(state, Scope::CareTeam(id), "/fhir/Group/{id}/$export").await
}

impl ExportRequest {
    /// Checks the parameters and the caller's recent sign-in, and starts the export of
    /// `scope` in the background: 202 with where to ask for the manifest.
    async fn start(self, state: AppState, scope: Scope, route: &str) -> Result<Response, ApiError> {
        let Self { grant, slot, headers, query } = self;
        let bad = |code, diagnostics| ApiError::outcome(StatusCode::BAD_REQUEST, code, diagnostics);
        let asks_async = headers
            .get("prefer")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|p| p.trim() == "respond-async"));
        if !asks_async {
            return Err(bad("required", "Prefer: respond-async is required; an export runs in the background.".into()));
        }
        if query
            .output_format
            .as_deref()
            .is_some_and(|f| !["application/fhir+ndjson", "application/ndjson", "ndjson"].contains(&f))
        {
            return Err(bad("not-supported", "_outputFormat: only application/fhir+ndjson is written.".into()));
        }
        let types: Vec<String> = query
            .types
            .iter()
            .flat_map(|t| t.split(','))
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(unknown) = types
            .iter()
            .find(|t| !SERVED_TYPES.contains(&t.as_str()) || Data::of(t) == Some(Data::AuditTrail))
        {
            let named = if carekeep_fhir::is_r4_resource_type(unknown) { unknown.as_str() } else { "a type" };
            return Err(bad("not-supported", format!("_type: {named} is not exported by this server.")));
        }
        let since = match query.since.as_deref() {
            None => None,
            Some(s) if carekeep_fhir::is_valid_instant(s) => carekeep_fhir::sortable_date_time(s),
            Some(_) => return Err(bad("value", "_since: expected a FHIR instant, e.g. 2026-01-01T00:00:00Z.".into())),
        };
        // Taking a tenant's records out needs a fresh sign-in.
        state
            .auth
            .require_step_up(grant.caller(), now())
            .await
            .inspect_err(|_| slot.deny())?;
        let request = route.to_owned();
        let records = state.records.clone();
        let (tenant, user) = (grant.tenant().to_owned(), grant.user().to_owned());
        let id = blocking(move || records.begin_export(&tenant, &user, &request, now())).await?;
        let (records, tenant, job) = (state.records.clone(), grant.tenant().to_owned(), id.clone());
        tokio::task::spawn_blocking(move || {
            let time = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let files = records.export_files(&tenant, &scope, &types, since.as_deref());
            if let Err(e) = &files {
                tracing::error!(error = %e, "an export failed");
            }
            if let Err(e) = records.finish_export(&tenant, &job, files.ok(), &time) {
                tracing::error!(error = %e, "an export could not be stored");
            }
        });
        let mut response = StatusCode::ACCEPTED.into_response();
        if let Ok(location) = format!("{}/exports/{id}", base_url(&headers)).parse() {
            response.headers_mut().insert(header::CONTENT_LOCATION, location);
        }
        Ok(response)
    }
}

/// `GET /exports/{id}`: in progress (202), or the manifest with a signed link per file.
pub async fn status(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let grant = authorize(caller, &slot, Ask::BulkExport)?;
    let (records, tenant, export_id) = (state.records.clone(), grant.tenant().to_owned(), id.clone());
    let export = match blocking(move || records.export(&tenant, &export_id)).await? {
        Some(e) if e.user_id == grant.user() => e,
        _ => {
            return Err(ApiError::outcome(
                StatusCode::NOT_FOUND,
                "not-found",
                "No such export of yours; exports are kept a day.",
            ));
        }
    };
    Ok(match export.status {
        Status::Running => {
            let mut response =
                (StatusCode::ACCEPTED, [("x-progress", "in progress"), ("retry-after", "2")]).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            response
        }
        Status::Failed => {
            return Err(ApiError::outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "The export failed; start it again.",
            ));
        }
        Status::Complete { transaction_time, files } => {
            let base = base_url(&headers);
            let expires = now() + LINK_SECS;
            let output: Vec<serde_json::Value> = files
                .iter()
                .map(|(n, resource_type, count)| {
                    let object = format!("export:{id}:{n}");
                    let sig = links::sign(&state.keys.links, grant.user(), grant.tenant(), &object, expires);
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
    })
}

/// `DELETE /exports/{id}`: the export and its files, gone now.
pub async fn delete(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let grant = authorize(caller, &slot, Ask::BulkExport)?;
    let (records, tenant, user) = (state.records.clone(), grant.tenant().to_owned(), grant.user().to_owned());
    let deleted = blocking(move || {
        let mine = records.export(&tenant, &id)?.is_some_and(|e| e.user_id == user);
        Ok(mine && records.delete_export(&tenant, &id)?)
    })
    .await?;
    if !deleted {
        return Err(ApiError::outcome(StatusCode::NOT_FOUND, "not-found", "No such export of yours."));
    }
    Ok(StatusCode::ACCEPTED.into_response())
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
) -> Result<Response, ApiError> {
    let grant = authorize(caller, &slot, Ask::BulkExport)?;
    let object = format!("export:{id}:{n}");
    if let Err(e) =
        links::verify(&state.keys.links, grant.user(), grant.tenant(), &object, signed.expires, &signed.sig, now())
    {
        slot.deny();
        return Err(ApiError::outcome(StatusCode::FORBIDDEN, "expired", e.to_string()));
    }
    let (records, tenant) = (state.records.clone(), grant.tenant().to_owned());
    let user = grant.user().to_owned();
    let found = blocking(move || {
        let mine = records.export(&tenant, &id)?.is_some_and(|e| e.user_id == user);
        if !mine {
            return Ok(None);
        }
        records.export_file(&tenant, &id, n)
    })
    .await?;
    let Some(fetched) = found else {
        return Err(ApiError::outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such export file; exports are kept a day.",
        ));
    };
    for patient in fetched.patients {
        slot.touch(Touch { patient: Some(patient), ..Touch::default() });
    }
    Ok(([(header::CONTENT_TYPE, "application/fhir+ndjson")], fetched.ndjson.to_vec()).into_response())
}

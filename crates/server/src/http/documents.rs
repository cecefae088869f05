//! Document downloads through signed links: `GET /documents/{id}/link` checks access and
//! hands out a URL valid for 15 minutes for this user only; `GET /documents/{id}?expires=…&sig=…`
//! (with the same user's bearer token) checks the link, checks access again, and sends the
//! decrypted bytes.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::AppState;
use super::audit::{AuditSlot, Touch};
use super::error::ApiError;
use super::grant::{Ask, Grant, authorize};
use crate::auth::Principal;
use crate::now;
use crate::records::access::{Data, Decision, Intent};
use crate::records::links::{self, LINK_SECS};

fn not_found() -> ApiError {
    ApiError::outcome(StatusCode::NOT_FOUND, "not-found", "No such document.")
}

/// Whether the caller may read document `id`; its patient if so.
async fn allowed(state: &AppState, grant: &Grant, slot: &AuditSlot, id: &str) -> Result<String, ApiError> {
    let (records, tenant, doc, user, role) =
        (state.records.clone(), grant.tenant().to_owned(), id.to_owned(), grant.user().to_owned(), grant.role());
    let found = tokio::task::spawn_blocking(move || {
        let patient = records.document_patient(&tenant, &doc)?;
        let access = records.access(&tenant, &user, role, now())?;
        Ok::<_, crate::records::RecordError>((patient, access))
    })
    .await;
    let Ok(Ok((patient, access))) = found else {
        return Err(ApiError::outcome(StatusCode::INTERNAL_SERVER_ERROR, "exception", "Try again."));
    };
    let Some(patient) = patient else { return Err(not_found()) };
    let touch = |break_glass| Touch {
        resource_type: Some("Binary".into()),
        resource_id: Some(id.to_owned()),
        patient: Some(patient.clone()),
        break_glass,
    };
    if let Decision::Allow { break_glass } = access.decide(Data::Clinical, Some(&patient), Intent::Read) {
        slot.touch(touch(break_glass));
        return Ok(patient);
    }
    slot.touch(touch(false));
    slot.deny();
    Err(not_found())
}

/// `GET /documents/{id}/link`.
pub async fn link(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // A document is decided by its patient, as a clinical record.
    let grant = authorize(caller, &slot, Ask::PerRecord)?;
    allowed(&state, &grant, &slot, &id).await?;
    let expires = now() + LINK_SECS;
    let sig = links::sign(&state.keys.links, grant.user(), grant.tenant(), &id, expires);
    Ok(Json(serde_json::json!({"url": format!("/documents/{id}?expires={expires}&sig={sig}"), "expires_at": expires}))
        .into_response())
}

/// A signed link's query.
#[derive(Deserialize)]
pub struct Signed {
    expires: i64,
    sig: String,
}

/// `GET /documents/{id}?expires=…&sig=…`.
pub async fn download(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    Path(id): Path<String>,
    Query(signed): Query<Signed>,
) -> Result<Response, ApiError> {
    let grant = authorize(caller, &slot, Ask::PerRecord)?;
    if let Err(e) =
        links::verify(&state.keys.links, grant.user(), grant.tenant(), &id, signed.expires, &signed.sig, now())
    {
        slot.deny();
        return Err(ApiError::outcome(StatusCode::FORBIDDEN, "expired", e.to_string()));
    }
    allowed(&state, &grant, &slot, &id).await?;
    let (records, tenant) = (state.records.clone(), grant.tenant().to_owned());
    match tokio::task::spawn_blocking(move || records.document(&tenant, &id)).await {
        Ok(Ok(Some(doc))) => Ok((
            [(header::CONTENT_TYPE, doc.content_type.clone()), (header::CONTENT_DISPOSITION, "attachment".to_owned())],
            doc.bytes.to_vec(),
        )
            .into_response()),
        Ok(Ok(None)) => Err(not_found()),
        _ => Err(ApiError::outcome(StatusCode::INTERNAL_SERVER_ERROR, "exception", "The document could not be read.")),
    }
}

//! Break-glass: a clinician opens a patient outside their care team for a while, with a
//! stated reason. Every access under it is flagged in the audit; admins review the grants.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rusqlite::{OptionalExtension, params};
use serde::Deserialize;

use super::AppState;
use super::audit::{AuditSlot, Touch};
use crate::auth::Principal;
use crate::now;
use crate::records::access;

/// How long a break-glass grant lasts.
pub const GRANT_SECS: i64 = 60 * 60;

/// `POST /break-glass` body.
#[derive(Deserialize)]
pub struct BreakGlassRequest {
    /// The patient to open.
    pub patient: String,
    /// Why, in the clinician's words (10–500 characters). Kept for review, never logged.
    pub reason: String,
}

/// `POST /break-glass`: opens a patient's record to the calling clinician for an hour.
pub async fn open(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    super::json::Json(request): super::json::Json<BreakGlassRequest>,
) -> Response {
    if !access::may_break_glass(caller.role) {
        slot.deny();
        return super::operation_outcome(StatusCode::FORBIDDEN, "forbidden", "Only clinicians may break the glass.");
    }
    let reason = request.reason.trim().to_owned();
    if !(10..=500).contains(&reason.chars().count()) {
        return super::operation_outcome(
            StatusCode::UNPROCESSABLE_ENTITY,
            "required",
            "reason: say why you need this record (10 to 500 characters); it is kept for review.",
        );
    }
    let store = state.records.store().clone();
    let (tenant, user, patient) = (caller.tenant.clone(), caller.user_id.clone(), request.patient.clone());
    let opened = tokio::task::spawn_blocking(move || -> Result<Option<i64>, crate::ServerError> {
        let conn = store.lock();
        let bad = |e: rusqlite::Error| crate::ServerError::Store(e.to_string());
        let exists: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM resources WHERE tenant = ?1 AND type = 'Patient' AND id = ?2",
                params![tenant, patient],
                |r| r.get(0),
            )
            .optional()
            .map_err(bad)?;
        if exists.is_none() {
            return Ok(None);
        }
        let (id, now) = (crate::auth::secrets::new_id("bg")?, now());
        conn.execute(
            "INSERT INTO break_glass (id, tenant, user_id, patient, reason, opened_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, tenant, user, patient, reason, now, now + GRANT_SECS],
        )
        .map_err(bad)?;
        Ok(Some(now + GRANT_SECS))
    })
    .await;
    match opened {
        Ok(Ok(Some(expires_at))) => {
            slot.touch(Touch {
                resource_type: Some("Patient".into()),
                resource_id: Some(request.patient.clone()),
                patient: Some(request.patient.clone()),
                break_glass: true,
            });
            (StatusCode::CREATED, Json(serde_json::json!({"patient": request.patient, "expires_at": expires_at})))
                .into_response()
        }
        Ok(Ok(None)) => super::operation_outcome(StatusCode::NOT_FOUND, "not-found", "No such patient."),
        _ => super::operation_outcome(StatusCode::INTERNAL_SERVER_ERROR, "exception", "Try again."),
    }
}

/// `GET /break-glass`: the tenant's break-glass grants, newest first, for an admin to review.
pub async fn review(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
) -> Response {
    if access::rule_for(caller.role, access::Data::AuditTrail).read != access::Reach::Tenant {
        slot.deny();
        return super::operation_outcome(StatusCode::FORBIDDEN, "forbidden", "Only admins review break-glass access.");
    }
    let store = state.records.store().clone();
    let tenant = caller.tenant.clone();
    let listed = tokio::task::spawn_blocking(move || -> rusqlite::Result<Vec<serde_json::Value>> {
        let conn = store.read();
        let mut stmt = conn.prepare(
            "SELECT b.id, b.user_id, u.username, b.patient, b.reason, b.opened_at, b.expires_at
             FROM break_glass b JOIN users u ON u.id = b.user_id WHERE b.tenant = ?1 ORDER BY b.opened_at DESC",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            Ok(serde_json::json!({
                "id": r.get::<_, String>(0)?, "user": r.get::<_, String>(1)?, "username": r.get::<_, String>(2)?,
                "patient": r.get::<_, String>(3)?, "reason": r.get::<_, String>(4)?,
                "opened_at": r.get::<_, i64>(5)?, "expires_at": r.get::<_, i64>(6)?,
            }))
        })?;
        rows.collect()
    })
    .await;
    match listed {
        Ok(Ok(list)) => Json(list).into_response(),
        _ => super::operation_outcome(StatusCode::INTERNAL_SERVER_ERROR, "exception", "Try again."),
    }
}

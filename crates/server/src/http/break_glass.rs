//! Break-glass: a clinician opens a patient outside their care team for a while, with a
//! stated reason. Every access under it is flagged in the audit; admins review the grants.
//!
//! It is a high-risk action, so the server (not only the app) requires a full sign-in
//! within the last five minutes, and it is rate-limited per clinician: past
//! [`GRANTS_PER_HOUR`] grants in an hour the next is refused and the tenant's admins get an
//! alert (`GET /alerts`). Counting and granting happen in one transaction, so simultaneous
//! requests cannot slip past the limit together.

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

/// Grants one clinician may open in any hour: an emergency rarely needs more than a few
/// records; opening twenty in a second is a search, not an emergency.
pub const GRANTS_PER_HOUR: i64 = 5;

/// Whether `reason` says something: at least two words of letters, not one character over
/// and over ("xxxxxxxxxx").
fn says_something(reason: &str) -> bool {
    let words = reason
        .split_whitespace()
        .filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 2)
        .count();
    let mut letters: Vec<char> = reason
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    letters.sort_unstable();
    letters.dedup();
    words >= 2 && letters.len() >= 4
}

/// How a request for a grant ended.
enum Opened {
    /// Granted until this time.
    Until(i64),
    /// No such patient in the caller's tenant.
    NoPatient,
    /// The clinician is over the hourly limit; an alert was raised.
    OverLimit,
}

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
    if !(10..=500).contains(&reason.chars().count()) || !says_something(&reason) {
        return super::operation_outcome(
            StatusCode::UNPROCESSABLE_ENTITY,
            "required",
            "reason: say in words why you need this record (10 to 500 characters); it is kept for review.",
        );
    }
    if let Err(e) = state.auth.require_step_up(&caller, now()).await {
        slot.deny();
        return e.into_response();
    }
    let store = state.records.store().clone();
    let (tenant, user, patient) = (caller.tenant.clone(), caller.user_id.clone(), request.patient.clone());
    let opened = tokio::task::spawn_blocking(move || -> Result<Opened, crate::ServerError> {
        let mut conn = store.lock();
        let tx = conn.transaction()?;
        let exists: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM resources WHERE tenant = ?1 AND type = 'Patient' AND id = ?2",
                params![tenant, patient],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Ok(Opened::NoPatient);
        }
        let now = now();
        let recent: i64 = tx.query_row(
            "SELECT count(*) FROM break_glass WHERE user_id = ?1 AND opened_at > ?2",
            params![user, now - 3600],
            |r| r.get(0),
        )?;
        if recent >= GRANTS_PER_HOUR {
            tx.execute(
                "INSERT INTO admin_alerts (id, tenant, kind, user_id, raised_at) VALUES (?1, ?2, 'break-glass-rate', ?3, ?4)",
                params![crate::ids::new_id("alert")?, tenant, user, now],
            )?;
            tx.commit()?;
            tracing::warn!(user = %user, "break-glass limit exceeded; the tenant's admins are alerted");
            return Ok(Opened::OverLimit);
        }
        tx.execute(
            "INSERT INTO break_glass (id, tenant, user_id, patient, reason, opened_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![crate::ids::new_id("bg")?, tenant, user, patient, reason, now, now + GRANT_SECS],
        )?;
        tx.commit()?;
        Ok(Opened::Until(now + GRANT_SECS))
    })
    .await;
    match opened {
        Ok(Ok(Opened::OverLimit)) => {
            slot.touch(Touch {
                resource_type: Some("Patient".into()),
                resource_id: Some(request.patient.clone()),
                patient: Some(request.patient.clone()),
                break_glass: true,
            });
            slot.deny();
            let mut refused = super::json::refusal(
                StatusCode::TOO_MANY_REQUESTS,
                carekeep_protocol::refusal::Refusal::RateLimited,
                &format!(
                    "You have opened {GRANTS_PER_HOUR} records through break-glass in the last hour, the most \
                     allowed; your administrators have been told. Ask a colleague on the patient's care team."
                ),
            );
            refused
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("3600"));
            refused
        }
        Ok(Ok(Opened::Until(expires_at))) => {
            slot.touch(Touch {
                resource_type: Some("Patient".into()),
                resource_id: Some(request.patient.clone()),
                patient: Some(request.patient.clone()),
                break_glass: true,
            });
            (StatusCode::CREATED, Json(serde_json::json!({"patient": request.patient, "expires_at": expires_at})))
                .into_response()
        }
        Ok(Ok(Opened::NoPatient)) => super::operation_outcome(StatusCode::NOT_FOUND, "not-found", "No such patient."),
        _ => super::operation_outcome(StatusCode::INTERNAL_SERVER_ERROR, "exception", "Try again."),
    }
}

/// `GET /break-glass`: the tenant's break-glass grants, newest first, for an admin to review.
pub async fn review(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
) -> Response {
    let sql = "SELECT b.id, b.user_id, u.username, b.patient, b.reason, b.opened_at, b.expires_at
               FROM break_glass b JOIN users u ON u.id = b.user_id WHERE b.tenant = ?1 ORDER BY b.opened_at DESC";
    for_admins(&state, &caller, &slot, "Only admins review break-glass access.", sql, |r| {
        Ok(serde_json::json!({
            "id": r.get::<_, String>(0)?, "user": r.get::<_, String>(1)?, "username": r.get::<_, String>(2)?,
            "patient": r.get::<_, String>(3)?, "reason": r.get::<_, String>(4)?,
            "opened_at": r.get::<_, i64>(5)?, "expires_at": r.get::<_, i64>(6)?,
        }))
    })
    .await
}

/// `GET /alerts`: what the tenant's admins should look at (break-glass limits exceeded),
/// newest first.
pub async fn alerts(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
) -> Response {
    let sql = "SELECT a.id, a.kind, a.user_id, u.username, a.raised_at
               FROM admin_alerts a JOIN users u ON u.id = a.user_id WHERE a.tenant = ?1 ORDER BY a.raised_at DESC";
    for_admins(&state, &caller, &slot, "Only admins see the tenant's alerts.", sql, |r| {
        Ok(serde_json::json!({
            "id": r.get::<_, String>(0)?, "kind": r.get::<_, String>(1)?, "user": r.get::<_, String>(2)?,
            "username": r.get::<_, String>(3)?, "raised_at": r.get::<_, i64>(4)?,
        }))
    })
    .await
}

/// A list for the tenant's admins: refused (`403`, audited as denied) to anyone whose role
/// does not read the tenant's audit trail; otherwise `sql` (its one parameter: the tenant)
/// with each row as `row` makes it.
async fn for_admins(
    state: &AppState,
    caller: &Principal,
    slot: &AuditSlot,
    refusal: &str,
    sql: &'static str,
    row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<serde_json::Value>,
) -> Response {
    if access::rule_for(caller.role, access::Data::AuditTrail).read != access::Reach::Tenant {
        slot.deny();
        return super::operation_outcome(StatusCode::FORBIDDEN, "forbidden", refusal);
    }
    let (store, tenant) = (state.records.store().clone(), caller.tenant.clone());
    let listed = tokio::task::spawn_blocking(move || -> rusqlite::Result<Vec<serde_json::Value>> {
        store.read().prepare(sql)?.query_map([tenant], row)?.collect()
    })
    .await;
    match listed {
        Ok(Ok(list)) => Json(list).into_response(),
        _ => super::operation_outcome(StatusCode::INTERNAL_SERVER_ERROR, "exception", "Try again."),
    }
}

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
use serde::{Deserialize, Serialize};

use super::AppState;
use super::audit::{AuditSlot, Touch};
use crate::auth::Principal;
use crate::now;
use crate::records::Records;
use crate::records::access;
use crate::records::break_glass::{GRANTS_PER_HOUR, Opened};

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
    let records = state.records.clone();
    let (tenant, user, patient) = (caller.tenant.clone(), caller.user_id.clone(), request.patient.clone());
    let opened =
        tokio::task::spawn_blocking(move || records.open_break_glass(&tenant, &user, &patient, &reason, now())).await;
    match opened {
        Ok(Ok(Opened::OverLimit)) => {
            tracing::warn!(user = %caller.user_id, "break-glass limit exceeded; the tenant's admins are alerted");
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
    for_admins(&state, &caller, &slot, "Only admins review break-glass access.", Records::break_glass_grants, |g| {
        &g.user
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
    for_admins(&state, &caller, &slot, "Only admins see the tenant's alerts.", Records::alerts, |a| &a.user).await
}

/// A row for the admins, with the sign-in name of the user it is about.
#[derive(Serialize)]
struct Named<T> {
    #[serde(flatten)]
    row: T,
    username: String,
}

/// A list for the tenant's admins: refused (`403`, audited as denied) to anyone whose role
/// does not read the tenant's audit trail; otherwise what `list` finds for the tenant, each
/// row with the sign-in name of its user (`user_of`).
async fn for_admins<T: Serialize + Send + 'static>(
    state: &AppState,
    caller: &Principal,
    slot: &AuditSlot,
    refusal: &str,
    list: fn(&Records, &str) -> Result<Vec<T>, crate::records::RecordError>,
    user_of: fn(&T) -> &String,
) -> Response {
    if access::rule_for(caller.role, access::Data::AuditTrail).read != access::Reach::Tenant {
        slot.deny();
        return super::operation_outcome(StatusCode::FORBIDDEN, "forbidden", refusal);
    }
    let (records, tenant) = (state.records.clone(), caller.tenant.clone());
    let rows = match tokio::task::spawn_blocking(move || list(&records, &tenant)).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return super::error::ApiError::from(e).into_response(),
        Err(_) => return super::operation_outcome(StatusCode::INTERNAL_SERVER_ERROR, "exception", "Try again."),
    };
    let users: Vec<String> = rows.iter().map(|row| user_of(row).clone()).collect();
    let names = match state.auth.usernames(&caller.tenant, users).await {
        Ok(names) => names,
        Err(e) => return e.into_response(),
    };
    let listed: Vec<Named<T>> = rows
        .into_iter()
        .map(|row| {
            let username = names.get(user_of(&row)).cloned().unwrap_or_default();
            Named { row, username }
        })
        .collect();
    Json(listed).into_response()
}

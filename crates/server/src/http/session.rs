//! What a signed-in device asks for: who it is ([`Principal`] from the bearer token), the
//! signed policy it must enforce, and the user's devices.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use carekeep_protocol::pins::PinSet;
use carekeep_protocol::policy::{Policy, SignedPolicy};
use time::format_description::well_known::Rfc3339;

use super::AppState;
use crate::auth::{AuthError, Principal};
use crate::now;

/// How long a pin set handed out with the policy stays current (the app refreshes the
/// policy long before).
const PIN_SET_DAYS: i64 = 90;

impl FromRequestParts<AppState> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| AuthError::SessionEnded.into_response())?;
        let principal = state
            .auth
            .authenticate(token, now())
            .await
            .map_err(IntoResponse::into_response)?;
        if let Some(slot) = parts.extensions.get::<super::audit::AuditSlot>() {
            slot.set(principal.clone());
        }
        Ok(principal)
    }
}

/// `GET /policy`: the caller's tenant and role policy (its idle lock capped by the tenant's
/// idle limit for the role), with the server's pins, signed.
pub async fn policy(State(state): State<AppState>, caller: Principal) -> Response {
    let issued = time::OffsetDateTime::now_utc();
    let Ok(pins) =
        PinSet::new(vec![state.pins.live, state.pins.backup], issued.date() + time::Duration::days(PIN_SET_DAYS))
    else {
        return AuthError::Internal.into_response();
    };
    let issued_at = issued.format(&Rfc3339).unwrap_or_default();
    let idle = u32::try_from(caller.idle_secs).unwrap_or(u32::MAX);
    let mut policy = Policy::defaults(caller.tenant, caller.role, pins, issued_at);
    // A tenant's shorter idle limit for the role reaches the device's lock too: the app
    // locks no later than the server would end the session.
    policy.idle_lock_secs = policy.idle_lock_secs.min(idle);
    Json(SignedPolicy::sign(&policy, &state.signing_key, &state.key_id)).into_response()
}

/// `GET /policy/key`: the Ed25519 key policies are signed with. Fetched over the pinned TLS
/// connection, which is what makes it trustworthy; the app keeps it with the pins.
pub async fn policy_key(State(state): State<AppState>) -> Response {
    let public = STANDARD.encode(state.signing_key.verifying_key().as_bytes());
    Json(serde_json::json!({"key_id": state.key_id, "public_key": public})).into_response()
}

/// `GET /devices`: the caller's devices (an admin: every device of their tenant).
pub async fn devices(State(state): State<AppState>, caller: Principal) -> Response {
    state.auth.devices(&caller).await.map(Json).into_response()
}

/// `POST /devices/{id}/revoke`: sign a device out.
pub async fn revoke(State(state): State<AppState>, caller: Principal, Path(id): Path<String>) -> Response {
    revoke_or_wipe(&state, &caller, &id, false).await
}

/// `POST /devices/{id}/wipe`: sign a device out and have it erase its cache at next contact.
pub async fn wipe(State(state): State<AppState>, caller: Principal, Path(id): Path<String>) -> Response {
    revoke_or_wipe(&state, &caller, &id, true).await
}

async fn revoke_or_wipe(state: &AppState, caller: &Principal, id: &str, wipe: bool) -> Response {
    match state.auth.revoke(caller, id, wipe).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => super::operation_outcome(StatusCode::NOT_FOUND, "not-found", "No such device."),
        Err(e) => e.into_response(),
    }
}

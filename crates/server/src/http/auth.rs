//! `/auth/*`: thin handlers over [`crate::auth::Auth`]; those that check a password or a
//! code sit behind a per-IP rate limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use carekeep_protocol::auth::{LoginRequest, LogoutRequest, MfaRequest, RefreshRequest, TokenResponse};

use super::AppState;
use super::audit::AuditSlot;
use crate::auth::AuthError;
use crate::now;

/// Sign-in requests allowed per IP address per minute.
pub const AUTH_REQUESTS_PER_MINUTE: u32 = 30;

/// A fixed-window counter per client address.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl RateLimiter {
    /// Counts a request; `false` once the address is over the limit for this minute.
    pub fn allow(&self, ip: IpAddr, now: i64) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let minute = now / 60;
        windows.retain(|_, (window, _)| *window == minute);
        let entry = windows.entry(ip).or_insert((minute, 0));
        entry.1 += 1;
        entry.1 <= AUTH_REQUESTS_PER_MINUTE
    }
}

/// Middleware on the password and code routes of `/auth/*`: refuses a client address over the per-minute limit.
pub async fn rate_limit(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if state.limiter.allow(addr.ip(), now()) {
        return next.run(request).await;
    }
    let mut response =
        error_response(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many sign-in requests. Wait a minute.");
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    response
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(serde_json::json!({"error": code, "message": message}))).into_response()
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            AuthError::BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            AuthError::BadCode => (StatusCode::UNAUTHORIZED, "bad_code"),
            AuthError::CodeAlreadyUsed => (StatusCode::UNAUTHORIZED, "code_already_used"),
            AuthError::ChallengeExpired => (StatusCode::UNAUTHORIZED, "challenge_expired"),
            AuthError::SessionEnded => (StatusCode::UNAUTHORIZED, "session_ended"),
            AuthError::AccessExpired => (StatusCode::UNAUTHORIZED, "access_expired"),
            AuthError::DeviceWipe => (StatusCode::UNAUTHORIZED, "device_wipe"),
            AuthError::DeviceRevoked => (StatusCode::UNAUTHORIZED, "device_revoked"),
            AuthError::Locked { .. } => (StatusCode::TOO_MANY_REQUESTS, "locked"),
            AuthError::StepUpRequired => (StatusCode::FORBIDDEN, "step_up_required"),
            AuthError::NoEnrollment => (StatusCode::CONFLICT, "no_enrollment"),
            AuthError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let mut response = error_response(status, code, &self.to_string());
        if let AuthError::Locked { retry_after_secs } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// `POST /auth/login`.
pub async fn login(State(state): State<AppState>, Json(request): Json<LoginRequest>) -> Response {
    state.auth.login(request, now()).await.map(Json).into_response()
}

/// `POST /auth/mfa`.
pub async fn mfa(
    State(state): State<AppState>,
    slot: Extension<AuditSlot>,
    Json(request): Json<MfaRequest>,
) -> Response {
    let tokens = state.auth.verify_mfa(request, now()).await;
    signed_in(&state, &slot, tokens).await
}

/// `POST /auth/refresh`.
pub async fn refresh(
    State(state): State<AppState>,
    slot: Extension<AuditSlot>,
    Json(request): Json<RefreshRequest>,
) -> Response {
    let tokens = state.auth.refresh(request, now()).await;
    signed_in(&state, &slot, tokens).await
}

/// Answers with fresh tokens, telling the audit trail whose they are.
async fn signed_in(state: &AppState, slot: &AuditSlot, tokens: Result<TokenResponse, AuthError>) -> Response {
    let tokens = match tokens {
        Ok(tokens) => tokens,
        Err(e) => return e.into_response(),
    };
    if let Ok(principal) = state.auth.authenticate(tokens.access_token.expose(), now()).await {
        slot.set(principal);
    }
    Json(tokens).into_response()
}

/// `POST /auth/logout`.
pub async fn logout(State(state): State<AppState>, Json(request): Json<LogoutRequest>) -> Response {
    state.auth.logout(request).await.map(|()| StatusCode::NO_CONTENT).into_response()
}

/// `POST /auth/mfa/enroll`: a new authenticator secret (URI and QR PNG), pending.
pub async fn enroll(State(state): State<AppState>, caller: crate::auth::Principal) -> Response {
    state.auth.begin_enrollment(&caller, now()).await.map(Json).into_response()
}

/// `POST /auth/mfa/confirm`: activates the pending authenticator.
pub async fn confirm(
    State(state): State<AppState>,
    caller: crate::auth::Principal,
    Json(request): Json<carekeep_protocol::auth::ConfirmEnrollmentRequest>,
) -> Response {
    state
        .auth
        .confirm_enrollment(&caller, request.code.expose(), now())
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .into_response()
}

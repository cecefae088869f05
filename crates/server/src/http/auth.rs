//! `/auth/*`: thin handlers over [`crate::auth::Auth`], which throttles the password and
//! code steps itself ([`crate::auth::throttle`]); the authenticator change draws on the
//! same per-network window through [`rate_limit`].

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use carekeep_protocol::auth::{LoginRequest, LogoutRequest, MfaRequest, RefreshRequest, TokenResponse};
use carekeep_protocol::refusal::Refusal;

use super::AppState;
use super::audit::AuditSlot;
use super::json::{Json, refusal};
use crate::auth::AuthError;
use crate::now;

/// Middleware on the authenticated routes that check a code (the authenticator change):
/// they draw on their network's sign-in window, as attempts from an unknown device do.
pub async fn rate_limit(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match state.auth.admit(addr.ip(), now()).await {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            AuthError::BadCredentials => (StatusCode::UNAUTHORIZED, Refusal::BadCredentials),
            AuthError::BadCode => (StatusCode::UNAUTHORIZED, Refusal::BadCode),
            AuthError::CodeAlreadyUsed => (StatusCode::UNAUTHORIZED, Refusal::CodeAlreadyUsed),
            AuthError::ChallengeExpired => (StatusCode::UNAUTHORIZED, Refusal::ChallengeExpired),
            AuthError::SessionEnded => (StatusCode::UNAUTHORIZED, Refusal::SessionEnded),
            AuthError::AccessExpired => (StatusCode::UNAUTHORIZED, Refusal::AccessExpired),
            AuthError::DeviceWipe => (StatusCode::UNAUTHORIZED, Refusal::DeviceWipe),
            AuthError::DeviceRevoked => (StatusCode::UNAUTHORIZED, Refusal::DeviceRevoked),
            AuthError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, Refusal::Throttled),
            AuthError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, Refusal::RateLimited),
            AuthError::StepUpRequired => (StatusCode::FORBIDDEN, Refusal::StepUpRequired),
            AuthError::NoEnrollment => (StatusCode::CONFLICT, Refusal::NoEnrollment),
            AuthError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, Refusal::Busy),
            AuthError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, Refusal::Internal),
        };
        let mut response = refusal(status, code, &self.to_string());
        if let AuthError::Throttled { retry_after_secs } | AuthError::RateLimited { retry_after_secs } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// `POST /auth/login`.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Json(request): Json<LoginRequest>,
) -> Response {
    state
        .auth
        .login(request, addr.ip(), now())
        .await
        .map(axum::Json)
        .into_response()
}

/// `POST /auth/mfa`.
pub async fn mfa(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    slot: Extension<AuditSlot>,
    Json(request): Json<MfaRequest>,
) -> Response {
    let tokens = state.auth.verify_mfa(request, addr.ip(), now()).await;
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
    axum::Json(tokens).into_response()
}

/// `POST /auth/logout`.
pub async fn logout(State(state): State<AppState>, Json(request): Json<LogoutRequest>) -> Response {
    state
        .auth
        .logout(request)
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .into_response()
}

/// `POST /auth/mfa/enroll`: a new authenticator secret (URI and QR PNG), pending.
pub async fn enroll(State(state): State<AppState>, caller: crate::auth::Principal) -> Response {
    state
        .auth
        .begin_enrollment(&caller, now())
        .await
        .map(axum::Json)
        .into_response()
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

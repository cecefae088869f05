//! The audit middleware: every audited request gets one chained record before its response
//! leaves. Handlers cannot skip it — they never see it. The [`Principal`] extractor fills the
//! request's [`AuditSlot`] with who was calling; if the record cannot be written, the
//! response is replaced by an error (fail closed).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use carekeep_protocol::audit::{AuditEvent, Outcome};
use time::format_description::well_known::Rfc3339;

use super::AppState;
use crate::auth::Principal;

/// Who a request turned out to be from, learned while it ran.
#[derive(Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Option<Principal>>>);

impl AuditSlot {
    /// Records the caller.
    pub fn set(&self, principal: Principal) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(principal);
    }

    fn take(&self) -> Option<Principal> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

fn outcome(status: StatusCode) -> Outcome {
    match status.as_u16() {
        200..=399 => Outcome::Success,
        401 | 403 | 429 => Outcome::Denied,
        _ => Outcome::Failed,
    }
}

/// Appends the request's record, then lets the response go.
pub async fn audit(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let slot = AuditSlot::default();
    request.extensions_mut().insert(slot.clone());
    // The route template, never the concrete path: ids stay out of the action.
    let route = request.extensions().get::<MatchedPath>().map_or("?", |p| p.as_str()).to_owned();
    let action = format!("{} {route}", request.method());
    let response = next.run(request).await;
    let who = slot.take();
    let event = AuditEvent {
        recorded_at: time::OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        occurred_at: None,
        tenant: who.as_ref().map_or_else(|| "-".to_owned(), |p| p.tenant.clone()),
        user: who.as_ref().map(|p| p.user_id.clone()),
        role: who.as_ref().map(|p| p.role.as_str().to_owned()),
        device: who.as_ref().map(|p| p.device_id.clone()),
        ip: Some(addr.ip().to_string()),
        action,
        resource_type: None,
        resource_id: None,
        patient: None,
        outcome: outcome(response.status()),
        break_glass: false,
    };
    let log = state.audit.clone();
    if let Ok(Ok(_)) = tokio::task::spawn_blocking(move || log.append(event)).await {
        return response;
    }
    tracing::error!("audit append failed; the response was withheld");
    super::operation_outcome(
        StatusCode::INTERNAL_SERVER_ERROR,
        "exception",
        "The request could not be recorded in the audit trail, so it was not completed.",
    )
}

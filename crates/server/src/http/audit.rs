//! The audit middleware: every audited request gets one chained record before its response
//! leaves. Handlers cannot skip it — they never see it. The [`Principal`] extractor fills the
//! request's [`AuditSlot`] with who was calling; if the record cannot be written, the
//! response is replaced by an error (fail closed).
//!
//! A request that writes records gives its record to the write instead
//! ([`AuditSlot::write_record`]), which commits it in the same transaction (store.db's
//! outbox): the middleware then waits until it is in the trail.

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

/// One record a request touched: the audit gets a line per patient touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touch {
    /// FHIR type.
    pub resource_type: Option<String>,
    /// Resource id, when one resource was touched.
    pub resource_id: Option<String>,
    /// The patient whose compartment it is in.
    pub patient: Option<String>,
    /// Reached only through break-glass.
    pub break_glass: bool,
}

#[derive(Default)]
struct Learned {
    principal: Option<Principal>,
    touches: Vec<Touch>,
    denied: bool,
    /// The client's address and the route, as every record of the request names them.
    ip: Option<String>,
    action: String,
    /// The request's records were committed with its write (see [`AuditSlot::write_record`]).
    in_outbox: bool,
}

/// What a request turned out to be — who called, which records it touched — learned while
/// it ran and written to the audit when it ends.
#[derive(Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Learned>>);

impl AuditSlot {
    /// Records the caller.
    pub fn set(&self, principal: Principal) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).principal = Some(principal);
    }

    /// Records a resource the request read, wrote, or was refused.
    pub fn touch(&self, touch: Touch) {
        let mut learned = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !learned.touches.contains(&touch) {
            learned.touches.push(touch);
        }
    }

    /// Marks the request as refused by authorisation, whatever its status code says (a
    /// record the caller may not see is answered "not found").
    pub fn deny(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).denied = true;
    }

    /// The audit record of this request's write, for the write's own transaction: who, from
    /// where, which route, a success, flagged `break_glass` when only a grant allowed it.
    /// The records service fills in the resource. Once the write commits, call
    /// [`AuditSlot::written_with_write`].
    pub fn write_record(&self, break_glass: bool) -> AuditEvent {
        let learned = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let touch = Touch { break_glass, ..Touch::default() };
        event(&learned, &now_rfc3339(), touch, Outcome::Success)
    }

    /// The write committed with its record: the middleware adds none, and answers once the
    /// record has moved from the outbox into the trail.
    pub fn written_with_write(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).in_outbox = true;
    }

    fn start(&self, ip: String, action: String) {
        let mut learned = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        learned.ip = Some(ip);
        learned.action = action;
    }

    fn take(&self) -> Learned {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn outcome(status: StatusCode) -> Outcome {
    match status.as_u16() {
        200..=399 => Outcome::Success,
        401 | 403 | 429 => Outcome::Denied,
        _ => Outcome::Failed,
    }
}

/// The routes anyone may read without a record: public, PHI-free documents.
pub const PUBLIC_ROUTES: [&str; 2] = ["/fhir/metadata", "/policy/key"];

/// Appends the request's record, then lets the response go. Every request is audited —
/// unknown paths and methods a route does not take included — but a GET of a public,
/// PHI-free route.
///
/// The request is handled, and its record appended, on a task of its own: a client that
/// hangs up mid-request (a device killed, a network lost) cancels neither a write half-way
/// nor the record of a write already made.
pub async fn audit(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let public = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| PUBLIC_ROUTES.contains(&p.as_str()));
    if public && matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD) {
        return next.run(request).await;
    }
    let handled = tokio::spawn(handle_and_record(state, addr, request, next));
    handled.await.unwrap_or_else(|_| {
        tracing::error!("a request handler panicked");
        super::operation_outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "The server could not complete the request; try again.",
        )
    })
}

/// A refused request may name a patient the caller made up (in a path, in a body): the
/// trail records a patient only if it is a patient of the caller's tenant, so nothing a
/// client types — a name, a birth date — becomes a permanent record. What a request read
/// or wrote came from the store and needs no check.
async fn only_real_patients(state: &AppState, tenant: Option<String>, mut touches: Vec<Touch>) -> Vec<Touch> {
    let named: Vec<String> = touches.iter().filter_map(|t| t.patient.clone()).collect();
    if named.is_empty() {
        return touches;
    }
    let records = state.records.clone();
    let real = tokio::task::spawn_blocking(move || {
        let Some(tenant) = tenant else { return Vec::new() };
        named
            .into_iter()
            .filter(|p| carekeep_fhir::is_valid_id(p) && matches!(records.read(&tenant, "Patient", p), Ok(Some(_))))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for touch in &mut touches {
        if touch.patient.as_ref().is_some_and(|p| !real.contains(p)) {
            touch.patient = None;
            if touch.resource_type.as_deref() == Some("Patient") {
                touch.resource_id = None;
            }
        }
    }
    touches
}

/// The method as the trail names it: a standard one by name, anything else (a client may
/// send any token as its method, a name included) as `OTHER`.
fn method_name(method: &axum::http::Method) -> &'static str {
    const STANDARD: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"];
    STANDARD.into_iter().find(|m| *m == method.as_str()).unwrap_or("OTHER")
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default()
}

/// One record of what `learned` knows of the request, for `touch`.
fn event(learned: &Learned, recorded_at: &str, touch: Touch, outcome: Outcome) -> AuditEvent {
    let who = learned.principal.as_ref();
    AuditEvent {
        recorded_at: recorded_at.to_owned(),
        occurred_at: None,
        tenant: who.map_or_else(|| "-".to_owned(), |p| p.tenant.clone()),
        user: who.map(|p| p.user_id.clone()),
        role: who.map(|p| p.role.as_str().to_owned()),
        device: who.map(|p| p.device_id.clone()),
        ip: learned.ip.clone(),
        action: learned.action.clone(),
        resource_type: touch.resource_type,
        resource_id: touch.resource_id,
        patient: touch.patient,
        outcome,
        break_glass: touch.break_glass,
    }
}

async fn handle_and_record(state: AppState, addr: SocketAddr, mut request: Request, next: Next) -> Response {
    let slot = AuditSlot::default();
    // The route template, never the concrete path: ids (and whatever else a path holds)
    // stay out of the action.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no such route)", |p| p.as_str())
        .to_owned();
    slot.start(addr.ip().to_string(), format!("{} {route}", method_name(request.method())));
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    let mut learned = slot.take();
    let outcome = if learned.denied { Outcome::Denied } else { outcome(response.status()) };
    let recorded_at = now_rfc3339();
    let events: Vec<AuditEvent> = if learned.in_outbox {
        // Committed with the write: only wait for the writer to move it into the trail.
        Vec::new()
    } else {
        let touches = std::mem::take(&mut learned.touches);
        let touches = if touches.is_empty() { vec![Touch::default()] } else { touches };
        let touches = if outcome == Outcome::Success {
            touches
        } else {
            let tenant = learned.principal.as_ref().map(|p| p.tenant.clone());
            only_real_patients(&state, tenant, touches).await
        };
        touches
            .into_iter()
            .map(|touch| event(&learned, &recorded_at, touch, outcome))
            .collect()
    };
    if state.audit.record(events).await.is_ok() {
        return response;
    }
    tracing::error!("audit append failed; the response was withheld");
    super::operation_outcome(
        StatusCode::INTERNAL_SERVER_ERROR,
        "exception",
        "The request could not be recorded in the audit trail, so it was not completed.",
    )
}

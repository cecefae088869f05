//! [`ApiError`]: every refusal and failure a FHIR handler answers with, in one place, so
//! handlers return `Result<Response, ApiError>` and say `?` instead of building the answer
//! at each early return. Each variant answers exactly as the handlers did before: a FHIR
//! OperationOutcome (`application/fhir+json`) and its status. Diagnostics never carry PHI.

use std::borrow::Cow;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::fhir::FHIR_JSON;
use crate::auth::AuthError;
use crate::records::access::Data;
use crate::records::{Problem, RecordError};

/// Why a request gets no resource: what the caller reads in the OperationOutcome.
#[derive(Debug)]
pub enum ApiError {
    /// 404: no such resource — also what a record the caller may not see answers, so ids
    /// cannot be probed.
    NotFound,
    /// 403: the caller's role gives no access to this class of data at all.
    RoleRefused(Data),
    /// 403: the patient is not on the caller's care team; break-glass would open it.
    BreakGlassRequired,
    /// 500: the server failed (the cause is logged where it happened, not sent).
    Internal,
    /// One issue with its status and code, for refusals particular to one route.
    Outcome {
        /// The HTTP status.
        status: StatusCode,
        /// The FHIR issue type (`invalid`, `required`, …).
        code: &'static str,
        /// What to do about it, for the developer of the client.
        diagnostics: Cow<'static, str>,
    },
    /// One issue per problem found in what the caller sent, with each element's path.
    Problems(StatusCode, Vec<Problem>),
    /// An answer already made elsewhere (sign-in's refusals, with their own headers).
    Ready(Box<Response>),
}

impl ApiError {
    /// A refusal with one issue.
    pub fn outcome(status: StatusCode, code: &'static str, diagnostics: impl Into<Cow<'static, str>>) -> Self {
        ApiError::Outcome { status, code, diagnostics: diagnostics.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let outcome = super::operation_outcome;
        match self {
            ApiError::NotFound => outcome(StatusCode::NOT_FOUND, "not-found", "No such resource."),
            ApiError::RoleRefused(data) => outcome(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("Your role does not give access to {}.", data.words()),
            ),
            ApiError::BreakGlassRequired => outcome(
                StatusCode::FORBIDDEN,
                "forbidden",
                "This patient is not on your care team. To open the record in an emergency, declare break-glass \
                 with a reason (POST /break-glass); the access will be flagged for review.",
            ),
            ApiError::Internal => outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "The server could not complete the request; try again.",
            ),
            ApiError::Outcome { status, code, diagnostics } => outcome(status, code, &diagnostics),
            ApiError::Problems(status, problems) => {
                (status, [(header::CONTENT_TYPE, FHIR_JSON)], issues(&problems).to_string()).into_response()
            }
            ApiError::Ready(response) => *response,
        }
    }
}

/// The OperationOutcome naming each problem, its code and the element it is about.
pub(super) fn issues(problems: &[Problem]) -> Value {
    let issues: Vec<Value> = problems
        .iter()
        .map(|p| json!({"severity": "error", "code": p.code, "diagnostics": p.message, "expression": [p.path]}))
        .collect();
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

impl From<RecordError> for ApiError {
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::Invalid(problems) => ApiError::Problems(StatusCode::UNPROCESSABLE_ENTITY, problems),
            RecordError::NotFound => ApiError::NotFound,
            RecordError::VersionConflict => ApiError::outcome(
                StatusCode::PRECONDITION_FAILED,
                "conflict",
                "The resource changed since you read it. Read it again, reapply your change, and send it with the \
                 new ETag.",
            ),
            RecordError::Unavailable => ApiError::outcome(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "The records store cannot be reached for a moment. Nothing was changed; try again shortly.",
            ),
            RecordError::OutcomeUnknown => ApiError::outcome(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "The change may or may not have been saved: the records store was lost as it was saved. Read the \
                 record first, or send it again with the same Idempotency-Key (a Bundle: with ifNoneExist on its \
                 creates), which keeps it once.",
            ),
            RecordError::EmbeddedOnly(what) => ApiError::outcome(
                StatusCode::NOT_IMPLEMENTED,
                "not-supported",
                format!("{what} is not available on this deployment yet (it keeps its records in PostgreSQL)."),
            ),
            RecordError::Store(e) => {
                tracing::error!(error = %e, "records store failed");
                ApiError::Internal
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        ApiError::Ready(Box::new(error.into_response()))
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(_: tokio::task::JoinError) -> Self {
        ApiError::Internal
    }
}

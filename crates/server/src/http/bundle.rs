//! `POST /fhir`: a `transaction` or `batch` Bundle ([`crate::records::bundle`]). The
//! handler reads the Bundle, loads the caller's access once, and lets the records service
//! apply it under the same rules as the single-resource routes; the answer is a
//! `transaction-response` or `batch-response` Bundle, or — for a refused transaction — one
//! OperationOutcome naming every refused entry and element, never a value.

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::audit::{AuditSlot, Touch};
use super::error::{ApiError, issues};
use super::fhir::{FHIR_JSON, blocking, body_json};
use super::grant::{Ask, authorize};
use crate::auth::Principal;
use crate::records::Problem;
use crate::records::bundle::{Answer, Caller, Outcome, Plan, Refusal};

/// `POST /fhir` with a transaction or batch Bundle.
pub async fn bundle(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // A Bundle is not replayed by key: a client sending one would believe it safe to send
    // twice. Conditional creates (ifNoneExist) are how a Bundle is made safe to repeat.
    if headers.contains_key("idempotency-key") {
        return Err(ApiError::outcome(
            StatusCode::BAD_REQUEST,
            "not-supported",
            "Idempotency-Key is not taken on Bundles; give each create an ifNoneExist instead, so sending it again changes nothing.",
        ));
    }
    let value = body_json(&body)?;
    let plan = Plan::read(value).map_err(|problems| ApiError::Problems(StatusCode::BAD_REQUEST, problems))?;
    let kind = plan.kind;
    // Each entry is decided by the caller's access, under the single-resource routes' rules.
    let grant = authorize(caller, &slot, Ask::PerRecord)?;
    let access = grant.access(&state).await?;
    let records = state.records.clone();
    let tenant = grant.tenant().to_owned();
    let record = slot.write_record(false);
    let applied =
        blocking(move || records.apply_bundle(&tenant, plan, &Caller { access: &access }, Some(&record))).await?;
    match applied {
        Outcome::Refused(refusals) => {
            if refusals.iter().any(Refusal::is_denial) {
                slot.deny();
            }
            for patient in refusals.iter().filter_map(|r| r.patient.clone()) {
                slot.touch(Touch { patient: Some(patient), ..Touch::default() });
            }
            let status = refusals.iter().map(|r| r.status).min().unwrap_or(422);
            let problems: Vec<Problem> = refusals.into_iter().flat_map(|r| r.problems).collect();
            Err(ApiError::Problems(StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY), problems))
        }
        Outcome::Applied { answers, touched } => {
            if touched.is_empty() {
                // Nothing committed, so nothing was recorded with it: the refusals are.
                if answers.iter().any(|a| a.refusal.as_ref().is_some_and(Refusal::is_denial)) {
                    slot.deny();
                }
                for patient in answers.iter().filter_map(|a| a.refusal.as_ref()?.patient.clone()) {
                    slot.touch(Touch { patient: Some(patient), ..Touch::default() });
                }
            } else {
                slot.written_with_write();
            }
            for (patient, break_glass) in touched {
                slot.touch(Touch { patient, break_glass, ..Touch::default() });
            }
            let entries: Vec<Value> = answers.iter().map(entry).collect();
            let body = json!({"resourceType": "Bundle", "type": kind.response_type(), "entry": entries});
            // A batch answers 200 whatever its entries did: each carries its own status.
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, FHIR_JSON)], body.to_string()).into_response())
        }
    }
}

/// One entry of the response Bundle: its status, and where the resource now is.
fn entry(answer: &Answer) -> Value {
    let mut response = json!({"status": status_line(answer.status)});
    if let Some(stored) = &answer.stored
        && answer.status != 204
    {
        response["location"] = json!(format!("{}/{}/_history/{}", stored.resource_type, stored.id, stored.version));
        response["etag"] = json!(format!("W/\"{}\"", stored.version));
    }
    if let Some(refusal) = &answer.refusal {
        response["outcome"] = outcome_of(refusal);
    }
    let mut entry = json!({"response": response});
    if let Some(stored) = &answer.stored
        && answer.status == 200
        && let Ok(resource) = serde_json::from_str::<Value>(&stored.json)
    {
        entry["resource"] = resource;
    }
    entry
}

fn status_line(status: u16) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{status} {reason}").trim_end().to_owned()
}

fn outcome_of(refusal: &Refusal) -> Value {
    issues(&refusal.problems)
}

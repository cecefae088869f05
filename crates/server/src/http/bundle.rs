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
use super::fhir::{FHIR_JSON, blocking, body_json, caller_access};
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
) -> Response {
    // A Bundle is not replayed by key: a client sending one would believe it safe to send
    // twice. Conditional creates (ifNoneExist) are how a Bundle is made safe to repeat.
    if headers.contains_key("idempotency-key") {
        return super::fhir::outcome(
            StatusCode::BAD_REQUEST,
            "not-supported",
            "Idempotency-Key is not taken on Bundles; give each create an ifNoneExist instead, so sending it again changes nothing.",
        );
    }
    let value = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let plan = match Plan::read(value) {
        Ok(plan) => plan,
        Err(problems) => return problems_response(StatusCode::BAD_REQUEST, &problems),
    };
    let kind = plan.kind;
    let access = match caller_access(&state, &caller).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let records = state.records.clone();
    let tenant = caller.tenant.clone();
    let record = slot.write_record(false);
    let applied =
        blocking(move || records.apply_bundle(&tenant, plan, &Caller { access: &access }, Some(&record))).await;
    match applied {
        Err(response) => response,
        Ok(Outcome::Refused(refusals)) => {
            if refusals.iter().any(Refusal::is_denial) {
                slot.deny();
            }
            for patient in refusals.iter().filter_map(|r| r.patient.clone()) {
                slot.touch(Touch { patient: Some(patient), ..Touch::default() });
            }
            let status = refusals.iter().map(|r| r.status).min().unwrap_or(422);
            let problems: Vec<Problem> = refusals.into_iter().flat_map(|r| r.problems).collect();
            problems_response(StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY), &problems)
        }
        Ok(Outcome::Applied { answers, touched }) => {
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
            (StatusCode::OK, [(header::CONTENT_TYPE, FHIR_JSON)], body.to_string()).into_response()
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
    let reason = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    format!("{status} {reason}").trim_end().to_owned()
}

fn outcome_of(refusal: &Refusal) -> Value {
    issues(&refusal.problems)
}

fn issues(problems: &[Problem]) -> Value {
    let issues: Vec<Value> = problems
        .iter()
        .map(|p| json!({"severity": "error", "code": p.code, "diagnostics": p.message, "expression": [p.path]}))
        .collect();
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

fn problems_response(status: StatusCode, problems: &[Problem]) -> Response {
    (status, [(header::CONTENT_TYPE, FHIR_JSON)], issues(problems).to_string()).into_response()
}

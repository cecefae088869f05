//! `GET /fhir/AuditEvent`: the audit trail as FHIR AuditEvents. Admins search their tenant's
//! trail (by `patient`, `agent`, `date`); a patient sees who accessed their own record (and
//! the records they are proxy for), without staff IP addresses or devices.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carekeep_protocol::audit::{AuditRecord, Outcome};
use carekeep_protocol::auth::Role;
use serde_json::{Value, json};

use super::AppState;
use super::audit::{AuditSlot, Touch};
use super::error::ApiError;
use super::fhir::FHIR_JSON;
use super::grant::Grant;
use crate::audit::search::read_trail;
use crate::records::RecordError;
use crate::records::access::{self, Data, PatientFilter};
use crate::records::search::{self, After, Search};

/// Searches the trail for the caller (the first page).
pub async fn search(
    state: AppState,
    grant: Grant,
    slot: AuditSlot,
    headers: &HeaderMap,
    query: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    let bad = |code, diagnostics| ApiError::outcome(StatusCode::BAD_REQUEST, code, diagnostics);
    let mut search = Search { types: vec!["AuditEvent".into()], count: 100, ..Search::default() };
    for (name, value) in &query {
        match name.as_str() {
            "patient" | "entity" => search.patient = Some(value.strip_prefix("Patient/").unwrap_or(value).to_owned()),
            "agent" => search.agent = Some(value.clone()),
            "date" => search
                .date
                .push(search::date_condition(name, value).map_err(|e| bad("value", e.0))?),
            "_count" => match value.parse::<u32>() {
                Ok(c) if (1..=search::MAX_COUNT).contains(&c) => search.count = c,
                _ => return Err(bad("value", "_count: expected a number from 1 to 500".into())),
            },
            _ => {
                return Err(bad(
                    "not-supported",
                    format!("{name}: AuditEvent is searched by patient, agent, date and _count"),
                ));
            }
        }
    }
    run(state, grant, slot, headers, search, None).await
}

/// One page of the trail, newest first: the records below `below` (a sequence number from
/// a next link), or the newest.
pub async fn run(
    state: AppState,
    grant: Grant,
    slot: AuditSlot,
    headers: &HeaderMap,
    search: Search,
    below: Option<i64>,
) -> Result<Response, ApiError> {
    let access = grant.access(&state).await?;
    let patients = match access.read_filter(Data::AuditTrail) {
        PatientFilter::Nothing => {
            slot.deny();
            return Err(ApiError::outcome(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Your role does not give access to the audit trail.",
            ));
        }
        PatientFilter::Any => search.patient.clone().map(|p| vec![p]),
        PatientFilter::Only(mine) => match &search.patient {
            Some(p) if !mine.contains(p) => {
                slot.deny();
                return Err(ApiError::outcome(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "You can see the access history of your own record only.",
                ));
            }
            Some(p) => Some(vec![p.clone()]),
            None => Some(mine),
        },
    };
    let staff_view = access::rule_for(grant.role(), Data::AuditTrail).read == access::Reach::Tenant;
    let (records, tenant, s) = (state.records.clone(), grant.tenant().to_owned(), search.clone());
    let found =
        tokio::task::spawn_blocking(move || read_trail(&records, &tenant, patients.as_deref(), &s, below)).await;
    let trail = match found {
        Ok(Ok(trail)) => trail,
        Ok(Err(e @ (RecordError::Unavailable | RecordError::EmbeddedOnly(_)))) => return Err(e.into()),
        _ => {
            return Err(ApiError::outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "The audit trail could not be read; try again.",
            ));
        }
    };
    let users: Vec<String> = trail.records.iter().filter_map(|r| r.event.user.clone()).collect();
    let names = state.auth.usernames(grant.tenant(), users).await?;
    if grant.role() == Role::Patient {
        let touched: std::collections::BTreeSet<_> =
            trail.records.iter().filter_map(|r| r.event.patient.clone()).collect();
        for p in touched {
            slot.touch(Touch { resource_type: Some("AuditEvent".into()), patient: Some(p), ..Touch::default() });
        }
    }
    let base = super::fhir::base_url(headers);
    let mut links = vec![json!({"relation": "self", "url": format!("{base}/fhir/AuditEvent")})];
    if let Some(next) = trail.next_below {
        let Ok(token) = search::page_token(&state.keys.pages, grant.user(), &search, After::audit(next), crate::now())
        else {
            return Err(ApiError::outcome(StatusCode::INTERNAL_SERVER_ERROR, "exception", "Try again."));
        };
        links.push(json!({"relation": "next", "url": format!("{base}/fhir?_page={token}")}));
    }
    let entries: Vec<Value> = trail
        .records
        .iter()
        .map(|record| {
            let username = record.event.user.as_ref().and_then(|u| names.get(u)).map(String::as_str);
            json!({"resource": to_fhir(record, username, staff_view), "search": {"mode": "match"}})
        })
        .collect();
    let body =
        json!({"resourceType": "Bundle", "type": "searchset", "total": trail.total, "link": links, "entry": entries});
    Ok(([(header::CONTENT_TYPE, FHIR_JSON)], body.to_string()).into_response())
}

/// One record as a FHIR R4 AuditEvent. `staff_view` adds the network address and device.
fn to_fhir(record: &AuditRecord, username: Option<&str>, staff_view: bool) -> Value {
    let event = &record.event;
    let action = match event.action.split(' ').next() {
        Some("GET") => "R",
        Some("PUT") => "U",
        Some("POST") if event.action.starts_with("POST /fhir/") => "C",
        _ => "E",
    };
    let outcome = match event.outcome {
        Outcome::Success => "0",
        Outcome::Denied => "4",
        Outcome::Failed => "8",
    };
    let mut agent = json!({"requestor": true});
    if let Some(role) = &event.role {
        agent["type"] = json!({"coding": [{"system": "urn:carekeep:role", "code": role}]});
    }
    if let Some(user) = &event.user {
        let mut who = json!({"identifier": {"system": "urn:carekeep:user", "value": user}});
        if let Some(name) = username {
            who["display"] = json!(name);
        }
        agent["who"] = who;
    }
    if staff_view && let Some(ip) = &event.ip {
        agent["network"] = json!({"address": ip, "type": "2"});
    }
    let mut entities = Vec::new();
    if let Some(patient) = &event.patient {
        entities.push(json!({"what": {"reference": format!("Patient/{patient}")},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"}}));
    }
    if let (Some(t), Some(id)) = (&event.resource_type, &event.resource_id) {
        entities.push(json!({"what": {"reference": format!("{t}/{id}")}}));
    }
    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": format!("audit-{}", record.seq),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "action": action,
        "recorded": event.recorded_at,
        "outcome": outcome,
        "outcomeDesc": event.action,
        "agent": [agent],
        "source": {"observer": {"display": "carekeep-server"}},
    });
    if staff_view && let Some(device) = &event.device {
        resource["source"]["site"] = json!(device);
    }
    if event.break_glass {
        resource["purposeOfEvent"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG", "display": "break the glass"}]}]);
    }
    if !entities.is_empty() {
        resource["entity"] = Value::Array(entities);
    }
    resource
}

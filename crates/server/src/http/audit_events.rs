//! `GET /fhir/AuditEvent`: the audit trail as FHIR AuditEvents. Admins search their tenant's
//! trail (by `patient`, `agent`, `date`); a patient sees who accessed their own record (and
//! the records they are proxy for), without staff IP addresses or devices.

use std::fmt::Write as _;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use carekeep_protocol::audit::{AuditRecord, Outcome};
use carekeep_protocol::auth::Role;
use rusqlite::params_from_iter;
use serde_json::{Value, json};

use super::AppState;
use super::audit::{AuditSlot, Touch};
use super::fhir::FHIR_JSON;
use crate::auth::Principal;
use crate::records::access::{self, Data, PatientFilter};
use crate::records::search::{self, Cmp};

/// Searches the trail for the caller.
pub async fn search(state: AppState, caller: Principal, slot: AuditSlot, query: Vec<(String, String)>) -> Response {
    let outcome = super::operation_outcome;
    let mut patient = None;
    let mut agent = None;
    let mut dates = Vec::new();
    let mut count = 100_u32;
    for (name, value) in &query {
        match name.as_str() {
            "patient" | "entity" => patient = Some(value.strip_prefix("Patient/").unwrap_or(value).to_owned()),
            "agent" => agent = Some(value.clone()),
            "date" => match search::date_condition(name, value) {
                Ok(c) => dates.push(c),
                Err(e) => return outcome(StatusCode::BAD_REQUEST, "value", &e.0),
            },
            "_count" => match value.parse::<u32>() {
                Ok(c) if (1..=search::MAX_COUNT).contains(&c) => count = c,
                _ => return outcome(StatusCode::BAD_REQUEST, "value", "_count: expected a number from 1 to 500"),
            },
            _ => {
                return outcome(
                    StatusCode::BAD_REQUEST,
                    "not-supported",
                    &format!("{name}: AuditEvent is searched by patient, agent, date and _count"),
                );
            }
        }
    }
    let records = state.records.clone();
    let (user, role) = (caller.user_id.clone(), caller.role);
    let Ok(Ok(access)) = tokio::task::spawn_blocking(move || records.access(&user, role, crate::now())).await else {
        return outcome(StatusCode::INTERNAL_SERVER_ERROR, "exception", "Try again.");
    };
    let patients = match access.read_filter(Data::AuditTrail) {
        PatientFilter::Nothing => {
            slot.deny();
            return outcome(StatusCode::FORBIDDEN, "forbidden", "Your role does not give access to the audit trail.");
        }
        PatientFilter::Any => patient.clone().map(|p| vec![p]),
        PatientFilter::Only(mine) => match &patient {
            Some(p) if !mine.contains(p) => {
                slot.deny();
                return outcome(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "You can see the access history of your own record only.",
                );
            }
            Some(p) => Some(vec![p.clone()]),
            None => Some(mine),
        },
    };
    let staff_view = access::rule_for(caller.role, Data::AuditTrail).read == access::Reach::Tenant;
    let store = state.records.store().clone();
    let tenant = caller.tenant.clone();
    let found =
        tokio::task::spawn_blocking(move || read_trail(&store, tenant, patients.as_deref(), agent, &dates, count))
            .await;
    let Ok(Ok(found)) = found else {
        return outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "The audit trail could not be read; try again.",
        );
    };
    if caller.role == Role::Patient {
        for p in found.iter().filter_map(|(r, _)| r.event.patient.clone()).collect::<std::collections::BTreeSet<_>>() {
            slot.touch(Touch { resource_type: Some("AuditEvent".into()), patient: Some(p), ..Touch::default() });
        }
    }
    let entries: Vec<Value> = found
        .iter()
        .map(|(record, username)| json!({"resource": to_fhir(record, username.as_deref(), staff_view), "search": {"mode": "match"}}))
        .collect();
    let body = json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries});
    ([(header::CONTENT_TYPE, FHIR_JSON)], body.to_string()).into_response()
}

/// The trail's records for `tenant`, newest first, filtered as asked, with usernames.
fn read_trail(
    store: &crate::store::Store,
    tenant: String,
    patients: Option<&[String]>,
    agent: Option<String>,
    dates: &[(Cmp, String)],
    count: u32,
) -> rusqlite::Result<Vec<(AuditRecord, Option<String>)>> {
    let mut sql = String::from(
        "SELECT a.record, u.username FROM audit_log a LEFT JOIN users u ON u.id = a.user_id WHERE a.tenant = ?",
    );
    let mut args = vec![tenant];
    if let Some(patients) = patients {
        if patients.is_empty() {
            return Ok(Vec::new());
        }
        sql.push_str(" AND a.patient IN (");
        sql.push_str(&vec!["?"; patients.len()].join(", "));
        sql.push(')');
        args.extend(patients.iter().cloned());
    }
    if let Some(agent) = agent {
        sql.push_str(" AND a.user_id = ?");
        args.push(agent);
    }
    search::push_date_conditions(&mut sql, &mut args, "a.recorded_at", dates);
    let _ = write!(sql, " ORDER BY a.seq DESC LIMIT {count}");
    let conn = store.read();
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args.iter()), |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (json, username) = row?;
        if let Ok(record) = serde_json::from_str::<AuditRecord>(&json) {
            out.push((record, username));
        }
    }
    Ok(out)
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

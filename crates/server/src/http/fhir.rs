//! The FHIR R4 REST API under `/fhir` (JSON only): read, search with paging, create, update
//! with `If-Match`, and `Patient/{id}/$everything`. Thin handlers: the [`Records`] service
//! stores and searches, the [`access`] table decides, the audit slot records each patient
//! touched.
//!
//! Record-level refusals answer "not found", exactly as a missing or other-tenant id does,
//! so ids cannot be probed. Role-level refusals ("billing reads no clinical data") answer 403
//! before the store is touched.

// Handlers answer early with a ready response; boxing them would only add noise.
#![allow(clippy::result_large_err)]

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
use super::audit::{AuditSlot, Touch};
use carekeep_protocol::auth::Role;

use crate::auth::Principal;
use crate::now;
use crate::records::access::{self, Data, Decision, Intent, PatientFilter};
use crate::records::search::{self, After, Search};
use crate::records::{Access, Once, RecordError, Stored, Writer};

/// `application/fhir+json`.
pub const FHIR_JSON: &str = "application/fhir+json";

pub(super) fn outcome(status: StatusCode, code: &str, diagnostics: &str) -> Response {
    super::operation_outcome(status, code, diagnostics)
}

fn not_found() -> Response {
    outcome(StatusCode::NOT_FOUND, "not-found", "No such resource.")
}

fn role_refused(data: Data) -> Response {
    outcome(StatusCode::FORBIDDEN, "forbidden", &format!("Your role does not give access to {}.", data.words()))
}

fn break_glass_required() -> Response {
    outcome(
        StatusCode::FORBIDDEN,
        "forbidden",
        "This patient is not on your care team. To open the record in an emergency, declare break-glass with \
         a reason (POST /break-glass); the access will be flagged for review.",
    )
}

fn internal() -> Response {
    outcome(StatusCode::INTERNAL_SERVER_ERROR, "exception", "The server could not complete the request; try again.")
}

pub(super) fn record_error(error: RecordError) -> Response {
    match error {
        RecordError::Invalid(problems) => {
            let issues: Vec<Value> = problems
                .iter()
                .map(|p| {
                    serde_json::json!({"severity": "error", "code": p.code, "diagnostics": p.message,
                        "expression": [p.path]})
                })
                .collect();
            let body = serde_json::json!({"resourceType": "OperationOutcome", "issue": issues});
            (StatusCode::UNPROCESSABLE_ENTITY, [(header::CONTENT_TYPE, FHIR_JSON)], body.to_string()).into_response()
        }
        RecordError::NotFound => not_found(),
        RecordError::VersionConflict => outcome(
            StatusCode::PRECONDITION_FAILED,
            "conflict",
            "The resource changed since you read it. Read it again, reapply your change, and send it with the new ETag.",
        ),
        RecordError::Store(e) => {
            tracing::error!(error = %e, "records store failed");
            internal()
        }
    }
}

/// Runs blocking store work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RecordError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(record_error),
        Err(_) => Err(internal()),
    }
}

pub(super) async fn caller_access(state: &AppState, caller: &Principal) -> Result<Access, Response> {
    let (records, user, role) = (state.records.clone(), caller.user_id.clone(), caller.role);
    blocking(move || records.access(&user, role, now())).await
}

/// The caller's access for a request about `patient` (only those links), or about anyone.
async fn access_about(state: &AppState, caller: &Principal, patient: Option<&str>) -> Result<Access, Response> {
    let Some(patient) = patient else { return caller_access(state, caller).await };
    let (records, user, role, patient) =
        (state.records.clone(), caller.user_id.clone(), caller.role, patient.to_owned());
    blocking(move || records.access_to(&user, role, &patient, now())).await
}

fn served(resource_type: &str) -> Result<Data, Response> {
    access::SERVED_TYPES.contains(&resource_type).then(|| Data::of(resource_type)).flatten().ok_or_else(|| {
        outcome(StatusCode::NOT_FOUND, "not-supported", "This server does not serve that resource type.")
    })
}

fn resource_response(status: StatusCode, stored: &Stored) -> Response {
    let etag = format!("W/\"{}\"", stored.version);
    let mut response = (status, [(header::CONTENT_TYPE, FHIR_JSON)], stored.json.clone()).into_response();
    if let Ok(value) = etag.parse() {
        response.headers_mut().insert(header::ETAG, value);
    }
    if status == StatusCode::CREATED
        && let Ok(value) = format!("/fhir/{}/{}/_history/{}", stored.resource_type, stored.id, stored.version).parse()
    {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn touch(stored: &Stored, break_glass: bool) -> Touch {
    Touch {
        resource_type: Some(stored.resource_type.clone()),
        resource_id: Some(stored.id.clone()),
        patient: stored.patient.clone(),
        break_glass,
    }
}

/// `GET /fhir/{type}/{id}`.
pub async fn read(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    Path((resource_type, id)): Path<(String, String)>,
) -> Response {
    let data = match served(&resource_type) {
        Ok(d) if d != Data::AuditTrail => d,
        Ok(_) => return outcome(StatusCode::NOT_FOUND, "not-supported", "Search AuditEvent instead of reading one."),
        Err(r) => return r,
    };
    if access::rule_for(caller.role, data).read == access::Reach::Nobody {
        slot.deny();
        return role_refused(data);
    }
    let records = state.records.clone();
    let (tenant, user, role) = (caller.tenant.clone(), caller.user_id.clone(), caller.role);
    let (access, found) =
        match blocking(move || Ok((records.access(&user, role, now())?, records.read(&tenant, &resource_type, &id)?)))
            .await
        {
            Ok(both) => both,
            Err(r) => return r,
        };
    let Some(stored) = found else { return not_found() };
    match access.decide(data, stored.patient.as_deref(), Intent::Read) {
        Decision::Allow { break_glass } => {
            slot.touch(touch(&stored, break_glass));
            resource_response(StatusCode::OK, &stored)
        }
        Decision::BreakGlassRequired => {
            slot.touch(touch(&stored, false));
            slot.deny();
            break_glass_required()
        }
        Decision::Deny => {
            slot.touch(touch(&stored, false));
            slot.deny();
            not_found()
        }
    }
}

fn bad_search(e: &search::BadSearch) -> Response {
    outcome(StatusCode::BAD_REQUEST, "not-supported", &e.0)
}

/// `GET /fhir/{type}?…`.
pub async fn search(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(resource_type): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let data = match served(&resource_type) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if data == Data::AuditTrail {
        return super::audit_events::search(state, caller, slot, &headers, query).await;
    }
    let search = match Search::parse(&resource_type, &query) {
        Ok(s) => s,
        Err(e) => return bad_search(&e),
    };
    let access = match access_about(&state, &caller, search.patient.as_deref()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    run_search(state, caller, slot, &headers, access, search, None).await
}

/// `GET /fhir/Patient/{id}/$everything?_since=…`: the patient's whole compartment that the
/// caller may read, paged, oldest change first — what the app syncs from.
pub async fn everything(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let access = match access_about(&state, &caller, Some(&id)).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let types = readable_compartment(&access, &id, access::SERVED_TYPES.iter().copied());
    let patient_visible = matches!(access.decide(Data::Demographics, Some(&id), Intent::Read), Decision::Allow { .. })
        || !types.is_empty();
    if !patient_visible {
        slot.touch(Touch { resource_type: Some("Patient".into()), patient: Some(id.clone()), ..Touch::default() });
        slot.deny();
        // "Break-glass" only for a patient of this tenant: another tenant's id, or one that
        // does not exist, is not found, alike.
        let exists = patient_exists(&state, &caller.tenant, Some(&id)).await;
        return match access.decide(Data::Clinical, Some(&id), Intent::Read) {
            Decision::BreakGlassRequired if exists => break_glass_required(),
            _ => not_found(),
        };
    }
    let search = match Search::parse_everything(types, &id, &query) {
        Ok(s) => s,
        Err(e) => return bad_search(&e),
    };
    run_search(state, caller, slot, &headers, access, search, None).await
}

/// Of `types`, those of `patient`'s compartment the caller may read now (never the
/// directory or the audit trail, which are not in a compartment).
fn readable_compartment<'a>(access: &Access, patient: &str, types: impl Iterator<Item = &'a str>) -> Vec<String> {
    types
        .filter(|t| {
            Data::of(t).is_some_and(|d| {
                !matches!(d, Data::Directory | Data::AuditTrail)
                    && matches!(access.decide(d, Some(patient), Intent::Read), Decision::Allow { .. })
            })
        })
        .map(str::to_owned)
        .collect()
}

/// `GET /fhir?_page=…`: the next page of an earlier search.
pub async fn page(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let token = query.into_iter().find(|(k, _)| k == "_page").map(|(_, v)| v);
    let Some(token) = token else {
        return outcome(StatusCode::BAD_REQUEST, "required", "_page: missing; follow a Bundle's next link.");
    };
    let Some((search, after)) = search::open_page_token(&state.keys.pages, &caller.user_id, &token, now()) else {
        return outcome(
            StatusCode::GONE,
            "expired",
            "This page link has expired or is not yours; run the search again from the start.",
        );
    };
    if let Some(below) = after.audit_seq() {
        return super::audit_events::run(state, caller, slot, &headers, search, Some(below)).await;
    }
    let access = match access_about(&state, &caller, search.patient.as_deref()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    run_search(state, caller, slot, &headers, access, search, Some(after)).await
}

async fn run_search(
    state: AppState,
    caller: Principal,
    slot: AuditSlot,
    headers: &HeaderMap,
    access: Access,
    search: Search,
    after: Option<After>,
) -> Response {
    // One type: that type's filter. $everything (several types, one patient): the types
    // the caller may read of that patient *now* — a next link sealed earlier carries the
    // types of its time, and a care-team change or an expired break-glass grant since
    // applies to every page.
    let mut search = search;
    let filter = if search.types.len() == 1 {
        let data = Data::of(&search.types[0]).unwrap_or(Data::Clinical);
        if access::rule_for(caller.role, data).read == access::Reach::Nobody {
            slot.deny();
            return role_refused(data);
        }
        access.read_filter(data)
    } else {
        let Some(patient) = search.patient.clone() else { return not_found() };
        let readable = readable_compartment(&access, &patient, search.types.iter().map(String::as_str));
        let demographics =
            matches!(access.decide(Data::Demographics, Some(&patient), Intent::Read), Decision::Allow { .. });
        if readable.is_empty() && !demographics {
            slot.touch(Touch { resource_type: Some("Patient".into()), patient: Some(patient), ..Touch::default() });
            slot.deny();
            return not_found();
        }
        search.types = readable;
        PatientFilter::Only(vec![patient])
    };
    let records = state.records.clone();
    let tenant = caller.tenant.clone();
    let (s, a) = (search.clone(), after.clone());
    let page = match blocking(move || records.search(&tenant, &s, &filter, a.as_ref())).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut patients_touched = std::collections::BTreeSet::new();
    for stored in &page.resources {
        patients_touched.insert(stored.patient.clone());
    }
    for patient in patients_touched {
        let break_glass =
            patient.as_ref().is_some_and(|p| access.break_glass.contains(p) && !access.care_team.contains(p));
        slot.touch(Touch {
            resource_type: (search.types.len() == 1).then(|| search.types[0].clone()),
            resource_id: None,
            patient,
            break_glass,
        });
    }
    let base = base_url(headers);
    let mut links =
        vec![serde_json::json!({"relation": "self", "url": format!("{base}/fhir/{}", search.types.join(","))})];
    if let Some(next) = page.next {
        match search::page_token(&state.keys.pages, &caller.user_id, &search, next, now()) {
            Ok(token) => {
                links.push(serde_json::json!({"relation": "next", "url": format!("{base}/fhir?_page={token}")}));
            }
            Err(e) => return record_error(e),
        }
    }
    let entries: Vec<String> = page
        .resources
        .iter()
        .map(|r| {
            format!(
                r#"{{"fullUrl":"{base}/fhir/{}/{}","resource":{},"search":{{"mode":"match"}}}}"#,
                r.resource_type, r.id, r.json
            )
        })
        .collect();
    let body = format!(
        r#"{{"resourceType":"Bundle","type":"searchset","total":{},"link":{},"entry":[{}]}}"#,
        page.total,
        Value::Array(links),
        entries.join(",")
    );
    ([(header::CONTENT_TYPE, FHIR_JSON)], body).into_response()
}

/// `https://<host>` from the request's Host header (the listener is TLS-only).
pub(super) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)))
        .unwrap_or("localhost");
    format!("https://{host}")
}

pub(super) fn body_json(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|_| {
        outcome(
            StatusCode::BAD_REQUEST,
            "structure",
            "The body is not JSON. Send one FHIR resource as application/fhir+json.",
        )
    })
}

/// `POST /fhir/{type}`: creates a resource with a new opaque id.
pub async fn create(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(resource_type): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let data = match served(&resource_type) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if access::rule_for(caller.role, data).write == access::Reach::Nobody {
        slot.deny();
        return role_refused(data);
    }
    let value = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let access = match caller_access(&state, &caller).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let checked = match checked_for(&state, &caller, value, &resource_type).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    // A new patient is registered by a clinician, who joins its care team; anything else
    // must belong to a patient the caller may write for.
    let mut break_glass = false;
    if data != Data::Demographics {
        match access.decide(data, checked.patient.as_deref(), Intent::Write) {
            Decision::Allow { break_glass: bg } => break_glass = bg,
            // Say "break-glass" only for a patient that exists, or ids could be probed.
            Decision::BreakGlassRequired
                if patient_exists(&state, &caller.tenant, checked.patient.as_deref()).await =>
            {
                slot.deny();
                return break_glass_required();
            }
            Decision::Deny | Decision::BreakGlassRequired => {
                slot.deny();
                slot.touch(Touch {
                    resource_type: Some(resource_type.clone()),
                    patient: checked.patient.clone(),
                    ..Touch::default()
                });
                return record_error(crate::records::patient_not_found(&resource_type));
            }
        }
    }
    let records = state.records.clone();
    let (tenant, user) = (caller.tenant.clone(), caller.user_id.clone());
    let record = slot.write_record(break_glass);
    let (stored, replayed) = match blocking(move || {
        let writer = Writer::user(&user, key.as_deref()).audited(&record);
        let (stored, replayed) = records.create(&tenant, checked, &writer)?;
        if stored.resource_type == "Patient" && !replayed {
            records.link(&tenant, &user, &stored.id, "care-team")?;
        }
        Ok((stored, replayed))
    })
    .await
    {
        Ok(created) => created,
        Err(r) => return r,
    };
    // A replay answers with the resource as it is now: only if the caller may still read it.
    if replayed && !matches!(access.decide(data, stored.patient.as_deref(), Intent::Read), Decision::Allow { .. }) {
        slot.touch(touch(&stored, false));
        slot.deny();
        return not_found();
    }
    slot.touch(touch(&stored, break_glass));
    if !replayed {
        slot.written_with_write();
    }
    resource_response(StatusCode::CREATED, &stored)
}

async fn patient_exists(state: &AppState, tenant: &str, patient: Option<&str>) -> bool {
    let Some(patient) = patient else { return false };
    let (records, tenant, patient) = (state.records.clone(), tenant.to_owned(), patient.to_owned());
    matches!(blocking(move || records.read(&tenant, "Patient", &patient)).await, Ok(Some(_)))
}

/// `PUT /fhir/{type}/{id}`: replaces a resource; `If-Match: W/"<version>"` is required so no
/// one overwrites a change they have not seen.
pub async fn update(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path((resource_type, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let data = match served(&resource_type) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if access::rule_for(caller.role, data).write == access::Reach::Nobody {
        slot.deny();
        return role_refused(data);
    }
    let Some(expected) = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().trim_start_matches("W/").trim_matches('"').parse::<i64>().ok())
    else {
        return outcome(
            StatusCode::PRECONDITION_REQUIRED,
            "required",
            "If-Match: missing. Send the ETag of the version you changed, e.g. If-Match: W/\"3\".",
        );
    };
    let value = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if value.get("id").and_then(Value::as_str).is_some_and(|body_id| body_id != id) {
        return outcome(StatusCode::BAD_REQUEST, "invalid", "id: the body's id must match the id in the URL.");
    }
    let (current, break_glass) = match current_for_write(&state, &caller, &slot, data, &resource_type, &id).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    // The right to write was checked on this version: any other is a conflict here, before
    // the store's own check, so an If-Match naming a version written meanwhile (by someone
    // else) cannot ride on the check of this one.
    if expected != current.version {
        slot.touch(touch(&current, break_glass));
        return record_error(RecordError::VersionConflict);
    }
    let checked = match checked_for(&state, &caller, value, &resource_type).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    // A resource may not be moved into a compartment the caller cannot write.
    let moved_to = if data == Data::Demographics { Some(id.clone()) } else { checked.patient.clone() };
    if moved_to != current.patient {
        slot.deny();
        return outcome(
            StatusCode::UNPROCESSABLE_ENTITY,
            "business-rule",
            "A resource cannot be moved to another patient.",
        );
    }
    let records = state.records.clone();
    let (tenant, user) = (caller.tenant.clone(), caller.user_id.clone());
    let record = slot.write_record(break_glass);
    let updated = blocking(move || {
        records.update(&tenant, &id, checked, expected, &Writer::user(&user, key.as_deref()).audited(&record))
    })
    .await;
    let (stored, replayed) = match updated {
        Ok(updated) => updated,
        Err(r) => {
            slot.touch(touch(&current, break_glass));
            return r;
        }
    };
    slot.touch(touch(&stored, break_glass));
    if !replayed {
        slot.written_with_write();
    }
    resource_response(StatusCode::OK, &stored)
}

/// A resource the caller sent, checked as any write is, and — from a patient or proxy —
/// checked to be something they may author ([`crate::records::authorship`]).
async fn checked_for(
    state: &AppState,
    caller: &Principal,
    value: Value,
    resource_type: &str,
) -> Result<crate::records::Checked, Response> {
    let (records, rt, role) = (state.records.clone(), resource_type.to_owned(), caller.role);
    blocking(move || {
        let mut checked = records.check(value, &rt)?;
        if role == Role::Patient {
            checked.check_patient_authored()?;
            checked.mark_patient_authored();
        }
        Ok(checked)
    })
    .await
}

/// The current version of a resource the caller means to change, and whether that takes
/// break-glass; or the refusal: break-glass required, "read but not change" for a record
/// the caller may read (a patient's, written by someone else), and "not found" otherwise
/// (as for a missing id).
async fn current_for_write(
    state: &AppState,
    caller: &Principal,
    slot: &AuditSlot,
    data: Data,
    resource_type: &str,
    id: &str,
) -> Result<(Stored, bool), Response> {
    let access = caller_access(state, caller).await?;
    let records = state.records.clone();
    let (tenant, rt, rid) = (caller.tenant.clone(), resource_type.to_owned(), id.to_owned());
    let current = blocking(move || records.read(&tenant, &rt, &rid)).await?.ok_or_else(not_found)?;
    match access.decide(data, current.patient.as_deref(), Intent::Write) {
        Decision::Allow { break_glass } if access.may_change(current.written_by.as_deref()) => {
            Ok((current, break_glass))
        }
        decision => {
            slot.touch(touch(&current, false));
            slot.deny();
            let readable =
                matches!(access.decide(data, current.patient.as_deref(), Intent::Read), Decision::Allow { .. });
            Err(match decision {
                Decision::BreakGlassRequired => break_glass_required(),
                Decision::Allow { .. } => outcome(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "You may change only what you recorded yourself; ask your care team to correct this record.",
                ),
                Decision::Deny if readable => {
                    outcome(StatusCode::FORBIDDEN, "forbidden", "Your role may read this record but not change it.")
                }
                Decision::Deny => not_found(),
            })
        }
    }
}

/// The `Idempotency-Key` header, if sent: a device replaying its outbox sends each write's
/// key unchanged, so a write whose answer was lost is not made twice.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Response> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    value.to_str().ok().filter(|k| Once::new("", k).is_some()).map(|k| Some(k.to_owned())).ok_or_else(|| {
        outcome(
            StatusCode::BAD_REQUEST,
            "value",
            "Idempotency-Key: expected up to 128 printable characters without spaces.",
        )
    })
}

/// `DELETE /fhir/{type}/{id}`: removes a resource (not a patient) and leaves a tombstone,
/// so devices drop their copies at their next sync.
pub async fn delete(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    Path((resource_type, id)): Path<(String, String)>,
) -> Response {
    let data = match served(&resource_type) {
        Ok(d) if d != Data::AuditTrail => d,
        Ok(_) => return outcome(StatusCode::METHOD_NOT_ALLOWED, "not-supported", "The audit trail is append-only."),
        Err(r) => return r,
    };
    if access::rule_for(caller.role, data).write == access::Reach::Nobody {
        slot.deny();
        return role_refused(data);
    }
    let (current, break_glass) = match current_for_write(&state, &caller, &slot, data, &resource_type, &id).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    slot.touch(touch(&current, break_glass));
    let records = state.records.clone();
    let (tenant, user) = (caller.tenant.clone(), caller.user_id.clone());
    let record = slot.write_record(break_glass);
    let version = current.version;
    let deleted = blocking(move || {
        let writer = Writer::user(&user, None).audited(&record);
        records.delete(&tenant, &resource_type, &id, version, now(), &writer)
    })
    .await;
    match deleted {
        Ok(_) => {
            slot.written_with_write();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
    }
}

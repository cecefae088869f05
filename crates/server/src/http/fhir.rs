//! The FHIR R4 REST API under `/fhir` (JSON only): read, search with paging, create, update
//! with `If-Match`, and `Patient/{id}/$everything`. Thin handlers: `authorize` (in
//! `http::grant`) checks the role once and hands back the `Grant` the records are reached
//! through, the [`Records`] service stores and searches, the [`access`] table decides, the
//! audit slot records each patient touched, and every refusal is an [`ApiError`].
//!
//! Record-level refusals answer "not found", exactly as a missing or other-tenant id does,
//! so ids cannot be probed. Role-level refusals ("billing reads no clinical data") answer 403
//! before the store is touched.
//!
//! [`Records`]: crate::records::Records

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
use super::audit::{AuditSlot, Touch};
use super::error::ApiError;
use super::grant::{Ask, Grant, authorize};
use carekeep_protocol::auth::Role;

use crate::auth::Principal;
use crate::now;
use crate::records::access::{self, Data, Decision, Intent, PatientFilter};
use crate::records::search::{self, After, Search};
use crate::records::{Access, Once, RecordError, Stored, Writer};

/// `application/fhir+json`.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Runs blocking store work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RecordError> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(tokio::task::spawn_blocking(work).await??)
}

fn served(resource_type: &str) -> Result<Data, ApiError> {
    access::SERVED_TYPES
        .contains(&resource_type)
        .then(|| Data::of(resource_type))
        .flatten()
        .ok_or_else(|| {
            ApiError::outcome(StatusCode::NOT_FOUND, "not-supported", "This server does not serve that resource type.")
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
) -> Result<Response, ApiError> {
    let data = match served(&resource_type)? {
        Data::AuditTrail => {
            return Err(ApiError::outcome(
                StatusCode::NOT_FOUND,
                "not-supported",
                "Search AuditEvent instead of reading one.",
            ));
        }
        data => data,
    };
    let grant = authorize(caller, &slot, Ask::Read(data))?;
    let records = state.records.clone();
    let (tenant, user, role) = (grant.tenant().to_owned(), grant.user().to_owned(), grant.role());
    // The access and the resource in one trip to the store.
    let (access, found) = blocking(move || {
        Ok((records.access(&tenant, &user, role, now())?, records.read(&tenant, &resource_type, &id)?))
    })
    .await?;
    let stored = found.ok_or(ApiError::NotFound)?;
    match access.decide(data, stored.patient.as_deref(), Intent::Read) {
        Decision::Allow { break_glass } => {
            slot.touch(touch(&stored, break_glass));
            Ok(resource_response(StatusCode::OK, &stored))
        }
        Decision::BreakGlassRequired => {
            slot.touch(touch(&stored, false));
            slot.deny();
            Err(ApiError::BreakGlassRequired)
        }
        Decision::Deny => {
            slot.touch(touch(&stored, false));
            slot.deny();
            Err(ApiError::NotFound)
        }
    }
}

fn bad_search(e: search::BadSearch) -> ApiError {
    ApiError::outcome(StatusCode::BAD_REQUEST, "not-supported", e.0)
}

/// What a search asks: to read its one type, or (`$everything`, several types) each
/// record as its type allows.
fn ask_of(search: &Search) -> Ask {
    match search.types.as_slice() {
        [one] => Ask::Read(Data::of(one).unwrap_or(Data::Clinical)),
        _ => Ask::PerRecord,
    }
}

/// `GET /fhir/{type}?…`.
pub async fn search(
    State(state): State<AppState>,
    caller: Principal,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(resource_type): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let data = served(&resource_type)?;
    if data == Data::AuditTrail {
        // The trail filters by the caller's own links to patients ([`Access::read_filter`]).
        let grant = authorize(caller, &slot, Ask::PerRecord)?;
        return super::audit_events::search(state, grant, slot, &headers, query).await;
    }
    let search = Search::parse(&resource_type, &query).map_err(bad_search)?;
    let grant = authorize(caller, &slot, ask_of(&search))?;
    let access = grant.access_about(&state, search.patient.as_deref()).await?;
    run_search(state, grant, slot, &headers, access, search, None).await
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
) -> Result<Response, ApiError> {
    // Which types the caller may read of this patient is known only with their access.
    let grant = authorize(caller, &slot, Ask::PerRecord)?;
    let access = grant.access_about(&state, Some(&id)).await?;
    let types = readable_compartment(&access, &id, access::SERVED_TYPES.iter().copied());
    let patient_visible = matches!(access.decide(Data::Demographics, Some(&id), Intent::Read), Decision::Allow { .. })
        || !types.is_empty();
    if !patient_visible {
        slot.touch(Touch { resource_type: Some("Patient".into()), patient: Some(id.clone()), ..Touch::default() });
        slot.deny();
        // "Break-glass" only for a patient of this tenant: another tenant's id, or one that
        // does not exist, is not found, alike.
        let exists = patient_exists(&state, grant.tenant(), Some(&id)).await;
        return Err(match access.decide(Data::Clinical, Some(&id), Intent::Read) {
            Decision::BreakGlassRequired if exists => ApiError::BreakGlassRequired,
            _ => ApiError::NotFound,
        });
    }
    let search = Search::parse_everything(types, &id, &query).map_err(bad_search)?;
    let grant = grant.narrow(&slot, ask_of(&search))?;
    run_search(state, grant, slot, &headers, access, search, None).await
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
) -> Result<Response, ApiError> {
    let token = query.into_iter().find(|(k, _)| k == "_page").map(|(_, v)| v);
    let Some(token) = token else {
        return Err(ApiError::outcome(
            StatusCode::BAD_REQUEST,
            "required",
            "_page: missing; follow a Bundle's next link.",
        ));
    };
    let Some((search, after)) = search::open_page_token(&state.keys.pages, &caller.user_id, &token, now()) else {
        return Err(ApiError::outcome(
            StatusCode::GONE,
            "expired",
            "This page link has expired or is not yours; run the search again from the start.",
        ));
    };
    if let Some(below) = after.audit_seq() {
        let grant = authorize(caller, &slot, Ask::PerRecord)?;
        return super::audit_events::run(state, grant, slot, &headers, search, Some(below)).await;
    }
    // The role is checked again on every page: it may have changed since the first.
    let grant = authorize(caller, &slot, ask_of(&search))?;
    let access = grant.access_about(&state, search.patient.as_deref()).await?;
    run_search(state, grant, slot, &headers, access, search, Some(after)).await
}

async fn run_search(
    state: AppState,
    grant: Grant,
    slot: AuditSlot,
    headers: &HeaderMap,
    access: Access,
    search: Search,
    after: Option<After>,
) -> Result<Response, ApiError> {
    // One type: that type's filter. $everything (several types, one patient): the types
    // the caller may read of that patient *now* — a next link sealed earlier carries the
    // types of its time, and a care-team change or an expired break-glass grant since
    // applies to every page.
    let mut search = search;
    let filter = if let Ask::Read(data) = grant.ask() {
        access.read_filter(data)
    } else {
        let Some(patient) = search.patient.clone() else { return Err(ApiError::NotFound) };
        let readable = readable_compartment(&access, &patient, search.types.iter().map(String::as_str));
        let demographics =
            matches!(access.decide(Data::Demographics, Some(&patient), Intent::Read), Decision::Allow { .. });
        if readable.is_empty() && !demographics {
            slot.touch(Touch { resource_type: Some("Patient".into()), patient: Some(patient), ..Touch::default() });
            slot.deny();
            return Err(ApiError::NotFound);
        }
        search.types = readable;
        PatientFilter::Only(vec![patient])
    };
    let records = state.records.clone();
    let tenant = grant.tenant().to_owned();
    let (s, a) = (search.clone(), after.clone());
    let page = blocking(move || records.search(&tenant, &s, &filter, a.as_ref())).await?;
    let mut patients_touched = std::collections::BTreeSet::new();
    for stored in &page.resources {
        patients_touched.insert(stored.patient.clone());
    }
    for patient in patients_touched {
        let break_glass = patient
            .as_ref()
            .is_some_and(|p| access.break_glass.contains(p) && !access.care_team.contains(p));
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
        let token = search::page_token(&state.keys.pages, grant.user(), &search, next, now())?;
        links.push(serde_json::json!({"relation": "next", "url": format!("{base}/fhir?_page={token}")}));
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
    Ok(([(header::CONTENT_TYPE, FHIR_JSON)], body).into_response())
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

pub(super) fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|_| {
        ApiError::outcome(
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
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let data = served(&resource_type)?;
    let grant = authorize(caller, &slot, Ask::Write(data))?;
    let value = body_json(&body)?;
    let access = grant.access(&state).await?;
    let checked = checked_for(&state, &grant, value, &resource_type).await?;
    // A new patient is registered by a clinician, who joins its care team; anything else
    // must belong to a patient the caller may write for.
    let mut break_glass = false;
    if data != Data::Demographics {
        match access.decide(data, checked.patient.as_deref(), Intent::Write) {
            Decision::Allow { break_glass: bg } => break_glass = bg,
            // Say "break-glass" only for a patient that exists, or ids could be probed.
            Decision::BreakGlassRequired
                if patient_exists(&state, grant.tenant(), checked.patient.as_deref()).await =>
            {
                slot.deny();
                return Err(ApiError::BreakGlassRequired);
            }
            Decision::Deny | Decision::BreakGlassRequired => {
                slot.deny();
                slot.touch(Touch {
                    resource_type: Some(resource_type.clone()),
                    patient: checked.patient.clone(),
                    ..Touch::default()
                });
                return Err(crate::records::patient_not_found(&resource_type).into());
            }
        }
    }
    let records = state.records.clone();
    let (tenant, user) = (grant.tenant().to_owned(), grant.user().to_owned());
    let record = slot.write_record(break_glass);
    let (stored, replayed) = blocking(move || {
        let writer = Writer::user(&user, key.as_deref()).audited(&record);
        let (stored, replayed) = records.create(&tenant, checked, &writer)?;
        if stored.resource_type == "Patient" && !replayed {
            records.link(&tenant, &user, &stored.id, "care-team")?;
        }
        Ok((stored, replayed))
    })
    .await?;
    // A replay answers with the resource as it is now: only if the caller may still read it.
    if replayed && !matches!(access.decide(data, stored.patient.as_deref(), Intent::Read), Decision::Allow { .. }) {
        slot.touch(touch(&stored, false));
        slot.deny();
        return Err(ApiError::NotFound);
    }
    slot.touch(touch(&stored, break_glass));
    if !replayed {
        slot.written_with_write();
    }
    Ok(resource_response(StatusCode::CREATED, &stored))
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
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let data = served(&resource_type)?;
    let grant = authorize(caller, &slot, Ask::Write(data))?;
    let Some(expected) = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().trim_start_matches("W/").trim_matches('"').parse::<i64>().ok())
    else {
        return Err(ApiError::outcome(
            StatusCode::PRECONDITION_REQUIRED,
            "required",
            "If-Match: missing. Send the ETag of the version you changed, e.g. If-Match: W/\"3\".",
        ));
    };
    let value = body_json(&body)?;
    if value.get("id").and_then(Value::as_str).is_some_and(|body_id| body_id != id) {
        return Err(ApiError::outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "id: the body's id must match the id in the URL.",
        ));
    }
    let (current, break_glass) = current_for_write(&state, &grant, &slot, data, &resource_type, &id).await?;
    // The right to write was checked on this version: any other is a conflict here, before
    // the store's own check, so an If-Match naming a version written meanwhile (by someone
    // else) cannot ride on the check of this one.
    if expected != current.version {
        slot.touch(touch(&current, break_glass));
        return Err(RecordError::VersionConflict.into());
    }
    let checked = checked_for(&state, &grant, value, &resource_type).await?;
    // A resource may not be moved into a compartment the caller cannot write.
    let moved_to = if data == Data::Demographics { Some(id.clone()) } else { checked.patient.clone() };
    if moved_to != current.patient {
        slot.deny();
        return Err(ApiError::outcome(
            StatusCode::UNPROCESSABLE_ENTITY,
            "business-rule",
            "A resource cannot be moved to another patient.",
        ));
    }
    let records = state.records.clone();
    let (tenant, user) = (grant.tenant().to_owned(), grant.user().to_owned());
    let record = slot.write_record(break_glass);
    let (stored, replayed) = blocking(move || {
        records.update(&tenant, &id, checked, expected, &Writer::user(&user, key.as_deref()).audited(&record))
    })
    .await
    .inspect_err(|_| slot.touch(touch(&current, break_glass)))?;
    slot.touch(touch(&stored, break_glass));
    if !replayed {
        slot.written_with_write();
    }
    Ok(resource_response(StatusCode::OK, &stored))
}

/// A resource the caller sent, checked as any write is, and — from a patient or proxy —
/// checked to be something they may author ([`crate::records::authorship`]).
async fn checked_for(
    state: &AppState,
    grant: &Grant,
    value: Value,
    resource_type: &str,
) -> Result<crate::records::Checked, ApiError> {
    let (records, rt, role) = (state.records.clone(), resource_type.to_owned(), grant.role());
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
    grant: &Grant,
    slot: &AuditSlot,
    data: Data,
    resource_type: &str,
    id: &str,
) -> Result<(Stored, bool), ApiError> {
    let access = grant.access(state).await?;
    let records = state.records.clone();
    let (tenant, rt, rid) = (grant.tenant().to_owned(), resource_type.to_owned(), id.to_owned());
    let current = blocking(move || records.read(&tenant, &rt, &rid))
        .await?
        .ok_or(ApiError::NotFound)?;
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
                Decision::BreakGlassRequired => ApiError::BreakGlassRequired,
                Decision::Allow { .. } => ApiError::outcome(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "You may change only what you recorded yourself; ask your care team to correct this record.",
                ),
                Decision::Deny if readable => ApiError::outcome(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "Your role may read this record but not change it.",
                ),
                Decision::Deny => ApiError::NotFound,
            })
        }
    }
}

/// The `Idempotency-Key` header, if sent: a device replaying its outbox sends each write's
/// key unchanged, so a write whose answer was lost is not made twice.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    value
        .to_str()
        .ok()
        .filter(|k| Once::new("", k).is_some())
        .map(|k| Some(k.to_owned()))
        .ok_or_else(|| {
            ApiError::outcome(
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
) -> Result<Response, ApiError> {
    let data = match served(&resource_type)? {
        Data::AuditTrail => {
            return Err(ApiError::outcome(
                StatusCode::METHOD_NOT_ALLOWED,
                "not-supported",
                "The audit trail is append-only.",
            ));
        }
        data => data,
    };
    let grant = authorize(caller, &slot, Ask::Write(data))?;
    let (current, break_glass) = current_for_write(&state, &grant, &slot, data, &resource_type, &id).await?;
    slot.touch(touch(&current, break_glass));
    let records = state.records.clone();
    let (tenant, user) = (grant.tenant().to_owned(), grant.user().to_owned());
    let record = slot.write_record(break_glass);
    let version = current.version;
    blocking(move || {
        let writer = Writer::user(&user, None).audited(&record);
        records.delete(&tenant, &resource_type, &id, version, now(), &writer)
    })
    .await?;
    slot.written_with_write();
    Ok(StatusCode::NO_CONTENT.into_response())
}

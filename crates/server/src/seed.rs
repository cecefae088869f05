//! `seed-demo`: a demo tenant with the synthetic carebundle patients (20 transaction Bundles,
//! every patient marked as test data) and one user per role, so the app has something real
//! to pin, sign in to and sync from.

use carekeep_protocol::auth::Role;
use serde_json::Value;

mod documents;

use crate::records::Records;
use crate::store::Store;
use crate::{ServerError, admin};

/// The demo tenant's id.
pub const DEMO_TENANT: &str = "demo";

/// The synthetic patients (see `crates/core/tests/fixtures/README.md` for their provenance).
const BUNDLES: &[&str] = &[
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0000.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0001.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0002.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0003.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0004.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0005.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0006.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0007.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0008.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0009.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0010.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0011.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0012.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0013.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0014.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0015.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0016.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0017.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0018.json"),
    include_str!("../../core/tests/fixtures/carebundle/mixed-42-0019.json"),
];

/// The directory a Synthea export brings (hospital, payer, location, practitioner), and the
/// first patient's records of the types such an export carries — visits' procedures, care
/// plans and goals, insurance and claims, devices, imaging... (generated beside the tests'
/// Synthea-shaped fixtures, see `crates/server/tests/fixtures/synthea-style/generate.py`).
const DIRECTORY: [&str; 2] = [
    include_str!("../tests/fixtures/synthea-style/hospitalInformation.json"),
    include_str!("../tests/fixtures/synthea-style/practitionerInformation.json"),
];
const DEMO_EXTRAS: &str = include_str!("../tests/fixtures/synthea-style/demo-extras.json");
/// The placeholders in [`DEMO_EXTRAS`] for the patient and the visit.
const EXTRAS_PATIENT: &str = "urn:uuid:00000000-0000-4000-8000-00000000000a";
const EXTRAS_VISIT: &str = "urn:uuid:00000000-0000-4000-8000-00000000000b";

/// Loads the directory and the first patient's Synthea-type records, as the clinic's own
/// import would (every resource checked; all or nothing).
fn import_extras(records: &Records, patient: &str) -> Result<(), ServerError> {
    use crate::records::bundle::{Clinic, Outcome, Plan, Targets};
    let invalid = |what: String| ServerError::Invalid(format!("demo extras: {what}"));
    let visit = records
        .earliest(DEMO_TENANT, "Encounter", patient)
        .map_err(|e| invalid(e.to_string()))?
        .ok_or_else(|| invalid("the first patient has no visit".into()))?;
    for (text, known) in DIRECTORY.iter().map(|d| (*d, None)).chain([(DEMO_EXTRAS, Some(&visit))]) {
        let bundle: Value = serde_json::from_str(text).map_err(|_| invalid("not JSON".into()))?;
        let mut plan = Plan::read(bundle).map_err(|p| invalid(format!("{} problems", p.len())))?;
        if let Some(visit) = known {
            let mut targets = Targets::default();
            targets.insert(EXTRAS_PATIENT, "Patient", patient);
            targets.insert(EXTRAS_VISIT, "Encounter", visit);
            plan.known = targets;
        }
        match records
            .apply_bundle(DEMO_TENANT, plan, &Clinic, None)
            .map_err(|e| ServerError::Store(e.to_string()))?
        {
            Outcome::Applied { .. } => {}
            Outcome::Refused(refusals) => {
                let problems: Vec<String> = refusals
                    .iter()
                    .flat_map(|r| r.problems.iter().map(|p| p.message.clone()))
                    .collect();
                return Err(invalid(problems.join("; ")));
            }
        }
    }
    Ok(())
}

/// A demo user, with what they sign in with.
#[derive(Clone)]
pub struct DemoUser {
    /// Sign-in name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Password (random).
    pub password: String,
    /// TOTP secret, base32.
    pub totp_base32: String,
}

/// Seeds the demo tenant: every carebundle resource, two years of lab and vital-sign history
/// and three documents for the first patient (see [`history`]), then a patient (linked to the first
/// patient and proxy for the second), a clinician (care team: the first ten), a nurse
/// (care team: the first five), a billing clerk and an admin. Refuses to run twice.
pub fn seed_demo(store: &Store, records: &Records, now: i64) -> Result<Vec<DemoUser>, ServerError> {
    admin::add_tenant(store, DEMO_TENANT, DEMO_NAME, now).map_err(|_| already_seeded())?;
    seed_tenant(records, |username, role, password| admin::add_user(store, DEMO_TENANT, username, role, password, now))
}

/// The demo tenant's display name.
pub const DEMO_NAME: &str = "Carekeep demo clinic (synthetic data)";

/// The refusal of a second seeding.
pub fn already_seeded() -> ServerError {
    ServerError::Invalid("this deployment already holds the demo tenant".into())
}

/// [`seed_demo`] in a demo tenant made already (on either engine), its users made by
/// `add_user` (username, role, password).
pub fn seed_tenant(
    records: &Records,
    mut add_user: impl FnMut(&str, Role, &str) -> Result<admin::NewUser, ServerError>,
) -> Result<Vec<DemoUser>, ServerError> {
    let mut patients = Vec::new();
    for bundle in BUNDLES {
        patients.extend(import_bundle(records, DEMO_TENANT, bundle)?);
    }
    import_history(records, &patients[0])?;
    import_extras(records, &patients[0])?;
    let mut users = Vec::new();
    for (username, role) in [
        ("demo.patient", Role::Patient),
        ("demo.clinician", Role::Clinician),
        ("demo.nurse", Role::Nurse),
        ("demo.billing", Role::Billing),
        ("demo.admin", Role::Admin),
    ] {
        let password = crate::auth::secrets::new_token()?;
        let user = add_user(username, role, &password)?;
        let link = |patient: &String, relation: &str| {
            records
                .link(DEMO_TENANT, &user.id, patient, relation)
                .map_err(|e| ServerError::Store(e.to_string()))
        };
        match role {
            Role::Patient => {
                link(&patients[0], "self")?;
                link(&patients[1], "proxy")?;
            }
            Role::Clinician => patients.iter().take(10).try_for_each(|p| link(p, "care-team"))?,
            Role::Nurse => patients.iter().take(5).try_for_each(|p| link(p, "care-team"))?,
            _ => {}
        }
        users.push(DemoUser { username: username.to_owned(), role, password, totp_base32: user.totp_base32 });
    }
    Ok(users)
}

/// Imports one transaction Bundle whose entries carry `urn:uuid:` full URLs, all or none:
/// each resource keeps that UUID as its id, and references to other entries become
/// `Type/id`. Returns the ids of the patients it held.
pub fn import_bundle(records: &Records, tenant: &str, bundle: &str) -> Result<Vec<String>, ServerError> {
    let invalid = |what: &str| ServerError::Invalid(format!("demo bundle: {what}"));
    let bundle: Value = serde_json::from_str(bundle).map_err(|_| invalid("not JSON"))?;
    let entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no entries"))?;
    let mut map = std::collections::HashMap::new();
    for entry in entries {
        let full_url = entry.get("fullUrl").and_then(Value::as_str).unwrap_or_default();
        let resource_type = entry
            .pointer("/resource/resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let id = carekeep_fhir::id_from_full_url(full_url).ok_or_else(|| invalid("an entry without a urn:uuid"))?;
        map.insert(full_url.to_owned(), (resource_type.to_owned(), id.to_owned()));
    }
    let mut checked_all = Vec::with_capacity(entries.len());
    // Patients first, so every other resource's patient exists when it is stored.
    let mut ordered: Vec<&Value> = entries.iter().collect();
    ordered.sort_by_key(|e| e.pointer("/resource/resourceType").and_then(Value::as_str) != Some("Patient"));
    let now = time::OffsetDateTime::now_utc();
    for entry in ordered {
        let full_url = entry.get("fullUrl").and_then(Value::as_str).unwrap_or_default();
        let (resource_type, id) = map[full_url].clone();
        let mut resource = entry
            .get("resource")
            .cloned()
            .ok_or_else(|| invalid("an entry without a resource"))?;
        rewrite_references(&mut resource, &map);
        let checked = records.check(resource, &resource_type).map_err(|e| match e {
            crate::records::RecordError::Invalid(problems) => invalid(&format!(
                "{resource_type} is not valid: {}",
                problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ")
            )),
            other => ServerError::Store(other.to_string()),
        })?;
        checked_all.push((checked, id));
    }
    let stored = records
        .import(tenant, checked_all, now)
        .map_err(|e| ServerError::Store(e.to_string()))?;
    Ok(stored
        .into_iter()
        .filter(|s| s.resource_type == "Patient")
        .map(|s| s.id)
        .collect())
}

fn rewrite_references(value: &mut Value, map: &std::collections::HashMap<String, (String, String)>) {
    match value {
        Value::Object(obj) => {
            if let Some(Value::String(reference)) = obj.get_mut("reference")
                && let Some((t, id)) = map.get(reference.as_str())
            {
                *reference = format!("{t}/{id}");
            }
            obj.values_mut().for_each(|v| rewrite_references(v, map));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_references(v, map)),
        _ => {}
    }
}

/// One synthetic series: LOINC code and name, category, UCUM unit, reference range, values.
struct Series {
    code: &'static str,
    name: &'static str,
    category: &'static str,
    unit: &'static str,
    range: (Option<f64>, Option<f64>),
    values: [f64; 8],
}

/// Quarterly values over two years, with the reference ranges a lab reports: enough for
/// the app's trend charts to draw a line and a band. Synthetic, marked as test data.
const HISTORY: &[Series] = &[
    Series {
        code: "4548-4",
        name: "Hemoglobin A1c/Hemoglobin.total in Blood",
        category: "laboratory",
        unit: "%",
        range: (Some(4.0), Some(5.6)),
        values: [6.4, 6.3, 6.1, 6.0, 5.9, 5.8, 5.7, 5.5],
    },
    Series {
        code: "13457-7",
        name: "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
        category: "laboratory",
        unit: "mg/dL",
        range: (None, Some(100.0)),
        values: [142.0, 138.0, 131.0, 126.0, 118.0, 110.0, 104.0, 97.0],
    },
    Series {
        code: "29463-7",
        name: "Body weight",
        category: "vital-signs",
        unit: "kg",
        range: (None, None),
        values: [84.2, 83.5, 82.9, 82.0, 81.4, 80.8, 80.1, 79.6],
    },
    Series {
        code: "8867-4",
        name: "Heart rate",
        category: "vital-signs",
        unit: "/min",
        range: (Some(60.0), Some(100.0)),
        values: [78.0, 82.0, 75.0, 74.0, 71.0, 72.0, 69.0, 68.0],
    },
];

/// The demo patient's lab and vital-sign series as Observations, dated quarterly back from `now`.
pub fn history(patient: &str, now: time::OffsetDateTime) -> Vec<(String, Value)> {
    let mut observations = Vec::new();
    for series in HISTORY {
        for (quarter, value) in series.values.iter().enumerate() {
            let back = i64::try_from(series.values.len() - quarter).unwrap_or(0) * 91;
            let when = (now - time::Duration::days(back)).replace_nanosecond(0).unwrap_or(now);
            let when = when.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
            let id = stable_id(patient, &format!("{}|{quarter}", series.code));
            let quantity = |v: f64| serde_json::json!({"value": v, "unit": series.unit, "system": "http://unitsofmeasure.org", "code": series.unit});
            let mut range = serde_json::Map::new();
            if let Some(low) = series.range.0 {
                range.insert("low".into(), quantity(low));
            }
            if let Some(high) = series.range.1 {
                range.insert("high".into(), quantity(high));
            }
            let mut observation = serde_json::json!({
                "resourceType": "Observation",
                "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST", "display": "test health data"}]},
                "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": series.category}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": series.code, "display": series.name}], "text": series.name},
                "subject": {"reference": format!("Patient/{patient}")},
                "effectiveDateTime": when,
                "valueQuantity": quantity(*value),
            });
            if !range.is_empty() {
                observation["referenceRange"] = serde_json::json!([range]);
            }
            observations.push((id, observation));
        }
    }
    observations
}

/// A stable opaque id for a demo resource of `patient`, UUID-shaped like the carebundle's.
fn stable_id(patient: &str, what: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{patient}|{what}"));
    let mut hex = String::new();
    crate::ids::push_hex(&mut hex, &digest[..16]);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The first patient's history ([`history`]) and documents, stored like any write.
fn import_history(records: &Records, patient: &str) -> Result<(), ServerError> {
    let now = time::OffsetDateTime::now_utc();
    let today = now
        .replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut checked = Vec::new();
    let resources = history(patient, now).into_iter().map(|(id, r)| (id, r, "Observation"));
    let documents = documents::documents(patient, &today)?
        .into_iter()
        .map(|(id, r)| (id, r, "DocumentReference"));
    for (id, resource, resource_type) in resources.chain(documents) {
        let resource = records
            .check(resource, resource_type)
            .map_err(|e| ServerError::Invalid(format!("demo history: {e}")))?;
        checked.push((resource, id));
    }
    records
        .import(DEMO_TENANT, checked, now)
        .map_err(|e| ServerError::Store(e.to_string()))?;
    Ok(())
}

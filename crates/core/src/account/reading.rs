//! Reading records from the cache, with an access log: every patient whose records are
//! shown gets a chained record in the vault, uploaded at the next sync, so a patient's "who
//! viewed my record" includes views made offline.

use std::collections::BTreeSet;

use carekeep_protocol::audit::{AuditEvent, AuditRecord, Outcome};
use carekeep_protocol::sync::READ_FROM_CACHE;
use time::format_description::well_known::Rfc3339;

use super::Account;
use crate::Result;
use crate::error::CacheError;
use crate::store::{CodeFilter, ResourceQuery, StoredResource, TrendPoint, patient_reference};

impl Account {
    /// The cached resources matching `query`, while unlocked, as views: without their
    /// narrative (untrusted markup, see [`carekeep_fhir::without_narrative`]); logged as viewed.
    pub fn read_records(&mut self, query: &ResourceQuery) -> Result<Vec<StoredResource>> {
        let mut found = self.store()?.search(query)?;
        for resource in &mut found {
            resource.json = shown(&resource.json)?;
        }
        // Looking into a patient's record is an access even when it shows nothing.
        let patients: BTreeSet<Option<String>> = match query.patient.as_deref() {
            Some(patient) => BTreeSet::from([Some(bare(patient).to_owned())]),
            None => found.iter().map(patient_of).collect(),
        };
        self.log_access(READ_FROM_CACHE, &query.resource_type, patients)?;
        Ok(found)
    }

    /// One patient's trend for a lab code (for a chart), while unlocked; logged as viewed.
    pub fn lab_trend(&mut self, patient: &str, code: &CodeFilter) -> Result<Vec<TrendPoint>> {
        let reference = patient_reference(patient);
        let points = self.store()?.lab_trend(&reference, code)?;
        self.log_access(READ_FROM_CACHE, "Observation", [Some(bare(&reference).to_owned())])?;
        Ok(points)
    }

    pub(super) fn log_access(
        &mut self,
        action: &str,
        resource_type: &str,
        patients: impl IntoIterator<Item = Option<String>>,
    ) -> Result<()> {
        let now = time::OffsetDateTime::from_unix_timestamp(self.clock.now_unix())
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        let identity = self.facts.identity();
        let mut store = self.store()?;
        let mut prev = store.last_access()?;
        let mut records = Vec::new();
        for patient in patients {
            let event = AuditEvent {
                recorded_at: now.clone(),
                occurred_at: Some(now.clone()),
                tenant: identity.tenant.clone(),
                user: Some(identity.user.clone()),
                role: Some(identity.role.as_str().to_owned()),
                device: Some(identity.device.clone()),
                ip: None,
                action: action.to_owned(),
                resource_type: Some(resource_type.to_owned()),
                resource_id: None,
                patient,
                outcome: Outcome::Success,
                break_glass: false,
            };
            let record = AuditRecord::append(prev.as_ref(), event);
            prev = Some(record.clone());
            records.push(record);
        }
        store.log_access(&records)
    }
}

/// A stored resource's JSON as a view shows it: without its narrative.
pub(super) fn shown(json: &str) -> Result<String> {
    carekeep_fhir::without_narrative(json).ok_or(crate::Error::Cache(CacheError::CorruptCache))
}

pub(super) fn bare(reference: &str) -> &str {
    reference.strip_prefix("Patient/").unwrap_or(reference)
}

/// The patient a shown resource belongs to (bare id).
pub(super) fn patient_of(resource: &StoredResource) -> Option<String> {
    if resource.resource_type == "Patient" {
        return Some(resource.id.clone());
    }
    let value: serde_json::Value = serde_json::from_str(&resource.json).ok()?;
    ["subject", "patient"]
        .iter()
        .find_map(|field| value[field]["reference"].as_str())
        .and_then(|r| r.strip_prefix("Patient/"))
        .map(str::to_owned)
}

//! [`authorize`]: the one role check a records handler passes before it may reach the
//! records, and the [`Grant`] it returns.
//!
//! The role table ([`access::rule_for`]) says which classes of data a role may read or
//! write at all ("billing reads no clinical data"), and only administrators export in bulk;
//! a refusal answers 403 and is audited as denied, before the store is touched. The
//! caller's [`Access`] — which patients, under which tenant — is loaded only through a
//! [`Grant`], and a `Grant` is made only here, so a handler that skipped the check has no
//! way to the records. Record-level decisions (care team, break-glass) stay with
//! [`Access::decide`], record by record.

use axum::http::StatusCode;
use carekeep_protocol::auth::Role;

use super::AppState;
use super::audit::AuditSlot;
use super::error::ApiError;
use super::fhir::blocking;
use crate::auth::Principal;
use crate::now;
use crate::records::Access;
use crate::records::access::{self, Data, Reach};

/// What a handler asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Read data of one class (a read, a one-type search).
    Read(Data),
    /// Create, change or remove data of one class.
    Write(Data),
    /// Reach records of any class, each one decided by the caller's [`Access`] as it is
    /// met (`$everything`, Bundles, sync, documents, the audit trail's own filter): no class is
    /// refused up front.
    PerRecord,
    /// Take the tenant's records out in bulk (`$export`): the clinic's administrators only.
    BulkExport,
}

/// Leave to go on: the caller, and what [`authorize`] let them do. The caller's records
/// access comes only from here.
#[derive(Debug)]
pub struct Grant {
    caller: Principal,
    ask: Ask,
}

/// The role check: `caller` may do `ask`, or the refusal (403, the request audited as
/// denied in `slot`).
pub fn authorize(caller: Principal, slot: &AuditSlot, ask: Ask) -> Result<Grant, ApiError> {
    let refusal = match ask {
        Ask::Read(data) if access::rule_for(caller.role, data).read == Reach::Nobody => {
            Some(ApiError::RoleRefused(data))
        }
        Ask::Write(data) if access::rule_for(caller.role, data).write == Reach::Nobody => {
            Some(ApiError::RoleRefused(data))
        }
        Ask::BulkExport if caller.role != Role::Admin => Some(ApiError::outcome(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Only the clinic's administrators export records in bulk.",
        )),
        Ask::Read(_) | Ask::Write(_) | Ask::PerRecord | Ask::BulkExport => None,
    };
    if let Some(refusal) = refusal {
        slot.deny();
        return Err(refusal);
    }
    Ok(Grant { caller, ask })
}

impl Grant {
    /// Who is asking.
    pub fn caller(&self) -> &Principal {
        &self.caller
    }

    /// Their tenant: every query is filtered by it.
    pub fn tenant(&self) -> &str {
        &self.caller.tenant
    }

    /// Their user id.
    pub fn user(&self) -> &str {
        &self.caller.user_id
    }

    /// Their role.
    pub fn role(&self) -> Role {
        self.caller.role
    }

    /// What was granted.
    pub fn ask(&self) -> Ask {
        self.ask
    }

    /// The same caller asking for something else: checked again.
    pub fn narrow(self, slot: &AuditSlot, ask: Ask) -> Result<Grant, ApiError> {
        authorize(self.caller, slot, ask)
    }

    /// The caller's access to every patient they are linked to, now.
    pub async fn access(&self, state: &AppState) -> Result<Access, ApiError> {
        let (records, tenant, user, role) =
            (state.records.clone(), self.caller.tenant.clone(), self.caller.user_id.clone(), self.caller.role);
        blocking(move || records.access(&tenant, &user, role, now())).await
    }

    /// The caller's access for a request about `patient` (only those links), or about
    /// anyone.
    pub async fn access_about(&self, state: &AppState, patient: Option<&str>) -> Result<Access, ApiError> {
        let Some(patient) = patient else { return self.access(state).await };
        let (records, tenant, user, role, patient) = (
            state.records.clone(),
            self.caller.tenant.clone(),
            self.caller.user_id.clone(),
            self.caller.role,
            patient.to_owned(),
        );
        blocking(move || records.access_to(&tenant, &user, role, &patient, now())).await
    }
}

//! Who may read and write what: the one table ([`RULES`]) every FHIR handler asks, and the
//! per-request [`Access`] that applies it to the caller's own patients.
//!
//! Minimum necessary (DESIGN.md §6): patients reach their own compartment and those they are
//! proxy for; clinicians and nurses the patients on their care team; billing demographics and
//! encounters only; admins no record at all, only the audit trail. A clinician may reach a
//! patient outside the care team through break-glass, with a stated reason, flagged in the
//! audit. Nothing reaches across tenants: every query is filtered by the caller's tenant.

use std::collections::HashSet;
use std::fmt::Write as _;

use carekeep_protocol::auth::Role;

/// The kinds of data, by what minimum necessary treats alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Data {
    /// `Patient`: names, birth dates, contact details.
    Demographics,
    /// `Encounter`: visits (what billing needs).
    Encounters,
    /// Clinical content a patient cannot author: conditions, medications, allergies,
    /// immunisations, reports, documents, procedures, care plans and goals, imaging, devices,
    /// orders, consents, and the provenance of all these.
    Clinical,
    /// Clinical content a patient (or proxy) may author from home: readings (`Observation`),
    /// appointment requests, messages to the care team (`Communication`). Which of these a
    /// patient may write is decided by content and author ([`super::authorship`]): their own
    /// home readings, requests and messages, never a result, booking or message of staff.
    PatientAuthored,
    /// Insurance and money: `Coverage`, `Claim`, `ExplanationOfBenefit`. The patient and
    /// billing need it; care does not, so clinicians and nurses do not read it (minimum
    /// necessary), and a claim's diagnoses stay out of billing's sight of the chart.
    Financial,
    /// The practice's own directory: `Practitioner`, `PractitionerRole`, `Organization`,
    /// `Location`, and the `Medication` catalogue. Not PHI.
    Directory,
    /// The audit trail, as FHIR `AuditEvent`.
    AuditTrail,
}

impl Data {
    /// The kind of data a resource type holds; `None` for types this server does not serve.
    pub fn of(resource_type: &str) -> Option<Data> {
        Some(match resource_type {
            "Patient" => Data::Demographics,
            "Encounter" => Data::Encounters,
            "Condition"
            | "MedicationRequest"
            | "AllergyIntolerance"
            | "Immunization"
            | "DiagnosticReport"
            | "DocumentReference"
            | "Procedure"
            | "CarePlan"
            | "CareTeam"
            | "Goal"
            | "ImagingStudy"
            | "Device"
            | "MedicationAdministration"
            | "MedicationStatement"
            | "ServiceRequest"
            | "QuestionnaireResponse"
            | "Consent"
            | "SupplyDelivery"
            | "Provenance" => Data::Clinical,
            "Observation" | "Appointment" | "Communication" => Data::PatientAuthored,
            "Coverage" | "Claim" | "ExplanationOfBenefit" => Data::Financial,
            "Practitioner" | "PractitionerRole" | "Organization" | "Location" | "Medication" => Data::Directory,
            "AuditEvent" => Data::AuditTrail,
            _ => return None,
        })
    }

    /// The kind in words, for refusals ("Your role does not give access to …").
    pub fn words(self) -> &'static str {
        match self {
            Data::Demographics => "patient demographics",
            Data::Encounters => "encounters",
            Data::Clinical | Data::PatientAuthored => "clinical records",
            Data::Financial => "insurance and claims",
            Data::Directory => "the practice directory",
            Data::AuditTrail => "the audit trail",
        }
    }

    /// Every kind, in the order the table in `docs/server-api.md` shows them.
    pub const ALL: [Data; 7] = [
        Data::Demographics,
        Data::Encounters,
        Data::Clinical,
        Data::PatientAuthored,
        Data::Financial,
        Data::Directory,
        Data::AuditTrail,
    ];
}

/// The resource types the FHIR API serves, in the CapabilityStatement's order.
pub const SERVED_TYPES: &[&str] = &[
    "Patient",
    "Encounter",
    "Observation",
    "Condition",
    "MedicationRequest",
    "AllergyIntolerance",
    "Immunization",
    "DiagnosticReport",
    "DocumentReference",
    "Procedure",
    "CarePlan",
    "CareTeam",
    "Goal",
    "ImagingStudy",
    "Device",
    "MedicationAdministration",
    "MedicationStatement",
    "ServiceRequest",
    "QuestionnaireResponse",
    "Consent",
    "SupplyDelivery",
    "Provenance",
    "Appointment",
    "Communication",
    "Coverage",
    "Claim",
    "ExplanationOfBenefit",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Medication",
    "AuditEvent",
];

/// Whose records a rule reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// No one's.
    Nobody,
    /// The caller's own record and those they are proxy for.
    Linked,
    /// Patients on the caller's care team.
    CareTeam,
    /// Patients on the caller's care team, and others through break-glass.
    CareTeamOrBreakGlass,
    /// Everyone in the caller's tenant.
    Tenant,
}

/// What one role may do with one kind of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Who the role may read.
    pub read: Reach,
    /// Who the role may create and update records for.
    pub write: Reach,
}

const fn rule(read: Reach, write: Reach) -> Rule {
    Rule { read, write }
}

use Reach::{CareTeam, CareTeamOrBreakGlass as CareTeamBg, Linked, Nobody, Tenant};

/// The authorisation table: for each role, a rule per [`Data`] kind in [`Data::ALL`] order.
/// The README shows this same table (a test keeps them in step).
pub const RULES: [(Role, [Rule; 7]); 5] = [
    (
        Role::Patient,
        [
            rule(Linked, Nobody),
            rule(Linked, Nobody),
            rule(Linked, Nobody),
            rule(Linked, Linked),
            rule(Linked, Nobody),
            rule(Tenant, Nobody),
            rule(Linked, Nobody),
        ],
    ),
    (
        Role::Clinician,
        [
            rule(CareTeamBg, CareTeamBg),
            rule(CareTeamBg, CareTeamBg),
            rule(CareTeamBg, CareTeamBg),
            rule(CareTeamBg, CareTeamBg),
            rule(Nobody, Nobody),
            rule(Tenant, Nobody),
            rule(Nobody, Nobody),
        ],
    ),
    (
        Role::Nurse,
        [
            rule(CareTeam, Nobody),
            rule(CareTeam, CareTeam),
            rule(CareTeam, CareTeam),
            rule(CareTeam, CareTeam),
            rule(Nobody, Nobody),
            rule(Tenant, Nobody),
            rule(Nobody, Nobody),
        ],
    ),
    (
        Role::Billing,
        [
            rule(Tenant, Nobody),
            rule(Tenant, Nobody),
            rule(Nobody, Nobody),
            rule(Nobody, Nobody),
            rule(Tenant, Nobody),
            rule(Tenant, Nobody),
            rule(Nobody, Nobody),
        ],
    ),
    (
        Role::Admin,
        [
            rule(Nobody, Nobody),
            rule(Nobody, Nobody),
            rule(Nobody, Nobody),
            rule(Nobody, Nobody),
            rule(Nobody, Nobody),
            rule(Nobody, Nobody),
            rule(Tenant, Nobody),
        ],
    ),
];

/// The rule for `role` and `data`.
pub fn rule_for(role: Role, data: Data) -> Rule {
    let index = Data::ALL.iter().position(|d| *d == data).unwrap_or(0);
    RULES
        .iter()
        .find(|(r, _)| *r == role)
        .map_or(rule(Nobody, Nobody), |(_, rules)| rules[index])
}

/// Whether `role` may ever open a record through break-glass.
pub fn may_break_glass(role: Role) -> bool {
    RULES
        .iter()
        .any(|(r, rules)| *r == role && rules.iter().any(|x| x.read == CareTeamBg))
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Read or search.
    Read,
    /// Create or update.
    Write,
}

/// The answer for one patient's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `break_glass` when only an open break-glass grant allows it.
    Allow {
        /// Flag the access in the audit.
        break_glass: bool,
    },
    /// The caller could reach this record through break-glass, but has not opened it.
    BreakGlassRequired,
    /// Not allowed.
    Deny,
}

/// Which patients a search may return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientFilter {
    /// Any in the tenant (and resources with no patient).
    Any,
    /// Only these patients' compartments (break-glass ones flagged by [`Access::decide`]).
    Only(Vec<String>),
    /// None at all.
    Nothing,
}

/// The caller's role and their links to patients, loaded once per request.
#[derive(Debug, Clone)]
pub struct Access {
    /// The caller.
    pub user_id: String,
    /// The caller's role.
    pub role: Role,
    /// Patients the caller is (`self`) or is proxy for.
    pub linked: HashSet<String>,
    /// Patients on the caller's care team.
    pub care_team: HashSet<String>,
    /// Patients the caller holds an open break-glass grant for.
    pub break_glass: HashSet<String>,
}

impl Access {
    /// May the caller `intent` this `data` of `patient` (`None`: a resource outside any
    /// patient's compartment)?
    pub fn decide(&self, data: Data, patient: Option<&str>, intent: Intent) -> Decision {
        let rule = rule_for(self.role, data);
        let reach = if intent == Intent::Read { rule.read } else { rule.write };
        let allow = Decision::Allow { break_glass: false };
        match (reach, patient) {
            (Tenant, _) => allow,
            (Linked, Some(p)) if self.linked.contains(p) => allow,
            (CareTeam | CareTeamBg, Some(p)) if self.care_team.contains(p) => allow,
            (CareTeamBg, Some(p)) if self.break_glass.contains(p) => Decision::Allow { break_glass: true },
            (CareTeamBg, Some(_)) => Decision::BreakGlassRequired,
            // Nobody, or a reach the caller's links do not cover (and no patient at all).
            _ => Decision::Deny,
        }
    }

    /// Whether the caller may change or delete a resource last written by `written_by`
    /// (`None`: imported by the clinic), once [`Access::decide`] allowed the write. Staff
    /// may change what their reach covers; a patient or proxy only what they wrote
    /// themselves — never a result, booking or message of the care team, a device or an
    /// import.
    pub fn may_change(&self, written_by: Option<&str>) -> bool {
        self.role != Role::Patient || written_by == Some(self.user_id.as_str())
    }

    /// The patients whose `data` a search may return.
    pub fn read_filter(&self, data: Data) -> PatientFilter {
        let set = |s: &HashSet<String>| {
            let mut v: Vec<String> = s.iter().cloned().collect();
            v.sort();
            PatientFilter::Only(v)
        };
        match rule_for(self.role, data).read {
            Nobody => PatientFilter::Nothing,
            Tenant => PatientFilter::Any,
            Linked => set(&self.linked),
            CareTeam => set(&self.care_team),
            CareTeamBg => set(&self.care_team.union(&self.break_glass).cloned().collect()),
        }
    }
}

/// The README's table, rendered from [`RULES`].
pub fn markdown_table() -> String {
    let words = |r: Reach| match r {
        Nobody => "—",
        Linked => "own + proxied",
        CareTeam => "care team",
        CareTeamBg => "care team, break-glass",
        Tenant => "whole tenant",
    };
    let mut out = String::from(
        "| role | demographics (Patient) | encounters | clinical | patient-authored (Observation, Appointment, Communication) | financial (Coverage, Claim, ExplanationOfBenefit) | directory (Practitioner, PractitionerRole, Organization, Location, Medication) | audit trail (AuditEvent) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (role, rules) in RULES {
        let _ = write!(out, "| {} |", role.as_str());
        for r in rules {
            if r.write == Nobody {
                let _ = write!(out, " read: {} |", words(r.read));
            } else {
                let _ = write!(out, " read: {}; write: {} |", words(r.read), words(r.write));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(role: Role) -> Access {
        Access {
            user_id: "caller".to_owned(),
            role,
            linked: ["me".to_owned()].into(),
            care_team: ["mine".to_owned()].into(),
            break_glass: ["opened".to_owned()].into(),
        }
    }

    #[test]
    fn every_role_has_a_row_and_every_served_type_a_kind() {
        for role in Role::ALL {
            assert!(RULES.iter().any(|(r, _)| *r == role), "{role:?}");
        }
        for t in SERVED_TYPES {
            assert!(Data::of(t).is_some(), "{t}");
        }
    }

    #[test]
    fn decisions_follow_the_table() {
        let clinician = access(Role::Clinician);
        assert_eq!(
            clinician.decide(Data::Clinical, Some("mine"), Intent::Read),
            Decision::Allow { break_glass: false }
        );
        assert_eq!(
            clinician.decide(Data::Clinical, Some("opened"), Intent::Read),
            Decision::Allow { break_glass: true }
        );
        assert_eq!(clinician.decide(Data::Clinical, Some("other"), Intent::Read), Decision::BreakGlassRequired);
        let nurse = access(Role::Nurse);
        assert_eq!(nurse.decide(Data::Clinical, Some("opened"), Intent::Read), Decision::Deny);
        assert_eq!(nurse.decide(Data::Demographics, Some("mine"), Intent::Write), Decision::Deny);
        let patient = access(Role::Patient);
        assert_eq!(
            patient.decide(Data::PatientAuthored, Some("me"), Intent::Write),
            Decision::Allow { break_glass: false }
        );
        assert_eq!(patient.decide(Data::Clinical, Some("me"), Intent::Write), Decision::Deny);
        assert_eq!(patient.decide(Data::Clinical, Some("mine"), Intent::Read), Decision::Deny);
        let billing = access(Role::Billing);
        assert_eq!(billing.decide(Data::Clinical, Some("mine"), Intent::Read), Decision::Deny);
        assert_eq!(
            billing.decide(Data::Encounters, Some("anyone"), Intent::Read),
            Decision::Allow { break_glass: false }
        );
        let admin = access(Role::Admin);
        for data in Data::ALL.into_iter().filter(|d| *d != Data::AuditTrail) {
            assert_eq!(admin.decide(data, Some("mine"), Intent::Read), Decision::Deny, "{data:?}");
        }
        assert!(patient.may_change(Some("caller")));
        assert!(!patient.may_change(Some("a clinician")) && !patient.may_change(None));
        assert!(access(Role::Nurse).may_change(Some("a patient")) && access(Role::Nurse).may_change(None));
        assert!(may_break_glass(Role::Clinician));
        assert!(!may_break_glass(Role::Nurse) && !may_break_glass(Role::Admin));
    }

    #[test]
    fn the_server_api_document_shows_this_table() {
        let document = include_str!("../../../../docs/server-api.md");
        assert!(
            document.contains(&markdown_table()),
            "docs/server-api.md's table is out of date; paste:\n{}",
            markdown_table()
        );
    }
}

//! Who decides each entry: a signed-in [`Caller`], exactly as the single-resource routes
//! decide (the [`access`] table, a patient's authorship, break-glass),
//! or the [`Clinic`] itself loading its own records from the command line.

use std::collections::HashSet;

use carekeep_protocol::auth::Role;

use crate::records::access::{self, Access, Data, Decision, Intent, Reach};
use crate::records::{Checked, Problem, RecordError, Stored};

/// Why one entry was refused: its HTTP status and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status the entry would have had on its own route.
    pub status: u16,
    /// The problems, each naming the entry and element.
    pub problems: Vec<Problem>,
    /// The patient whose record the refused entry was about, when that is a real patient of
    /// the tenant: the refusal is audited under them, as the single routes audit it.
    pub patient: Option<String>,
}

impl Refusal {
    /// A refusal with one problem about entry `index`'s `element`.
    pub fn new(status: u16, index: usize, element: &str, code: &'static str, rule: &str) -> Self {
        let path = if element.is_empty() {
            format!("Bundle.entry[{index}]")
        } else {
            format!("Bundle.entry[{index}].{element}")
        };
        Refusal { status, problems: vec![Problem { message: format!("{path}: {rule}"), path, code }], patient: None }
    }

    /// The same refusal, about (real) `patient`.
    #[must_use]
    pub fn about(self, patient: Option<String>) -> Self {
        Refusal { patient, ..self }
    }

    /// Whether it is a refusal of authorisation (audited as denied), not of content.
    pub fn is_denial(&self) -> bool {
        matches!(self.status, 403 | 404)
    }

    /// The problems of a record check, moved under entry `index` (`Observation.code` becomes
    /// `Bundle.entry[3].resource.code`).
    pub fn from_record(index: usize, resource_type: &str, error: RecordError) -> Result<Self, RecordError> {
        match error {
            RecordError::Invalid(problems) => {
                let problems = problems
                    .into_iter()
                    .map(|p| {
                        let rest = p.path.strip_prefix(resource_type).unwrap_or(&p.path);
                        let path = format!("Bundle.entry[{index}].resource{rest}");
                        let rule = p.message.split_once(": ").map_or(p.message.as_str(), |(_, rule)| rule);
                        Problem { message: format!("{path}: {rule}"), path, code: p.code }
                    })
                    .collect();
                Ok(Refusal { status: 422, problems, patient: None })
            }
            RecordError::NotFound => Ok(Refusal::new(404, index, "request.url", "not-found", "no such resource")),
            RecordError::VersionConflict => Ok(Refusal::new(
                412,
                index,
                "request.ifMatch",
                "conflict",
                "the resource changed since it was read; read it again and send the new version",
            )),
            other @ (RecordError::Store(_)
            | RecordError::Unavailable
            | RecordError::OutcomeUnknown
            | RecordError::EmbeddedOnly(_)) => Err(other),
        }
    }
}

/// Decides entries for one writer.
pub trait Gate {
    /// The user recorded as the author of what this Bundle writes (`None`: the clinic).
    fn author(&self) -> Option<&str>;
    /// May this writer's role write `resource_type` at all? Asked first, as the single
    /// routes ask it before reading the body.
    fn role(&self, index: usize, resource_type: &str) -> Result<(), Refusal>;
    /// Checks a resource's content for this writer, and marks it as theirs where the server
    /// marks it (a patient's own reading).
    fn content(&self, checked: &mut Checked) -> Result<(), RecordError>;
    /// May this writer create `checked`? `new_patients`: the patients this Bundle registers;
    /// `patient_exists`: whether the patient it names is one of this tenant's (break-glass is
    /// offered only for a real patient, so ids cannot be probed). `Ok(true)` when only
    /// break-glass allows it.
    fn create(
        &self,
        index: usize,
        checked: &Checked,
        new_patients: &HashSet<String>,
        patient_exists: bool,
    ) -> Result<bool, Refusal>;
    /// May this writer replace `current` by `replacement`, or delete it (`None`)?
    fn change(&self, index: usize, current: &Stored, replacement: Option<&Checked>) -> Result<bool, Refusal>;
    /// May this writer read `stored`?
    fn read(&self, index: usize, stored: &Stored) -> Result<bool, Refusal>;
    /// Whether a condition (`ifNoneExist`, a conditional reference) may match `stored`. One
    /// it may not is treated as absent, so a condition tells nothing of what is on file.
    fn sees(&self, stored: &Stored) -> bool;
    /// Whether the patients this Bundle registers join the writer's care team.
    fn joins_care_team(&self) -> Option<&str>;
    /// The most one entry's resource may weigh (JSON bytes): what the single routes take.
    fn largest_resource(&self) -> Option<usize>;
    /// Whether an update must name the version it changes (`ifMatch`), as the single route's
    /// `If-Match` must: without it, a concurrent correction would be overwritten unseen.
    fn requires_if_match(&self) -> bool;
}

/// A signed-in user, decided by the same table as every other route.
pub struct Caller<'a> {
    /// Their access, loaded for this request.
    pub access: &'a Access,
}

fn data(resource_type: &str) -> Data {
    Data::of(resource_type).unwrap_or(Data::AuditTrail)
}

fn role_refusal(index: usize, data: Data) -> Refusal {
    Refusal::new(403, index, "request.url", "forbidden", &format!("your role does not write {}", data.words()))
}

impl Caller<'_> {
    fn decided(index: usize, decision: Decision, element: &str) -> Result<bool, Refusal> {
        match decision {
            Decision::Allow { break_glass } => Ok(break_glass),
            Decision::BreakGlassRequired => Err(Refusal::new(
                403,
                index,
                element,
                "forbidden",
                "this patient is not on your care team; open the record with break-glass first",
            )),
            Decision::Deny => Err(Refusal::new(404, index, element, "not-found", "no such resource")),
        }
    }
}

impl Gate for Caller<'_> {
    fn author(&self) -> Option<&str> {
        Some(&self.access.user_id)
    }

    fn content(&self, checked: &mut Checked) -> Result<(), RecordError> {
        if self.access.role == Role::Patient {
            checked.check_patient_authored()?;
            checked.mark_patient_authored();
        }
        Ok(())
    }

    fn role(&self, index: usize, resource_type: &str) -> Result<(), Refusal> {
        let data = data(resource_type);
        if access::rule_for(self.access.role, data).write == Reach::Nobody {
            return Err(role_refusal(index, data));
        }
        Ok(())
    }

    fn create(
        &self,
        index: usize,
        checked: &Checked,
        new_patients: &HashSet<String>,
        patient_exists: bool,
    ) -> Result<bool, Refusal> {
        let data = data(&checked.resource_type);
        let reach = access::rule_for(self.access.role, data).write;
        if reach == Reach::Nobody {
            return Err(role_refusal(index, data));
        }
        if data == Data::Demographics {
            return Ok(false);
        }
        // A patient this Bundle registers joins the writer's care team with it.
        if checked.patient.as_ref().is_some_and(|p| new_patients.contains(p))
            && matches!(reach, Reach::CareTeam | Reach::CareTeamOrBreakGlass)
        {
            return Ok(false);
        }
        let element = format!("resource.{}", crate::records::patient_element(&checked.resource_type));
        match self.access.decide(data, checked.patient.as_deref(), Intent::Write) {
            Decision::Allow { break_glass } => Ok(break_glass),
            decision @ Decision::BreakGlassRequired if patient_exists => Self::decided(index, decision, &element),
            // As the single route answers: the same words for a patient out of reach, of
            // another clinic, or of nowhere.
            Decision::BreakGlassRequired | Decision::Deny => {
                Err(Refusal::new(422, index, &element, "not-found", "references a patient that does not exist"))
            }
        }
    }

    fn change(&self, index: usize, current: &Stored, replacement: Option<&Checked>) -> Result<bool, Refusal> {
        let data = data(&current.resource_type);
        if access::rule_for(self.access.role, data).write == Reach::Nobody {
            return Err(role_refusal(index, data));
        }
        let break_glass =
            Self::decided(index, self.access.decide(data, current.patient.as_deref(), Intent::Write), "request.url")?;
        if !self.access.may_change(current.written_by.as_deref()) {
            return Err(Refusal::new(
                403,
                index,
                "request.url",
                "forbidden",
                "you may change only what you recorded yourself; ask your care team to correct this record",
            ));
        }
        if let Some(replacement) = replacement {
            let moved_to =
                if data == Data::Demographics { Some(current.id.clone()) } else { replacement.patient.clone() };
            if moved_to != current.patient {
                return Err(Refusal::new(
                    422,
                    index,
                    "resource",
                    "business-rule",
                    "a resource cannot be moved to another patient",
                ));
            }
        }
        Ok(break_glass)
    }

    fn read(&self, index: usize, stored: &Stored) -> Result<bool, Refusal> {
        let data = data(&stored.resource_type);
        if access::rule_for(self.access.role, data).read == Reach::Nobody {
            return Err(Refusal::new(403, index, "request.url", "forbidden", "your role does not read this"));
        }
        Self::decided(index, self.access.decide(data, stored.patient.as_deref(), Intent::Read), "request.url")
    }

    fn sees(&self, stored: &Stored) -> bool {
        // What the writer wrote themselves (a patient registered a moment ago, whose care-
        // team link this request's access predates), and what their access opens.
        if stored.written_by.as_deref() == Some(self.access.user_id.as_str()) {
            return true;
        }
        let data = data(&stored.resource_type);
        matches!(
            self.access.decide(data, stored.patient.as_deref(), Intent::Read),
            Decision::Allow { break_glass: false }
        )
    }

    fn joins_care_team(&self) -> Option<&str> {
        Some(&self.access.user_id)
    }

    fn largest_resource(&self) -> Option<usize> {
        Some(crate::http::MAX_BODY_BYTES)
    }

    fn requires_if_match(&self) -> bool {
        true
    }
}

/// The clinic loading its own records (`carekeep-server import`): every type, every
/// patient, authored by no user. Only the operator of the data directory can act as it.
pub struct Clinic;

impl Gate for Clinic {
    fn author(&self) -> Option<&str> {
        None
    }

    fn content(&self, _: &mut Checked) -> Result<(), RecordError> {
        Ok(())
    }

    fn role(&self, _: usize, _: &str) -> Result<(), Refusal> {
        Ok(())
    }

    fn create(&self, _: usize, _: &Checked, _: &HashSet<String>, _: bool) -> Result<bool, Refusal> {
        Ok(false)
    }

    fn change(&self, index: usize, current: &Stored, replacement: Option<&Checked>) -> Result<bool, Refusal> {
        let moved = replacement.is_some_and(|r| {
            let moved_to = if r.resource_type == "Patient" { Some(current.id.clone()) } else { r.patient.clone() };
            moved_to != current.patient
        });
        if moved {
            return Err(Refusal::new(
                422,
                index,
                "resource",
                "business-rule",
                "a resource cannot be moved to another patient",
            ));
        }
        Ok(false)
    }

    fn read(&self, _: usize, _: &Stored) -> Result<bool, Refusal> {
        Ok(false)
    }

    /// The clinic's loads match what the clinic loaded (and its directory), never a record
    /// a user wrote: a patient registered through the API with someone's MRN must not
    /// receive that person's imported chart.
    fn sees(&self, stored: &Stored) -> bool {
        stored.written_by.is_none()
    }

    fn joins_care_team(&self) -> Option<&str> {
        None
    }

    /// The clinic's own files may carry documents inline, up to what a document may be.
    fn largest_resource(&self) -> Option<usize> {
        None
    }

    fn requires_if_match(&self) -> bool {
        false
    }
}

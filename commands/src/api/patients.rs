//! `POST /v1/patients` (RegisterPatient) and `PATCH /v1/patients/{id}` (UpdatePatientDemographics).

use events::Role;
use events::registry::Aggregate;
use platform::access;
use platform::auth::Caller;
use platform::problem::Problem;
use uuid::Uuid;

use super::{AppState, CommandRoute, Prepared, Received, valid};
use crate::domain::patient::{self, Patient, PatientBody, PatientCommand, Removed};

pub(super) struct Register;

impl CommandRoute for Register {
    type Body = PatientBody;
    type Target = Patient;
    const ALLOWED: &'static [Role] = access::writers(Aggregate::Patient);
    const COLLECTION: &'static str = "patients";

    async fn prepare(
        _app: &AppState,
        received: &Received<PatientBody>,
        _id: Option<Uuid>,
    ) -> Result<Prepared<Patient>, Problem> {
        let demographics = valid(patient::parse_registration(&received.body))?;
        let meta = &received.meta;
        // A patient registers themselves, under the id their token names.
        let command = PatientCommand::Register(demographics);
        match meta.role {
            Role::Patient => {
                let id = meta.caller.claims.patient_id.ok_or_else(|| {
                    Problem::forbidden("a patient token without patient_id cannot register")
                })?;
                Ok(Prepared::new(id, command))
            }
            _ => Ok(Prepared::fresh(command)),
        }
    }
}

pub(super) struct Update;

impl CommandRoute for Update {
    type Body = PatientBody;
    type Target = Patient;
    const ALLOWED: &'static [Role] = access::writers(Aggregate::Patient);
    const COLLECTION: &'static str = "patients";

    fn authorize(caller: &Caller, id: Option<Uuid>) -> Result<(), Problem> {
        match id.and_then(|id| access::patient_update_denial(caller, id)) {
            Some(reason) => Err(Problem::forbidden(reason)),
            None => Ok(()),
        }
    }

    async fn prepare(
        _app: &AppState,
        received: &Received<PatientBody>,
        id: Option<Uuid>,
    ) -> Result<Prepared<Patient>, Problem> {
        let patch = valid(patient::parse_patch(
            &received.body,
            &Removed::from_patch(&received.json),
        ))?;
        let id = id.expect("an update has the aggregate's id");
        Ok(Prepared::new(id, PatientCommand::UpdateDemographics(patch)))
    }
}

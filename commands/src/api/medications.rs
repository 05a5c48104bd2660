//! `POST /v1/medication-requests` (PrescribeMedication).

use events::Role;
use events::registry::Aggregate;
use platform::access;
use platform::problem::Problem;
use uuid::Uuid;

use super::encounters::require_encounter_of;
use super::{AppState, CommandRoute, Prepared, Received, require_patient, valid};
use crate::domain::medication::{self, MedicationCommand, MedicationRequest, PrescribeBody};

pub(super) struct Prescribe;

impl CommandRoute for Prescribe {
    type Body = PrescribeBody;
    type Target = MedicationRequest;
    const ALLOWED: &'static [Role] = access::writers(Aggregate::MedicationRequest);
    const COLLECTION: &'static str = "medication-requests";

    async fn prepare(
        app: &AppState,
        received: &Received<PrescribeBody>,
        _id: Option<Uuid>,
    ) -> Result<Prepared<MedicationRequest>, Problem> {
        let prescription = valid(medication::parse_prescription(&received.body))?;
        require_patient(app, prescription.patient_id).await?;
        if let Some(encounter_id) = prescription.encounter_id {
            require_encounter_of(app, encounter_id, prescription.patient_id).await?;
        }
        let requester_id = received.meta.caller.claims.sub.clone();
        Ok(Prepared::fresh(MedicationCommand::Prescribe {
            prescription,
            requester_id,
        }))
    }
}

//! `POST /v1/observations` (RecordObservation).

use chrono::Utc;
use events::Role;
use events::registry::Aggregate;
use platform::access;
use platform::problem::Problem;
use uuid::Uuid;

use super::encounters::require_encounter_of;
use super::{AppState, CommandRoute, Prepared, Received, require_patient, valid};
use crate::domain::observation::{self, Observation, ObservationCommand, RecordBody};

pub(super) struct Record;

impl CommandRoute for Record {
    type Body = RecordBody;
    type Target = Observation;
    const ALLOWED: &'static [Role] = access::writers(Aggregate::Observation);
    const COLLECTION: &'static str = "observations";

    async fn prepare(
        app: &AppState,
        received: &Received<RecordBody>,
        _id: Option<Uuid>,
    ) -> Result<Prepared<Observation>, Problem> {
        let new = valid(observation::parse_record(&received.body, Utc::now()))?;
        require_patient(app, new.patient_id).await?;
        if let Some(encounter_id) = new.encounter_id {
            require_encounter_of(app, encounter_id, new.patient_id).await?;
        }
        let performer_id = received.meta.caller.claims.sub.clone();
        Ok(Prepared::fresh(ObservationCommand::Record {
            observation: new,
            performer_id,
        }))
    }
}

//! `POST /v1/encounters` (StartEncounter, fulfilling its appointment in the same transaction)
//! and `POST /v1/encounters/{id}/complete` (CompleteEncounter).

use chrono::Utc;
use events::Role;
use events::registry;
use platform::access;
use platform::problem::{FieldError, Problem};
use uuid::Uuid;

use super::{
    AppState, CommandRoute, Prepared, Received, load, missing, new_events, rejected,
    require_patient, valid,
};
use crate::domain::Aggregate;
use crate::domain::appointment::{Appointment, AppointmentCommand};
use crate::domain::encounter::{self, CompleteBody, Encounter, EncounterCommand, StartBody};
use crate::store::StreamAppend;

pub(super) struct Start;

impl CommandRoute for Start {
    type Body = StartBody;
    type Target = Encounter;
    const ALLOWED: &'static [Role] = access::writers(registry::Aggregate::Encounter);
    const COLLECTION: &'static str = "encounters";

    async fn prepare(
        app: &AppState,
        received: &Received<StartBody>,
        _id: Option<Uuid>,
    ) -> Result<Prepared<Encounter>, Problem> {
        let new = valid(encounter::parse_start(&received.body, Utc::now()))?;
        require_patient(app, new.patient_id).await?;
        let meta = &received.meta;
        let id = Uuid::now_v7();
        let mut also = Vec::new();
        if let Some(appointment_id) = new.appointment_id {
            let (appointment, version) = load::<Appointment>(app, appointment_id).await?;
            let appointment = appointment
                .ok_or_else(|| missing("$.appointmentId", "appointment", appointment_id))?;
            if appointment.patient_id != new.patient_id {
                return Err(Problem::validation(vec![FieldError::new(
                    "$.appointmentId",
                    "the appointment is for another patient",
                )]));
            }
            let fulfilled = Appointment::decide(
                Some(&appointment),
                AppointmentCommand::Fulfil { encounter_id: id },
                Utc::now(),
            )
            .map_err(|r| rejected(Appointment::TYPE, r, version))?;
            also.push(StreamAppend {
                aggregate_type: Appointment::TYPE,
                aggregate_id: appointment_id,
                expected_version: version,
                events: new_events(appointment_id, version, &fulfilled, meta),
            });
        }
        let practitioner_id = meta.caller.claims.sub.clone();
        Ok(Prepared {
            id,
            command: EncounterCommand::Start {
                encounter: new,
                practitioner_id,
            },
            also,
            // `id` was made above, now.
            fresh: true,
        })
    }
}

pub(super) struct Complete;

impl CommandRoute for Complete {
    type Body = CompleteBody;
    type Target = Encounter;
    const ALLOWED: &'static [Role] = access::writers(registry::Aggregate::Encounter);
    const COLLECTION: &'static str = "encounters";
    const ACTION: &'static str = "complete";

    async fn prepare(
        _app: &AppState,
        received: &Received<CompleteBody>,
        id: Option<Uuid>,
    ) -> Result<Prepared<Encounter>, Problem> {
        let completion = valid(encounter::parse_complete(&received.body, Utc::now()))?;
        let id = id.expect("an update has the aggregate's id");
        Ok(Prepared::new(id, EncounterCommand::Complete(completion)))
    }
}

/// 404 unless the encounter exists, 422 unless it is the patient's.
pub(super) async fn require_encounter_of(
    app: &AppState,
    encounter_id: Uuid,
    patient_id: Uuid,
) -> Result<(), Problem> {
    let (encounter, _) = load::<Encounter>(app, encounter_id).await?;
    match encounter {
        None => Err(missing("$.encounterId", "encounter", encounter_id)),
        Some(e) if e.patient_id != patient_id => Err(Problem::validation(vec![FieldError::new(
            "$.encounterId",
            "the encounter is another patient's",
        )])),
        Some(_) => Ok(()),
    }
}

//! `POST /v1/encounters` (StartEncounter, fulfilling its appointment in the same transaction)
//! and `POST /v1/encounters/{id}/complete` (CompleteEncounter).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::Utc;
use events::Role;
use platform::auth::Caller;
use platform::problem::{FieldError, Problem};
use uuid::Uuid;

use super::{
    AppState, Endpoint, Execution, fresh_or_replay, load, missing, new_events, receive, rejected,
    require_patient, valid,
};
use crate::domain::Aggregate;
use crate::domain::appointment::{Appointment, AppointmentCommand};
use crate::domain::encounter::{self, CompleteBody, Encounter, EncounterCommand, StartBody};
use crate::store::StreamAppend;

const CLINICIANS: [Role; 1] = [Role::Practitioner];

pub(super) async fn start(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let endpoint = Endpoint {
            allowed: &CLINICIANS,
            route: "POST /v1/encounters".into(),
            updates: false,
        };
        let received =
            fresh_or_replay!(receive::<StartBody>(&app, caller, &endpoint, &headers, body).await?);
        let new = valid(encounter::parse_start(&received.body, Utc::now()))?;
        require_patient(&app, new.patient_id).await?;
        let meta = &received.meta;
        let id = Uuid::now_v7();
        let mut also = Vec::new();
        if let Some(appointment_id) = new.appointment_id {
            let (appointment, version) = load::<Appointment>(&app, appointment_id).await?;
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
        Execution::<Encounter> {
            app: &app,
            meta,
            id,
            expected: None,
            command: EncounterCommand::Start {
                encounter: new,
                practitioner_id,
            },
            status: StatusCode::CREATED,
            collection: "encounters",
            also,
        }
        .run()
        .await
    }
    .await;
    app.respond(result)
}

pub(super) async fn complete(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let id: Uuid = id
            .parse()
            .map_err(|_| Problem::not_found(format!("no encounter {id}")))?;
        let route = format!("POST /v1/encounters/{id}/complete");
        let endpoint = Endpoint {
            allowed: &CLINICIANS,
            route,
            updates: true,
        };
        let received = fresh_or_replay!(
            receive::<CompleteBody>(&app, caller, &endpoint, &headers, body).await?
        );
        let completion = valid(encounter::parse_complete(&received.body, Utc::now()))?;
        Execution::<Encounter> {
            app: &app,
            meta: &received.meta,
            id,
            expected: received.expected,
            command: EncounterCommand::Complete(completion),
            status: StatusCode::OK,
            collection: "encounters",
            also: vec![],
        }
        .run()
        .await
    }
    .await;
    app.respond(result)
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

//! `POST /v1/appointments` (ScheduleAppointment) and `POST /v1/appointments/{id}/cancel`
//! (CancelAppointment).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::Utc;
use events::Role;
use platform::auth::Caller;
use platform::problem::Problem;
use uuid::Uuid;

use super::{AppState, Execution, Incoming, if_match, receive, require_patient, valid};
use crate::domain::appointment::{self, Appointment, AppointmentCommand, CancelBody, ScheduleBody};

const SCHEDULERS: [Role; 2] = [Role::Practitioner, Role::Admin];

pub(super) async fn schedule(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let received = match receive::<ScheduleBody>(
            &app,
            caller,
            &SCHEDULERS,
            "POST /v1/appointments",
            &headers,
            body,
        )
        .await?
        {
            Incoming::Fresh(r) => r,
            Incoming::Replay(response) => return Ok(response),
        };
        let new = valid(appointment::parse_schedule(&received.body, Utc::now()))?;
        require_patient(&app, new.patient_id).await?;
        Execution::<Appointment> {
            app: &app,
            meta: &received.meta,
            id: Uuid::now_v7(),
            expected: None,
            command: AppointmentCommand::Schedule(new),
            status: StatusCode::CREATED,
            collection: "appointments",
            also: vec![],
        }
        .run()
        .await
    }
    .await;
    app.respond(result)
}

pub(super) async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let id: Uuid = id
            .parse()
            .map_err(|_| Problem::not_found(format!("no appointment {id}")))?;
        caller.require_any(&SCHEDULERS)?;
        let expected = if_match(&headers)?;
        let route = format!("POST /v1/appointments/{id}/cancel");
        let received =
            match receive::<CancelBody>(&app, caller, &SCHEDULERS, &route, &headers, body).await? {
                Incoming::Fresh(r) => r,
                Incoming::Replay(response) => return Ok(response),
            };
        let reason = valid(appointment::parse_cancel(&received.body))?;
        Execution::<Appointment> {
            app: &app,
            meta: &received.meta,
            id,
            expected: Some(expected),
            command: AppointmentCommand::Cancel { reason },
            status: StatusCode::OK,
            collection: "appointments",
            also: vec![],
        }
        .run()
        .await
    }
    .await;
    app.respond(result)
}

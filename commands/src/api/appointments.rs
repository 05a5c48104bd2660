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

use super::{AppState, Endpoint, Execution, fresh_or_replay, receive, require_patient, valid};
use crate::domain::appointment::{self, Appointment, AppointmentCommand, CancelBody, ScheduleBody};

const SCHEDULERS: [Role; 2] = [Role::Practitioner, Role::Admin];

pub(super) async fn schedule(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let endpoint = Endpoint {
            allowed: &SCHEDULERS,
            route: "POST /v1/appointments".into(),
            updates: false,
        };
        let received = fresh_or_replay!(
            receive::<ScheduleBody>(&app, caller, &endpoint, &headers, body).await?
        );
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
        let route = format!("POST /v1/appointments/{id}/cancel");
        let endpoint = Endpoint {
            allowed: &SCHEDULERS,
            route,
            updates: true,
        };
        let received =
            fresh_or_replay!(receive::<CancelBody>(&app, caller, &endpoint, &headers, body).await?);
        let reason = valid(appointment::parse_cancel(&received.body))?;
        Execution::<Appointment> {
            app: &app,
            meta: &received.meta,
            id,
            expected: received.expected,
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

//! `POST /v1/patients` (RegisterPatient) and `PATCH /v1/patients/{id}` (UpdatePatientDemographics).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use events::Role;
use platform::auth::Caller;
use platform::problem::Problem;
use uuid::Uuid;

use super::{AppState, Endpoint, Execution, fresh_or_replay, receive, valid};
use crate::domain::patient::{self, Patient, PatientBody, PatientCommand, Removed};

const WRITERS: [Role; 2] = [Role::Admin, Role::Patient];

pub(super) async fn register(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let endpoint = Endpoint {
            allowed: &WRITERS,
            route: "POST /v1/patients".into(),
            updates: false,
        };
        let received = fresh_or_replay!(
            receive::<PatientBody>(&app, caller, &endpoint, &headers, body).await?
        );
        let demographics = valid(patient::parse_registration(&received.body))?;
        let meta = &received.meta;
        // A patient registers themselves, under the id their token names.
        let id = match meta.role {
            Role::Patient => meta.caller.claims.patient_id.ok_or_else(|| {
                Problem::forbidden("a patient token without patient_id cannot register")
            })?,
            _ => Uuid::now_v7(),
        };
        Execution::<Patient> {
            app: &app,
            meta,
            id,
            expected: None,
            command: PatientCommand::Register(demographics),
            status: StatusCode::CREATED,
            collection: "patients",
            also: vec![],
        }
        .run()
        .await
    }
    .await;
    app.respond(result)
}

pub(super) async fn update(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let id: Uuid = id
            .parse()
            .map_err(|_| Problem::not_found(format!("no patient {id}")))?;
        if caller.acting_role(&WRITERS) == Some(Role::Patient)
            && caller.claims.patient_id != Some(id)
        {
            return Err(Problem::forbidden(
                "patients may update only their own record",
            ));
        }
        let endpoint = Endpoint {
            allowed: &WRITERS,
            route: format!("PATCH /v1/patients/{id}"),
            updates: true,
        };
        let received = fresh_or_replay!(
            receive::<PatientBody>(&app, caller, &endpoint, &headers, body).await?
        );
        let patch = valid(patient::parse_patch(
            &received.body,
            &Removed::from_patch(&received.json),
        ))?;
        Execution::<Patient> {
            app: &app,
            meta: &received.meta,
            id,
            expected: received.expected,
            command: PatientCommand::UpdateDemographics(patch),
            status: StatusCode::OK,
            collection: "patients",
            also: vec![],
        }
        .run()
        .await
    }
    .await;
    app.respond(result)
}

//! `POST /v1/medication-requests` (PrescribeMedication).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use events::Role;
use platform::auth::Caller;
use uuid::Uuid;

use super::encounters::require_encounter_of;
use super::{AppState, Endpoint, Execution, fresh_or_replay, receive, require_patient, valid};
use crate::domain::medication::{self, MedicationCommand, MedicationRequest, PrescribeBody};

pub(super) async fn prescribe(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let route = "POST /v1/medication-requests".into();
        let endpoint = Endpoint {
            allowed: &[Role::Practitioner],
            route,
            updates: false,
        };
        let received = fresh_or_replay!(
            receive::<PrescribeBody>(&app, caller, &endpoint, &headers, body).await?
        );
        let prescription = valid(medication::parse_prescription(&received.body))?;
        require_patient(&app, prescription.patient_id).await?;
        if let Some(encounter_id) = prescription.encounter_id {
            require_encounter_of(&app, encounter_id, prescription.patient_id).await?;
        }
        let requester_id = received.meta.caller.claims.sub.clone();
        Execution::<MedicationRequest> {
            app: &app,
            meta: &received.meta,
            id: Uuid::now_v7(),
            expected: None,
            command: MedicationCommand::Prescribe {
                prescription,
                requester_id,
            },
            status: StatusCode::CREATED,
            collection: "medication-requests",
            also: vec![],
        }
        .run()
        .await
    }
    .await;
    app.respond(result)
}

//! `POST /v1/observations` (RecordObservation).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::Utc;
use events::Role;
use platform::auth::Caller;
use uuid::Uuid;

use super::encounters::require_encounter_of;
use super::{AppState, Endpoint, Execution, fresh_or_replay, receive, require_patient, valid};
use crate::domain::observation::{self, Observation, ObservationCommand, RecordBody};

pub(super) async fn record(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let endpoint = Endpoint {
            allowed: &[Role::Practitioner],
            route: "POST /v1/observations".into(),
            updates: false,
        };
        let received =
            fresh_or_replay!(receive::<RecordBody>(&app, caller, &endpoint, &headers, body).await?);
        let new = valid(observation::parse_record(&received.body, Utc::now()))?;
        require_patient(&app, new.patient_id).await?;
        if let Some(encounter_id) = new.encounter_id {
            require_encounter_of(&app, encounter_id, new.patient_id).await?;
        }
        let performer_id = received.meta.caller.claims.sub.clone();
        Execution::<Observation> {
            app: &app,
            meta: &received.meta,
            id: Uuid::now_v7(),
            expected: None,
            command: ObservationCommand::Record {
                observation: new,
                performer_id,
            },
            status: StatusCode::CREATED,
            collection: "observations",
            also: vec![],
        }
        .run()
        .await
    }
    .await;
    app.respond(result)
}

//! The command API (REST, JSON): authenticates, parses bodies into valid commands, runs the
//! aggregate, appends the events with their outbox rows, and answers with problem+json on
//! every failure. Bad input never writes anything.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use chrono::Utc;
use events::patient::{PatientCreated, PatientUpdated};
use events::{Actor, ConsistencyToken, DomainEvent, Envelope, Role};
use platform::auth::{Caller, Verifier};
use platform::metrics::Metrics;
use platform::problem::{FieldError, Problem};
use prometheus_client::metrics::counter::Counter;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::patient::{self, PatientBody, PatientCommand, PatientEvent, Rejection};
use crate::store::{AppendError, EventStore, NewEvent, StoredEvent};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const PATIENT: &str = "patient";

/// Shared state of the command API.
#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    pub verifier: Arc<Verifier>,
    accepted: Counter,
    rejected: Counter,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl AppState {
    pub fn new(store: EventStore, verifier: Arc<Verifier>, metrics: &Metrics) -> Self {
        AppState {
            store,
            verifier,
            accepted: metrics.register(
                "commands_accepted",
                "Commands accepted",
                Counter::default(),
            ),
            rejected: metrics.register(
                "commands_rejected",
                "Commands refused (validation, authorization, conflicts)",
                Counter::default(),
            ),
        }
    }
}

/// The command API routes, with `/health/*` and `/metrics` merged in.
pub fn router(state: AppState, metrics: Arc<Metrics>) -> Router {
    let ready = platform::http::postgres_ready(state.store.pool().clone());
    Router::new()
        .route("/v1/patients", post(register_patient))
        .route("/v1/patients/{id}", patch(update_patient))
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(platform::http::ops_router(metrics, ready))
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// The request context every command carries into its events.
struct RequestMeta {
    correlation_id: String,
    traceparent: Option<String>,
}

impl RequestMeta {
    fn from(headers: &HeaderMap) -> Self {
        let traceparent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() == 55 && v.split('-').count() == 4)
            .map(str::to_string);
        RequestMeta {
            correlation_id: platform::http::request_id(headers),
            traceparent,
        }
    }
}

/// Parses a JSON body: 413 too large, 400 not JSON, 422 wrong shape (with the field's path).
fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<(T, serde_json::Value), Problem> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                format!("the body exceeds {MAX_BODY_BYTES} bytes"),
            )
        } else {
            Problem::bad_request(rejection.body_text())
        }
    })?;
    if bytes.is_empty() {
        return Err(Problem::bad_request(
            "the request body is empty; send a JSON object",
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !json.is_object() {
        return Err(Problem::validation(vec![FieldError::new(
            "$",
            "must be a JSON object",
        )]));
    }
    let parsed = serde_path_to_error::deserialize(&json).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "$".to_string()
        } else {
            format!("$.{path}")
        };
        Problem::validation(vec![FieldError::new(field, e.inner().to_string())])
    })?;
    Ok((parsed, json))
}

/// Loads a patient's stream and folds it into the current state and version.
async fn load_patient(
    store: &EventStore,
    id: Uuid,
) -> Result<(patient::PatientState, i64), Problem> {
    let stream = store.load(id).await.map_err(store_unavailable)?;
    let mut state = None;
    for stored in &stream {
        state = patient::apply(state, &decode_patient_event(stored)?);
    }
    Ok((state, stream.len() as i64))
}

fn decode_patient_event(stored: &StoredEvent) -> Result<PatientEvent, Problem> {
    let corrupt = |e: serde_json::Error| {
        tracing::error!(event_id = %stored.envelope.event_id, error = %e, "undecodable stored event");
        Problem::internal("a stored event could not be read")
    };
    match stored.envelope.event_type.as_str() {
        PatientCreated::EVENT_TYPE => serde_json::from_value(stored.payload.clone())
            .map(PatientEvent::Created)
            .map_err(corrupt),
        PatientUpdated::EVENT_TYPE => serde_json::from_value(stored.payload.clone())
            .map(PatientEvent::Updated)
            .map_err(corrupt),
        other => {
            tracing::error!(event_type = other, "unknown event type in a patient stream");
            Err(Problem::internal("a stored event has an unknown type"))
        }
    }
}

fn store_unavailable(e: sqlx::Error) -> Problem {
    tracing::error!(error = %e, "event store unavailable");
    Problem::unavailable("the event store is unavailable; retry later")
}

fn to_new_events(
    aggregate_id: Uuid,
    from_version: i64,
    decided: Vec<PatientEvent>,
    actor: &Actor,
    meta: &RequestMeta,
) -> Result<Vec<NewEvent>, Problem> {
    decided
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let (event_type, topic, payload) = match &event {
                PatientEvent::Created(e) => (
                    PatientCreated::EVENT_TYPE,
                    PatientCreated::TOPIC,
                    serde_json::to_value(e),
                ),
                PatientEvent::Updated(e) => (
                    PatientUpdated::EVENT_TYPE,
                    PatientUpdated::TOPIC,
                    serde_json::to_value(e),
                ),
            };
            Ok(NewEvent {
                envelope: Envelope {
                    event_id: Uuid::now_v7(),
                    event_type: event_type.to_string(),
                    aggregate_id,
                    aggregate_version: from_version + i as i64 + 1,
                    occurred_at: Utc::now(),
                    correlation_id: meta.correlation_id.clone(),
                    causation_id: None,
                    actor: actor.clone(),
                },
                payload: payload.map_err(|e| Problem::internal(e.to_string()))?,
                topic,
            })
        })
        .collect()
}

/// Appends and builds the success answer: `{id, version, eventIds, consistencyToken}` + `ETag`.
async fn commit(
    store: &EventStore,
    status: StatusCode,
    aggregate_id: Uuid,
    current_version: i64,
    events: Vec<NewEvent>,
    meta: &RequestMeta,
) -> Result<Response, Problem> {
    store
        .append(
            PATIENT,
            aggregate_id,
            current_version,
            &events,
            meta.traceparent.as_deref(),
        )
        .await
        .map_err(|e| match e {
            AppendError::Conflict { current } => conflict(current),
            AppendError::Store(e) => store_unavailable(e),
        })?;
    let version = current_version + events.len() as i64;
    let token = ConsistencyToken {
        aggregate_type: PATIENT.to_string(),
        aggregate_id,
        version,
    };
    let body = serde_json::json!({
        "id": aggregate_id,
        "version": version,
        "eventIds": events.iter().map(|e| e.envelope.event_id).collect::<Vec<_>>(),
        "consistencyToken": token.to_string(),
    });
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/patients/{aggregate_id}")) {
        headers.insert(header::LOCATION, location);
    }
    Ok(response)
}

fn conflict(current: i64) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "version-conflict",
        "Version conflict",
        format!(
            "the patient is at version {current}; reload it and retry with If-Match: \"{current}\""
        ),
    )
    .with("currentVersion", current)
}

fn counted(state: &AppState, result: Result<Response, Problem>) -> Response {
    match result {
        Ok(response) => {
            state.accepted.inc();
            response
        }
        Err(problem) => {
            state.rejected.inc();
            problem.into_response()
        }
    }
}

/// POST /v1/patients: RegisterPatient.
async fn register_patient(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let role = caller.require_any(&[Role::Admin, Role::Patient])?;
        let (body, _) = parse_body::<PatientBody>(body)?;
        let demographics = patient::parse_registration(&body).map_err(Problem::validation)?;
        let id = match role {
            Role::Patient => caller.claims.patient_id.ok_or_else(|| {
                Problem::forbidden("a patient token without patient_id cannot register")
            })?,
            _ => Uuid::now_v7(),
        };
        let (current, version) = load_patient(&state.store, id).await?;
        let decided = patient::decide(&current, PatientCommand::Register(demographics)).map_err(
            |r| match r {
                Rejection::AlreadyRegistered => conflict(version),
                Rejection::NotRegistered => Problem::not_found("no such patient"),
            },
        )?;
        let meta = RequestMeta::from(&headers);
        let events = to_new_events(id, version, decided, &caller.actor(role), &meta)?;
        commit(
            &state.store,
            StatusCode::CREATED,
            id,
            version,
            events,
            &meta,
        )
        .await
    }
    .await;
    counted(&state, result)
}

/// Reads `If-Match: "<version>"` (also `W/"<n>"` or a bare number): 412 if absent, 400 if malformed.
fn if_match(headers: &HeaderMap) -> Result<i64, Problem> {
    let raw = headers.get(header::IF_MATCH).ok_or_else(|| {
        Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-required",
            "If-Match required",
            "send If-Match with the version you read (the ETag of the last response)",
        )
    })?;
    raw.to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|v| *v >= 1)
        .ok_or_else(|| Problem::bad_request("If-Match must be a version number such as \"3\""))
}

/// PATCH /v1/patients/{id}: UpdatePatientDemographics.
async fn update_patient(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let role = caller.require_any(&[Role::Admin, Role::Patient])?;
        let id: Uuid = id
            .parse()
            .map_err(|_| Problem::not_found(format!("no patient {id}")))?;
        if role == Role::Patient && caller.claims.patient_id != Some(id) {
            return Err(Problem::forbidden(
                "patients may update only their own record",
            ));
        }
        let expected = if_match(&headers)?;
        let (body, json) = parse_body::<PatientBody>(body)?;
        let patch = patient::parse_patch(&body, &patient::Removed::from_patch(&json))
            .map_err(Problem::validation)?;
        let (current, version) = load_patient(&state.store, id).await?;
        if current.is_none() {
            return Err(Problem::not_found(format!("no patient {id}")));
        }
        if version != expected {
            return Err(conflict(version));
        }
        let decided = patient::decide(&current, PatientCommand::UpdateDemographics(patch))
            .map_err(|_| Problem::not_found(format!("no patient {id}")))?;
        let meta = RequestMeta::from(&headers);
        let events = to_new_events(id, version, decided, &caller.actor(role), &meta)?;
        commit(&state.store, StatusCode::OK, id, version, events, &meta).await
    }
    .await;
    counted(&state, result)
}

//! The command API (REST, JSON): every command goes through the same pipeline — authenticate,
//! check the role, read the body (413/400), replay an `Idempotency-Key`, parse into a valid
//! command (422 with the failing field), load the aggregate, check `If-Match` (412/409),
//! decide, and append the events with their outbox rows and the idempotent response in one
//! transaction. Every failure is problem+json; bad input never writes anything.

mod appointments;
mod encounters;
mod medications;
mod observations;
mod patients;
mod strict_json;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use chrono::Utc;
use events::{Actor, ConsistencyToken, Envelope, Role};
use platform::auth::{Caller, Verifier};
use platform::consistency::ConsistencySigner;
use platform::http::ReadyCheck;
use platform::metrics::Metrics;
use platform::problem::{FieldError, Problem};
use prometheus_client::metrics::counter::Counter;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::{Aggregate, AggregateEvent, Rejection};
use crate::relay::RelayHealth;
use crate::store::{AppendError, EventStore, NewEvent, StoredResponse, StreamAppend};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Shared state of the command API.
#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    pub verifier: Arc<Verifier>,
    /// Seals the consistency tokens of command responses (bound to the caller).
    pub consistency: Arc<ConsistencySigner>,
    accepted: Counter,
    rejected: Counter,
    replayed: Counter,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl AppState {
    pub fn new(
        store: EventStore,
        verifier: Arc<Verifier>,
        consistency: Arc<ConsistencySigner>,
        metrics: &Metrics,
    ) -> Self {
        AppState {
            store,
            verifier,
            consistency,
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
            replayed: metrics.register(
                "commands_replayed",
                "Retried commands answered from their Idempotency-Key",
                Counter::default(),
            ),
        }
    }

    /// Counts and renders a handler's outcome.
    fn respond(&self, result: Result<Response, Problem>) -> Response {
        match result {
            Ok(response) => {
                self.accepted.inc();
                response
            }
            Err(problem) => {
                self.rejected.inc();
                problem.into_response()
            }
        }
    }
}

/// The command API routes, with `/health/*` and `/metrics` merged in.
///
/// `/health/ready` is about accepting commands (the event store answers); the relay's state is
/// in its body. `/health/relay` fails while the relay (if this process runs it) is stalled or
/// holds events back: a broker outage must not take the command API out of service, since
/// accepting commands while Kafka is away is what the outbox is for.
pub fn router(state: AppState, metrics: Arc<Metrics>, relay: Option<RelayHealth>) -> Router {
    let postgres = platform::http::postgres_ready(state.store.pool().clone());
    let verifier = state.verifier.clone();
    let relay_check: ReadyCheck = Arc::new(move || {
        let relay = relay.clone();
        Box::pin(async move {
            match relay {
                Some(relay) => relay.check(),
                None => Ok(serde_json::json!({"status": "not run in this process"})),
            }
        })
    });
    let ready: ReadyCheck = {
        let relay_check = relay_check.clone();
        Arc::new(move || {
            let (postgres, relay_check, verifier) =
                (postgres.clone(), relay_check.clone(), verifier.clone());
            Box::pin(async move {
                postgres().await?;
                verifier.readiness().await?;
                let relay = match relay_check().await {
                    Ok(details) => details,
                    Err(reason) => serde_json::json!({"status": "stalled", "reason": reason}),
                };
                Ok(serde_json::json!({ "relay": relay }))
            })
        })
    };
    Router::new()
        .route("/v1/patients", post(create::<patients::Register>))
        .route("/v1/patients/{id}", patch(update::<patients::Update>))
        .route("/v1/appointments", post(create::<appointments::Schedule>))
        .route(
            "/v1/appointments/{id}/cancel",
            post(update::<appointments::Cancel>),
        )
        .route("/v1/encounters", post(create::<encounters::Start>))
        .route(
            "/v1/encounters/{id}/complete",
            post(update::<encounters::Complete>),
        )
        .route("/v1/observations", post(create::<observations::Record>))
        .route(
            "/v1/medication-requests",
            post(create::<medications::Prescribe>),
        )
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(platform::http::ops_router_with(
            metrics,
            ready,
            vec![("/health/relay", relay_check)],
        ))
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Who sent a command, in which role, as part of which request.
pub(crate) struct CommandMeta {
    pub caller: Caller,
    pub role: Role,
    pub correlation_id: String,
    pub traceparent: Option<String>,
    /// `(key, request hash)` when the request carries an `Idempotency-Key`.
    pub idempotency: Option<(String, String)>,
}

impl CommandMeta {
    pub fn actor(&self) -> Actor {
        self.caller.actor(self.role)
    }
}

/// A received command: its metadata, its typed body and the raw JSON.
pub(crate) struct Received<B> {
    pub meta: CommandMeta,
    pub body: B,
    pub json: serde_json::Value,
    /// The version the client read (`If-Match`), for an update.
    pub expected: Option<i64>,
}

/// A command route: who may call it, its name (part of an idempotent request's identity),
/// and whether it updates an existing aggregate (then `If-Match` is required).
pub(crate) struct Endpoint<'a> {
    pub allowed: &'a [Role],
    pub route: String,
    pub updates: bool,
}

/// What reading a request produced.
pub(crate) enum Incoming<B> {
    Fresh(Received<B>),
    /// A retry of a request that already succeeded: its original response.
    Replay(Response),
}

/// Reads a command request: the role (403), `If-Match` for an update (412, 400), the body
/// (413, 400), an `Idempotency-Key` replay, and the body's shape (422 with the failing
/// member's path).
pub(crate) async fn receive<B: DeserializeOwned>(
    app: &AppState,
    caller: Caller,
    endpoint: &Endpoint<'_>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Incoming<B>, Problem> {
    let role = caller.require_any(endpoint.allowed)?;
    let expected = if endpoint.updates {
        Some(if_match(headers)?)
    } else {
        None
    };
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
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_request(
            "the request body is empty; send a JSON object",
        ));
    }
    let json = strict_json::parse(&bytes)
        .map_err(|e| Problem::bad_request(format!("the body is not valid JSON: {e}")))?;
    let idempotency = idempotency_key(headers)?.map(|key| {
        let hash = Sha256::new()
            .chain_update(endpoint.route.as_bytes())
            .chain_update(b"\n")
            .chain_update(json.to_string().as_bytes())
            .finalize();
        (key, format!("{hash:x}"))
    });
    if let Some((key, hash)) = &idempotency
        && let Some(stored) = app
            .store
            .stored_response(&caller.claims.sub, key)
            .await
            .map_err(store_unavailable)?
    {
        return replay(app, stored, hash).map(Incoming::Replay);
    }
    if !json.is_object() {
        return Err(Problem::validation(vec![FieldError::new(
            "$",
            "must be a JSON object",
        )]));
    }
    let body = serde_path_to_error::deserialize(&json).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "$".to_string()
        } else {
            format!("$.{path}")
        };
        Problem::validation(vec![FieldError::new(field, e.inner().to_string())])
    })?;
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 55 && v.split('-').count() == 4)
        .map(str::to_string);
    Ok(Incoming::Fresh(Received {
        meta: CommandMeta {
            caller,
            role,
            correlation_id: platform::http::request_id(headers),
            traceparent,
            idempotency,
        },
        body,
        json,
        expected,
    }))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .map(|k| Some(k.to_string()))
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible characters"
            ))
        })
}

/// The original response to a retried request, or 422 if the key was used for another request.
fn replay(app: &AppState, stored: StoredResponse, request_hash: &str) -> Result<Response, Problem> {
    if stored.request_hash != request_hash {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            "this Idempotency-Key was already used with a different request; use a new key for a new command",
        ));
    }
    app.replayed.inc();
    let mut response = respond(stored);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

/// The HTTP answer a stored (or fresh) command response stands for.
fn respond(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(stored.body)).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::ETAG, stored.etag.as_deref()),
        (header::LOCATION, stored.location.as_deref()),
    ] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    }
    response
}

/// Parses the typed body into a valid command, or a 422 with every failing field.
pub(crate) fn valid<T>(parsed: Result<T, Vec<crate::domain::FieldError>>) -> Result<T, Problem> {
    parsed.map_err(broken_rules)
}

/// The 422 problem for members that break the domain's rules.
fn broken_rules(errors: Vec<crate::domain::FieldError>) -> Problem {
    Problem::validation(
        errors
            .into_iter()
            .map(|e| FieldError::new(e.field, e.message))
            .collect(),
    )
}

/// A failed store call: 422 for a value PostgreSQL cannot hold (SQLSTATE class 22, data
/// exception — the edge should have refused it), else 503.
pub(crate) fn store_unavailable(e: sqlx::Error) -> Problem {
    if let sqlx::Error::Database(db) = &e
        && db.code().is_some_and(|c| c.starts_with("22"))
    {
        // The message may quote the value (PHI): log only the SQLSTATE.
        tracing::warn!(sqlstate = ?db.code(), "the store refused a value the validation let through");
        return Problem::validation(vec![FieldError::new(
            "$",
            "contains a value that cannot be stored",
        )]);
    }
    tracing::error!(error = %platform::db::loggable(&e), "event store unavailable");
    Problem::unavailable("the event store is unavailable; retry later")
}

fn conflict(aggregate: &str, current: i64) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "version-conflict",
        "Version conflict",
        format!("the {aggregate} is at version {current}; reload it and retry with If-Match: \"{current}\""),
    )
    .with("currentVersion", current)
}

pub(crate) fn rejected(aggregate: &str, rejection: Rejection, version: i64) -> Problem {
    match rejection {
        Rejection::NotFound(detail) => Problem::not_found(detail),
        Rejection::AlreadyExists(_) => conflict(aggregate, version),
        rule @ Rejection::Rule { .. } => broken_rules(rule.field_errors()),
    }
}

/// 404 for a referenced aggregate that does not exist, naming the member that referenced it.
pub(crate) fn missing(field: &str, what: &str, id: Uuid) -> Problem {
    Problem::not_found(format!("no {what} {id}"))
        .with_errors(vec![FieldError::new(field, format!("no such {what}"))])
}

/// 404 unless the patient exists.
pub(crate) async fn require_patient(app: &AppState, patient_id: Uuid) -> Result<(), Problem> {
    let exists = app
        .store
        .exists(crate::domain::patient::Patient::TYPE, patient_id)
        .await
        .map_err(store_unavailable)?;
    if exists {
        Ok(())
    } else {
        Err(missing("$.patientId", "patient", patient_id))
    }
}

/// Loads an aggregate: its state and version (`None`, 0 if it does not exist).
pub(crate) async fn load<A: Aggregate>(
    app: &AppState,
    id: Uuid,
) -> Result<(Option<A>, i64), Problem> {
    let stream = app
        .store
        .load(A::TYPE, id)
        .await
        .map_err(store_unavailable)?;
    let mut state = None;
    for stored in &stream {
        let event = A::Event::from_stored(&stored.envelope.event_type, stored.payload.clone()).map_err(|e| {
            tracing::error!(event_id = %stored.envelope.event_id, error = %e, "undecodable stored event");
            Problem::internal("a stored event could not be read")
        })?;
        state = A::apply(state, &event);
    }
    Ok((state, stream.len() as i64))
}

/// Wraps decided events in envelopes, numbered on from `from_version`.
pub(crate) fn new_events<E: AggregateEvent>(
    aggregate_id: Uuid,
    from_version: i64,
    decided: &[E],
    meta: &CommandMeta,
) -> Vec<NewEvent> {
    let actor = meta.actor();
    decided
        .iter()
        .enumerate()
        .map(|(i, event)| NewEvent {
            envelope: Envelope {
                event_id: Uuid::now_v7(),
                event_type: event.event_type().to_string(),
                aggregate_id,
                aggregate_version: from_version + i as i64 + 1,
                occurred_at: Utc::now(),
                correlation_id: meta.correlation_id.clone(),
                causation_id: None,
                actor: actor.clone(),
            },
            payload: event.payload(),
            topic: event.topic(),
        })
        .collect()
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

/// One command endpoint, declared: who may send it, where, and how its body becomes a
/// command on an aggregate. Everything else — authentication, the role, `If-Match`, the body
/// limit and shape, idempotent replay, the version check, decide, append and the answer — is
/// [`create`] and [`update`], written once for every endpoint.
pub(crate) trait CommandRoute: Send + Sync + 'static {
    /// The JSON body.
    type Body: DeserializeOwned + Send + Sync;
    /// The aggregate the command goes to.
    type Target: Aggregate;
    /// Who may send it.
    const ALLOWED: &'static [Role];
    /// `/v1/<collection>` creates; `/v1/<collection>/{id}` is an aggregate's location.
    const COLLECTION: &'static str;
    /// For an update: `""` for `PATCH /v1/<collection>/{id}`, else the action of
    /// `POST /v1/<collection>/{id}/<action>`.
    const ACTION: &'static str = "";

    /// Refusals that need only the token and the path (before the body is read).
    fn authorize(_caller: &Caller, _id: Option<Uuid>) -> Result<(), Problem> {
        Ok(())
    }

    /// The valid body as a command: the aggregate's id (`id` on an update), the command, and
    /// events for other streams that must commit with it.
    fn prepare(
        app: &AppState,
        received: &Received<Self::Body>,
        id: Option<Uuid>,
    ) -> impl Future<Output = Result<Prepared<Self::Target>, Problem>> + Send;
}

/// A command ready to run.
pub(crate) struct Prepared<A: Aggregate> {
    pub id: Uuid,
    pub command: A::Command,
    pub also: Vec<StreamAppend>,
    /// The id was made for this command just now: no stream has it, so none is loaded.
    pub fresh: bool,
}

impl<A: Aggregate> Prepared<A> {
    pub fn new(id: Uuid, command: A::Command) -> Self {
        Prepared {
            id,
            command,
            also: Vec::new(),
            fresh: false,
        }
    }

    /// A command that creates an aggregate under a new id (a UUIDv7 made here, now).
    pub fn fresh(command: A::Command) -> Self {
        Prepared {
            fresh: true,
            ..Prepared::new(Uuid::now_v7(), command)
        }
    }
}

/// `POST /v1/<collection>`: creates an aggregate (201).
pub(crate) async fn create<C: CommandRoute>(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = handle::<C>(&app, caller, None, &headers, body).await;
    app.respond(result)
}

/// `PATCH /v1/<collection>/{id}` or `POST /v1/<collection>/{id}/<action>`: updates one (200).
pub(crate) async fn update<C: CommandRoute>(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = match id.parse::<Uuid>() {
        Ok(id) => handle::<C>(&app, caller, Some(id), &headers, body).await,
        Err(_) => Err(Problem::not_found(format!(
            "no {} {id}",
            <C::Target as Aggregate>::TYPE
        ))),
    };
    app.respond(result)
}

async fn handle<C: CommandRoute>(
    app: &AppState,
    caller: Caller,
    id: Option<Uuid>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    C::authorize(&caller, id)?;
    let route = match (id, C::ACTION) {
        (None, _) => format!("POST /v1/{}", C::COLLECTION),
        (Some(id), "") => format!("PATCH /v1/{}/{id}", C::COLLECTION),
        (Some(id), action) => format!("POST /v1/{}/{id}/{action}", C::COLLECTION),
    };
    let endpoint = Endpoint {
        allowed: C::ALLOWED,
        route,
        updates: id.is_some(),
    };
    let received = match receive::<C::Body>(app, caller, &endpoint, headers, body).await? {
        Incoming::Fresh(received) => received,
        Incoming::Replay(response) => return Ok(response),
    };
    let prepared = C::prepare(app, &received, id).await?;
    Execution::<C::Target> {
        app,
        meta: &received.meta,
        id: prepared.id,
        expected: received.expected,
        command: prepared.command,
        status: if id.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        collection: C::COLLECTION,
        also: prepared.also,
        fresh: prepared.fresh,
    }
    .run()
    .await
}

/// One command against one aggregate (plus, in `also`, events for other streams that must
/// commit with it).
pub(crate) struct Execution<'a, A: Aggregate> {
    pub app: &'a AppState,
    pub meta: &'a CommandMeta,
    pub id: Uuid,
    /// `Some(version)` for updates (`If-Match`); `None` for creations.
    pub expected: Option<i64>,
    pub command: A::Command,
    pub status: StatusCode,
    /// `/v1/<collection>/{id}` is the aggregate's location.
    pub collection: &'static str,
    pub also: Vec<StreamAppend>,
    /// `id` was made for this command just now (see [`Prepared::fresh`]).
    pub fresh: bool,
}

impl<A: Aggregate> Execution<'_, A> {
    /// Decides and appends; answers `{id, version, eventIds, consistencyToken}` with `ETag`.
    pub async fn run(self) -> Result<Response, Problem> {
        let Execution {
            app,
            meta,
            id,
            expected,
            command,
            status,
            collection,
            also,
            fresh,
        } = self;
        let (state, version) = if fresh {
            (None, 0)
        } else {
            load::<A>(app, id).await?
        };
        if let Some(expected) = expected {
            if state.is_none() {
                return Err(Problem::not_found(format!("no {} {id}", A::TYPE)));
            }
            if version != expected {
                return Err(conflict(A::TYPE, version));
            }
        }
        let decided = A::decide(state.as_ref(), command, Utc::now())
            .map_err(|r| rejected(A::TYPE, r, version))?;
        let events = new_events(id, version, &decided, meta);
        let new_version = version + events.len() as i64;
        let token = ConsistencyToken {
            aggregate: A::KIND,
            aggregate_id: id,
            version: new_version,
        };
        let body = serde_json::json!({
            "id": id,
            "version": new_version,
            "eventIds": events.iter().map(|e| e.envelope.event_id).collect::<Vec<_>>(),
            "consistencyToken": app.consistency.seal(&token, &meta.caller.claims.sub),
        });
        let response = StoredResponse {
            principal: meta.caller.claims.sub.clone(),
            key: String::new(),
            request_hash: String::new(),
            status: status.as_u16(),
            body,
            location: Some(format!("/v1/{collection}/{id}")),
            etag: Some(format!("\"{new_version}\"")),
        };
        let stored = meta.idempotency.as_ref().map(|(key, hash)| StoredResponse {
            key: key.clone(),
            request_hash: hash.clone(),
            ..response.clone()
        });
        let mut streams = vec![StreamAppend {
            aggregate_type: A::TYPE,
            aggregate_id: id,
            expected_version: version,
            events,
        }];
        streams.extend(also);
        match app
            .store
            .append(streams, meta.traceparent.clone(), stored)
            .await
        {
            Ok(()) => Ok(respond(response)),
            Err(AppendError::Conflict {
                aggregate_type,
                current,
            }) => Err(conflict(aggregate_type, current)),
            Err(AppendError::AlreadyProcessed) => {
                // A concurrent request with the same key committed first: answer as it did.
                let (key, hash) = meta
                    .idempotency
                    .as_ref()
                    .expect("only keyed requests are deduplicated");
                let first = app
                    .store
                    .stored_response(&meta.caller.claims.sub, key)
                    .await
                    .map_err(store_unavailable)?
                    .ok_or_else(|| {
                        Problem::unavailable("the concurrent request did not commit; retry")
                    })?;
                replay(app, first, hash)
            }
            Err(AppendError::IdentifierTaken { system }) => Err(Problem::new(
                StatusCode::CONFLICT,
                "identifier-taken",
                "Identifier belongs to another patient",
                format!("an identifier of system `{system}` already belongs to another patient"),
            )
            .with("identifierSystem", system)),
            Err(AppendError::Store(e)) => Err(store_unavailable(e)),
        }
    }
}

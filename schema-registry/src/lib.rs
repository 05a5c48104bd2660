//! The local schema registry: the Confluent Schema Registry REST API (the subset Healthplane
//! and standard clients use) over a durable PostgreSQL store, with Confluent's status codes
//! and `{"error_code", "message"}` bodies. Writes need HTTP Basic credentials (`auth`).

pub mod auth;
pub mod store;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use platform::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use serde_json::json;

use store::{Store, StoreError, ValidSchema, VersionSelector};

use schemas::compatibility::Level;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Clone)]
struct AppState {
    store: Store,
    registrations: Counter,
    rejections: Counter,
}

/// The REST API over `store`, with `/health/*` and `/metrics` merged in. Only `users` may
/// change the registry; reads stay open.
pub fn router(
    store: Store,
    users: auth::Users,
    metrics: Arc<Metrics>,
    ready: platform::http::ReadyCheck,
) -> Router {
    let guard = auth::Guard {
        users,
        refused: metrics.register(
            "schema_registry_refused_writes",
            "Registry writes refused for missing or wrong credentials",
            Counter::default(),
        ),
    };
    let state = AppState {
        store,
        registrations: metrics.register(
            "schema_registry_registrations",
            "Schemas registered (new subject versions)",
            Counter::default(),
        ),
        rejections: metrics.register(
            "schema_registry_rejected_registrations",
            "Registrations refused as invalid or incompatible",
            Counter::default(),
        ),
    };
    Router::new()
        .route("/", get(|| async { reply(StatusCode::OK, json!({})) }))
        .route(
            "/schemas/types",
            get(|| async { reply(StatusCode::OK, json!(["AVRO"])) }),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/subjects", get(subjects))
        .route(
            "/subjects/{subject}",
            axum::routing::post(lookup).delete(delete_subject),
        )
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            axum::routing::post(compatibility_with_level),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            axum::routing::post(compatibility_with_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route("/config", get(global_config).put(set_global_config))
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(delete_subject_config),
        )
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(guard, auth::guard))
        .merge(platform::http::ops_router(metrics, ready))
        .fallback(|| async { RegistryError::new(404, 404, "HTTP 404 Not Found") })
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// A Confluent-style error answer: `{"error_code": ..., "message": ...}`.
#[derive(Debug)]
pub struct RegistryError {
    status: u16,
    code: u32,
    message: String,
}

impl RegistryError {
    fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        RegistryError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        reply(
            status,
            json!({"error_code": self.code, "message": self.message}),
        )
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        let (status, code) = e.codes();
        if status >= 500 {
            tracing::error!(error = %e, "registry store failure");
        }
        RegistryError::new(status, code, e.to_string())
    }
}

type Answer = Result<Response, RegistryError>;

/// `?deleted=true` (include soft-deleted) and `?permanent=true` (hard delete).
#[derive(Debug, Default, Deserialize)]
struct Flags {
    #[serde(default, deserialize_with = "flag")]
    deleted: bool,
    #[serde(default, deserialize_with = "flag")]
    permanent: bool,
    #[serde(default, deserialize_with = "flag")]
    verbose: bool,
}

/// A boolean query parameter in any case, as Confluent's registry reads it: Python's client
/// sends `deleted=False`.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let text = String::deserialize(d)?;
    if text.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if text.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(serde::de::Error::custom(format!(
            "expected true or false, found `{text}`"
        )))
    }
}

#[derive(Debug, Deserialize)]
struct SchemaRequest {
    #[serde(default)]
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
}

/// Parses a `{"schema": ...}` body into a valid Avro schema, or the Confluent error for it.
fn parse_schema_request(body: &[u8]) -> Result<(ValidSchema, String), RegistryError> {
    let request: SchemaRequest = serde_json::from_slice(body)
        .map_err(|e| RegistryError::new(422, 422, format!("Unrecognized request body: {e}")))?;
    if let Some(kind) = request.schema_type.as_deref().filter(|k| *k != "AVRO") {
        return Err(RegistryError::new(
            422,
            42201,
            format!(
                "Invalid schema: schemaType {kind} is not supported by this registry (AVRO only)"
            ),
        ));
    }
    if !request.references.is_empty() {
        return Err(RegistryError::new(
            422,
            42201,
            "Invalid schema: schema references are not supported by this registry",
        ));
    }
    if request.schema.trim().is_empty() {
        return Err(RegistryError::new(422, 42201, "Empty schema"));
    }
    let valid = ValidSchema::parse(&request.schema)?;
    Ok((valid, request.schema))
}

async fn register(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Answer {
    let registered = match parse_schema_request(&body) {
        Ok((schema, original)) => state
            .store
            .register(&subject, &schema, &original)
            .await
            .map_err(RegistryError::from),
        Err(e) => Err(e),
    };
    match registered {
        Ok(id) => {
            state.registrations.inc();
            Ok(reply(StatusCode::OK, json!({ "id": id })))
        }
        Err(e) => {
            if matches!(e.status, 409 | 422) {
                state.rejections.inc();
            }
            Err(e)
        }
    }
}

async fn lookup(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
    body: Bytes,
) -> Answer {
    let (schema, _) = parse_schema_request(&body)?;
    let found = state.store.lookup(&subject, &schema, flags.deleted).await?;
    Ok(reply(
        StatusCode::OK,
        serde_json::to_value(found).unwrap_or_default(),
    ))
}

fn schema_id(raw: &str) -> Result<i32, StoreError> {
    raw.parse::<i32>()
        .map_err(|_| StoreError::SchemaNotFound(raw.to_string()))
}

async fn schema_by_id(State(state): State<AppState>, Path(id): Path<String>) -> Answer {
    let schema = state.store.schema_by_id(schema_id(&id)?).await?;
    Ok(reply(StatusCode::OK, json!({ "schema": schema })))
}

async fn raw_schema_by_id(State(state): State<AppState>, Path(id): Path<String>) -> Answer {
    let schema = state.store.schema_by_id(schema_id(&id)?).await?;
    Ok(reply(
        StatusCode::OK,
        serde_json::from_str(&schema).unwrap_or_default(),
    ))
}

async fn subjects(State(state): State<AppState>, Query(flags): Query<Flags>) -> Answer {
    Ok(reply(
        StatusCode::OK,
        json!(state.store.subjects(flags.deleted).await?),
    ))
}

async fn versions(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Answer {
    Ok(reply(
        StatusCode::OK,
        json!(state.store.versions(&subject, flags.deleted).await?),
    ))
}

/// `GET /subjects/{subject}/versions/{version}`: the version with its schema.
async fn version(state: State<AppState>, path: VersionPath, flags: Query<Flags>) -> Answer {
    let found = found_version(state, path, flags).await?;
    Ok(reply(
        StatusCode::OK,
        serde_json::to_value(found).unwrap_or_default(),
    ))
}

/// `GET /subjects/{subject}/versions/{version}/schema`: the schema alone.
async fn version_schema(state: State<AppState>, path: VersionPath, flags: Query<Flags>) -> Answer {
    let found = found_version(state, path, flags).await?;
    Ok(reply(
        StatusCode::OK,
        serde_json::from_str(&found.schema).unwrap_or_default(),
    ))
}

type VersionPath = Path<(String, String)>;

async fn found_version(
    State(state): State<AppState>,
    Path((subject, version)): VersionPath,
    Query(flags): Query<Flags>,
) -> Result<store::SubjectVersion, RegistryError> {
    Ok(state
        .store
        .version(&subject, version.parse()?, flags.deleted)
        .await?)
}

async fn delete_subject(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Answer {
    let deleted = state
        .store
        .delete_subject(&subject, flags.permanent)
        .await?;
    Ok(reply(StatusCode::OK, json!(deleted)))
}

async fn delete_version(
    State(state): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
) -> Answer {
    let deleted = state
        .store
        .delete_version(&subject, version.parse()?, flags.permanent)
        .await?;
    Ok(reply(StatusCode::OK, json!(deleted)))
}

/// `{"is_compatible": bool}`, with the reasons under `messages` when `verbose=true`.
async fn compatibility(
    state: &AppState,
    subject: &str,
    selector: Option<VersionSelector>,
    flags: &Flags,
    body: &[u8],
) -> Answer {
    let (schema, _) = parse_schema_request(body)?;
    let verdict = state
        .store
        .test_compatibility(subject, &schema, selector)
        .await?;
    let mut answer = json!({ "is_compatible": verdict.is_ok() });
    if flags.verbose {
        answer["messages"] = json!(verdict.err().into_iter().collect::<Vec<_>>());
    }
    Ok(reply(StatusCode::OK, answer))
}

async fn compatibility_with_version(
    State(state): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
    body: Bytes,
) -> Answer {
    compatibility(&state, &subject, Some(version.parse()?), &flags, &body).await
}

async fn compatibility_with_level(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
    body: Bytes,
) -> Answer {
    compatibility(&state, &subject, None, &flags, &body).await
}

async fn delete_subject_config(
    State(state): State<AppState>,
    Path(subject): Path<String>,
) -> Answer {
    let level = state.store.delete_config(&subject).await?;
    Ok(reply(
        StatusCode::OK,
        json!({ "compatibilityLevel": level }),
    ))
}

#[derive(Debug, Deserialize)]
struct ConfigQuery {
    #[serde(default, rename = "defaultToGlobal", deserialize_with = "flag")]
    default_to_global: bool,
}

async fn global_config(State(state): State<AppState>) -> Answer {
    let level = state
        .store
        .config(None)
        .await?
        .unwrap_or(store::DEFAULT_COMPATIBILITY);
    Ok(reply(
        StatusCode::OK,
        json!({ "compatibilityLevel": level.as_str() }),
    ))
}

async fn subject_config(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    Query(query): Query<ConfigQuery>,
) -> Answer {
    if let Some(level) = state.store.config(Some(&subject)).await? {
        return Ok(reply(
            StatusCode::OK,
            json!({ "compatibilityLevel": level.as_str() }),
        ));
    }
    if query.default_to_global {
        return global_config(State(state)).await;
    }
    Err(RegistryError::new(
        404,
        40408,
        format!("Subject '{subject}' does not have subject-level compatibility configured"),
    ))
}

/// Parses a `{"compatibility": LEVEL}` body, or the Confluent error for it.
fn parse_level(body: &[u8]) -> Result<Level, RegistryError> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("compatibility")
                .and_then(|c| c.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default()
        .parse()
        .map_err(|message| RegistryError::new(422, 42203, message))
}

async fn set_global_config(State(state): State<AppState>, body: Bytes) -> Answer {
    set_config(&state, None, &body).await
}

async fn set_subject_config(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Answer {
    set_config(&state, Some(&subject), &body).await
}

async fn set_config(state: &AppState, subject: Option<&str>, body: &[u8]) -> Answer {
    let level = parse_level(body)?;
    state.store.set_config(subject, level).await?;
    Ok(reply(
        StatusCode::OK,
        json!({ "compatibility": level.as_str() }),
    ))
}

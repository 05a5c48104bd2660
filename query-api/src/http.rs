//! The HTTP surface of the query API: `POST /graphql` (authenticated), GraphiQL on
//! `GET /graphql`, health and metrics.
//!
//! A request is checked in the cheapest order: the token, the caller's rate, then the body
//! (already bounded by the server), the query's shape, and the consistency token — so an
//! anonymous or throttled client never gets its body read or a wait started.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::BatchRequest;
use async_graphql::ErrorExtensions;
use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use events::Role;
use platform::auth::{AuthError, Caller, Verifier};
use platform::client_ip::TrustedProxies;
use platform::consistency::ConsistencySigner;
use platform::metrics::Metrics;
use platform::problem::Problem;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

use crate::access;
use crate::audit::{AccessContext, AuditLog, RequestAudit};
use crate::graphql::{PortalSchema, ReadModels, RequestData};
use crate::limits::{RateLimiter, check_shape};
use crate::loaders::ReadLoader;
use crate::read_model::Versions;

/// The answer when the accesses could not be audited (the cause is in the audit writer's log).
const AUDIT_UNAVAILABLE: &str =
    "the access could not be audited, so no patient data is returned; retry later";

/// Most operations in one batched request (a JSON array), as GraphQL Yoga caps them.
pub const MAX_BATCH: usize = 10;

/// How long a query with `X-Consistency-Token` waits for the read model to catch up.
pub const CONSISTENCY_WAIT: Duration = Duration::from_secs(2);

/// The guards in front of the schema.
pub struct Guards {
    pub verifier: Arc<Verifier>,
    pub consistency: Arc<ConsistencySigner>,
    pub proxies: TrustedProxies,
    pub rate: RateLimiter,
    /// Consistency waits in progress at most (each polls the read model).
    pub waits: Semaphore,
    rate_limited: Counter,
    waits_refused: Counter,
}

impl Guards {
    pub fn new(
        verifier: Arc<Verifier>,
        consistency: Arc<ConsistencySigner>,
        proxies: TrustedProxies,
        rate: RateLimiter,
        max_waits: usize,
        metrics: &Metrics,
    ) -> Self {
        Guards {
            verifier,
            consistency,
            proxies,
            rate,
            waits: Semaphore::new(max_waits),
            rate_limited: metrics.register(
                "graphql_rate_limited",
                "GraphQL requests refused because the caller exceeded their rate",
                Counter::default(),
            ),
            waits_refused: metrics.register(
                "graphql_consistency_waits_refused",
                "Consistency waits not started because the cap on concurrent waits was reached",
                Counter::default(),
            ),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub schema: PortalSchema,
    pub guards: Arc<Guards>,
    pub audit: Arc<AuditLog>,
    pub models: Arc<ReadModels>,
    /// Every read model's versions, for `X-Consistency-Token` waits.
    pub versions: Versions,
}

pub fn router(state: AppState, metrics: Arc<Metrics>) -> Router {
    // Ready when the patient read model answers, tokens can be checked (the identity
    // provider's keys are at hand) and audit writes can be made.
    let postgres = platform::http::postgres_ready(state.models.patients.db().uncounted().clone());
    let audit = state.audit.clone();
    let verifier = state.guards.verifier.clone();
    let ready: platform::http::ReadyCheck = Arc::new(move || {
        let (postgres, audit, verifier) = (postgres.clone(), audit.clone(), verifier.clone());
        Box::pin(async move {
            postgres().await?;
            verifier.readiness().await?;
            audit.readiness().await
        })
    });
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .with_state(state)
        .merge(platform::http::ops_router(metrics, ready))
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}

fn header_text(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A request refused before the schema ran.
enum Refused {
    /// A GraphQL-shaped error answer (`errors[0].extensions.code`).
    GraphQl {
        status: StatusCode,
        code: &'static str,
        message: String,
        retry_after: Option<u64>,
    },
    /// An HTTP-level problem (authentication, a body that is not a GraphQL request).
    Http(Response),
}

fn refusal(status: StatusCode, code: &'static str, message: impl Into<String>) -> Box<Refused> {
    Box::new(Refused::GraphQl {
        status,
        code,
        message: message.into(),
        retry_after: None,
    })
}

fn problem(response: impl IntoResponse) -> Box<Refused> {
    Box::new(Refused::Http(response.into_response()))
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Http(response) => response,
            Refused::GraphQl {
                status,
                code,
                message,
                retry_after,
            } => {
                let error = async_graphql::Error::new(message)
                    .extend_with(|_, e| e.set("code", code))
                    .into_server_error(async_graphql::Pos::default());
                let mut response =
                    GraphQLResponse::from(async_graphql::Response::from_errors(vec![error]))
                        .into_response();
                *response.status_mut() = status;
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
                }
                response
            }
        }
    }
}

/// The answer to a body that is not one GraphQL request, without the parser's internals.
fn unreadable(error: async_graphql::ParseRequestError) -> Problem {
    use async_graphql::ParseRequestError as E;
    let too_large = match &error {
        E::PayloadTooLarge => true,
        E::Io(e) => std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_else(|| e.to_string())
            .contains("length limit exceeded"),
        _ => false,
    };
    if too_large {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            "the body exceeds the size limit",
        );
    }
    Problem::bad_request(
        "the body is not a GraphQL request: send JSON {\"query\": ..., \"variables\": {...}} \
         or an array of them",
    )
}

/// The purposes of use (HL7 v3 PurposeOfUse) each role may declare; the first is the default.
fn purposes(role: Role) -> &'static [&'static str] {
    match role {
        // Treatment, or break-the-glass emergency treatment with a stated reason.
        Role::Practitioner => &["TREAT", "ETREAT"],
        // Healthcare operations.
        Role::Admin | Role::Auditor => &["HOPERAT"],
        // The patient's own request.
        Role::Patient => &["PATRQT"],
    }
}

/// Longest break-the-glass reason recorded.
const MAX_BREAK_GLASS_REASON: usize = 500;

/// The purpose of use the caller declares (`X-Purpose-Of-Use`), one their role may declare
/// (the role's default when absent), and for break-the-glass (`ETREAT`) the reason they must
/// give in `X-Break-Glass-Reason`, which the audit records.
fn purpose_of_use(
    headers: &HeaderMap,
    role: Role,
) -> Result<(String, Option<String>), Box<Refused>> {
    let allowed = purposes(role);
    let purpose = match header_text(headers, "x-purpose-of-use") {
        None => allowed[0],
        Some(p) => allowed.iter().copied().find(|a| *a == p).ok_or_else(|| {
            refusal(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                format!(
                    "X-Purpose-Of-Use must be one of {} for the {role} role",
                    allowed.join(", ")
                ),
            )
        })?,
    };
    if purpose != "ETREAT" {
        return Ok((purpose.to_string(), None));
    }
    let reason = header_text(headers, "x-break-glass-reason")
        .map(|r| r.trim().to_string())
        .filter(|r| {
            !r.is_empty()
                && r.chars().count() <= MAX_BREAK_GLASS_REASON
                && !r.chars().any(char::is_control)
        })
        .ok_or_else(|| {
            refusal(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                format!(
                    "break-the-glass (X-Purpose-Of-Use: ETREAT) needs X-Break-Glass-Reason: \
                     why, in at most {MAX_BREAK_GLASS_REASON} characters"
                ),
            )
        })?;
    Ok((purpose.to_string(), Some(reason)))
}

/// Waits (bounded in time and in how many wait at once) until the read model holds the
/// version a command response promised. The token must be one this platform sealed for this
/// caller, for a record the caller may read; anything else is refused at once.
async fn await_consistency(
    state: &AppState,
    headers: &HeaderMap,
    caller: &Caller,
) -> Result<(), Box<Refused>> {
    let Some(raw) = header_text(headers, "x-consistency-token") else {
        return Ok(());
    };
    let token = state
        .guards
        .consistency
        .open(&raw, &caller.claims.sub)
        .map_err(|reason| refusal(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", reason))?;
    // A patient record the caller may not read is not waited on: its resolver answers
    // FORBIDDEN. (Other tokens name a record the caller wrote themselves: the seal says so.)
    if token.aggregate == events::registry::Aggregate::Patient
        && platform::access::read_denial(caller, token.aggregate_id).is_some()
    {
        return Ok(());
    }
    let Ok(_slot) = state.guards.waits.try_acquire() else {
        state.guards.waits_refused.inc();
        return Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "CONSISTENCY_TIMEOUT",
            "too many reads are waiting for their writes; retry shortly",
        ));
    };
    let deadline = Instant::now() + CONSISTENCY_WAIT;
    loop {
        match state
            .versions
            .version(token.aggregate, token.aggregate_id)
            .await
        {
            // No read model of this aggregate here: nothing to wait for.
            None => return Ok(()),
            Some(Ok(v)) if v >= token.version => return Ok(()),
            Some(Ok(_)) | Some(Err(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Some(_) => break,
        }
    }
    tracing::info!(
        aggregate = %token.aggregate,
        aggregate_id = %token.aggregate_id,
        version = token.version,
        "the read model did not catch up within the consistency wait"
    );
    // Never stale data silently: the caller asked to read their write.
    Err(refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "CONSISTENCY_TIMEOUT",
        format!(
            "the {} is not yet readable at the version the command returned (waited {} s); retry shortly",
            token.aggregate,
            CONSISTENCY_WAIT.as_secs()
        ),
    ))
}

async fn graphql(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let request_id = platform::http::request_id(&headers);
    let mut response = answer(state, peer, &headers, request_id.clone(), request)
        .await
        .unwrap_or_else(|refused| refused.into_response());
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

async fn answer(
    state: AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    request_id: String,
    request: Request,
) -> Result<Response, Box<Refused>> {
    let claims = state
        .guards
        .verifier
        .verify_header(header_text(headers, header::AUTHORIZATION).as_deref())
        .await
        .map_err(|e| match e {
            AuthError::Unavailable(reason) => problem(Problem::unavailable(reason)),
            e => problem(Problem::unauthorized(e.to_string())),
        })?;
    let caller = Caller { claims };
    let role = caller
        .acting_role(&[
            Role::Practitioner,
            Role::Admin,
            Role::Patient,
            Role::Auditor,
        ])
        .ok_or_else(|| problem(Problem::forbidden("the token carries no Healthplane role")))?;
    if let Err(retry_after) = state.guards.rate.check(&caller.claims.sub) {
        state.guards.rate_limited.inc();
        return Err(Box::new(Refused::GraphQl {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "RATE_LIMITED",
            message: format!("too many requests from this caller; retry in {retry_after} s"),
            retry_after: Some(retry_after),
        }));
    }
    let batch = <GraphQLBatchRequest as FromRequest<AppState>>::from_request(request, &state)
        .await
        .map_err(|rejection| problem(unreadable(rejection.0)))?
        .into_inner();
    let mut operations = match batch {
        BatchRequest::Single(one) => vec![one],
        BatchRequest::Batch(many) => {
            if many.is_empty() || many.len() > MAX_BATCH {
                return Err(problem(Problem::bad_request(format!(
                    "a batch holds 1 to {MAX_BATCH} operations; this one holds {}",
                    many.len()
                ))));
            }
            // Each operation beyond the first is a request of its own for the rate limit.
            for _ in 1..many.len() {
                if let Err(retry_after) = state.guards.rate.check(&caller.claims.sub) {
                    state.guards.rate_limited.inc();
                    return Err(Box::new(Refused::GraphQl {
                        status: StatusCode::TOO_MANY_REQUESTS,
                        code: "RATE_LIMITED",
                        message: format!(
                            "too many requests from this caller; retry in {retry_after} s"
                        ),
                        retry_after: Some(retry_after),
                    }));
                }
            }
            many
        }
    };
    let single = operations.len() == 1;
    // The shape of each operation, checked before any wait or read (the request keeps its
    // parsed document for the executor); a single request that breaks it is refused whole.
    let shapes: Vec<Result<(), String>> = operations.iter_mut().map(check_shape).collect();
    if let (true, Some(Err(reason))) = (single, shapes.first()) {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            reason.clone(),
        ));
    }
    let (client_ip, forwarded_for) = state.guards.proxies.client(
        peer.ip(),
        header_text(headers, "x-forwarded-for").as_deref(),
    );
    let (purpose_of_use, break_glass_reason) = purpose_of_use(headers, role)?;
    let context = AccessContext {
        actor: caller.actor(role),
        purpose_of_use,
        break_glass_reason,
        client_ip: Some(client_ip),
        forwarded_for,
        user_agent: header_text(headers, header::USER_AGENT),
        request_id,
    };
    await_consistency(&state, headers, &caller).await?;
    // Each operation of a batch runs, is authorized and is audited on its own.
    let mut responses = Vec::with_capacity(operations.len());
    for (operation, shape) in operations.into_iter().zip(shapes) {
        if let Err(reason) = shape {
            responses.push(async_graphql::Response::from_errors(vec![
                async_graphql::Error::new(reason)
                    .extend_with(|_, e| e.set("code", "BAD_USER_INPUT"))
                    .into_server_error(async_graphql::Pos::default()),
            ]));
            continue;
        }
        let scope = access::scope(&caller, role, context.break_glass_reason.is_some());
        let practitioner = match &scope {
            Ok(access::Scope::Practitioner(me)) => Some(me.clone()),
            _ => None,
        };
        let audit = Arc::new(RequestAudit::new(state.audit.clone(), context.clone()));
        let data = RequestData {
            caller: caller.clone(),
            role,
            scope,
            models: state.models.clone(),
            loader: ReadLoader::for_request(state.models.clone(), practitioner),
            audit: audit.clone(),
        };
        let response = state.schema.execute(operation.data(data)).await;
        // No PHI leaves before every access it carries is on the audit log.
        responses.push(match audit.flush().await {
            Ok(()) => response,
            Err(_) => async_graphql::Response::from_errors(vec![
                async_graphql::Error::new(AUDIT_UNAVAILABLE)
                    .extend_with(|_, e| e.set("code", "AUDIT_UNAVAILABLE"))
                    .into_server_error(async_graphql::Pos::default()),
            ]),
        });
    }
    let response = if single {
        async_graphql::BatchResponse::Single(responses.remove(0))
    } else {
        async_graphql::BatchResponse::Batch(responses)
    };
    Ok(GraphQLResponse::from(response).into_response())
}

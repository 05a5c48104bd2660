//! The HTTP surface of the query API: `POST /graphql` (authenticated), GraphiQL on
//! `GET /graphql`, health and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use events::{ConsistencyToken, Role};
use platform::auth::{Caller, Verifier};
use platform::metrics::Metrics;
use platform::problem::Problem;

use crate::audit::{AccessContext, AuditLog, RequestAudit};
use crate::graphql::{PortalSchema, RequestData};
use crate::read_model::Patients;

/// How long a query with `X-Consistency-Token` waits for the read model to catch up.
pub const CONSISTENCY_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct AppState {
    pub schema: PortalSchema,
    pub verifier: Arc<Verifier>,
    pub audit: Arc<AuditLog>,
    pub patients: Patients,
}

pub fn router(state: AppState, metrics: Arc<Metrics>) -> Router {
    let ready = platform::http::postgres_ready(state.patients.pool().clone());
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

/// The purpose of use the caller declares (`X-Purpose-Of-Use`), defaulting by role.
fn purpose_of_use(headers: &HeaderMap, caller: &Caller) -> Result<String, Problem> {
    match header_text(headers, "x-purpose-of-use") {
        Some(p) if (2..=16).contains(&p.len()) && p.chars().all(|c| c.is_ascii_uppercase()) => {
            Ok(p)
        }
        Some(p) => Err(Problem::bad_request(format!(
            "X-Purpose-Of-Use `{p}` is not an HL7 PurposeOfUse code such as TREAT or ETREAT"
        ))),
        None if caller.has(Role::Practitioner) || caller.has(Role::Admin) => Ok("TREAT".into()),
        None => Ok("PATRQT".into()),
    }
}

/// Waits (bounded) until the read model holds the version a command response promised.
async fn await_consistency(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    let Some(raw) = header_text(headers, "x-consistency-token") else {
        return Ok(());
    };
    let token: ConsistencyToken = raw.parse().map_err(Problem::bad_request)?;
    if token.aggregate_type != "patient" {
        return Ok(());
    }
    let deadline = Instant::now() + CONSISTENCY_WAIT;
    while Instant::now() < deadline {
        match state.patients.version(token.aggregate_id).await {
            Ok(v) if v >= token.version => return Ok(()),
            Ok(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(_) => break,
        }
    }
    tracing::info!(token = %raw, "read model did not catch up within the consistency wait; answering with what it has");
    Ok(())
}

async fn graphql(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> Response {
    let request_id = platform::http::request_id(&headers);
    let result = async {
        let claims = state
            .verifier
            .verify_header(header_text(&headers, header::AUTHORIZATION).as_deref())
            .map_err(|e| Problem::unauthorized(e.to_string()))?;
        let caller = Caller { claims };
        let role = caller
            .acting_role(&[
                Role::Practitioner,
                Role::Admin,
                Role::Patient,
                Role::Auditor,
            ])
            .ok_or_else(|| Problem::forbidden("the token carries no Healthplane role"))?;
        let context = AccessContext {
            actor: caller.actor(role),
            purpose_of_use: purpose_of_use(&headers, &caller)?,
            client_ip: header_text(&headers, "x-forwarded-for")
                .and_then(|f| f.split(',').next().map(|s| s.trim().to_string()))
                .or_else(|| Some(peer.ip().to_string())),
            user_agent: header_text(&headers, header::USER_AGENT),
            request_id: request_id.clone(),
        };
        await_consistency(&state, &headers).await?;
        let data = RequestData {
            caller,
            audit: RequestAudit::new(state.audit.clone(), context),
        };
        let response = state.schema.execute(request.into_inner().data(data)).await;
        Ok::<_, Problem>(GraphQLResponse::from(response).into_response())
    }
    .await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

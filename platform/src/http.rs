//! HTTP plumbing shared by the services: `/health/live`, `/health/ready`, `/metrics`,
//! request ids, binding and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// A readiness probe: `Ok(details)` when the service can do its work (the details, e.g. lag,
/// go into the answer), `Err(reason)` when it cannot.
pub type ReadyCheck =
    Arc<dyn Fn() -> BoxFuture<'static, Result<serde_json::Value, String>> + Send + Sync>;

#[derive(Clone)]
struct Ops {
    metrics: Arc<Metrics>,
    ready: ReadyCheck,
}

/// `/health/live`, `/health/ready` and `/metrics`, to merge into a service's router.
pub fn ops_router(metrics: Arc<Metrics>, ready: ReadyCheck) -> Router {
    ops_router_with(metrics, ready, Vec::new())
}

/// Like [`ops_router`], with more checks answered like `/health/ready` at their own paths
/// (e.g. `/health/relay` for a part of the process that must not take the whole of it out of
/// service).
pub fn ops_router_with(
    metrics: Arc<Metrics>,
    ready: ReadyCheck,
    checks: Vec<(&'static str, ReadyCheck)>,
) -> Router {
    let mut router = Router::new()
        .route(
            "/health/live",
            get(|| async { axum::Json(serde_json::json!({"status": "up"})) }),
        )
        .route(
            "/health/ready",
            get(|State(ops): State<Ops>| async move { check_response(&ops.ready).await }),
        )
        .route("/metrics", get(metrics_handler));
    for (path, check) in checks {
        router = router.route(
            path,
            get(move || {
                let check = check.clone();
                async move { check_response(&check).await }
            }),
        );
    }
    router.with_state(Ops { metrics, ready })
}

async fn check_response(check: &ReadyCheck) -> impl IntoResponse + use<> {
    match check().await {
        Ok(details) => {
            let mut body = serde_json::json!({"status": "ready"});
            if let (Some(body), serde_json::Value::Object(details)) =
                (body.as_object_mut(), details)
            {
                body.extend(details);
            }
            (StatusCode::OK, axum::Json(body))
        }
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "not ready", "reason": reason})),
        ),
    }
}

async fn metrics_handler(State(ops): State<Ops>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        ops.metrics.render(),
    )
}

/// A readiness check that pings a Postgres pool.
pub fn postgres_ready(pool: sqlx::PgPool) -> ReadyCheck {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(|_| serde_json::json!({}))
                .map_err(|e| format!("postgres: {e}"))
        })
    })
}

/// The request's `X-Request-Id`, or a fresh one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Serves `router` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("HTTP server failed")
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

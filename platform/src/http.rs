//! HTTP plumbing shared by the services: `/health/live`, `/health/ready`, `/metrics`,
//! request ids, binding, a bounded HTTP/1.1 server and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::problem::Problem;

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
                .map_err(|e| {
                    tracing::warn!(error = %e, "readiness: PostgreSQL does not answer");
                    "postgres unavailable".to_string()
                })
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

/// The bounds every Healthplane HTTP server holds a client to (flatten into a service's args).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimits {
    /// Most concurrent connections; further clients wait in the listen backlog.
    #[arg(long, env = "HEALTHPLANE_HTTP_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
    /// A client must send a request's complete header within this time, or is disconnected.
    #[arg(
        long,
        env = "HEALTHPLANE_HTTP_HEADER_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub header_timeout_ms: u64,
    /// A request (reading its body included) must be answered within this time, or gets a 503.
    #[arg(
        long,
        env = "HEALTHPLANE_HTTP_REQUEST_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub request_timeout_ms: u64,
    /// Largest request body; a larger `Content-Length` is refused before anything is read.
    #[arg(long, env = "HEALTHPLANE_HTTP_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 512,
            header_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Refuses a body over the limit by its `Content-Length` before reading it, bounds a body
/// without one while it is read, answers a request that takes too long with a 503, and marks
/// every response `Cache-Control: no-store` and `X-Content-Type-Options: nosniff` (answers may
/// carry PHI; nothing may cache or sniff them).
async fn guard(
    limits: Arc<HttpLimits>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut response = if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        let mut response = Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("the body exceeds {} bytes", limits.max_body_bytes),
        )
        .into_response();
        // The unread body is not drained: the client is told to go away.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    } else {
        let limit = limits.max_body_bytes;
        let request =
            request.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit)));
        let timeout = Duration::from_millis(limits.request_timeout_ms);
        match tokio::time::timeout(timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => Problem::unavailable(format!(
                "the request was not completed within {} ms",
                limits.request_timeout_ms
            ))
            .into_response(),
        }
    };
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Serves `router` until `shutdown` resolves, then drains in-flight requests (for at most
/// 30 s). HTTP/1.1 with the bounds of `limits`: at most `max_connections` connections at
/// once, a header read timeout (a half-sent request does not hold a connection), a request
/// timeout and a body limit. Handlers see the TCP peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::Service;

    let limits = Arc::new(limits);
    let router = router.layer(axum::middleware::from_fn({
        let limits = limits.clone();
        move |request, next| guard(limits.clone(), request, next)
    }));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms))
        .max_buf_size(64 * 1024);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.context("connection limiter closed")?,
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            router.clone().call(request.map(axum::body::Body::new))
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within 30 s of shutdown");
    }
    Ok(())
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

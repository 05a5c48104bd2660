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

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct Route {
    route: String,
}

/// Requests answered, by route template and status, and how long they took, by route: the
/// golden signals an operator alerts on (5xx rate, p99 latency). The route is the template
/// (`/v1/patients/{id}`), never the path itself (ids in paths are PHI) — `unmatched` for
/// paths no route serves.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: prometheus_client::metrics::family::Family<
        RouteStatus,
        prometheus_client::metrics::counter::Counter,
    >,
    duration: prometheus_client::metrics::family::Family<
        Route,
        prometheus_client::metrics::histogram::Histogram,
    >,
}

/// Latency buckets, seconds: fine around the 15 ms (GraphQL) and 100 ms (commands) targets.
const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl HttpMetrics {
    /// Registers `healthplane_http_requests_total` and
    /// `healthplane_http_request_duration_seconds` in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::histogram::Histogram;
        let requests = metrics.register(
            "http_requests",
            "HTTP requests answered, by route template and status code",
            Family::default(),
        );
        let duration = metrics.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by route template",
            Family::<Route, Histogram>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
        );
        HttpMetrics { requests, duration }
    }
}

async fn record(
    metrics: HttpMetrics,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics
        .duration
        .get_or_create(&Route {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RouteStatus {
            route,
            status: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

/// Serves `router` until `shutdown` resolves, then drains in-flight requests (for at most
/// 30 s). HTTP/1.1 with the bounds of `limits`: at most `max_connections` connections at
/// once, a header read timeout (a half-sent request does not hold a connection), a request
/// timeout and a body limit. Handlers see the TCP peer as `ConnectInfo<SocketAddr>`. Every
/// answer is counted and timed in `metrics` ([`HttpMetrics`]).
pub fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
    serve_recorded(
        listener,
        router,
        limits,
        HttpMetrics::register(metrics),
        shutdown,
    )
}

async fn serve_recorded(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    http_metrics: HttpMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::Service;

    let limits = Arc::new(limits);
    // The recorder outermost, so that it also counts the guard's 413s and timeouts.
    let router = router
        .layer(axum::middleware::from_fn({
            let limits = limits.clone();
            move |request, next| guard(limits.clone(), request, next)
        }))
        .layer(axum::middleware::from_fn(move |request, next| {
            record(http_metrics.clone(), request, next)
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

/// `<binary> healthcheck`: for container images without a shell or curl. When the first
/// argument is `healthcheck`, GETs `/health/ready` from the address the service listens on
/// (`listen_env`, else `default`; a wildcard address is asked on loopback) and exits 0 if it
/// answers 200, 1 otherwise, saying why on stderr. Returns when the argument is absent.
pub fn healthcheck_if_asked(listen_env: &str, default: &str) {
    if std::env::args().nth(1).as_deref() != Some("healthcheck") {
        return;
    }
    let listen = std::env::var(listen_env).unwrap_or_else(|_| default.to_string());
    match healthcheck(&listen, Duration::from_secs(3)) {
        Ok(()) => std::process::exit(0),
        Err(reason) => {
            eprintln!("not ready: {reason}");
            std::process::exit(1)
        }
    }
}

/// One `GET /health/ready` to the service listening on `listen`; `Ok` on a 200.
pub fn healthcheck(listen: &str, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut address: SocketAddr = listen
        .parse()
        .map_err(|e| format!("listen address `{listen}`: {e}"))?;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    stream
        .write_all(b"GET /health/ready HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("cannot ask {address}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .map_err(|e| format!("no answer from {address}: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        Err(format!(
            "{status} {}",
            body.chars().take(300).collect::<String>()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves a service-shaped router (ops routes and one with a path parameter) whose
    /// readiness is `ready`; returns its address and metrics.
    async fn start(ready: bool) -> (SocketAddr, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let check: ReadyCheck = Arc::new(move || {
            Box::pin(async move {
                if ready {
                    Ok(serde_json::json!({}))
                } else {
                    Err("postgres unavailable".to_string())
                }
            })
        });
        let router = Router::new()
            .route(
                "/v1/patients/{id}",
                get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .merge(ops_router(metrics.clone(), check));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            router,
            HttpLimits::default(),
            &metrics,
            std::future::pending(),
        ));
        (address, metrics)
    }

    #[tokio::test]
    async fn healthcheck_says_ready_only_on_a_200() {
        let (up, _) = start(true).await;
        let (down, _) = start(false).await;
        let check = |address: SocketAddr| {
            tokio::task::spawn_blocking(move || {
                healthcheck(&address.to_string(), Duration::from_secs(2))
            })
        };
        check(up).await.unwrap().expect("ready");
        let e = check(down).await.unwrap().expect_err("not ready");
        assert!(
            e.contains("503") && e.contains("postgres unavailable"),
            "{e}"
        );
        let wildcard = format!("0.0.0.0:{}", up.port());
        tokio::task::spawn_blocking(move || healthcheck(&wildcard, Duration::from_secs(2)))
            .await
            .unwrap()
            .expect("a wildcard listen address is asked on loopback");
        let closed = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let nobody = closed.local_addr().unwrap();
        drop(closed);
        let e = check(nobody).await.unwrap().expect_err("nothing listens");
        assert!(e.contains("cannot connect"), "{e}");
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_never_by_path() {
        let (address, metrics) = start(false).await;
        let client = reqwest::Client::new();
        for path in [
            "/health/ready",
            "/v1/patients/0b6f8f50-1111-4c1c-9d55-000000000001",
            "/v1/patients/0b6f8f50-1111-4c1c-9d55-000000000002",
            "/nowhere/123-45-6789",
        ] {
            client
                .get(format!("http://{address}{path}"))
                .send()
                .await
                .unwrap();
        }
        let text = metrics.render();
        for expected in [
            r#"healthplane_http_requests_total{route="/health/ready",status="503"} 1"#,
            r#"healthplane_http_requests_total{route="/v1/patients/{id}",status="500"} 2"#,
            r#"healthplane_http_requests_total{route="unmatched",status="404"} 1"#,
            r#"healthplane_http_request_duration_seconds_bucket{le="0.015",route="/v1/patients/{id}"}"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        assert!(
            !text.contains("0b6f8f50") && !text.contains("6789"),
            "{text}"
        );
    }
}

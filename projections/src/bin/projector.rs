//! `projector`: runs one projection (a service's read model) until stopped.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use platform::config::KafkaArgs;
use platform::metrics::Metrics;
use projections::runner::{self, RunnerConfig, RunnerMetrics};
use projections::{Projection, ProjectionArgs, with_projection};

/// Where health and metrics listens unless told otherwise (also what `healthcheck` asks).
const LISTEN: &str = "127.0.0.1:9101";

#[derive(Debug, Parser)]
#[command(name = "projector", version, about = "Healthplane projector worker")]
struct Args {
    /// The read model to maintain, its database, and the event store it is rebuilt from
    /// when the broker's log lost events it had not applied (offsets outside the log).
    #[command(flatten)]
    model: ProjectionArgs,
    /// Address of `/health/*` and `/metrics`.
    #[arg(
        long,
        env = "HEALTHPLANE_PROJECTOR_LISTEN",
        default_value = LISTEN
    )]
    listen: SocketAddr,
    /// Most records applied in one transaction.
    #[arg(long, default_value_t = 1000)]
    max_batch: usize,
    /// Readiness fails while more records than this wait to be applied.
    #[arg(long, default_value_t = 100_000)]
    max_ready_lag: i64,
    #[command(flatten)]
    kafka: KafkaArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::http::healthcheck_if_asked("HEALTHPLANE_PROJECTOR_LISTEN", LISTEN);
    platform::telemetry::init("projector");
    let args = Args::parse();
    args.kafka.check()?;
    with_projection!(args.model.projection, |projection| run(projection, args)
        .await)
}

async fn run<P: Projection>(projection: P, args: Args) -> anyhow::Result<()> {
    let url = args.model.database_url(&projection);
    let pool = platform::db::connect_schema(&url, platform::db::READ_MODEL_SCHEMA, 4).await?;
    let metrics = Arc::new(Metrics::default());
    let runner_metrics = RunnerMetrics::register(&metrics);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let config = RunnerConfig {
        brokers: args.kafka.kafka_brokers.clone(),
        registry_url: args.kafka.schema_registry_url.clone(),
        max_batch: args.max_batch,
        database_url: url.clone(),
        event_store_url: args.model.event_store_url.clone(),
    };
    let ready = {
        let pool = pool.clone();
        let lag = runner_metrics.lag_snapshot.clone();
        let problem = runner_metrics.problem.clone();
        let max_lag = args.max_ready_lag;
        Arc::new(move || {
            let pool = pool.clone();
            let lag = lag.lock().expect("lag snapshot poisoned").clone();
            let problem = problem.lock().expect("problem poisoned").clone();
            Box::pin(async move {
                if let Some(problem) = problem {
                    return Err(problem);
                }
                sqlx::query("SELECT 1").execute(&pool).await.map_err(|e| {
                    tracing::warn!(error = %e, "readiness: PostgreSQL does not answer");
                    "postgres unavailable".to_string()
                })?;
                let total: i64 = lag.values().sum();
                let partitions: serde_json::Map<String, serde_json::Value> = lag
                    .iter()
                    .map(|((t, p), l)| (format!("{t}/{p}"), serde_json::json!(l)))
                    .collect();
                if total > max_lag {
                    return Err(format!("{total} records behind (more than {max_lag})"));
                }
                Ok(serde_json::json!({"lag": total, "lagByPartition": partitions}))
            }) as futures::future::BoxFuture<'static, Result<serde_json::Value, String>>
        }) as platform::http::ReadyCheck
    };
    let ops = platform::http::ops_router(metrics.clone(), ready);
    let listener = platform::http::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, projection = projection.name(), "projector health and metrics listening");
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(platform::http::serve(
        listener,
        ops,
        platform::http::HttpLimits::default(),
        &metrics,
        async move {
            let _ = http_stop.changed().await;
        },
    ));
    // Run inline: the worker needs no second task.
    let worker = runner::run(Arc::new(projection), pool, config, runner_metrics, stop_rx);
    tokio::pin!(worker);
    let finished = tokio::select! {
        _ = platform::http::shutdown_signal() => None,
        result = &mut worker => Some(result),
    };
    let result = match finished {
        Some(result) => result,
        None => {
            let _ = stop_tx.send(true);
            worker.await
        }
    };
    let _ = stop_tx.send(true);
    http.await.ok();
    result
}

//! `projector`: runs one projection (a service's read model) until stopped.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use platform::config::KafkaArgs;
use platform::metrics::Metrics;
use projections::patient::PatientProjection;
use projections::runner::{self, RunnerConfig};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Which {
    Patient,
}

#[derive(Debug, Parser)]
#[command(name = "projector", version, about = "Healthplane projector worker")]
struct Args {
    /// The read model to maintain.
    #[arg(long, value_enum)]
    projection: Which,
    /// The read model's database (default: the projection's service database).
    #[arg(long, env = "HEALTHPLANE_PROJECTION_DATABASE_URL")]
    database_url: Option<String>,
    /// Address of `/health/*` and `/metrics`.
    #[arg(
        long,
        env = "HEALTHPLANE_PROJECTOR_LISTEN",
        default_value = "127.0.0.1:9101"
    )]
    listen: SocketAddr,
    /// Most records applied in one transaction.
    #[arg(long, default_value_t = 500)]
    max_batch: usize,
    #[command(flatten)]
    kafka: KafkaArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init("projector");
    let args = Args::parse();
    let (database, projection) = match args.projection {
        Which::Patient => ("patient_service", Arc::new(PatientProjection)),
    };
    let url = args
        .database_url
        .unwrap_or_else(|| platform::config::default_database_url(database));
    let pool = platform::db::connect(&url, 4).await?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let config = RunnerConfig {
        brokers: args.kafka.kafka_brokers,
        registry_url: args.kafka.schema_registry_url,
        max_batch: args.max_batch,
    };
    let ops = platform::http::ops_router(
        metrics.clone(),
        platform::http::postgres_ready(pool.clone()),
    );
    let listener = platform::http::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, projection = ?args.projection, "projector health and metrics listening");
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(platform::http::serve(listener, ops, async move {
        let _ = http_stop.changed().await;
    }));
    // Run inline: the worker borrows the metrics and needs no second task.
    let worker = runner::run(projection, pool, config, &metrics, stop_rx);
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

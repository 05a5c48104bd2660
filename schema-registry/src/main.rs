//! `schema-registry`: the local Confluent-compatible schema registry (REST on :8081).
//!
//! Writes need HTTP Basic credentials from `HEALTHPLANE_SCHEMA_REGISTRY_USERS`; without it the
//! registry refuses to start (with `HEALTHPLANE_DEV_MODE=1` it accepts the public development
//! credential instead).

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use platform::metrics::Metrics;
use schema_registry::{self as registry, auth::Users, store::Store};

/// Where the registry listens unless told otherwise (also what `healthcheck` asks).
const LISTEN: &str = "127.0.0.1:8081";

#[derive(Debug, Parser)]
#[command(
    name = "schema-registry",
    version,
    about = "Confluent-compatible schema registry backed by PostgreSQL"
)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "HEALTHPLANE_SCHEMA_REGISTRY_LISTEN",
        default_value = LISTEN
    )]
    listen: SocketAddr,
    /// The registry's own database.
    #[arg(long, env = "HEALTHPLANE_SCHEMA_REGISTRY_DATABASE_URL", default_value_t = platform::config::default_database_url("schema_registry"), hide_default_value = true, hide_env_values = true)]
    database_url: String,
    #[command(flatten)]
    http: platform::http::HttpLimits,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::http::healthcheck_if_asked("HEALTHPLANE_SCHEMA_REGISTRY_LISTEN", LISTEN);
    platform::telemetry::init("schema-registry");
    let args = Args::parse();
    platform::transport::init()?;
    // Before anything else: a registry anyone could write to must not start.
    let users = Users::from_env().map_err(anyhow::Error::msg)?;
    tracing::info!(?users, "registry writes need HTTP Basic credentials");
    let pool = platform::db::connect(&args.database_url, 8).await?;
    platform::db::migrate(&pool, "schema-registry", registry::store::MIGRATIONS).await?;
    let metrics = Arc::new(Metrics::default());
    let ready = platform::http::postgres_ready(pool.clone());
    let app = registry::router(Store::new(pool), users, metrics.clone(), ready);
    let listener = platform::http::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "schema registry listening");
    platform::http::serve(
        listener,
        app,
        args.http,
        &metrics,
        platform::http::shutdown_signal(),
    )
    .await
}

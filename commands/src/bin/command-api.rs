//! `command-api`: the command API on :8082 and, in the same process, the outbox relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use commands::api::{self, AppState};
use commands::relay::{Relay, RelayConfig};
use commands::store::{self, EventStore};
use platform::metrics::Metrics;

/// Where the command API listens unless told otherwise (also what `healthcheck` asks).
const LISTEN: &str = "127.0.0.1:8082";

#[derive(Debug, Parser)]
#[command(
    name = "command-api",
    version,
    about = "Healthplane command API and outbox relay"
)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "HEALTHPLANE_COMMAND_API_LISTEN",
        default_value = LISTEN
    )]
    listen: SocketAddr,
    /// The event store database.
    #[arg(long, env = "HEALTHPLANE_EVENT_STORE_DATABASE_URL", default_value_t = platform::config::default_database_url("healthplane_event_store"), hide_default_value = true, hide_env_values = true)]
    database_url: String,
    /// Do not run the outbox relay in this process (run it elsewhere).
    #[arg(long, env = "HEALTHPLANE_NO_RELAY")]
    no_relay: bool,
    /// How long the relay lets the producer retry one event before the batch fails and is retried.
    #[arg(
        long,
        env = "HEALTHPLANE_RELAY_DELIVERY_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    relay_delivery_timeout_ms: u64,
    /// Events waiting and none published for this long: the relay reports itself stalled
    /// (`/health/relay` fails, `healthplane_outbox_relay_stalled` is 1, an error is logged).
    #[arg(long, env = "HEALTHPLANE_RELAY_STALL_AFTER_S", default_value_t = 60)]
    relay_stall_after_s: u64,
    /// Most outbox events the relay leases and sends in one batch (1 to 10,000). The relay
    /// waits for the broker's acks of a batch before the next: larger batches make fewer,
    /// fuller produce requests (on this machine's broker 500 reached 955 events/s, 2,000
    /// 1,142, against 1,342 for a plain producer sending everything at once).
    #[arg(long, env = "HEALTHPLANE_RELAY_BATCH_SIZE", default_value_t = 2_000,
          value_parser = clap::value_parser!(i64).range(1..=10_000))]
    relay_batch_size: i64,
    /// Most commands that share one event-store transaction (group commit: concurrent
    /// commands cost one commit; each still succeeds or fails on its own). 1 turns it off.
    #[arg(long, env = "HEALTHPLANE_GROUP_COMMIT_MAX", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=1_000))]
    group_commit_max: u16,
    /// Shared event-store transactions in flight at once.
    #[arg(long, env = "HEALTHPLANE_GROUP_COMMIT_IN_FLIGHT", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=8))]
    group_commit_in_flight: u16,
    #[command(flatten)]
    api: platform::consistency::ApiArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::http::healthcheck_if_asked("HEALTHPLANE_COMMAND_API_LISTEN", LISTEN);
    platform::telemetry::init("command-api");
    let args = Args::parse();
    args.api.kafka.check()?;
    // No key, no service: checked before anything else starts.
    let platform::consistency::ApiKeys {
        verifier,
        consistency,
    } = args.api.keys.load().await?;
    let pool = platform::db::connect(&args.database_url, 16).await?;
    platform::db::migrate(&pool, "event-store", store::MIGRATIONS).await?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let (relay, relay_health) = if args.no_relay {
        (None, None)
    } else {
        let producer = platform::kafka::producer_config(
            &args.api.kafka.kafka_brokers,
            Duration::from_millis(args.relay_delivery_timeout_ms),
        );
        let codec = Arc::new(schemas::EventCodec::new(
            &args.api.kafka.schema_registry_url,
        ));
        // The relay's own connections: its work never waits for, or starves, the commands'.
        let relay_pool = platform::db::connect(&args.database_url, 2).await?;
        let config = RelayConfig {
            batch_timeout: Duration::from_millis(args.relay_delivery_timeout_ms)
                + Duration::from_secs(30),
            stall_after: Duration::from_secs(args.relay_stall_after_s),
            batch_size: args.relay_batch_size,
            ..RelayConfig::default()
        };
        let relay = Relay::new(relay_pool, producer, codec, config, &metrics)
            .context("cannot create the Kafka producer")?;
        let health = relay.health();
        (Some(tokio::spawn(relay.run(stop_rx))), Some(health))
    };

    let store = EventStore::with_group_commit(
        pool,
        store::GroupCommit {
            max_batch: args.group_commit_max.into(),
            in_flight: args.group_commit_in_flight.into(),
        },
    );
    // Idempotency keys answer retries for a day, then are forgotten.
    let expiry = tokio::spawn({
        let store = store.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(600));
            loop {
                every.tick().await;
                match store
                    .expire_idempotency_keys(chrono::Duration::hours(24))
                    .await
                {
                    Ok(n) if n > 0 => tracing::info!(expired = n, "expired idempotency keys"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot expire idempotency keys"),
                }
            }
        }
    });
    let state = AppState::new(store, verifier, consistency, &metrics);
    let app = api::router(state, metrics.clone(), relay_health);
    let listener = platform::http::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, relay = relay.is_some(), "command API listening");
    platform::http::serve(
        listener,
        app,
        args.api.http,
        &metrics,
        platform::http::shutdown_signal(),
    )
    .await?;
    let _ = stop_tx.send(true);
    expiry.abort();
    if let Some(relay) = relay {
        relay.await.ok();
    }
    Ok(())
}

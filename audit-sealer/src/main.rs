//! `audit-sealer`: seals the PHI access log with signed, chained checkpoints until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use audit_sealer::{SealPolicy, SealerConfig, SealerMetrics};
use clap::Parser;
use platform::config::KafkaArgs;
use platform::metrics::Metrics;

/// Where health and metrics listens unless told otherwise (also what `healthcheck` asks).
const LISTEN: &str = "127.0.0.1:9107";

#[derive(Debug, Parser)]
#[command(name = "audit-sealer", version, about = "Healthplane audit log sealer")]
struct Args {
    /// The sealer's Ed25519 signing key (a base64 PKCS#8 file from `replay-tool audit
    /// keygen`; its public half must be in the auditors' keyring). Required.
    #[arg(
        long,
        env = "HEALTHPLANE_AUDIT_SIGNING_KEY_FILE",
        hide_env_values = true
    )]
    signing_key_file: Option<PathBuf>,
    /// The same key as text (the file's base64), e.g. from a Kubernetes `secretKeyRef`.
    #[arg(long, env = "HEALTHPLANE_AUDIT_SIGNING_KEY", hide_env_values = true)]
    signing_key: Option<platform::config::Secret<String>>,
    /// The database whose advisory lock lets one sealer seal at a time (the audit index's).
    #[arg(long, env = "HEALTHPLANE_AUDIT_DATABASE_URL", default_value_t = platform::config::default_database_url("audit_service"), hide_env_values = true, hide_default_value = true)]
    lock_database_url: String,
    /// Every partition gets a checkpoint at least this often (milliseconds).
    #[arg(long, env = "HEALTHPLANE_SEAL_INTERVAL_MS", default_value_t = 60_000)]
    interval_ms: u64,
    /// A checkpoint is written as soon as this many records wait in a partition.
    #[arg(long, env = "HEALTHPLANE_SEAL_MAX_RECORDS", default_value_t = 10_000)]
    max_records: i64,
    /// Public keys whose checkpoints this sealer resumes from besides its own (`<key id>
    /// <public key>` lines, e.g. the auditors' keyring, for a sealer whose key was rotated).
    #[arg(long, env = "HEALTHPLANE_AUDIT_KEYRING")]
    keyring: Option<PathBuf>,
    /// Address of `/health/*` and `/metrics`.
    #[arg(
        long,
        env = "HEALTHPLANE_SEALER_LISTEN",
        default_value = LISTEN
    )]
    listen: SocketAddr,
    #[command(flatten)]
    kafka: KafkaArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::http::healthcheck_if_asked("HEALTHPLANE_SEALER_LISTEN", LISTEN);
    platform::telemetry::init("audit-sealer");
    let args = Args::parse();
    args.kafka.check()?;
    let signer = platform::signing::RecordSigner::from_file_or_text(
        args.signing_key_file.as_deref(),
        args.signing_key.as_ref(),
        "no signing key: set HEALTHPLANE_AUDIT_SIGNING_KEY_FILE (or HEALTHPLANE_AUDIT_SIGNING_KEY) \
         to the sealer's key (`replay-tool audit keygen --key <file> --keyring <file>` makes one)",
    )?;
    anyhow::ensure!(
        args.interval_ms >= 100 && args.max_records >= 1,
        "the interval must be at least 100 ms and max records at least 1"
    );
    let policy = SealPolicy {
        interval: Duration::from_millis(args.interval_ms),
        max_records: args.max_records,
    };
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let config = SealerConfig {
        brokers: args.kafka.kafka_brokers.clone(),
        registry_url: args.kafka.schema_registry_url.clone(),
        lock_database_url: args.lock_database_url.clone(),
        policy,
        instance: format!("{host}/{}", std::process::id()),
        keyring: match &args.keyring {
            Some(path) => platform::signing::Keyring::from_file(path)?,
            None => platform::signing::Keyring::default(),
        },
    };
    tracing::info!(
        key_id = signer.key_id(),
        interval_ms = args.interval_ms,
        max_records = args.max_records,
        "checkpoints are signed"
    );
    let metrics = Arc::new(Metrics::default());
    let sealer_metrics = SealerMetrics::register(&metrics);
    let ready = {
        let sealer_metrics = sealer_metrics.clone();
        Arc::new(move || {
            let answer = sealer_metrics.readiness(&policy);
            Box::pin(async move { answer })
                as futures::future::BoxFuture<'static, Result<serde_json::Value, String>>
        }) as platform::http::ReadyCheck
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listener = platform::http::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "sealer health and metrics listening");
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(platform::http::serve(
        listener,
        platform::http::ops_router(metrics.clone(), ready),
        platform::http::HttpLimits::default(),
        &metrics,
        async move {
            let _ = http_stop.changed().await;
        },
    ));
    let sealer = audit_sealer::run(config, signer, sealer_metrics, stop_rx);
    tokio::pin!(sealer);
    let result = tokio::select! {
        _ = platform::http::shutdown_signal() => {
            let _ = stop_tx.send(true);
            sealer.await
        }
        result = &mut sealer => result,
    };
    let _ = stop_tx.send(true);
    http.await.ok();
    result
}

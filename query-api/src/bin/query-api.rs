//! `query-api`: the GraphQL API for the portals on :8080.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use events::registry::Aggregate;
use platform::client_ip::TrustedProxies;
use platform::metrics::Metrics;
use query_api::audit::AuditLog;
use query_api::graphql::ReadModels;
use query_api::graphql::build_schema;
use query_api::http::{self, AppState, Guards};
use query_api::limits::RateLimiter;
use query_api::read_model::{
    AccessLog, Appointments, Encounters, MedicationRequests, Observations, Patients, ReadPool,
    StatementCounter, Versions,
};

/// Where the GraphQL API listens unless told otherwise (also what `healthcheck` asks).
const LISTEN: &str = "127.0.0.1:8080";

#[derive(Debug, Parser)]
#[command(name = "query-api", version, about = "Healthplane GraphQL query API")]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "HEALTHPLANE_QUERY_API_LISTEN",
        default_value = LISTEN
    )]
    listen: SocketAddr,
    /// The patient read model.
    #[arg(long, env = "HEALTHPLANE_PATIENT_DATABASE_URL", default_value_t = platform::config::default_database_url("patient_service"), hide_default_value = true, hide_env_values = true)]
    patient_database_url: String,
    /// The appointment read model (connected on first use).
    #[arg(long, env = "HEALTHPLANE_APPOINTMENT_DATABASE_URL", default_value_t = platform::config::default_database_url("appointment_service"), hide_default_value = true, hide_env_values = true)]
    appointment_database_url: String,
    /// The encounter read model (connected on first use).
    #[arg(long, env = "HEALTHPLANE_ENCOUNTER_DATABASE_URL", default_value_t = platform::config::default_database_url("encounter_service"), hide_default_value = true, hide_env_values = true)]
    encounter_database_url: String,
    /// The laboratory read model (observations; connected on first use).
    #[arg(long, env = "HEALTHPLANE_LABORATORY_DATABASE_URL", default_value_t = platform::config::default_database_url("laboratory_service"), hide_default_value = true, hide_env_values = true)]
    laboratory_database_url: String,
    /// The pharmacy read model (medication requests; connected on first use).
    #[arg(long, env = "HEALTHPLANE_PHARMACY_DATABASE_URL", default_value_t = platform::config::default_database_url("pharmacy_service"), hide_default_value = true, hide_env_values = true)]
    pharmacy_database_url: String,
    /// The PHI access index (read by `phiAccessLog`; connected on first use).
    #[arg(long, env = "HEALTHPLANE_AUDIT_DATABASE_URL", default_value_t = platform::config::default_database_url("audit_service"), hide_default_value = true, hide_env_values = true)]
    audit_database_url: String,
    /// Requests per second one caller (token `sub`) may make, on average.
    #[arg(long, env = "HEALTHPLANE_GRAPHQL_RATE_PER_S", default_value_t = 50.0)]
    rate_per_second: f64,
    /// Requests one caller may make in a burst.
    #[arg(long, env = "HEALTHPLANE_GRAPHQL_RATE_BURST", default_value_t = 100.0)]
    rate_burst: f64,
    /// Reads waiting on a consistency token at once, at most (each polls the read model).
    #[arg(long, env = "HEALTHPLANE_CONSISTENCY_MAX_WAITS", default_value_t = 32)]
    max_consistency_waits: usize,
    /// Proxies whose `X-Forwarded-For` is believed: addresses and CIDR blocks, comma-separated
    /// (none by default: the TCP peer is the client).
    #[arg(long, env = "HEALTHPLANE_TRUSTED_PROXIES", default_value = "")]
    trusted_proxies: String,
    /// The audit writer's Ed25519 signing key (a base64 PKCS#8 file from `replay-tool audit
    /// keygen`): every audit record is signed with it. Required.
    #[arg(
        long,
        env = "HEALTHPLANE_AUDIT_SIGNING_KEY_FILE",
        hide_env_values = true
    )]
    audit_signing_key_file: Option<std::path::PathBuf>,
    /// The same key as text (the file's base64), e.g. from a Kubernetes `secretKeyRef`.
    #[arg(long, env = "HEALTHPLANE_AUDIT_SIGNING_KEY", hide_env_values = true)]
    audit_signing_key: Option<platform::config::Secret<String>>,
    /// How long the audit writer waits to batch concurrent reads' records before sending
    /// (each read waits for its record: longer batches save broker work, cost latency).
    #[arg(long, env = "HEALTHPLANE_AUDIT_LINGER_MS", default_value_t = 1)]
    audit_linger_ms: u32,
    #[command(flatten)]
    api: platform::consistency::ApiArgs,
}

/// A read model's pool, connected on first use (the API starts before its projectors).
fn lazy(url: &str) -> anyhow::Result<sqlx::PgPool> {
    platform::db::connect_reader_lazy(url, platform::db::READ_MODEL_SCHEMA, 8)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::http::healthcheck_if_asked("HEALTHPLANE_QUERY_API_LISTEN", LISTEN);
    platform::telemetry::init("query-api");
    let args = Args::parse();
    args.api.kafka.check()?;
    // No key, no service: checked before anything else starts.
    let platform::consistency::ApiKeys {
        verifier,
        consistency,
    } = args.api.keys.load().await?;
    let proxies = TrustedProxies::parse(&args.trusted_proxies).map_err(anyhow::Error::msg)?;
    let signer = platform::signing::RecordSigner::from_file_or_text(
        args.audit_signing_key_file.as_deref(),
        args.audit_signing_key.as_ref(),
        "no audit signing key: set HEALTHPLANE_AUDIT_SIGNING_KEY_FILE (or \
         HEALTHPLANE_AUDIT_SIGNING_KEY) to the writer's key \
         (`replay-tool audit keygen --key <file> --keyring <file>` makes one)",
    )?;
    tracing::info!(key_id = signer.key_id(), "audit records are signed");
    let pool = platform::db::connect_reader(
        &args.patient_database_url,
        platform::db::READ_MODEL_SCHEMA,
        16,
    )
    .await?;
    let metrics = Arc::new(Metrics::default());
    // Renewed after a broker outage, so audit writes (and with them PHI reads) resume.
    let mut audit_config =
        platform::kafka::producer_config(&args.api.kafka.kafka_brokers, Duration::from_secs(5));
    // A read waits for its audit record: linger only briefly for a batch.
    audit_config.set("linger.ms", args.audit_linger_ms.to_string());
    let producer = platform::kafka::RenewingProducer::new(audit_config)
        .context("cannot create the audit producer")?;
    let codec = Arc::new(schemas::EventCodec::new(
        &args.api.kafka.schema_registry_url,
    ));
    let statements = StatementCounter::register(&metrics);
    let db = |pool: sqlx::PgPool, database: &str| ReadPool::new(pool, database, &statements);
    let patient_db = db(pool, "patient_service");
    let appointment_db = db(lazy(&args.appointment_database_url)?, "appointment_service");
    let encounter_db = db(lazy(&args.encounter_database_url)?, "encounter_service");
    let laboratory_db = db(lazy(&args.laboratory_database_url)?, "laboratory_service");
    let pharmacy_db = db(lazy(&args.pharmacy_database_url)?, "pharmacy_service");
    let models = Arc::new(ReadModels {
        patients: Patients::new(patient_db.clone()),
        appointments: Appointments::new(appointment_db.clone()),
        encounters: Encounters::new(encounter_db.clone()),
        observations: Observations::new(laboratory_db.clone()),
        medication_requests: MedicationRequests::new(pharmacy_db.clone()),
        access_log: AccessLog::new(db(lazy(&args.audit_database_url)?, "audit_service")),
    });
    let state = AppState {
        schema: build_schema(),
        versions: Versions::new(
            vec![
                (Aggregate::Patient, patient_db.clone(), "patients"),
                (Aggregate::Appointment, appointment_db, "appointments"),
                (Aggregate::Encounter, encounter_db, "encounters"),
                (Aggregate::Observation, laboratory_db, "observations"),
                (
                    Aggregate::MedicationRequest,
                    pharmacy_db,
                    "medication_requests",
                ),
            ],
            Some(patient_db),
        ),
        guards: Arc::new(Guards::new(
            verifier,
            consistency,
            proxies,
            RateLimiter::new(args.rate_per_second, args.rate_burst),
            args.max_consistency_waits,
            &metrics,
        )),
        audit: Arc::new(AuditLog::new(producer, codec, signer, &metrics)),
        models,
    };
    let app = http::router(state, metrics.clone());
    let listener = platform::http::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "GraphQL API listening on /graphql");
    platform::http::serve(
        listener,
        app,
        args.api.http,
        &metrics,
        platform::http::shutdown_signal(),
    )
    .await
}

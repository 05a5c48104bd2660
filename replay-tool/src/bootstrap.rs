//! `replay-tool bootstrap`: creates the documented topics with their partitions and retention,
//! the projections' dead-letter topics, and registers every Avro schema with its
//! compatibility level. Safe to run again: nothing that exists is changed.
//! Registering needs the registry credential in `HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO`.

use events::catalog::CATALOG;
use platform::config::KafkaArgs;
use platform::kafka::{TopicOutcome, ensure_topics};
use projections::runner::dlq_spec;

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// Replication factor of created topics (1 on the embedded broker, 3 in production).
    #[arg(long, default_value_t = 1)]
    replication: i32,
}

const DLQ_TOPICS: [events::catalog::TopicSpec; 6] = [
    dlq_spec("healthcare.dlq.patient-projector"),
    dlq_spec("healthcare.dlq.appointment-projector"),
    dlq_spec("healthcare.dlq.encounter-projector"),
    dlq_spec("healthcare.dlq.laboratory-projector"),
    dlq_spec("healthcare.dlq.pharmacy-projector"),
    dlq_spec("healthcare.dlq.audit-projector"),
];

pub async fn run(kafka: &KafkaArgs, args: BootstrapArgs) -> anyhow::Result<()> {
    // Before creating anything: without a credential the schemas could not be registered.
    let credentials = schemas::client::UserInfo::from_env()?;
    let topics: Vec<_> = CATALOG.iter().chain(DLQ_TOPICS.iter()).copied().collect();
    for (name, outcome) in ensure_topics(&kafka.kafka_brokers, &topics, args.replication).await? {
        let spec = topics.iter().find(|t| t.name == name);
        let what = match outcome {
            TopicOutcome::Created => "created",
            TopicOutcome::AlreadyExisted => "exists ",
        };
        if let Some(t) = spec {
            println!(
                "topic  {what} {name} (partitions {}, retention {} d)",
                t.partitions, t.retention_days
            );
        }
    }
    for registered in
        schemas::client::register_all(&kafka.schema_registry_url, &credentials).await?
    {
        println!(
            "schema {} v{} -> id {}",
            registered.subject, registered.version, registered.id
        );
    }
    Ok(())
}

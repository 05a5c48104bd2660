//! `replay-tool bootstrap`: creates the documented topics with their partitions and retention,
//! the projections' dead-letter topics, and registers every Avro schema with its
//! compatibility level. Safe to run again: nothing that exists is changed.
//! Registering needs the registry credential in `HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO`.

use events::catalog::CATALOG;
use platform::config::KafkaArgs;
use platform::kafka::{TopicOutcome, ensure_topics};
use projections::runner::{dlq_spec, dlq_topic};

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// Replication factor of created topics (1 on the embedded broker, 3 in production).
    #[arg(long, default_value_t = 1)]
    replication: i32,
}

/// Every projection's dead-letter topic, named as the projector names it.
fn dlq_topics() -> Vec<events::catalog::TopicSpec> {
    use clap::ValueEnum;
    use projections::{Kind, Projection, with_projection};
    Kind::value_variants()
        .iter()
        .map(|kind| {
            let name = with_projection!(*kind, |p| dlq_topic(p.name()));
            // A one-shot CLI: the six names live until it exits.
            dlq_spec(Box::leak(name.into_boxed_str()))
        })
        .collect()
}

pub async fn run(kafka: &KafkaArgs, args: BootstrapArgs) -> anyhow::Result<()> {
    // Before creating anything: without a credential the schemas could not be registered.
    let credentials = schemas::client::UserInfo::from_env()?;
    let topics: Vec<_> = CATALOG.iter().copied().chain(dlq_topics()).collect();
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

//! `replay-tool audit reconcile`: shows that the `audit_service` index (what `phiAccessLog`
//! searches) and the audit topic (the record) hold the same accesses — per partition, how many
//! each holds, and every event id only one of them has. Run it with the audit projector caught
//! up (a record it has not indexed yet shows as missing). Exit status: 0 when they match,
//! 2 when they differ, 1 when the check could not run.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use anyhow::Context;
use events::audit::PhiAccessed;
use events::catalog::{AUDIT_PHI_ACCESS, topic};
use futures::TryStreamExt;
use platform::config::KafkaArgs;
use rdkafka::message::Message;
use schemas::EventCodec;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// The audit index's database.
    #[arg(long, env = "HEALTHPLANE_AUDIT_DATABASE_URL", default_value_t = platform::config::default_database_url("audit_service"), hide_default_value = true, hide_env_values = true)]
    database_url: String,
    /// Print every differing event id as a JSON line.
    #[arg(long)]
    jsonl: bool,
}

/// One side's count for a partition.
#[derive(Debug, Default, serde::Serialize)]
struct Counts {
    partition: i32,
    topic: u64,
    index: u64,
}

pub async fn run(kafka: &KafkaArgs, args: ReconcileArgs) -> anyhow::Result<()> {
    let partitions = topic(AUDIT_PHI_ACCESS)
        .expect("audit topic is in the catalog")
        .partitions;
    let codec = EventCodec::new(&kafka.schema_registry_url);
    // Event id -> (partition, offset) on the topic.
    let mut on_topic: HashMap<Uuid, (i32, i64)> = HashMap::new();
    let mut undecodable = Vec::new();
    crate::verify::scan_audit_log(kafka, None, async |message| {
        match codec.decode::<PhiAccessed>(message.payload()).await {
            Ok(access) => {
                on_topic.insert(access.event_id, (message.partition(), message.offset()));
            }
            Err(e) if e.is_transient() => {
                return Err(e).context("the schema registry is unavailable");
            }
            Err(_) => undecodable.push((message.partition(), message.offset())),
        }
        Ok(())
    })
    .await?;
    let pool = platform::db::connect_reader(&args.database_url, platform::db::READ_MODEL_SCHEMA, 2)
        .await
        .context("cannot read the audit index")?;
    let mut in_index: HashMap<Uuid, i32> = HashMap::new();
    let mut rows =
        sqlx::query_as::<_, (Uuid, Uuid)>("SELECT event_id, patient_id FROM phi_accesses")
            .fetch(&pool);
    while let Some((event_id, patient_id)) = rows.try_next().await? {
        let partition =
            platform::kafka::partition_for_key(patient_id.to_string().as_bytes(), partitions);
        in_index.insert(event_id, partition);
    }
    let mut counts: BTreeMap<i32, Counts> = (0..partitions)
        .map(|p| {
            (
                p,
                Counts {
                    partition: p,
                    ..Default::default()
                },
            )
        })
        .collect();
    for (partition, _) in on_topic.values() {
        counts.entry(*partition).or_default().topic += 1;
    }
    for partition in in_index.values() {
        counts.entry(*partition).or_default().index += 1;
    }
    let mut missing: Vec<(i32, i64, Uuid)> = on_topic
        .iter()
        .filter(|(id, _)| !in_index.contains_key(id))
        .map(|(id, (p, o))| (*p, *o, *id))
        .collect();
    missing.sort();
    let mut extra: Vec<(i32, Uuid)> = in_index
        .iter()
        .filter(|(id, _)| !on_topic.contains_key(id))
        .map(|(id, p)| (*p, *id))
        .collect();
    extra.sort();
    if args.jsonl {
        for c in counts.values() {
            println!("{}", serde_json::json!({ "partition": c }));
        }
        for (partition, offset, event_id) in &missing {
            println!(
                "{}",
                serde_json::json!({"missing_from_index": {"event_id": event_id, "partition": partition, "offset": offset}})
            );
        }
        for (partition, event_id) in &extra {
            println!(
                "{}",
                serde_json::json!({"not_on_topic": {"event_id": event_id, "partition": partition}})
            );
        }
    } else {
        println!("partition  topic  index");
        for c in counts.values() {
            let mark = if c.topic == c.index { "" } else { "  differs" };
            println!("{:<9}  {:<5}  {:<5}{mark}", c.partition, c.topic, c.index);
        }
        for (partition, offset, event_id) in &missing {
            println!("MISSING FROM INDEX {event_id} (partition {partition}, offset {offset})");
        }
        for (partition, event_id) in &extra {
            println!("IN INDEX, NOT ON TOPIC {event_id} (partition {partition})");
        }
    }
    for (partition, offset) in &undecodable {
        eprintln!("warning: undecodable record at partition {partition} offset {offset}");
    }
    eprintln!(
        "{} on the topic, {} in the index: {} missing from the index, {} not on the topic",
        on_topic.len(),
        in_index.len(),
        missing.len(),
        extra.len()
    );
    if !missing.is_empty() || !extra.is_empty() {
        std::io::stdout().flush()?;
        std::process::exit(2);
    }
    Ok(())
}

//! `replay-tool rebuild`: rebuilds a read model from the event store — or, for the PHI access
//! index, whose history is its six-year topic, from the topic — while the old one keeps
//! serving, then swaps it in atomically. Progress goes to stderr; an interrupted rebuild
//! resumes where it stopped (`--restart` starts over).

use std::time::{Duration, Instant};

use platform::config::KafkaArgs;
use projections::rebuild::{
    Progress, RebuildOptions, TopicRebuildOptions, rebuild, rebuild_from_topics,
};
use projections::{Projection, ProjectionArgs, with_projection};

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// The read model to rebuild, its database and the event store.
    #[command(flatten)]
    model: ProjectionArgs,
    /// Events applied per transaction.
    #[arg(long, default_value_t = 5_000)]
    batch_size: i64,
    /// Discard an interrupted rebuild and start over.
    #[arg(long)]
    restart: bool,
}

pub async fn run(kafka: &KafkaArgs, args: RebuildArgs) -> anyhow::Result<()> {
    with_projection!(args.model.projection, |projection| run_for(
        projection, kafka, &args
    )
    .await)
}

async fn run_for<P: Projection>(
    projection: P,
    kafka: &KafkaArgs,
    args: &RebuildArgs,
) -> anyhow::Result<()> {
    let options = RebuildOptions {
        database_url: args.model.database_url(&projection),
        event_store_url: args.model.event_store_url.clone(),
        batch_size: args.batch_size,
        restart: args.restart,
        reset_offsets: Default::default(),
    };
    let name = projection.name();
    let mut last_print = Instant::now() - Duration::from_secs(1);
    let print = |p: Progress| {
        if last_print.elapsed() >= Duration::from_millis(500) || p.done >= p.total {
            let percent = if p.total == 0 {
                100.0
            } else {
                100.0 * p.done as f64 / p.total as f64
            };
            eprintln!(
                "rebuild {name}: {}/{} events ({percent:.1}%), {:.0} events/s",
                p.done, p.total, p.events_per_second
            );
            last_print = Instant::now();
        }
    };
    let report = if projection.rebuilds_from_event_store() {
        rebuild(&projection, &options, print).await?
    } else {
        let options = TopicRebuildOptions {
            database_url: options.database_url,
            brokers: kafka.kafka_brokers.clone(),
            registry_url: kafka.schema_registry_url.clone(),
            batch_size: args.batch_size.max(1) as usize,
            restart: args.restart,
        };
        rebuild_from_topics(&projection, &options, print).await?
    };
    let rate = (report.events - report.resumed_at) as f64 / report.seconds.max(1e-9);
    println!(
        "rebuilt {name}: {} events{} in {:.1} s ({rate:.0} events/s), swapped in",
        report.events,
        if report.resumed_at > 0 {
            format!(" (resumed at {})", report.resumed_at)
        } else {
            String::new()
        },
        report.seconds
    );
    Ok(())
}

//! The projector loop shared by every projection.
//!
//! Exactly-once effect: a polled batch is applied in one transaction together with the next
//! offset of every partition it touched, and on start the projector seeks to those stored
//! offsets (not the consumer group's); a crash at any instant neither loses nor re-applies.
//! Records that cannot be decoded or applied go to the projection's dead-letter topic, with
//! the reason and their origin in headers, before the batch commits; the projector carries
//! on. A transient failure (broker, registry or database) restarts the session from the
//! stored offsets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use events::catalog::TopicSpec;
use platform::db::Migration;
use platform::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use schemas::EventCodec;
use sqlx::{PgConnection, PgPool};

/// Tables the runner keeps in every read-model schema.
pub const RUNNER_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "offsets and pending events",
    sql: "CREATE TABLE projection_offsets (
            projection TEXT NOT NULL,
            topic TEXT NOT NULL,
            partition INTEGER NOT NULL,
            next_offset BIGINT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (projection, topic, partition));
          CREATE TABLE projection_pending (
            projection TEXT NOT NULL,
            aggregate_id UUID NOT NULL,
            aggregate_version BIGINT NOT NULL,
            topic TEXT NOT NULL,
            record JSONB NOT NULL,
            received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (projection, aggregate_id, aggregate_version));",
}];

/// A decoded topic record.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    /// The whole record (envelope and event fields) as JSON.
    pub json: serde_json::Value,
}

/// What applying a batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub applied: u64,
    pub duplicates: u64,
    pub held: u64,
    /// Records that cannot be applied: (index in the batch, reason).
    pub poison: Vec<(usize, String)>,
}

impl Outcome {
    pub fn merge(&mut self, other: Outcome) {
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.held += other.held;
        self.poison.extend(other.poison);
    }
}

/// A read model.
pub trait Projection: Send + Sync + 'static {
    /// Short name: `patient`; the DLQ is `healthcare.dlq.<name>-projector`.
    fn name(&self) -> &'static str;
    /// The service database it writes by default, e.g. `patient_service`.
    fn database(&self) -> &'static str;
    fn topics(&self) -> &'static [&'static str];
    fn migrations(&self) -> &'static [Migration];
    /// Whether the event store holds this model's history (the PHI access log lives only on
    /// its topic, which keeps it for six years).
    fn rebuilds_from_event_store(&self) -> bool {
        true
    }
    /// Applies a batch of records, set-based, in the caller's transaction.
    fn apply(
        &self,
        conn: &mut PgConnection,
        records: &[Record],
    ) -> impl Future<Output = Result<Outcome, sqlx::Error>> + Send;
}

/// The dead-letter topic of a projection.
pub fn dlq_topic(projection: &str) -> String {
    format!("healthcare.dlq.{projection}-projector")
}

/// Catalog entry for a projection's dead-letter topic (created at bootstrap).
pub const fn dlq_spec(name: &'static str) -> TopicSpec {
    TopicSpec {
        name,
        partitions: 1,
        retention_days: 30,
        key: "original key",
        producer: "projections (dead letters)",
        consumers: &["operators"],
    }
}

/// Creates the runner's and the projection's tables in the connection's read-model schema.
pub async fn migrate<P: Projection>(pool: &PgPool, projection: &P) -> anyhow::Result<()> {
    platform::db::migrate(pool, "projection-runner", RUNNER_MIGRATIONS).await?;
    platform::db::migrate(pool, projection.name(), projection.migrations()).await
}

/// Serializes a projector's batches against a rebuild's swap of the read model (batches take
/// it shared, the swap exclusive).
pub async fn lock_shared(conn: &mut PgConnection, projection: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared(hashtext('projection:' || $1))")
        .bind(projection)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Stores the next offsets of the partitions a batch touched.
pub async fn store_offsets(
    conn: &mut PgConnection,
    projection: &str,
    next: &HashMap<(String, i32), i64>,
) -> Result<(), sqlx::Error> {
    let (topics, (partitions, offsets)): (Vec<&str>, (Vec<i32>, Vec<i64>)) = next
        .iter()
        .map(|((t, p), o)| (t.as_str(), (*p, *o)))
        .unzip();
    sqlx::query(
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset)
         SELECT $1, t, p, o FROM UNNEST($2::TEXT[], $3::INT[], $4::BIGINT[]) AS x (t, p, o)
         ON CONFLICT (projection, topic, partition)
         DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
    )
    .bind(projection)
    .bind(topics)
    .bind(partitions)
    .bind(offsets)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Settings of a projector process.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub brokers: String,
    pub registry_url: String,
    pub max_batch: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

/// The projector's counters and lag, shared with `/health/ready`.
#[derive(Clone)]
pub struct RunnerMetrics {
    applied: Counter,
    duplicates: Counter,
    held: Counter,
    dead_lettered: Counter,
    lag: Family<PartitionLabels, Gauge>,
    /// Latest lag per (topic, partition), for `/health/ready`.
    pub lag_snapshot: Arc<Mutex<HashMap<(String, i32), i64>>>,
}

impl RunnerMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        RunnerMetrics {
            applied: metrics.register(
                "projection_events_applied",
                "Events applied to the read model",
                Counter::default(),
            ),
            duplicates: metrics.register(
                "projection_events_duplicate",
                "Redelivered events ignored",
                Counter::default(),
            ),
            held: metrics.register(
                "projection_events_held",
                "Events held until their predecessor arrives",
                Counter::default(),
            ),
            dead_lettered: metrics.register(
                "projection_events_dead_lettered",
                "Records sent to the dead-letter topic",
                Counter::default(),
            ),
            lag: metrics.register(
                "projection_lag_records",
                "Records on the topic not yet applied, per partition",
                Family::default(),
            ),
            lag_snapshot: Arc::default(),
        }
    }

    fn count(&self, outcome: &Outcome) {
        self.applied.inc_by(outcome.applied);
        self.duplicates.inc_by(outcome.duplicates);
        self.held.inc_by(outcome.held);
    }
}

/// Runs `projection` until `shutdown` fires, restarting its consumer session after transient
/// failures (broker, registry or database unavailable).
pub async fn run<P: Projection>(
    projection: Arc<P>,
    pool: PgPool,
    config: RunnerConfig,
    metrics: RunnerMetrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    migrate(&pool, projection.as_ref()).await?;
    let codec = EventCodec::new(&config.registry_url);
    let producer: FutureProducer =
        platform::kafka::producer_config(&config.brokers, Duration::from_secs(30))
            .create()
            .context("cannot create the dead-letter producer")?;
    tokio::spawn(watch_lag(
        projection.name(),
        projection.topics(),
        pool.clone(),
        config.brokers.clone(),
        metrics.clone(),
    ));
    loop {
        let session = Session {
            projection: projection.as_ref(),
            pool: &pool,
            codec: &codec,
            producer: &producer,
            metrics: &metrics,
            config: &config,
        };
        match session.run(&mut shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(projection = projection.name(), error = %format!("{e:#}"), "projector session failed; restarting from stored offsets");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        }
    }
}

struct Session<'a, P> {
    projection: &'a P,
    pool: &'a PgPool,
    codec: &'a EventCodec,
    producer: &'a FutureProducer,
    metrics: &'a RunnerMetrics,
    config: &'a RunnerConfig,
}

impl<P: Projection> Session<'_, P> {
    async fn run(&self, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
        let consumer = self.assign().await?;
        loop {
            let first = tokio::select! {
                message = consumer.recv() => message?,
                _ = shutdown.changed() => return Ok(()),
            };
            let mut batch = vec![first];
            while batch.len() < self.config.max_batch {
                match tokio::time::timeout(Duration::from_millis(5), consumer.recv()).await {
                    Ok(message) => batch.push(message?),
                    Err(_) => break,
                }
            }
            self.process(&batch).await?;
        }
    }

    /// A consumer assigned to every partition of the projection's topics at the stored offsets.
    async fn assign(&self) -> anyhow::Result<StreamConsumer> {
        let name = self.projection.name();
        let consumer: StreamConsumer = platform::kafka::client_config(&self.config.brokers)
            .set("group.id", format!("healthplane-projector-{name}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .context("cannot create the consumer")?;
        let stored = stored_offsets(self.pool, name).await?;
        let mut assignment = TopicPartitionList::new();
        for topic in self.projection.topics() {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .with_context(|| format!("cannot read metadata of {topic}"))?;
            let partitions = metadata
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            anyhow::ensure!(partitions > 0, "topic {topic} does not exist yet");
            for partition in 0..partitions as i32 {
                let offset = stored
                    .get(&(topic.to_string(), partition))
                    .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                assignment.add_partition_offset(topic, partition, offset)?;
            }
        }
        consumer.assign(&assignment)?;
        tracing::info!(
            projection = name,
            partitions = assignment.count(),
            "assigned at stored offsets"
        );
        Ok(consumer)
    }

    /// Decodes and applies a batch in one transaction, with the offsets it reached; poison goes
    /// to the dead-letter topic (acknowledged) before the commit.
    async fn process(&self, batch: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
        let name = self.projection.name();
        let mut records = Vec::with_capacity(batch.len());
        let mut sources = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        let mut next_offsets: HashMap<(String, i32), i64> = HashMap::new();
        for message in batch {
            next_offsets.insert(
                (message.topic().to_string(), message.partition()),
                message.offset() + 1,
            );
            match self.codec.decode_json(message.payload()).await {
                Ok(decoded) => {
                    records.push(Record {
                        topic: message.topic().to_string(),
                        json: decoded,
                    });
                    sources.push(message);
                }
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => dead.push((message, e.to_string())),
            }
        }
        let mut tx = self.pool.begin().await?;
        lock_shared(&mut tx, name).await?;
        let outcome = self.projection.apply(&mut tx, &records).await?;
        dead.extend(
            outcome
                .poison
                .iter()
                .map(|(i, reason)| (sources[*i], reason.clone())),
        );
        for (message, reason) in &dead {
            self.dead_letter(message, reason).await?;
        }
        store_offsets(&mut tx, name, &next_offsets).await?;
        tx.commit().await?;
        self.metrics.count(&outcome);
        Ok(())
    }

    /// Sends a record to the dead-letter topic with why and where it came from; waits for the ack.
    async fn dead_letter(&self, message: &BorrowedMessage<'_>, reason: &str) -> anyhow::Result<()> {
        let topic = dlq_topic(self.projection.name());
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        tracing::warn!(
            projection = self.projection.name(),
            source_topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            "dead-lettering record"
        );
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "dlq_reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "dlq_source_topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "dlq_source_partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "dlq_source_offset",
                value: Some(offset.as_str()),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("cannot write to {topic}: {e}"))?;
        self.metrics.dead_lettered.inc();
        Ok(())
    }
}

async fn stored_offsets(
    pool: &PgPool,
    projection: &str,
) -> Result<HashMap<(String, i32), i64>, sqlx::Error> {
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = $1",
    )
    .bind(projection)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(t, p, o)| ((t, p), o)).collect())
}

/// Every 5 s: lag = the partition's high watermark minus the stored next offset.
async fn watch_lag(
    projection: &'static str,
    topics: &'static [&'static str],
    pool: PgPool,
    brokers: String,
    metrics: RunnerMetrics,
) {
    let consumer: Option<Arc<BaseConsumer>> = platform::kafka::client_config(&brokers)
        .set("group.id", format!("healthplane-lag-{projection}"))
        .create()
        .ok()
        .map(Arc::new);
    let Some(consumer) = consumer else { return };
    loop {
        if let Ok(stored) = stored_offsets(&pool, projection).await {
            let client = consumer.clone();
            let ends = tokio::task::spawn_blocking(move || {
                let mut ends = Vec::new();
                for topic in topics {
                    let Ok(metadata) = client.fetch_metadata(Some(topic), Duration::from_secs(5))
                    else {
                        continue;
                    };
                    let partitions = metadata
                        .topics()
                        .first()
                        .map_or(0, |t| t.partitions().len())
                        as i32;
                    for partition in 0..partitions {
                        if let Ok((low, high)) =
                            client.fetch_watermarks(topic, partition, Duration::from_secs(5))
                        {
                            ends.push((topic.to_string(), partition, low, high));
                        }
                    }
                }
                ends
            })
            .await
            .unwrap_or_default();
            let mut snapshot = HashMap::new();
            for (topic, partition, low, high) in ends {
                let next = stored
                    .get(&(topic.clone(), partition))
                    .copied()
                    .unwrap_or(low);
                let lag = (high - next).max(0);
                metrics
                    .lag
                    .get_or_create(&PartitionLabels {
                        topic: topic.clone(),
                        partition,
                    })
                    .set(lag);
                snapshot.insert((topic, partition), lag);
            }
            *metrics.lag_snapshot.lock().expect("lag snapshot poisoned") = snapshot;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

//! The projector loop shared by every projection.
//!
//! Exactly-once effect: the next offset of every consumed partition is stored in the same
//! transaction as the read-model writes, and on start the projector seeks to those stored
//! offsets (not the consumer group's). Events are applied in `aggregate_version` order per
//! aggregate: one that arrives before its predecessor (another topic, another partition) is
//! held in `projection_pending` and applied when the gap fills; one already applied is a no-op.
//! A record that cannot be decoded or applied goes to the projection's dead-letter topic with
//! the reason, and the projector carries on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use events::Envelope;
use events::catalog::TopicSpec;
use platform::db::Migration;
use platform::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use schemas::EventCodec;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Tables the runner keeps in every projection's database.
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
pub struct IncomingEvent {
    pub topic: String,
    pub envelope: Envelope,
    /// The whole record (envelope and event fields) as JSON.
    pub record: serde_json::Value,
}

impl IncomingEvent {
    pub fn from_record(topic: &str, record: serde_json::Value) -> Result<Self, String> {
        let envelope: Envelope =
            serde_json::from_value(record.clone()).map_err(|e| format!("bad envelope: {e}"))?;
        Ok(IncomingEvent {
            topic: topic.to_string(),
            envelope,
            record,
        })
    }

    /// The event's own fields, typed.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.record.clone())
            .map_err(|e| format!("{}: {e}", self.envelope.event_type))
    }
}

/// A read model.
pub trait Projection: Send + Sync + 'static {
    /// Short name: `patient`; the DLQ is `healthcare.dlq.<name>-projector`.
    fn name(&self) -> &'static str;
    fn topics(&self) -> &'static [&'static str];
    fn migrations(&self) -> &'static [Migration];
    /// The version of `aggregate_id` the read model holds (0 if none).
    fn version(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        aggregate_id: Uuid,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
    /// Applies the next event of an aggregate. `Err(Apply::Poison)` sends it to the DLQ.
    fn apply(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &IncomingEvent,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event is malformed for this projection: dead-letter it.
    #[error("poison event: {0}")]
    Poison(String),
    /// The database failed: retry the batch.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
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

/// Settings of a projector process.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub brokers: String,
    pub registry_url: String,
    pub max_batch: usize,
}

struct RunnerMetrics {
    applied: Counter,
    duplicates: Counter,
    held: Counter,
    dead_lettered: Counter,
}

/// Runs `projection` until `shutdown` fires, restarting its consumer session after transient
/// failures (broker, registry or database unavailable).
pub async fn run<P: Projection>(
    projection: Arc<P>,
    pool: PgPool,
    config: RunnerConfig,
    metrics: &Metrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    platform::db::migrate(&pool, "projection-runner", RUNNER_MIGRATIONS).await?;
    platform::db::migrate(&pool, projection.name(), projection.migrations()).await?;
    let m = RunnerMetrics {
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
    };
    let codec = EventCodec::new(&config.registry_url);
    let producer: FutureProducer =
        platform::kafka::producer_config(&config.brokers, Duration::from_secs(30))
            .create()
            .context("cannot create the dead-letter producer")?;
    loop {
        let session = Session {
            projection: projection.as_ref(),
            pool: &pool,
            codec: &codec,
            producer: &producer,
            metrics: &m,
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
        let stored: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = $1",
        )
        .bind(name)
        .fetch_all(self.pool)
        .await?;
        let stored: HashMap<(String, i32), i64> =
            stored.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
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

    /// Applies a batch in one transaction, with the offsets it reached.
    async fn process(&self, batch: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
        let name = self.projection.name();
        let mut tx = self.pool.begin().await?;
        let mut next_offsets: HashMap<(String, i32), i64> = HashMap::new();
        for message in batch {
            match self.codec.decode_json(message.payload()).await {
                Ok(decoded) => match IncomingEvent::from_record(message.topic(), decoded.json) {
                    Ok(event) => {
                        if let Err(reason) = self.handle(&mut tx, event).await? {
                            self.dead_letter(message, &reason).await?;
                        }
                    }
                    Err(reason) => self.dead_letter(message, &reason).await?,
                },
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => self.dead_letter(message, &e.to_string()).await?,
            }
            next_offsets.insert(
                (message.topic().to_string(), message.partition()),
                message.offset() + 1,
            );
        }
        for ((topic, partition), next) in &next_offsets {
            sqlx::query(
                "INSERT INTO projection_offsets (projection, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (projection, topic, partition)
                 DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
            )
            .bind(name)
            .bind(topic)
            .bind(partition)
            .bind(next)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Applies, holds or ignores one event; `Ok(Err(reason))` means it is poison.
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: IncomingEvent,
    ) -> anyhow::Result<Result<(), String>> {
        let name = self.projection.name();
        let aggregate_id = event.envelope.aggregate_id;
        let current = self.projection.version(tx, aggregate_id).await?;
        let version = event.envelope.aggregate_version;
        if version <= current {
            self.metrics.duplicates.inc();
            return Ok(Ok(()));
        }
        if version > current + 1 {
            sqlx::query(
                "INSERT INTO projection_pending (projection, aggregate_id, aggregate_version, topic, record)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(name)
            .bind(aggregate_id)
            .bind(version)
            .bind(&event.topic)
            .bind(&event.record)
            .execute(&mut **tx)
            .await?;
            self.metrics.held.inc();
            tracing::debug!(projection = name, %aggregate_id, version, current, "holding event until its predecessor arrives");
            return Ok(Ok(()));
        }
        match self.projection.apply(tx, &event).await {
            Ok(()) => {
                self.metrics.applied.inc();
            }
            Err(ApplyError::Poison(reason)) => return Ok(Err(reason)),
            Err(ApplyError::Db(e)) => return Err(e.into()),
        }
        // The gap may have filled: apply the held successors in order.
        let mut next = version + 1;
        loop {
            let held: Option<(String, serde_json::Value)> = sqlx::query_as(
                "DELETE FROM projection_pending WHERE projection = $1 AND aggregate_id = $2 AND aggregate_version = $3
                 RETURNING topic, record",
            )
            .bind(name)
            .bind(aggregate_id)
            .bind(next)
            .fetch_optional(&mut **tx)
            .await?;
            let Some((topic, record)) = held else { break };
            let held = IncomingEvent::from_record(&topic, record).map_err(anyhow::Error::msg)?;
            match self.projection.apply(tx, &held).await {
                Ok(()) => {
                    self.metrics.applied.inc();
                }
                Err(ApplyError::Poison(reason)) => {
                    tracing::error!(projection = name, %aggregate_id, version = next, %reason, "held event is poison; aggregate stays at the previous version");
                    break;
                }
                Err(ApplyError::Db(e)) => return Err(e.into()),
            }
            next += 1;
        }
        Ok(Ok(()))
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

//! The outbox relay: publishes committed outbox rows to Kafka, in order per aggregate,
//! at least once.
//!
//! It never follows a sequence number: it selects rows that are *unpublished*, so a row whose
//! transaction commits late (with a lower id than rows already published) is still picked up.
//! Rows are leased with `FOR UPDATE SKIP LOCKED` while their batch is in flight, so several
//! relays can run; a row is marked published only after the broker acknowledged it. If one
//! event of an aggregate fails, the later events of that aggregate in the batch stay unpublished
//! too, so they are retried behind it. A crash between the broker's ack and the mark re-sends
//! the row: consumers deduplicate on `event_id` (and projections on `aggregate_version`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use platform::kafka::BrokerWatch;
use platform::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use schemas::EventCodec;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{self, OutboxEntry};

/// Relay tuning.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub batch_size: i64,
    /// Pause when the outbox is empty.
    pub idle_wait: Duration,
    /// Pause after a failed batch.
    pub retry_wait: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 500,
            idle_wait: Duration::from_millis(50),
            retry_wait: Duration::from_secs(1),
        }
    }
}

#[derive(Clone)]
struct RelayMetrics {
    published: Counter,
    failures: Counter,
    depth: Gauge,
    oldest_age: Gauge,
}

/// The relay's producer, which notes lost broker connections.
type RelayProducer = FutureProducer<BrokerWatch>;

/// Publishes the outbox.
pub struct Relay {
    pool: PgPool,
    producer_config: ClientConfig,
    producer: RelayProducer,
    watch: BrokerWatch,
    /// When the producer was last replaced (renewals are at most one per 5 s during an outage).
    renewed_at: std::time::Instant,
    codec: Arc<EventCodec>,
    config: RelayConfig,
    metrics: RelayMetrics,
}

impl Relay {
    /// A relay publishing with a producer made from `producer_config` (remade after a fatal error).
    pub fn new(
        pool: PgPool,
        producer_config: ClientConfig,
        codec: Arc<EventCodec>,
        config: RelayConfig,
        metrics: &Metrics,
    ) -> rdkafka::error::KafkaResult<Self> {
        let watch = BrokerWatch::default();
        let producer = producer_config.create_with_context(watch.clone())?;
        let metrics = RelayMetrics {
            published: metrics.register(
                "outbox_published",
                "Outbox events published to Kafka",
                Counter::default(),
            ),
            failures: metrics.register(
                "outbox_publish_failures",
                "Outbox events whose publication failed (they are retried)",
                Counter::default(),
            ),
            depth: metrics.register(
                "outbox_depth",
                "Outbox events not yet published",
                Gauge::default(),
            ),
            oldest_age: metrics.register(
                "outbox_oldest_unpublished_age_seconds",
                "Age of the oldest unpublished outbox event",
                Gauge::default(),
            ),
        };
        Ok(Relay {
            pool,
            producer_config,
            producer,
            watch,
            renewed_at: std::time::Instant::now(),
            codec,
            config,
            metrics,
        })
    }

    /// Replaces the producer if librdkafka declared it unusable, or after every broker
    /// connection was lost: a broker that comes back then sees a fresh idempotent producer
    /// session (the embedded broker wedges on a producer id from before its restart). Rows the
    /// old producer had in flight are not marked published, so they are simply sent again.
    fn recover_producer(&mut self) {
        let reason = match self.producer.client().fatal_error() {
            Some(fatal) => format!("the producer failed fatally: {fatal:?}"),
            None if self.renewed_at.elapsed() >= Duration::from_secs(5)
                && self.watch.take_lost() =>
            {
                "every broker connection was lost".to_string()
            }
            None => return,
        };
        self.renewed_at = std::time::Instant::now();
        tracing::warn!(reason, "starting a new Kafka producer session");
        let watch = BrokerWatch::default();
        match self.producer_config.create_with_context(watch.clone()) {
            Ok(producer) => {
                self.producer = producer;
                self.watch = watch;
            }
            Err(e) => tracing::error!(error = %e, "cannot create a new Kafka producer"),
        }
    }

    /// Runs until `shutdown` fires.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut last_gauges = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            if *shutdown.borrow() {
                return;
            }
            if last_gauges.elapsed() > Duration::from_secs(5) {
                self.update_gauges().await;
                last_gauges = std::time::Instant::now();
            }
            let result = self.publish_batch().await;
            self.recover_producer();
            let wait = match result {
                Ok(0) => self.config.idle_wait,
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay batch failed; retrying");
                    self.config.retry_wait
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    async fn update_gauges(&self) {
        if let Ok((depth, age)) = store::outbox_backlog(&self.pool).await {
            self.metrics.depth.set(depth);
            self.metrics.oldest_age.set(age as i64);
        }
    }

    /// Publishes one batch; returns how many rows it published.
    pub async fn publish_batch(&self) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let entries = store::lease_unpublished(&mut tx, self.config.batch_size).await?;
        if entries.is_empty() {
            return Ok(0);
        }
        // Send the whole batch, then wait for the acks: librdkafka pipelines them in order.
        let mut in_flight = Vec::with_capacity(entries.len());
        for entry in entries {
            let aggregate_id = entry.event.envelope.aggregate_id;
            let delivery = self.send(&entry).await;
            in_flight.push((entry.outbox_id, aggregate_id, delivery));
        }
        let mut published = Vec::new();
        let mut failed_aggregates = HashSet::new();
        for (id, aggregate_id, delivery) in in_flight {
            let outcome = match delivery {
                Ok(future) => future
                    .await
                    .map_err(|_| "delivery cancelled".to_string())
                    .and_then(|r| r.map(|_| ()).map_err(|(e, _)| e.to_string())),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) if !failed_aggregates.contains(&aggregate_id) => published.push(id),
                Ok(()) => {}
                Err(error) => {
                    self.metrics.failures.inc();
                    tracing::warn!(outbox_id = id, %aggregate_id, %error, "outbox publish failed");
                    failed_aggregates.insert(aggregate_id);
                    sqlx::query(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(&error)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        sqlx::query(
            "UPDATE outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY($1)",
        )
        .bind(&published)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.metrics.published.inc_by(published.len() as u64);
        if !failed_aggregates.is_empty() {
            anyhow::bail!(
                "{} aggregate(s) had undelivered events",
                failed_aggregates.len()
            );
        }
        Ok(published.len())
    }

    /// Encodes and enqueues one event; the returned future resolves on the broker's ack.
    async fn send(&self, entry: &OutboxEntry) -> Result<rdkafka::producer::DeliveryFuture, String> {
        let envelope = &entry.event.envelope;
        let mut record = serde_json::to_value(envelope).map_err(|e| e.to_string())?;
        if let (Some(record), Some(fields)) =
            (record.as_object_mut(), entry.event.payload.as_object())
        {
            record.extend(fields.clone());
        }
        let bytes = self
            .codec
            .encode_json(&entry.topic, &record)
            .await
            .map_err(|e| e.to_string())?;
        let key = envelope.aggregate_id.to_string();
        let event_id = envelope.event_id.to_string();
        let traceparent = entry
            .traceparent
            .clone()
            .unwrap_or_else(|| new_traceparent(envelope.event_id));
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "event_type",
                value: Some(envelope.event_type.as_str()),
            })
            .insert(Header {
                key: "event_id",
                value: Some(event_id.as_str()),
            })
            .insert(Header {
                key: "correlation_id",
                value: Some(envelope.correlation_id.as_str()),
            })
            .insert(Header {
                key: "traceparent",
                value: Some(traceparent.as_str()),
            });
        let record = FutureRecord::to(&entry.topic)
            .key(&key)
            .payload(&bytes)
            .headers(headers);
        self.producer
            .send_result(record)
            .map_err(|(e, _)| e.to_string())
    }
}

/// A W3C `traceparent` for an event that arrived without one.
pub fn new_traceparent(seed: Uuid) -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = &seed.simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

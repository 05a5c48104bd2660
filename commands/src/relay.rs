//! The outbox relay: publishes committed outbox rows to Kafka, in order per aggregate,
//! at least once.
//!
//! It never follows a sequence number: it selects rows that are *unpublished*, so a row whose
//! transaction commits late (with a lower id than rows already published) is still picked up.
//! Rows are leased per bucket of aggregates (at most 64 advisory locks per batch, whatever the
//! backlog; see `store::lease_unpublished`) while their batch is in flight, so several relays
//! can run; a row is marked published only after the broker acknowledged it. If one event of
//! an aggregate fails, the later events of that aggregate in the batch are not sent, so they
//! are retried behind it. A crash between the broker's ack and the mark re-sends the row:
//! consumers deduplicate on `event_id` (and projections on `aggregate_version`).
//!
//! Failures never wedge it. A failed batch (broker, registry or event store unavailable) is
//! retried with exponential backoff; failing for longer than the stall threshold while events
//! wait makes it *stalled*: a gauge, a failing `/health/relay` and an error log once a minute.
//! An event that cannot be published however often it is retried (it does not fit its schema,
//! it is too large) holds back only its own aggregate, which is retried with a long backoff and
//! reported, while the rest of the outbox keeps flowing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use platform::kafka::{BrokerWatch, RenewingProducer};
use platform::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
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
    /// Pause after the first failed batch; it doubles with every consecutive failure.
    pub retry_wait: Duration,
    /// The longest pause between failed batches.
    pub max_retry_wait: Duration,
    /// How long a batch may take (the producer's delivery timeout and some): a batch that takes
    /// longer is abandoned, its rows stay unpublished and are retried.
    pub batch_timeout: Duration,
    /// Events waiting and none published for this long: the relay reports itself stalled.
    pub stall_after: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 2_000,
            idle_wait: Duration::from_millis(50),
            retry_wait: Duration::from_millis(250),
            max_retry_wait: Duration::from_secs(30),
            batch_timeout: Duration::from_secs(60),
            stall_after: Duration::from_secs(60),
        }
    }
}

#[derive(Clone)]
struct RelayMetrics {
    published: Counter,
    failures: Counter,
    batch_failures: Counter,
    consecutive_failures: Gauge,
    stalled: Gauge,
    held_aggregates: Gauge,
    depth: Gauge,
    oldest_age: Gauge,
    /// Where a batch's time goes: lease, encode (and enqueue), ack, mark (and commit).
    phase_seconds: Family<Vec<(String, String)>, Counter<f64, AtomicU64>>,
}

impl RelayMetrics {
    fn phase(&self, phase: &str, since: Instant) -> Instant {
        let now = Instant::now();
        self.phase_seconds
            .get_or_create(&vec![("phase".to_string(), phase.to_string())])
            .inc_by((now - since).as_secs_f64());
        now
    }

    fn register(metrics: &Metrics) -> Self {
        RelayMetrics {
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
            batch_failures: metrics.register(
                "outbox_relay_batch_failures",
                "Relay batches that failed (broker, registry or event store unavailable)",
                Counter::default(),
            ),
            consecutive_failures: metrics.register(
                "outbox_relay_consecutive_failures",
                "Relay batches failed in a row since the last success (0 when healthy)",
                Gauge::default(),
            ),
            stalled: metrics.register(
                "outbox_relay_stalled",
                "1 while events wait and none was published for the stall threshold",
                Gauge::default(),
            ),
            held_aggregates: metrics.register(
                "outbox_relay_held_aggregates",
                "Aggregates held back because one of their events cannot be published",
                Gauge::default(),
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
            phase_seconds: metrics.register(
                "outbox_relay_phase_seconds",
                "Seconds the relay spent per phase of its batches: lease (the outbox rows and their \
                 locks), encode (Avro, enqueued to the producer), ack (waiting for the broker), \
                 mark (marking published and committing)",
                Family::default(),
            ),
        }
    }
}

/// What the relay is doing, for `/health/*`: shared between the relay and the HTTP server.
#[derive(Clone)]
pub struct RelayHealth {
    state: Arc<Mutex<HealthState>>,
    stall_after: Duration,
}

struct HealthState {
    /// Unpublished events and the age of the oldest, as last read.
    depth: i64,
    oldest_age_seconds: f64,
    /// The last time the relay published an event or found nothing it could publish.
    last_progress: Instant,
    consecutive_failures: u32,
    last_error: Option<String>,
    /// Aggregates held back after a failure that retrying cannot fix, and one with its reason.
    held_count: usize,
    held_example: Option<(Uuid, String)>,
}

impl RelayHealth {
    fn new(stall_after: Duration) -> Self {
        RelayHealth {
            state: Arc::new(Mutex::new(HealthState {
                depth: 0,
                oldest_age_seconds: 0.0,
                last_progress: Instant::now(),
                consecutive_failures: 0,
                last_error: None,
                held_count: 0,
                held_example: None,
            })),
            stall_after,
        }
    }

    fn update(&self, f: impl FnOnce(&mut HealthState)) {
        f(&mut self.state.lock().expect("relay health poisoned"));
    }

    /// Whether events wait and none was published for the stall threshold.
    pub fn stalled(&self) -> bool {
        let state = self.state.lock().expect("relay health poisoned");
        state.depth > 0 && state.last_progress.elapsed() >= self.stall_after
    }

    /// `Ok(details)` while the relay makes progress; `Err(reason)` when it is stalled or holds
    /// events back that it cannot publish.
    pub fn check(&self) -> Result<serde_json::Value, String> {
        let stalled = self.stalled();
        let state = self.state.lock().expect("relay health poisoned");
        let idle_for = state.last_progress.elapsed().as_secs();
        // The broker's error text and the held event's reason go to the log, not to whoever
        // can reach the health endpoint.
        if stalled {
            return Err(format!(
                "outbox relay stalled: {} events waiting, none published for {idle_for} s \
                 ({} failed batches in a row; the command-api log has the broker's error)",
                state.depth, state.consecutive_failures,
            ));
        }
        if let Some((aggregate, _)) = &state.held_example {
            return Err(format!(
                "outbox relay holds back the events of {} aggregate(s) it cannot publish \
                 (e.g. {aggregate}; the command-api log has the reason)",
                state.held_count
            ));
        }
        Ok(serde_json::json!({
            "status": if state.consecutive_failures > 0 { "retrying" } else { "publishing" },
            "outboxDepth": state.depth,
            "oldestUnpublishedAgeSeconds": state.oldest_age_seconds,
            "consecutiveFailures": state.consecutive_failures,
        }))
    }
}

/// Why one event was not published.
#[derive(Debug, Clone)]
enum Failure {
    /// The broker, registry or network: retrying the batch later will succeed.
    Transient(String),
    /// This event itself (it does not fit its schema, it is too large): retrying alone cannot
    /// fix it, so its aggregate is held back while the rest of the outbox flows.
    Record(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Transient(m) | Failure::Record(m) => m,
        }
    }

    fn from_kafka(error: &KafkaError) -> Failure {
        let record_level = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::InvalidRecord
            )
        );
        if record_level {
            Failure::Record(error.to_string())
        } else {
            Failure::Transient(error.to_string())
        }
    }
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Events published (acknowledged and marked).
    pub published: usize,
    /// Aggregates with every leased event published.
    delivered: HashSet<Uuid>,
    /// Aggregates with an event that cannot be published, with the reason.
    held: Vec<(Uuid, String)>,
    /// The first transient failure, if any.
    transient: Option<String>,
}

/// An aggregate held back, and when to try it again.
struct Held {
    attempts: u32,
    retry_at: Instant,
    reason: String,
}

/// The most aggregates held back at once (beyond it, failing aggregates are retried every batch).
const MAX_HELD: usize = 10_000;

/// Publishes the outbox.
pub struct Relay {
    pool: PgPool,
    producer: RenewingProducer,
    codec: Arc<EventCodec>,
    config: RelayConfig,
    metrics: RelayMetrics,
    health: RelayHealth,
    held: HashMap<Uuid, Held>,
}

impl Relay {
    /// A relay publishing with a producer made from `producer_config` (remade after a fatal
    /// error). Give it a pool of its own: its work must never wait for, or starve, the
    /// command API's connections.
    pub fn new(
        pool: PgPool,
        producer_config: ClientConfig,
        codec: Arc<EventCodec>,
        config: RelayConfig,
        metrics: &Metrics,
    ) -> rdkafka::error::KafkaResult<Self> {
        Ok(Relay {
            pool,
            producer: RenewingProducer::new(producer_config)?,
            codec,
            health: RelayHealth::new(config.stall_after),
            config,
            metrics: RelayMetrics::register(metrics),
            held: HashMap::new(),
        })
    }

    /// The relay's health, for `/health/relay` and `/health/ready`.
    pub fn health(&self) -> RelayHealth {
        self.health.clone()
    }

    /// Runs until `shutdown` fires.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let backlog = tokio::spawn(watch_backlog(
            self.pool.clone(),
            self.metrics.clone(),
            self.health.clone(),
        ));
        let mut failures = Failures::default();
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.release_settled().await;
            let skip = self.held_back();
            let result = tokio::time::timeout(self.config.batch_timeout, self.publish_batch(&skip))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "the batch took longer than {:?} and was abandoned",
                        self.config.batch_timeout
                    ))
                });
            let wait = match result {
                Ok(report) => {
                    self.note_held(&report);
                    match report.transient {
                        Some(error) => {
                            self.producer.suspect();
                            failures.failed(&self, error)
                        }
                        None => {
                            failures.succeeded(&self);
                            if report.published == 0 {
                                self.config.idle_wait
                            } else {
                                Duration::ZERO
                            }
                        }
                    }
                }
                Err(e) => failures.failed(&self, format!("{e:#}")),
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        backlog.abort();
    }

    /// Forgets held-back aggregates whose retry is due and that have nothing left to publish
    /// (another relay published them, or an operator settled the rows).
    async fn release_settled(&mut self) {
        let now = Instant::now();
        let due: Vec<Uuid> = self
            .held
            .iter()
            .filter(|(_, h)| h.retry_at <= now)
            .map(|(id, _)| *id)
            .collect();
        if due.is_empty() {
            return;
        }
        match store::unpublished_aggregates(&self.pool, &due).await {
            Ok(waiting) => {
                for aggregate in due.iter().filter(|a| !waiting.contains(a)) {
                    self.held.remove(aggregate);
                    tracing::info!(%aggregate, "a held-back aggregate has nothing left to publish");
                }
                self.publish_held();
            }
            Err(e) => tracing::warn!(error = %e, "cannot check the held-back aggregates"),
        }
    }

    /// Aggregates not to lease now (held back after a record-level failure, until their retry).
    fn held_back(&self) -> Vec<Uuid> {
        let now = Instant::now();
        self.held
            .iter()
            .filter(|(_, h)| h.retry_at > now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Holds back aggregates whose event cannot be published; releases those now delivered.
    fn note_held(&mut self, report: &BatchReport) {
        for aggregate in &report.delivered {
            if let Some(held) = self.held.remove(aggregate) {
                tracing::info!(%aggregate, attempts = held.attempts, "outbox events of a held-back aggregate published");
            }
        }
        for (aggregate, reason) in &report.held {
            if self.held.len() >= MAX_HELD && !self.held.contains_key(aggregate) {
                continue;
            }
            let held = self.held.entry(*aggregate).or_insert(Held {
                attempts: 0,
                retry_at: Instant::now(),
                reason: String::new(),
            });
            held.attempts += 1;
            let wait = backoff(
                Duration::from_secs(5),
                Duration::from_secs(300),
                held.attempts,
            );
            held.retry_at = Instant::now() + wait;
            held.reason.clone_from(reason);
            tracing::error!(
                %aggregate,
                attempts = held.attempts,
                retry_in_s = wait.as_secs(),
                reason,
                "an outbox event cannot be published; its aggregate's events are held back \
                 (the rest of the outbox keeps flowing); fix the cause, the relay retries by itself"
            );
        }
        self.publish_held();
    }

    /// The held-back aggregates, into the gauge and the health.
    fn publish_held(&self) {
        self.metrics.held_aggregates.set(self.held.len() as i64);
        let example = self
            .held
            .iter()
            .next()
            .map(|(id, h)| (*id, h.reason.clone()));
        let count = self.held.len();
        self.health.update(|s| {
            s.held_example = example;
            s.held_count = count;
        });
    }

    /// Publishes one batch: leases it, sends every event, waits for the acks, marks what the
    /// broker acknowledged. `Err` only when the event store failed.
    pub async fn publish_batch(&self, skip: &[Uuid]) -> anyhow::Result<BatchReport> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        let entries = store::lease_unpublished(&mut tx, self.config.batch_size, skip).await?;
        let phase = self.metrics.phase("lease", started);
        let mut report = BatchReport::default();
        if entries.is_empty() {
            self.health.update(|s| s.last_progress = Instant::now());
            return Ok(report);
        }
        // Send the whole batch, then wait for the acks: librdkafka pipelines them in order. An
        // aggregate whose event failed sends nothing more in this batch, so its later events
        // never overtake it.
        // Per aggregate, its first event that failed (outbox id): its later events are not
        // marked, whatever the broker said of them, so that they are re-sent behind it.
        let mut failed: HashMap<Uuid, (i64, Failure)> = HashMap::new();
        let producer = self.producer.get();
        let mut in_flight = Vec::with_capacity(entries.len());
        for entry in &entries {
            let aggregate = entry.event.envelope.aggregate_id;
            if failed.contains_key(&aggregate) {
                continue;
            }
            match self.send(&producer, entry).await {
                Ok(delivery) => in_flight.push((entry, delivery)),
                Err(failure) => {
                    self.record_failure(&mut tx, entry, &failure).await?;
                    failed.insert(aggregate, (entry.outbox_id, failure));
                }
            }
        }
        let phase = self.metrics.phase("encode", phase);
        let mut published = Vec::with_capacity(in_flight.len());
        for (entry, delivery) in in_flight {
            let aggregate = entry.event.envelope.aggregate_id;
            let outcome = match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(Failure::from_kafka(&e)),
                Err(_) => Err(Failure::Transient("delivery cancelled".into())),
            };
            let behind_a_failure = failed
                .get(&aggregate)
                .is_some_and(|(first, _)| entry.outbox_id > *first);
            match outcome {
                // Acknowledged behind a failed event of its aggregate: sent again after it.
                Ok(()) if behind_a_failure => {}
                Ok(()) => published.push(entry.outbox_id),
                Err(failure) => {
                    if let std::collections::hash_map::Entry::Vacant(slot) = failed.entry(aggregate)
                    {
                        self.record_failure(&mut tx, entry, &failure).await?;
                        slot.insert((entry.outbox_id, failure));
                    }
                }
            }
        }
        let phase = self.metrics.phase("ack", phase);
        store::mark_published(&mut tx, &published).await?;
        tx.commit().await?;
        self.metrics.phase("mark", phase);
        self.metrics.published.inc_by(published.len() as u64);
        report.published = published.len();
        report.delivered = entries
            .iter()
            .map(|e| e.event.envelope.aggregate_id)
            .filter(|a| !failed.contains_key(a))
            .collect();
        for (aggregate, (_, failure)) in failed {
            match failure {
                Failure::Record(reason) => report.held.push((aggregate, reason)),
                Failure::Transient(reason) => {
                    report.transient.get_or_insert(reason);
                }
            }
        }
        if report.published > 0 {
            self.health.update(|s| s.last_progress = Instant::now());
        }
        Ok(report)
    }

    /// Counts a failed event and records the attempt on its outbox row.
    async fn record_failure(
        &self,
        tx: &mut sqlx::PgConnection,
        entry: &OutboxEntry,
        failure: &Failure,
    ) -> Result<(), sqlx::Error> {
        self.metrics.failures.inc();
        tracing::debug!(outbox_id = entry.outbox_id, aggregate_id = %entry.event.envelope.aggregate_id, error = failure.message(), "outbox publish failed");
        store::mark_failed(tx, entry.outbox_id, failure.message()).await
    }

    /// Encodes and enqueues one event; the returned future resolves on the broker's ack.
    async fn send(
        &self,
        producer: &FutureProducer<BrokerWatch>,
        entry: &OutboxEntry,
    ) -> Result<rdkafka::producer::DeliveryFuture, Failure> {
        let envelope = &entry.event.envelope;
        let mut record =
            serde_json::to_value(envelope).map_err(|e| Failure::Record(e.to_string()))?;
        if let (Some(record), Some(fields)) =
            (record.as_object_mut(), entry.event.payload.as_object())
        {
            record.extend(fields.clone());
        }
        let bytes = self
            .codec
            .encode_json(&entry.topic, &record)
            .await
            .map_err(|e| {
                if e.is_transient() {
                    Failure::Transient(e.to_string())
                } else {
                    Failure::Record(e.to_string())
                }
            })?;
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
        producer
            .send_result(record)
            .map_err(|(e, _)| Failure::from_kafka(&e))
    }
}

/// A W3C `traceparent` for an event that arrived without one.
pub fn new_traceparent(seed: Uuid) -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = &seed.simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

/// Consecutive failed batches: backoff, metrics, logs.
#[derive(Default)]
struct Failures {
    count: u32,
    since: Option<Instant>,
}

impl Failures {
    /// Notes a failed batch; returns how long to wait before the next.
    fn failed(&mut self, relay: &Relay, error: String) -> Duration {
        self.count += 1;
        self.since.get_or_insert_with(Instant::now);
        let wait = backoff(
            relay.config.retry_wait,
            relay.config.max_retry_wait,
            self.count,
        );
        relay.metrics.batch_failures.inc();
        relay
            .metrics
            .consecutive_failures
            .set(i64::from(self.count));
        relay.health.update(|s| {
            s.consecutive_failures = self.count;
            s.last_error = Some(error.clone());
        });
        tracing::warn!(
            error,
            consecutive_failures = self.count,
            retry_in_ms = wait.as_millis() as u64,
            "outbox relay batch failed; retrying"
        );
        wait
    }

    /// Notes a successful batch.
    fn succeeded(&mut self, relay: &Relay) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                failed_batches = self.count,
                after_s = since.elapsed().as_secs(),
                "outbox relay recovered"
            );
        }
        self.count = 0;
        relay.metrics.consecutive_failures.set(0);
        relay.health.update(|s| {
            s.consecutive_failures = 0;
            s.last_error = None;
        });
    }
}

/// Exponential backoff from `first`, doubling per attempt up to `max`, with up to 20% jitter so
/// that relays restarted together do not retry in step.
fn backoff(first: Duration, max: Duration, attempt: u32) -> Duration {
    let base = first
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(max);
    let jitter = (Uuid::new_v4().as_u128() % 1000) as u32;
    base + base / 5 * jitter / 1000
}

/// Every 5 s: the outbox depth and the age of its oldest event, into the gauges and the health;
/// and whether the relay is stalled (whatever stalls it: failures or a hang), said once a minute.
async fn watch_backlog(pool: PgPool, metrics: RelayMetrics, health: RelayHealth) {
    let mut stall_logged: Option<Instant> = None;
    loop {
        match store::outbox_backlog(&pool).await {
            Ok((depth, age)) => {
                metrics.depth.set(depth);
                metrics.oldest_age.set(age as i64);
                health.update(|s| {
                    s.depth = depth;
                    s.oldest_age_seconds = age;
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the outbox depth"),
        }
        let stalled = health.stalled();
        metrics.stalled.set(i64::from(stalled));
        if !stalled {
            stall_logged = None;
        } else if stall_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            stall_logged = Some(Instant::now());
            let state = health.state.lock().expect("relay health poisoned");
            tracing::error!(
                outbox_depth = state.depth,
                oldest_unpublished_age_s = state.oldest_age_seconds as u64,
                consecutive_failures = state.consecutive_failures,
                last_error = state.last_error.as_deref().unwrap_or("none"),
                "outbox relay stalled: committed events are not reaching Kafka; check the broker \
                 and the schema registry (commands are still accepted and will be published \
                 once the relay recovers)"
            );
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_wait_up_to_the_cap_with_bounded_jitter() {
        let (first, max) = (Duration::from_millis(250), Duration::from_secs(30));
        for (attempt, base_ms) in [(1, 250), (2, 500), (3, 1_000), (8, 30_000), (40, 30_000)] {
            let wait = backoff(first, max, attempt);
            let base = Duration::from_millis(base_ms);
            assert!(
                wait >= base && wait <= base + base / 5,
                "attempt {attempt}: {wait:?}"
            );
        }
    }

    #[test]
    fn a_relay_is_stalled_only_while_events_wait_and_none_was_published_for_the_threshold() {
        let health = RelayHealth::new(Duration::from_millis(20));
        assert!(health.check().is_ok());
        health.update(|s| s.depth = 5);
        assert!(health.check().is_ok(), "progress was just made");
        std::thread::sleep(Duration::from_millis(30));
        let reason = health.check().unwrap_err();
        assert!(reason.contains("5 events waiting"), "{reason}");
        health.update(|s| s.depth = 0);
        assert!(health.check().is_ok(), "nothing waits: idle, not stalled");
        health.update(|s| {
            s.held_count = 1;
            s.held_example = Some((Uuid::nil(), "record does not fit the schema".into()));
        });
        assert!(health.check().unwrap_err().contains("holds back"));
    }
}

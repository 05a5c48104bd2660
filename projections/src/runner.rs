//! The projector loop shared by every projection.
//!
//! Exactly-once effect: a polled batch is applied in one transaction together with the next
//! offset of every partition it touched, and on start the projector seeks to those stored
//! offsets (not the consumer group's); a crash at any instant neither loses nor re-applies.
//! Records that cannot be decoded or applied go to the projection's dead-letter topic, with
//! the reason and their origin in headers, before the batch commits; the projector carries
//! on. A transient failure (broker, registry or database) restarts the session from the
//! stored offsets.
//!
//! Stored offsets are checked against the broker's log when the session starts and every few
//! seconds while it runs (`log_check`). An offset outside the log (a broker reset, a recreated
//! topic, retention) makes the projector not ready, with the reason, a metric and an error log;
//! it then recovers without skipping: a model the event store holds is rebuilt from it (the
//! rebuild takes over offsets reset to the log start), and the audit index, whose history is
//! its topic, re-reads what the log still holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use events::catalog::TopicSpec;
use platform::db::Migration;
use platform::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use schemas::EventCodec;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;

use crate::log_check::{self, PartitionLog, Placement, ReadBack, Stored};
use crate::rebuild::{self, RebuildOptions};

/// Tables the runner keeps in every read-model schema.
pub const RUNNER_MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        version: 2,
        name: "fingerprint of the record before each stored offset",
        sql: "ALTER TABLE projection_offsets ADD COLUMN record_fingerprint BIGINT;",
    },
];

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
    /// The topics it reads.
    fn topics(&self) -> Vec<&'static str>;
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

/// `error` for a log line, with a PostgreSQL data exception (which quotes the value, maybe
/// PHI) reduced to its code.
fn loggable(error: &anyhow::Error) -> String {
    match error.chain().find_map(|c| c.downcast_ref::<sqlx::Error>()) {
        Some(db) => error
            .chain()
            .take_while(|c| c.downcast_ref::<sqlx::Error>().is_none())
            .map(ToString::to_string)
            .chain([platform::db::loggable(db)])
            .collect::<Vec<_>>()
            .join(": "),
        None => format!("{error:#}"),
    }
}

/// Stores the next offsets of the partitions a batch touched, each with the fingerprint of the
/// record before it (`None`: nothing read yet, as after a reset to the log start).
pub async fn store_offsets(
    conn: &mut PgConnection,
    projection: &str,
    next: &HashMap<(String, i32), Stored>,
) -> Result<(), sqlx::Error> {
    let mut topics = Vec::with_capacity(next.len());
    let mut partitions = Vec::with_capacity(next.len());
    let mut offsets = Vec::with_capacity(next.len());
    let mut fingerprints = Vec::with_capacity(next.len());
    for ((topic, partition), stored) in next {
        topics.push(topic.as_str());
        partitions.push(*partition);
        offsets.push(stored.next);
        fingerprints.push(stored.fingerprint);
    }
    sqlx::query(
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset, record_fingerprint)
         SELECT $1, t, p, o, f
         FROM UNNEST($2::TEXT[], $3::INT[], $4::BIGINT[], $5::BIGINT[]) AS x (t, p, o, f)
         ON CONFLICT (projection, topic, partition)
         DO UPDATE SET next_offset = EXCLUDED.next_offset,
                       record_fingerprint = EXCLUDED.record_fingerprint, updated_at = now()",
    )
    .bind(projection)
    .bind(topics)
    .bind(partitions)
    .bind(offsets)
    .bind(fingerprints)
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
    /// The read model's database (for a rebuild after offsets outside the log).
    pub database_url: String,
    /// The event store, read (never written) to rebuild the model when the log lost events.
    pub event_store_url: String,
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
    outside_log: Family<PartitionLabels, Gauge>,
    outside_log_events: Family<PartitionLabels, Counter>,
    recoveries: Counter,
    /// Latest lag per (topic, partition), for `/health/ready`.
    pub lag_snapshot: Arc<Mutex<HashMap<(String, i32), i64>>>,
    /// Why the projector cannot serve a current model (offsets outside the log, a recovery
    /// under way), for `/health/ready`; `None` when nothing is wrong.
    pub problem: Arc<Mutex<Option<String>>>,
    /// Woken when a check finds offsets outside the log while the session runs.
    recheck: Arc<Notify>,
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
            outside_log: metrics.register(
                "projection_offset_outside_log",
                "1 while the stored offset of a partition is outside the broker's log",
                Family::default(),
            ),
            outside_log_events: metrics.register(
                "projection_offset_outside_log_detections",
                "Times a stored offset was found outside the broker's log, per partition",
                Family::default(),
            ),
            recoveries: metrics.register(
                "projection_recoveries",
                "Recoveries from offsets outside the log (rebuilds or resets to the log start)",
                Counter::default(),
            ),
            lag_snapshot: Arc::default(),
            problem: Arc::default(),
            recheck: Arc::default(),
        }
    }

    fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().expect("problem poisoned") = problem;
    }

    /// Publishes the lag and outside-the-log gauges of `logs`.
    fn publish_logs(&self, logs: &[PartitionLog]) {
        let mut snapshot = HashMap::new();
        for log in logs {
            let labels = PartitionLabels {
                topic: log.topic.clone(),
                partition: log.partition,
            };
            self.lag.get_or_create(&labels).set(log.lag());
            self.outside_log
                .get_or_create(&labels)
                .set(i64::from(log.placement != Placement::InLog));
            snapshot.insert((log.topic.clone(), log.partition), log.lag());
        }
        *self.lag_snapshot.lock().expect("lag snapshot poisoned") = snapshot;
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
    let watcher = tokio::spawn(watch_log(
        projection.name(),
        projection.topics(),
        pool.clone(),
        config.brokers.clone(),
        metrics.clone(),
    ));
    let mut failures = 0u32;
    let result = loop {
        let session = Session {
            projection: projection.as_ref(),
            pool: &pool,
            codec: &codec,
            producer: &producer,
            metrics: &metrics,
            config: &config,
        };
        let started = Instant::now();
        match session.run(&mut shutdown).await {
            Ok(()) => break Ok(()),
            Err(e) => {
                // A session that ran for a while before failing starts a fresh backoff.
                if started.elapsed() > Duration::from_secs(60) {
                    failures = 0;
                }
                failures += 1;
                // 1 s, doubling to at most 30 s while the failure repeats.
                let wait =
                    Duration::from_secs(1 << (failures - 1).min(5)).min(Duration::from_secs(30));
                tracing::warn!(projection = projection.name(), error = %loggable(&e), consecutive_failures = failures, retry_in_s = wait.as_secs(), "projector session failed; restarting from stored offsets");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => break Ok(()),
                }
            }
        }
    };
    watcher.abort();
    result
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
                _ = self.metrics.recheck.notified() => {
                    anyhow::bail!("a stored offset is outside the broker's log")
                }
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

    /// A consumer assigned to every partition of the projection's topics at the stored offsets,
    /// once every stored offset is known to be in the log (recovering those that are not).
    async fn assign(&self) -> anyhow::Result<StreamConsumer> {
        let name = self.projection.name();
        let consumer: StreamConsumer = platform::kafka::client_config(&self.config.brokers)
            .set("group.id", format!("healthplane-projector-{name}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // An offset outside the log fails the session (the check below then explains and
            // recovers); it never silently jumps to another offset.
            .set("auto.offset.reset", "error")
            .create()
            .context("cannot create the consumer")?;
        let mut stored = stored_offsets(self.pool, name).await?;
        // Every stored offset is read back at the start of a session.
        let topics = self.projection.topics();
        let logs = check_log(&self.config.brokers, &topics, &stored, ReadBack::Every).await?;
        self.metrics.publish_logs(&logs);
        let outside: Vec<&PartitionLog> = logs
            .iter()
            .filter(|l| l.placement != Placement::InLog)
            .collect();
        if !outside.is_empty() {
            if let Err(e) = self.recover(&outside).await {
                let problem = self
                    .metrics
                    .problem
                    .lock()
                    .expect("problem poisoned")
                    .clone();
                self.metrics.set_problem(Some(format!(
                    "{}; the recovery failed and is retried: {e:#}",
                    problem.unwrap_or_default()
                )));
                return Err(e);
            }
            stored = stored_offsets(self.pool, name).await?;
        }
        self.metrics.set_problem(None);
        let mut assignment = TopicPartitionList::new();
        for log in &logs {
            let offset = stored
                .get(&(log.topic.clone(), log.partition))
                .map_or(Offset::Beginning, |o| Offset::Offset(o.next));
            assignment.add_partition_offset(&log.topic, log.partition, offset)?;
        }
        consumer.assign(&assignment)?;
        tracing::info!(
            projection = name,
            partitions = assignment.count(),
            "assigned at stored offsets"
        );
        Ok(consumer)
    }

    /// Recovers from stored offsets outside the log, without skipping an event: a model the
    /// event store holds is rebuilt from it, taking over offsets reset to the log start (what
    /// the log still holds is re-read, and ignored as duplicates); the audit index, whose history
    /// is its topic, re-reads the log from its start.
    async fn recover(&self, outside: &[&PartitionLog]) -> anyhow::Result<()> {
        let name = self.projection.name();
        let problems: Vec<String> = outside.iter().filter_map(|l| l.problem()).collect();
        let rebuild = self.projection.rebuilds_from_event_store();
        let action = if rebuild {
            "rebuilding the read model from the event store"
        } else {
            "re-reading the log from its start (this model's history is its topic)"
        };
        for log in outside {
            let labels = PartitionLabels {
                topic: log.topic.clone(),
                partition: log.partition,
            };
            self.metrics.outside_log_events.get_or_create(&labels).inc();
            tracing::error!(
                projection = name,
                topic = log.topic,
                partition = log.partition,
                stored_offset = log.stored.map(|s| s.next),
                log_start = log.low,
                log_end = log.high,
                problem = log.problem().unwrap_or_default(),
                action,
                "a stored offset is outside the broker's log"
            );
        }
        let summary = format!("{}; {action}", problems.join("; "));
        self.metrics.set_problem(Some(summary.clone()));
        // The offsets restart at the log start: stored with the rebuilt model when it is swapped
        // in (a failed rebuild leaves them outside the log, to be found and retried), or at once.
        let reset: HashMap<(String, i32), Stored> = outside
            .iter()
            .map(|l| {
                let stored = Stored {
                    next: l.low,
                    fingerprint: None,
                };
                ((l.topic.clone(), l.partition), stored)
            })
            .collect();
        if rebuild {
            let options = RebuildOptions {
                database_url: self.config.database_url.clone(),
                event_store_url: self.config.event_store_url.clone(),
                batch_size: 5_000,
                restart: true,
                reset_offsets: reset,
            };
            let mut last = Instant::now();
            let report = rebuild::rebuild(self.projection, &options, |p| {
                if last.elapsed() >= Duration::from_secs(1) {
                    last = Instant::now();
                    self.metrics
                        .set_problem(Some(format!("{summary}: {}/{} events", p.done, p.total)));
                }
            })
            .await
            .with_context(|| {
                format!("cannot rebuild the {name} read model from the event store")
            })?;
            tracing::info!(
                projection = name,
                events = report.events,
                seconds = report.seconds,
                "rebuilt the read model from the event store after offsets outside the log; \
                 consuming from the log start"
            );
        } else {
            let mut tx = self.pool.begin().await?;
            lock_shared(&mut tx, name).await?;
            store_offsets(&mut tx, name, &reset).await?;
            tx.commit().await?;
            tracing::warn!(
                projection = name,
                "offsets reset to the log start; records the log no longer holds cannot be indexed"
            );
        }
        self.metrics.recoveries.inc();
        Ok(())
    }

    /// Decodes and applies a batch in one transaction, with the offsets it reached; poison goes
    /// to the dead-letter topic (acknowledged) before the commit.
    async fn process(&self, batch: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
        let name = self.projection.name();
        let mut records = Vec::with_capacity(batch.len());
        let mut sources = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        let mut next_offsets: HashMap<(String, i32), Stored> = HashMap::new();
        for message in batch {
            next_offsets.insert(
                (message.topic().to_string(), message.partition()),
                Stored {
                    next: message.offset() + 1,
                    fingerprint: Some(log_check::fingerprint(message.key(), message.payload())),
                },
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

pub(crate) async fn stored_offsets(
    pool: &PgPool,
    projection: &str,
) -> Result<HashMap<(String, i32), Stored>, sqlx::Error> {
    let rows: Vec<(String, i32, i64, Option<i64>)> = sqlx::query_as(
        "SELECT topic, partition, next_offset, record_fingerprint
         FROM projection_offsets WHERE projection = $1",
    )
    .bind(projection)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, p, next, fingerprint)| ((t, p), Stored { next, fingerprint }))
        .collect())
}

/// Checks the stored offsets of every partition of `topics` against the broker's log (on a
/// blocking thread).
async fn check_log(
    brokers: &str,
    topics: &[&'static str],
    stored: &HashMap<(String, i32), Stored>,
    read_back: ReadBack,
) -> anyhow::Result<Vec<PartitionLog>> {
    let (brokers, stored, topics) = (brokers.to_string(), stored.clone(), topics.to_vec());
    tokio::task::spawn_blocking(move || log_check::inspect(&brokers, &topics, &stored, &read_back))
        .await
        .context("the log check panicked")?
        .context("cannot check the stored offsets against the broker's log")
}

/// Every 5 s: lag per partition against the log, and whether each stored offset is still in
/// the log (a broker reset or retention while the projector runs). An offset found outside
/// the log restarts the session, whose start recovers it.
async fn watch_log(
    projection: &'static str,
    topics: Vec<&'static str>,
    pool: PgPool,
    brokers: String,
    metrics: RunnerMetrics,
) {
    // (stored offset, high watermark) last read back per partition: while neither moves, the
    // record is not read again.
    let mut verified: HashMap<(String, i32), (i64, i64)> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let Ok(stored) = stored_offsets(&pool, projection).await else {
            continue;
        };
        // While running, only offsets past the reported high watermark are read back (cheap
        // range checks cover the rest; the session start reads back every one).
        let read_back = ReadBack::PastHighWatermark(verified.clone());
        match check_log(&brokers, &topics, &stored, read_back).await {
            Ok(logs) => {
                // A recovery under way keeps its own problem; its offsets are settled by it.
                if metrics.problem.lock().expect("problem poisoned").is_some() {
                    continue;
                }
                // Only offsets still stored as they were read count: a session may have just
                // recovered them.
                let now = stored_offsets(&pool, projection).await.unwrap_or_default();
                let unchanged = logs.iter().all(|l| {
                    l.stored.is_none()
                        || now.get(&(l.topic.clone(), l.partition)) == l.stored.as_ref()
                });
                if !unchanged {
                    continue;
                }
                metrics.publish_logs(&logs);
                let problems: Vec<String> = logs.iter().filter_map(PartitionLog::problem).collect();
                if problems.is_empty() {
                    for log in &logs {
                        if let Some(s) = log.stored {
                            verified.insert((log.topic.clone(), log.partition), (s.next, log.high));
                        }
                    }
                } else {
                    verified.clear();
                    metrics.set_problem(Some(format!(
                        "{}; restarting the projector session to recover",
                        problems.join("; ")
                    )));
                    metrics.recheck.notify_one();
                }
            }
            Err(e) => tracing::warn!(projection, error = %format!("{e:#}"), "cannot check the log"),
        }
    }
}

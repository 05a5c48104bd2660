//! The sealer process: takes the one sealer lock, recovers each partition's chain from the
//! newest checkpoints, then reads the audit log and publishes signed checkpoints as they fall
//! due. Any Kafka or registry error ends the session and a new one recovers from what the
//! checkpoints topic holds, so a checkpoint whose acknowledgement was lost is neither
//! repeated nor skipped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use events::audit::AuditCheckpoint;
use events::catalog::{AUDIT_CHECKPOINTS, AUDIT_PHI_ACCESS, topic};
use platform::metrics::Metrics;
use platform::signing::{Keyring, RecordSigner};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use schemas::EventCodec;
use tokio::sync::watch;

use crate::seal::{PartitionSeal, SealPolicy};

/// `pg_advisory_lock` key held by the active sealer ("hpseal" in ASCII).
const LOCK_KEY: i64 = 0x6870_7365_616c;

/// What the sealer needs to run.
#[derive(Debug, Clone)]
pub struct SealerConfig {
    pub brokers: String,
    pub registry_url: String,
    /// The database whose advisory lock lets one sealer run at a time.
    pub lock_database_url: String,
    pub policy: SealPolicy,
    /// Names this instance in its checkpoints.
    pub instance: String,
    /// The keys whose checkpoints the sealer resumes from (its own key is always trusted): a
    /// checkpoint anyone else wrote is passed over.
    pub keyring: Keyring,
}

/// How long a new session waits before reading the checkpoints: longer than a checkpoint
/// request of an earlier session (or of a sealer that died holding the lock) can still be in
/// flight, so none lands after the recovery read.
const FENCE: Duration = Duration::from_secs(6);
/// The checkpoint producer's request timeout (below `FENCE`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What an operator watches.
#[derive(Clone)]
pub struct SealerMetrics {
    active: Gauge,
    checkpoints: Counter,
    failures: Counter,
    unsealed: Family<Vec<(String, String)>, Gauge>,
    newest_checkpoint: Gauge,
    /// Why the sealer cannot seal now (readiness fails while set), and its role.
    status: Arc<Mutex<Status>>,
}

#[derive(Debug, Clone, Default)]
struct Status {
    active: bool,
    problem: Option<String>,
    newest_checkpoint_ms: Option<i64>,
    unsealed: i64,
}

impl SealerMetrics {
    pub fn register(metrics: &Metrics) -> SealerMetrics {
        SealerMetrics {
            active: metrics.register(
                "audit_sealer_active",
                "1 while this sealer holds the lock and seals; 0 while it stands by",
                Gauge::default(),
            ),
            checkpoints: metrics.register(
                "audit_checkpoints_published",
                "Signed audit checkpoints acknowledged by the broker",
                Counter::default(),
            ),
            failures: metrics.register(
                "audit_sealer_failures",
                "Sealing sessions ended by an error (the sealer recovers and retries)",
                Counter::default(),
            ),
            unsealed: metrics.register(
                "audit_unsealed_records",
                "Audit records read and not yet covered by a checkpoint, per partition",
                Family::default(),
            ),
            newest_checkpoint: metrics.register(
                "audit_newest_checkpoint_timestamp_seconds",
                "When the oldest of the partitions' newest checkpoints was sealed",
                Gauge::default(),
            ),
            status: Arc::default(),
        }
    }

    /// Readiness: an active sealer that cannot publish, or whose checkpoints are older than
    /// twice the interval, is not ready; a standby is.
    pub fn readiness(&self, policy: &SealPolicy) -> Result<serde_json::Value, String> {
        let status = self.status.lock().expect("status poisoned").clone();
        if let Some(problem) = status.problem {
            return Err(problem);
        }
        if !status.active {
            return Ok(serde_json::json!({"role": "standby"}));
        }
        let age = status
            .newest_checkpoint_ms
            .map(|ms| (Utc::now().timestamp_millis() - ms).max(0) / 1000);
        let limit = 2 * policy.interval.as_secs() as i64 + 10;
        match age {
            Some(age) if age <= limit => Ok(serde_json::json!({
                "role": "active", "unsealed": status.unsealed, "oldestNewestCheckpointAgeSeconds": age
            })),
            Some(age) => Err(format!(
                "the oldest partition's newest checkpoint is {age} s old (more than {limit} s)"
            )),
            None => Err("recovering: no checkpoint published yet".into()),
        }
    }

    fn set_problem(&self, problem: Option<String>) {
        self.status.lock().expect("status poisoned").problem = problem;
    }

    fn observe(&self, seals: &BTreeMap<i32, PartitionSeal>) {
        let mut unsealed = 0;
        for seal in seals.values() {
            unsealed += seal.pending();
            self.unsealed
                .get_or_create(&vec![("partition".into(), seal.partition.to_string())])
                .set(seal.pending());
        }
        let oldest = seals
            .values()
            .map(|s| s.last_sealed_at().map(|t| t.timestamp_millis()))
            .min()
            .flatten();
        if let Some(ms) = oldest {
            self.newest_checkpoint.set(ms / 1000);
        }
        let mut status = self.status.lock().expect("status poisoned");
        status.unsealed = unsealed;
        status.newest_checkpoint_ms = oldest;
    }
}

/// Runs until `shutdown`: waits for the lock, then seals. Returns an error when the lock is
/// lost (another sealer may now run: this one must stop).
pub async fn run(
    config: SealerConfig,
    signer: RecordSigner,
    metrics: SealerMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(mut lock) = acquire_lock(&config, &metrics, &mut shutdown).await? else {
        return Ok(());
    };
    metrics.active.set(1);
    metrics.status.lock().expect("status poisoned").active = true;
    // A predecessor's last checkpoint may still be on its way to the broker.
    tokio::select! {
        _ = tokio::time::sleep(FENCE) => {}
        _ = shutdown.changed() => return Ok(()),
    }
    let mut backoff = FENCE;
    loop {
        match session(&config, &signer, &metrics, &mut lock, &mut shutdown).await {
            Ok(()) => return Ok(()),
            Err(Fatal::LockLost(e)) => {
                metrics.active.set(0);
                return Err(e.context(
                    "lost the sealer lock: stopping so that another sealer can take over",
                ));
            }
            Err(Fatal::Retry(e)) => {
                metrics.failures.inc();
                metrics.set_problem(Some(format!("sealing failed: {e:#}")));
                tracing::error!(
                    error = format!("{e:#}"),
                    retry_in_ms = backoff.as_millis() as u64,
                    "sealing session failed; recovering from the checkpoints topic"
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

enum Fatal {
    LockLost(anyhow::Error),
    Retry(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal::Retry(e.into())
    }
}

/// Waits until this process holds the sealer lock (`None` if stopped first). The lock lives
/// as long as the returned connection: a sealer killed with `kill -9` releases it when its
/// connection closes.
async fn acquire_lock(
    config: &SealerConfig,
    metrics: &SealerMetrics,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<sqlx::PgConnection>> {
    let mut announced = false;
    let options = platform::db::connect_options(&config.lock_database_url)?;
    loop {
        let attempt = async {
            let mut conn = sqlx::ConnectOptions::connect(&options).await?;
            let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut conn)
                .await?;
            Ok::<_, sqlx::Error>(held.then_some(conn))
        };
        match attempt.await {
            Ok(Some(conn)) => {
                tracing::info!("holding the sealer lock: sealing");
                metrics.set_problem(None);
                return Ok(Some(conn));
            }
            Ok(None) => {
                metrics.set_problem(None);
                if !announced {
                    tracing::info!("another sealer holds the lock: standing by");
                    announced = true;
                }
            }
            Err(e) => {
                let error = platform::db::loggable(&e);
                tracing::warn!(%error, "cannot reach the lock database");
                metrics.set_problem(Some(format!("cannot reach the lock database: {error}")));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return Ok(None),
        }
    }
}

async fn session(
    config: &SealerConfig,
    signer: &RecordSigner,
    metrics: &SealerMetrics,
    lock: &mut sqlx::PgConnection,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), Fatal> {
    let codec = EventCodec::new(&config.registry_url);
    let mut seals = recover(config, &codec, signer).await?;
    let consumer: StreamConsumer = platform::kafka::client_config(&config.brokers)
        .set("group.id", "healthplane-audit-sealer")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("cannot create the audit log consumer")?;
    let mut assignment = TopicPartitionList::new();
    for seal in seals.values() {
        assignment.add_partition_offset(
            AUDIT_PHI_ACCESS,
            seal.partition,
            Offset::Offset(seal.read_from()),
        )?;
    }
    consumer.assign(&assignment)?;
    let producer: FutureProducer =
        platform::kafka::producer_config(&config.brokers, Duration::from_secs(10))
            .set(
                "request.timeout.ms",
                REQUEST_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .context("cannot create the checkpoint producer")?;
    let publisher = Publisher {
        producer,
        codec,
        signer,
        instance: &config.instance,
    };
    metrics.set_problem(None);
    metrics.observe(&seals);
    tracing::info!(
        partitions = seals.len(),
        "recovered the chains; reading the audit log"
    );
    let tick =
        (config.policy.interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = consumer.recv() => {
                let message = message.context("reading the audit log")?;
                let seal = seals
                    .get_mut(&message.partition())
                    .context("a record from a partition the sealer was not assigned")?;
                // A record delivered again (the broker repeats a batch after a gap in the
                // offsets) is chained once.
                if message.offset() < seal.read_from() {
                    continue;
                }
                seal.absorb(&message);
                if seal.pending() >= config.policy.max_records {
                    publisher.seal(seal, metrics, lock).await?;
                }
            }
            _ = ticker.tick() => {
                check_lock(lock).await?;
                let now = Utc::now();
                for seal in seals.values_mut().filter(|s| s.due(now, &config.policy)) {
                    publisher.seal(seal, metrics, lock).await?;
                }
                metrics.observe(&seals);
            }
            _ = shutdown.changed() => {
                // What was read is sealed before the sealer goes.
                for seal in seals.values_mut().filter(|s| s.pending() > 0) {
                    publisher.seal(seal, metrics, lock).await?;
                }
                tracing::info!("stopped after sealing what it read");
                return Ok(());
            }
        }
    }
}

async fn check_lock(lock: &mut sqlx::PgConnection) -> Result<(), Fatal> {
    sqlx::query("SELECT 1")
        .execute(&mut *lock)
        .await
        .map(|_| ())
        .map_err(|e| Fatal::LockLost(anyhow::anyhow!("{}", platform::db::loggable(&e))))
}

struct Publisher<'a> {
    producer: FutureProducer,
    codec: EventCodec,
    signer: &'a RecordSigner,
    instance: &'a str,
}

impl Publisher<'_> {
    /// Publishes the partition's next checkpoint and waits for the broker's acknowledgement.
    /// Checks first that this sealer still holds the lock: one that lost it publishes nothing.
    async fn seal(
        &self,
        seal: &mut PartitionSeal,
        metrics: &SealerMetrics,
        lock: &mut sqlx::PgConnection,
    ) -> Result<(), Fatal> {
        check_lock(lock).await?;
        let checkpoint = seal.checkpoint(Utc::now(), self.instance);
        let value = self
            .codec
            .encode(AUDIT_CHECKPOINTS, &checkpoint)
            .await
            .context("cannot encode a checkpoint")?;
        let key = checkpoint.partition.to_string();
        let event_id = checkpoint.event_id.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "event_type",
                value: Some(checkpoint.event_type.as_str()),
            })
            .insert(Header {
                key: "event_id",
                value: Some(event_id.as_str()),
            });
        let headers =
            self.signer
                .signed_headers(headers, AUDIT_CHECKPOINTS, key.as_bytes(), &value);
        self.producer
            .send(
                FutureRecord::to(AUDIT_CHECKPOINTS)
                    .key(&key)
                    .payload(&value)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| {
                anyhow::anyhow!("the broker did not acknowledge a checkpoint: {e}")
            })?;
        seal.sealed(&checkpoint, &value);
        metrics.checkpoints.inc();
        tracing::debug!(
            partition = checkpoint.partition,
            sequence = checkpoint.sequence,
            records = checkpoint.record_count,
            end_offset = checkpoint.end_offset,
            "checkpoint published"
        );
        Ok(())
    }
}

/// The newest checkpoint of each partition, with its value bytes, from the checkpoints topic:
/// read backwards in growing windows from its end, since only the newest ones matter.
///
/// Only a checkpoint signed by a trusted key, for a partition the log has, under its own key,
/// counts; of those, each partition's highest sequence. Anything else — undecodable, forged,
/// misfiled — is passed over with a warning (`replay-tool audit verify` names it).
pub async fn newest_checkpoints(
    brokers: &str,
    codec: &EventCodec,
    partitions: i32,
    keyring: &Keyring,
) -> anyhow::Result<BTreeMap<i32, (AuditCheckpoint, Vec<u8>)>> {
    let consumer = || -> anyhow::Result<StreamConsumer> {
        platform::kafka::client_config(brokers)
            .set("group.id", "healthplane-audit-sealer")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .context("cannot create the checkpoints consumer")
    };
    let (low, high) = consumer()?
        .fetch_watermarks(AUDIT_CHECKPOINTS, 0, Duration::from_secs(10))
        .context("cannot read the checkpoints topic's offsets")?;
    let mut newest = BTreeMap::new();
    let mut window = 4 * i64::from(partitions.max(1));
    let mut end = high;
    while end > low && (newest.len() as i32) < partitions {
        let start = (end - window).max(low);
        let mut found = BTreeMap::new();
        // A fresh consumer per window: nothing prefetched from the last one.
        let reader = consumer()?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(AUDIT_CHECKPOINTS, 0, Offset::Offset(start))?;
        reader.assign(&assignment)?;
        loop {
            let message = match tokio::time::timeout(Duration::from_secs(30), reader.recv())
                .await
                .context("timed out reading the checkpoints topic")?
            {
                Err(rdkafka::error::KafkaError::PartitionEOF(_)) => break,
                other => other.context("reading the checkpoints topic")?,
            };
            if message.offset() >= end {
                break;
            }
            let last = message.offset() + 1 >= end;
            match trusted_checkpoint(&message, codec, keyring, partitions).await {
                Ok(checkpoint) => {
                    let value = message.payload().unwrap_or_default().to_vec();
                    let newer = found.get(&checkpoint.partition).is_none_or(
                        |(c, _): &(AuditCheckpoint, Vec<u8>)| checkpoint.sequence > c.sequence,
                    );
                    if newer {
                        found.insert(checkpoint.partition, (checkpoint, value));
                    }
                }
                Err(why) => tracing::warn!(
                    offset = message.offset(),
                    why,
                    "passing over a record of the checkpoints topic"
                ),
            }
            if last {
                break;
            }
        }
        for (partition, checkpoint) in found {
            let newer = newest
                .get(&partition)
                .is_none_or(|(c, _): &(AuditCheckpoint, Vec<u8>)| {
                    checkpoint.0.sequence > c.sequence
                });
            if newer {
                newest.insert(partition, checkpoint);
            }
        }
        end = start;
        window *= 4;
    }
    Ok(newest)
}

/// The checkpoint in `message`, if a trusted key signed it and it is filed where it belongs.
async fn trusted_checkpoint(
    message: &rdkafka::message::BorrowedMessage<'_>,
    codec: &EventCodec,
    keyring: &Keyring,
    partitions: i32,
) -> Result<AuditCheckpoint, String> {
    let value = message.payload().unwrap_or_default();
    let key = message.key().unwrap_or_default();
    keyring
        .verify_message(AUDIT_CHECKPOINTS, message)
        .map_err(|fault| format!("signature: {fault:?}"))?;
    let checkpoint: AuditCheckpoint = codec
        .decode(Some(value))
        .await
        .map_err(|e| format!("does not decode: {e}"))?;
    if checkpoint.topic != AUDIT_PHI_ACCESS
        || !(0..partitions).contains(&checkpoint.partition)
        || key != checkpoint.partition.to_string().as_bytes()
        || checkpoint.end_offset < checkpoint.start_offset
        || checkpoint.start_offset < 0
        || checkpoint.chain_length < 0
    {
        return Err("not a checkpoint of a partition of the audit log".into());
    }
    Ok(checkpoint)
}

async fn recover(
    config: &SealerConfig,
    codec: &EventCodec,
    signer: &RecordSigner,
) -> anyhow::Result<BTreeMap<i32, PartitionSeal>> {
    let partitions = topic(AUDIT_PHI_ACCESS)
        .expect("the audit topic is in the catalog")
        .partitions;
    let mut keyring = config.keyring.clone();
    keyring.trust(&signer.keyring_line())?;
    let newest = newest_checkpoints(&config.brokers, codec, partitions, &keyring).await?;
    let watermarks: StreamConsumer = platform::kafka::client_config(&config.brokers)
        .create()
        .context("cannot create a Kafka client")?;
    let mut seals = BTreeMap::new();
    for partition in 0..partitions {
        let (low, high) = watermarks
            .fetch_watermarks(AUDIT_PHI_ACCESS, partition, Duration::from_secs(10))
            .context("cannot read the audit log's offsets")?;
        let seal = match newest.get(&partition) {
            Some((checkpoint, value)) => {
                if checkpoint.end_offset > high {
                    // Sealed beyond the log's end as the broker reports it: the log may have
                    // been cut after it was sealed. The chain goes on from the checkpoint
                    // (records below it are never chained twice) and verify names the cut.
                    tracing::error!(
                        partition,
                        sequence = checkpoint.sequence,
                        sealed_through = checkpoint.end_offset - 1,
                        log_end = high - 1,
                        "the audit log ends before its newest checkpoint: it may have been cut; run `replay-tool audit verify`"
                    );
                }
                PartitionSeal::resume(checkpoint, value)?
            }
            None => PartitionSeal::new(AUDIT_PHI_ACCESS, partition, low),
        };
        seals.insert(partition, seal);
    }
    Ok(seals)
}

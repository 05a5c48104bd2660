//! Kafka client settings shared by every producer and consumer, and idempotent creation of
//! the documented topics.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use events::catalog::TopicSpec;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

/// Base settings for any client of `brokers` (a comma-separated list), with the process's
/// encryption and credentials (`crate::transport`).
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "healthplane")
        // The embedded broker is one node; keep metadata refreshes brisk after restarts.
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set("socket.keepalive.enable", "true");
    if let Some(security) = crate::transport::kafka() {
        security.apply(&mut config);
    }
    config
}

/// An idempotent, `acks=all` producer that partitions by key exactly as the Java client does
/// (murmur2), so data teams' tools agree on which partition a patient lives in.
pub fn producer_config(brokers: &str, delivery_timeout: Duration) -> ClientConfig {
    let mut config = client_config(brokers);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        );
    config
}

/// Fails within 15 s, saying what to check, when no broker of `brokers` answers (wrong
/// address, a TLS certificate or SASL credential the brokers refuse), instead of waiting out an
/// admin request's timeout.
pub async fn reachable(brokers: &str) -> anyhow::Result<()> {
    use rdkafka::consumer::Consumer;
    let probe: rdkafka::consumer::BaseConsumer = client_config(brokers)
        .create()
        .context("cannot create a Kafka client")?;
    tokio::task::spawn_blocking(move || probe.fetch_metadata(None, Duration::from_secs(15)))
        .await
        .context("the metadata request panicked")?
        .map(|_| ())
        .with_context(|| {
            format!(
                "no Kafka broker at {brokers} answered within 15 s: check \
                 HEALTHPLANE_KAFKA_BROKERS and, for TLS or SASL, the CA, host names and \
                 credentials (the log above says why each connection failed)"
            )
        })
}

/// What `ensure_topics` found for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyExisted,
}

/// Creates the given topics with their partitions and `retention.ms`; existing topics are left
/// as they are. `replication` is 1 on the embedded broker, 3 in production.
pub async fn ensure_topics(
    brokers: &str,
    topics: &[TopicSpec],
    replication: i32,
) -> anyhow::Result<Vec<(String, TopicOutcome)>> {
    reachable(brokers).await?;
    let admin: AdminClient<DefaultClientContext> = client_config(brokers)
        .create()
        .context("cannot create a Kafka admin client")?;
    let retention: Vec<String> = topics
        .iter()
        .map(|t| t.retention_ms().to_string())
        .collect();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&retention)
        .map(|(t, ms)| {
            NewTopic::new(t.name, t.partitions, TopicReplication::Fixed(replication))
                .set("retention.ms", ms)
                .set("cleanup.policy", "delete")
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .context("cannot reach the Kafka broker to create topics")?;
    results
        .into_iter()
        .map(|r| match r {
            Ok(name) => Ok((name, TopicOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                Ok((name, TopicOutcome::AlreadyExisted))
            }
            Err((name, code)) => Err(anyhow::anyhow!("cannot create topic {name}: {code}")),
        })
        .collect()
}

/// A topic's configuration as the broker describes it (`retention.ms`, `cleanup.policy`, ...);
/// `Err` when the broker cannot describe it.
pub async fn topic_config(
    brokers: &str,
    topic: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    use rdkafka::admin::{OwnedResourceSpecifier, ResourceSpecifier};
    let admin: AdminClient<DefaultClientContext> = client_config(brokers)
        .create()
        .context("cannot create a Kafka admin client")?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .context("the broker did not answer DescribeConfigs")?;
    let resource = results
        .into_iter()
        .next()
        .context("the broker described nothing")?
        .map_err(|code| anyhow::anyhow!("the broker refused to describe {topic}: {code}"))?;
    anyhow::ensure!(
        resource.specifier == OwnedResourceSpecifier::Topic(topic.to_string()),
        "the broker described another resource"
    );
    Ok(resource
        .entries
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect())
}

/// Kafka's murmur2 hash, as the Java client computes it for keyed records.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    for chunk in data.chunks_exact(4) {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = &data[length & !3..];
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client (and our `murmur2_random` producers) put `key` in.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Vectors from Apache Kafka's UtilsTest.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
        assert!((0..12).contains(&partition_for_key(b"foobar", 12)));
    }
}

/// A client context that notes when every broker connection was lost, and logs like the
/// default context otherwise.
#[derive(Debug, Default, Clone)]
pub struct BrokerWatch {
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl BrokerWatch {
    /// True once since the last call if all brokers went down in between.
    pub fn take_lost(&self) -> bool {
        self.lost.swap(false, Ordering::AcqRel)
    }
}

impl rdkafka::ClientContext for BrokerWatch {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.lost.store(true, Ordering::Release);
        }
        tracing::warn!(%error, reason, "kafka client error");
    }
}

/// An idempotent producer that starts a new producer session when librdkafka declares the old
/// one unusable, after every broker connection was lost, or after a delivery failed: a broker
/// that comes back then sees a fresh producer id (the embedded broker wedges on a producer id
/// from before its restart, and one whose storage was reset knows none). Messages the old
/// producer had in flight fail (their callers retry); none is reported delivered that was not.
pub struct RenewingProducer {
    config: ClientConfig,
    current: RwLock<(Arc<FutureProducer<BrokerWatch>>, BrokerWatch)>,
    /// When the producer was last replaced (at most one renewal per 5 s during an outage).
    renewed_at: Mutex<Option<Instant>>,
}

impl RenewingProducer {
    pub fn new(config: ClientConfig) -> rdkafka::error::KafkaResult<Self> {
        let watch = BrokerWatch::default();
        let producer = config.create_with_context(watch.clone())?;
        Ok(RenewingProducer {
            config,
            current: RwLock::new((Arc::new(producer), watch)),
            renewed_at: Mutex::new(None),
        })
    }

    /// The current producer, renewed first if it has to be. The common case (nothing lost, no
    /// fatal error) takes only a shared lock.
    pub fn get(&self) -> Arc<FutureProducer<BrokerWatch>> {
        {
            let current = self.current.read().expect("producer lock poisoned");
            if !current.1.lost.load(Ordering::Acquire) && current.0.client().fatal_error().is_none()
            {
                return current.0.clone();
            }
        }
        self.renew();
        self.current
            .read()
            .expect("producer lock poisoned")
            .0
            .clone()
    }

    /// Notes a delivery that failed: the next use starts a new session (at most one per 5 s),
    /// in case the broker no longer knows this one.
    pub fn suspect(&self) {
        let current = self.current.read().expect("producer lock poisoned");
        current.1.lost.store(true, Ordering::Release);
    }

    /// Replaces the producer if it failed fatally, or lost a broker or a delivery since the
    /// last renewal (and that was at least 5 s ago).
    fn renew(&self) {
        let mut renewed_at = self.renewed_at.lock().expect("producer lock poisoned");
        let reason = {
            let current = self.current.read().expect("producer lock poisoned");
            match current.0.client().fatal_error() {
                Some(fatal) => format!("the producer failed fatally: {fatal:?}"),
                None if renewed_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(5))
                    && current.1.take_lost() =>
                {
                    "a broker connection or a delivery was lost".to_string()
                }
                None => return,
            }
        };
        *renewed_at = Some(Instant::now());
        tracing::warn!(reason, "starting a new Kafka producer session");
        let watch = BrokerWatch::default();
        match self.config.create_with_context(watch.clone()) {
            Ok(producer) => {
                *self.current.write().expect("producer lock poisoned") =
                    (Arc::new(producer), watch);
            }
            Err(e) => tracing::error!(error = %e, "cannot create a new Kafka producer"),
        }
    }
}

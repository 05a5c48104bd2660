//! Whether a projector's stored offsets still point into the broker's log.
//!
//! The read models live in PostgreSQL and the topics in the broker, and the two can disagree:
//! a broker whose data was reset, a topic deleted and recreated, or retention that removed
//! records a stopped projector never read. Kafka calls this offset-out-of-range. A projector
//! that seeks to such an offset applies nothing and looks caught up, so every stored offset is
//! checked against the log: before the log start, beyond the log end, or pointing at a record
//! that is not the one the projector applied (each stored offset keeps a fingerprint of the
//! record before it).
//!
//! The check reads the record just before each stored offset, not the high watermark alone:
//! the embedded broker reports a watermark that trails the true end (see ARCHITECTURE.md).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// A stored position: the next offset to read and the fingerprint of the record before it
/// (`None` for positions stored before fingerprints were kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub next: i64,
    pub fingerprint: Option<i64>,
}

/// Where a stored offset is relative to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// In the log (or nothing stored yet).
    InLog,
    /// Before the log start: retention removed records the projector never read.
    BeforeStart,
    /// Beyond the log end: the broker lost its data, or the topic was recreated.
    BeyondEnd,
    /// The record before the stored offset is not the one the projector applied: the topic
    /// was recreated and has grown since.
    Replaced,
}

/// One partition's stored offset against its log.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    pub topic: String,
    pub partition: i32,
    pub stored: Option<Stored>,
    /// The log start and the high watermark the broker reports.
    pub low: i64,
    pub high: i64,
    pub placement: Placement,
}

impl PartitionLog {
    /// Records on the log not yet applied: all of the log when the stored offset is outside it.
    pub fn lag(&self) -> i64 {
        match (self.placement == Placement::InLog, self.stored) {
            (true, Some(stored)) => (self.high - stored.next).max(0),
            _ => (self.high - self.low).max(0),
        }
    }

    /// What is wrong, for logs and `/health/ready` (`None` when in the log).
    pub fn problem(&self) -> Option<String> {
        let next = self.stored.map_or(0, |s| s.next);
        let (topic, partition, low, high) = (&self.topic, self.partition, self.low, self.high);
        let what = match self.placement {
            Placement::InLog => return None,
            Placement::BeforeStart => format!(
                "before the log start (retention removed {} records this projector never read)",
                low - next
            ),
            Placement::BeyondEnd => {
                "beyond the log end (the broker lost its data or the topic was recreated)".into()
            }
            Placement::Replaced => format!(
                "at a record that is not the one this projector applied at offset {} \
                 (the topic was recreated)",
                next - 1
            ),
        };
        Some(format!(
            "{topic}/{partition}: stored offset {next} is {what}; the log holds offsets [{low}, {high})"
        ))
    }
}

/// A stable 64-bit fingerprint of a record (FNV-1a over its key and value), kept with the
/// offset after it.
pub fn fingerprint(key: Option<&[u8]>, payload: Option<&[u8]>) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for part in [key, payload] {
        let part = part.unwrap_or_default();
        eat(&(part.len() as u64).to_le_bytes());
        eat(part);
    }
    hash as i64
}

/// The probe's client context: what it reads past (end of partition, offsets out of range) is
/// its answer, not an error to log.
struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "log check client");
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// How long one topic's probe may wait for the records it reads.
const PROBE_WAIT: Duration = Duration::from_secs(5);
/// How long after the end of a partition a record may still arrive (see `inspect`).
const EOF_GRACE: Duration = Duration::from_secs(1);

/// Which stored offsets `inspect` reads the record before (range checks are always made).
#[derive(Debug, Clone)]
pub enum ReadBack {
    /// Every one (a session start).
    Every,
    /// Only those at or past the reported high watermark, unless last read back at the same
    /// (stored offset, high watermark) (a running projector's periodic check).
    PastHighWatermark(HashMap<(String, i32), (i64, i64)>),
}

impl ReadBack {
    fn wants(&self, topic: &str, partition: i32, stored: Stored, high: i64) -> bool {
        match self {
            ReadBack::Every => true,
            ReadBack::PastHighWatermark(seen) => {
                stored.next > high
                    && seen.get(&(topic.to_string(), partition)) != Some(&(stored.next, high))
            }
        }
    }
}

/// Checks the stored offsets of every partition of `topics` against the log: range checks
/// against the watermarks, and the record before a stored offset read back (and compared with
/// its fingerprint) as `read_back` says. Blocking: run it on a blocking thread. `Err` when the
/// broker cannot answer or a topic has no partitions.
pub fn inspect(
    brokers: &str,
    topics: &[&str],
    stored: &HashMap<(String, i32), Stored>,
    read_back: &ReadBack,
) -> anyhow::Result<Vec<PartitionLog>> {
    let client: BaseConsumer<Quiet> = platform::kafka::client_config(brokers)
        .set("group.id", "healthplane-log-check")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // A fetch outside the log must fail, never silently jump elsewhere.
        .set("auto.offset.reset", "error")
        .create_with_context(Quiet)?;
    let mut logs = Vec::new();
    for topic in topics {
        let metadata = client
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("cannot read metadata of {topic}"))?;
        let count = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        anyhow::ensure!(count > 0, "topic {topic} does not exist yet");
        for partition in 0..count as i32 {
            let stored = stored.get(&(topic.to_string(), partition)).copied();
            let (low, high) = client.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
            let placement = match stored {
                Some(s) if s.next < low => Placement::BeforeStart,
                // Nothing stored, or nothing before the stored offset to compare.
                None => Placement::InLog,
                Some(s) if s.next == low => Placement::InLog,
                Some(s) if !read_back.wants(topic, partition, s, high) => Placement::InLog,
                // To be read below.
                Some(_) => Placement::Replaced,
            };
            logs.push(PartitionLog {
                topic: topic.to_string(),
                partition,
                stored,
                low,
                high,
                placement,
            });
        }
    }
    // Read the record before each stored offset, one topic at a time (end-of-partition events
    // name only the partition).
    let mut verdicts: HashMap<(String, i32), Placement> = HashMap::new();
    for &topic in topics {
        let mut probes = TopicPartitionList::new();
        let mut expected: HashMap<i32, (i64, Option<i64>, i64)> = HashMap::new();
        for log in logs
            .iter()
            .filter(|l| l.topic == topic && l.placement == Placement::Replaced)
        {
            let stored = log.stored.expect("probed partitions have a stored offset");
            probes.add_partition_offset(topic, log.partition, Offset::Offset(stored.next - 1))?;
            expected.insert(
                log.partition,
                (stored.next - 1, stored.fingerprint, log.high),
            );
        }
        if expected.is_empty() {
            continue;
        }
        client.assign(&probes)?;
        let deadline = Instant::now() + PROBE_WAIT;
        // End of partition at the target is not yet an answer: librdkafka signals it when the
        // fetch position equals the reported high watermark and drops that fetch's records, and
        // the embedded broker's watermark can trail the true end; the next fetch brings the
        // record if it exists. Silence for a while after it is the answer.
        let mut eof_at: HashMap<i32, Instant> = HashMap::new();
        while !expected.is_empty() && Instant::now() < deadline {
            match client.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let Some((target, fingerprint, _)) = expected.get(&message.partition()) else {
                        continue;
                    };
                    let placement = if message.offset() != *target {
                        Placement::Replaced
                    } else {
                        match fingerprint {
                            Some(f)
                                if *f != self::fingerprint(message.key(), message.payload()) =>
                            {
                                Placement::Replaced
                            }
                            _ => Placement::InLog,
                        }
                    };
                    verdicts.insert((topic.to_string(), message.partition()), placement);
                    expected.remove(&message.partition());
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    eof_at.entry(partition).or_insert_with(Instant::now);
                }
                // An offset-out-of-range answer (it names no partition): the waits below decide.
                Some(Err(e)) => tracing::debug!(topic, error = %e, "log check read failed"),
                None => {}
            }
            for (partition, at) in &eof_at {
                if at.elapsed() >= EOF_GRACE && expected.remove(partition).is_some() {
                    verdicts.insert((topic.to_string(), *partition), Placement::BeyondEnd);
                }
            }
        }
        // Nothing came back: a record at or past the high watermark does not exist; below
        // it, the broker did not answer in time.
        for (partition, (target, _, high)) in expected {
            if target >= high {
                verdicts.insert((topic.to_string(), partition), Placement::BeyondEnd);
            } else {
                anyhow::bail!("{topic}/{partition}: the broker did not answer the log check");
            }
        }
    }
    client.unassign()?;
    for log in &mut logs {
        if let Some(placement) = verdicts.remove(&(log.topic.clone(), log.partition)) {
            log.placement = placement;
        }
    }
    Ok(logs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(stored: Option<i64>, low: i64, high: i64, placement: Placement) -> PartitionLog {
        PartitionLog {
            topic: "healthcare.patient.created".into(),
            partition: 3,
            stored: stored.map(|next| Stored {
                next,
                fingerprint: None,
            }),
            low,
            high,
            placement,
        }
    }

    #[test]
    fn lag_counts_the_whole_log_when_the_offset_is_outside_it() {
        assert_eq!(log(Some(4), 0, 10, Placement::InLog).lag(), 6);
        assert_eq!(log(Some(12), 0, 10, Placement::InLog).lag(), 0);
        assert_eq!(log(None, 2, 10, Placement::InLog).lag(), 8);
        assert_eq!(log(Some(6177), 0, 3, Placement::BeyondEnd).lag(), 3);
        assert_eq!(log(Some(5), 100, 150, Placement::BeforeStart).lag(), 50);
    }

    #[test]
    fn a_problem_names_topic_partition_stored_offset_and_log_range() {
        assert_eq!(log(Some(4), 0, 10, Placement::InLog).problem(), None);
        assert_eq!(
            log(Some(6177), 0, 3, Placement::BeyondEnd)
                .problem()
                .unwrap(),
            "healthcare.patient.created/3: stored offset 6177 is beyond the log end (the broker \
             lost its data or the topic was recreated); the log holds offsets [0, 3)"
        );
        let before = log(Some(5), 100, 150, Placement::BeforeStart)
            .problem()
            .unwrap();
        assert!(before.contains("removed 95 records"), "{before}");
    }

    #[test]
    fn fingerprints_tell_records_apart_and_are_stable() {
        let a = fingerprint(Some(b"k"), Some(b"value"));
        assert_eq!(a, fingerprint(Some(b"k"), Some(b"value")));
        assert_ne!(a, fingerprint(Some(b"k"), Some(b"valuf")));
        // Key and value boundaries count.
        assert_ne!(
            fingerprint(Some(b"ab"), Some(b"c")),
            fingerprint(Some(b"a"), Some(b"bc"))
        );
        // A fixed vector: a stored fingerprint must mean the same in every later release.
        assert_eq!(fingerprint(None, None), fingerprint(Some(b""), Some(b"")));
        assert_eq!(
            fingerprint(Some(b"k"), Some(b"v")),
            0x383b_c7ca_4e2d_01be_u64 as i64
        );
    }
}

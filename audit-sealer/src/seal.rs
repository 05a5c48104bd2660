//! One partition's sealing state, without I/O: the chain over the records read so far, the
//! last checkpoint published, and when the next one is due.

use std::time::Duration;

use chrono::{DateTime, Utc};
use events::audit::{AUDIT_CHECKPOINT_SEALED, AuditCheckpoint};
use platform::chain::{Chain, checkpoint_hash};
use uuid::Uuid;

/// When checkpoints are written.
#[derive(Debug, Clone, Copy)]
pub struct SealPolicy {
    /// Every partition gets a checkpoint at least this often, with or without new records,
    /// so that a log truncated after its newest checkpoint shows as a stale checkpoint.
    pub interval: Duration,
    /// A checkpoint is written as soon as this many records wait.
    pub max_records: i64,
}

/// A partition's sealing state.
#[derive(Debug, Clone)]
pub struct PartitionSeal {
    pub topic: String,
    pub partition: i32,
    chain: Chain,
    /// Sequence number of the last checkpoint (0: none yet).
    sequence: i64,
    /// Where the next checkpoint's range starts.
    sealed_end: i64,
    /// One past the last record read.
    read_end: i64,
    /// Records read since the last checkpoint.
    pending: i64,
    previous: Option<String>,
    last_sealed_at: Option<DateTime<Utc>>,
}

impl PartitionSeal {
    /// A partition never sealed: its chain starts with the first record at or after `start`
    /// (the log's first offset).
    pub fn new(topic: &str, partition: i32, start: i64) -> PartitionSeal {
        PartitionSeal {
            topic: topic.to_string(),
            partition,
            chain: Chain::genesis(topic, partition),
            sequence: 0,
            sealed_end: start,
            read_end: start,
            pending: 0,
            previous: None,
            last_sealed_at: None,
        }
    }

    /// The state the newest checkpoint (with its value bytes) left.
    pub fn resume(checkpoint: &AuditCheckpoint, value: &[u8]) -> anyhow::Result<PartitionSeal> {
        let chain =
            Chain::resume(&checkpoint.chain_hash, checkpoint.chain_length).ok_or_else(|| {
                anyhow::anyhow!(
                    "checkpoint {} of partition {} holds no SHA-256 chain hash",
                    checkpoint.sequence,
                    checkpoint.partition
                )
            })?;
        Ok(PartitionSeal {
            topic: checkpoint.topic.clone(),
            partition: checkpoint.partition,
            chain,
            sequence: checkpoint.sequence,
            sealed_end: checkpoint.end_offset,
            read_end: checkpoint.end_offset,
            pending: 0,
            previous: Some(checkpoint_hash(value)),
            last_sealed_at: Some(checkpoint.sealed_at),
        })
    }

    /// Where reading resumes.
    pub fn read_from(&self) -> i64 {
        self.read_end
    }

    /// Records read and not yet covered by a checkpoint.
    pub fn pending(&self) -> i64 {
        self.pending
    }

    pub fn last_sealed_at(&self) -> Option<DateTime<Utc>> {
        self.last_sealed_at
    }

    /// Folds the next record into the chain.
    pub fn absorb(&mut self, message: &impl rdkafka::Message) {
        self.chain.append_message(message);
        self.read_end = message.offset() + 1;
        self.pending += 1;
    }

    /// Whether a checkpoint is due at `now`.
    pub fn due(&self, now: DateTime<Utc>, policy: &SealPolicy) -> bool {
        if self.pending >= policy.max_records {
            return true;
        }
        match self.last_sealed_at {
            None => true,
            // A last checkpoint "from the future" (a clock that jumped back) does not stop the
            // checkpoints: it is due now.
            Some(at) => (now - at)
                .to_std()
                .map_or(true, |elapsed| elapsed >= policy.interval),
        }
    }

    /// The checkpoint over what was read since the last one.
    pub fn checkpoint(&self, now: DateTime<Utc>, sealer: &str) -> AuditCheckpoint {
        AuditCheckpoint {
            event_id: Uuid::now_v7(),
            event_type: AUDIT_CHECKPOINT_SEALED.to_string(),
            sealed_at: now,
            topic: self.topic.clone(),
            partition: self.partition,
            sequence: self.sequence + 1,
            start_offset: self.sealed_end,
            end_offset: self.read_end,
            record_count: self.pending,
            chain_length: self.chain.length(),
            chain_hash: self.chain.head(),
            previous_checkpoint: self.previous.clone(),
            sealer: sealer.to_string(),
        }
    }

    /// Records that `checkpoint` (made by [`Self::checkpoint`] and nothing read since) was
    /// published as `value`.
    pub fn sealed(&mut self, checkpoint: &AuditCheckpoint, value: &[u8]) {
        debug_assert_eq!(checkpoint.sequence, self.sequence + 1);
        self.sequence = checkpoint.sequence;
        self.sealed_end = checkpoint.end_offset;
        self.pending -= checkpoint.record_count;
        self.previous = Some(checkpoint_hash(value));
        self.last_sealed_at = Some(checkpoint.sealed_at);
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::OwnedMessage;
    use rdkafka::{Timestamp, message::OwnedHeaders};

    use super::*;

    fn record(offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            Some(format!("access {offset}").into_bytes()),
            Some(b"patient".to_vec()),
            "audit".into(),
            Timestamp::CreateTime(1_700_000_000_000 + offset),
            3,
            offset,
            Some(OwnedHeaders::new()),
        )
    }

    const POLICY: SealPolicy = SealPolicy {
        interval: Duration::from_secs(60),
        max_records: 3,
    };

    #[test]
    fn given_a_new_partition_when_records_arrive_then_checkpoints_chain_and_count_them() {
        let t0 = Utc::now();
        let mut seal = PartitionSeal::new("audit", 3, 0);
        assert!(
            seal.due(t0, &POLICY),
            "a partition never sealed is due at once"
        );
        let first = seal.checkpoint(t0, "test");
        assert_eq!((first.sequence, first.record_count), (1, 0));
        assert_eq!(first.previous_checkpoint, None);
        seal.sealed(&first, b"first");
        assert!(!seal.due(t0, &POLICY));

        // Offsets 1, 2 and 4: a gap (a control record) is not a missing record.
        for offset in [1, 2] {
            seal.absorb(&record(offset));
        }
        assert!(!seal.due(t0, &POLICY));
        seal.absorb(&record(4));
        assert!(seal.due(t0, &POLICY), "max_records reached");
        let second = seal.checkpoint(t0, "test");
        assert_eq!(
            (second.sequence, second.start_offset, second.end_offset),
            (2, 0, 5)
        );
        assert_eq!((second.record_count, second.chain_length), (3, 3));
        assert_eq!(
            second.previous_checkpoint.as_deref(),
            Some(checkpoint_hash(b"first").as_str())
        );
        seal.sealed(&second, b"second");
        assert_eq!(seal.pending(), 0);

        // A last checkpoint stamped in the future is due at once.
        let mut skewed = seal.clone();
        skewed.last_sealed_at = Some(t0 + chrono::Duration::hours(1));
        assert!(skewed.due(t0, &POLICY));

        // Idle: the next checkpoint comes with the interval, covering nothing new.
        let later = t0 + chrono::Duration::seconds(61);
        assert!(!seal.due(t0 + chrono::Duration::seconds(59), &POLICY));
        assert!(seal.due(later, &POLICY));
        let heartbeat = seal.checkpoint(later, "test");
        assert_eq!((heartbeat.start_offset, heartbeat.end_offset), (5, 5));
        assert_eq!(heartbeat.chain_hash, second.chain_hash);
    }

    #[test]
    fn given_a_restart_when_it_resumes_from_the_newest_checkpoint_then_the_chain_is_the_same() {
        let t0 = Utc::now();
        let mut straight = PartitionSeal::new("audit", 3, 0);
        straight.absorb(&record(0));
        let checkpoint = straight.checkpoint(t0, "a");
        straight.sealed(&checkpoint, b"bytes");
        let mut resumed = PartitionSeal::resume(&checkpoint, b"bytes").unwrap();
        assert_eq!(resumed.read_from(), 1);
        for seal in [&mut straight, &mut resumed] {
            seal.absorb(&record(1));
        }
        let (a, b) = (straight.checkpoint(t0, "a"), resumed.checkpoint(t0, "b"));
        assert_eq!(
            (
                a.chain_hash,
                a.chain_length,
                a.sequence,
                a.previous_checkpoint
            ),
            (
                b.chain_hash,
                b.chain_length,
                b.sequence,
                b.previous_checkpoint
            )
        );
    }
}

//! Where in a partition of the audit log a time range starts, so that `audit --from` over six
//! years reads the range, not the whole partition.
//!
//! The broker is asked first (Kafka's offsets-for-times); its answer is checked against the
//! records around it, because the embedded tansu 0.6.0 answers every such request with
//! offset 0. When the answer does not hold, a binary search over offsets by record timestamp
//! finds the start. Offsets may have gaps (control records, transactions): each probe reads
//! the first record at or after an offset. Writers' clocks differ a little, so the search
//! aims a few minutes early, and the replay still filters every record by its time.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::audit::ReplayContext;

/// The first offset in `[low, high)` whose record's timestamp is at or after `at` (`high` if
/// none), given `first_from(offset)`: the offset and timestamp of the first record at or after
/// an offset (`None` past the end).
pub fn first_at_or_after(
    low: i64,
    high: i64,
    at: i64,
    mut first_from: impl FnMut(i64) -> anyhow::Result<Option<(i64, i64)>>,
) -> anyhow::Result<i64> {
    let (mut lo, mut hi) = (low, high);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match first_from(mid)? {
            Some((offset, timestamp)) if timestamp < at => lo = offset + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// The offset and timestamp (ms) of the first record at or after `offset`.
fn probe(
    consumer: &BaseConsumer<ReplayContext>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<Option<(i64, i64)>> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out probing the audit log"
        );
        match consumer.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Ok(message)) => {
                let timestamp = message.timestamp().to_millis().unwrap_or(i64::MIN);
                return Ok(Some((message.offset(), timestamp)));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(None),
            Some(Err(e)) => return Err(e).context("probing the audit log"),
        }
    }
}

/// Where to start reading `partition` for records at or after `from`; the second value says
/// whether the broker's own answer held.
/// `clock_skew`: how much earlier than `from` to aim, for writers whose clocks run apart.
pub fn start_offset(
    consumer: &BaseConsumer<ReplayContext>,
    topic: &str,
    partition: i32,
    (low, high): (i64, i64),
    from: DateTime<Utc>,
    clock_skew: chrono::Duration,
) -> anyhow::Result<(i64, bool)> {
    let at = (from - clock_skew).timestamp_millis();
    let mut query = TopicPartitionList::new();
    query.add_partition_offset(topic, partition, Offset::Offset(at))?;
    let answered = consumer
        .offsets_for_times(query, Duration::from_secs(10))
        .ok()
        .and_then(|list| {
            list.find_partition(topic, partition)
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => Some(o.clamp(low, high)),
                    Offset::End => Some(high),
                    _ => None,
                })
        });
    if let Some(candidate) = answered {
        // It holds if its record is not before `at` and the one before it is.
        let here_ok = probe(consumer, topic, partition, candidate)?
            .is_none_or(|(_, timestamp)| timestamp >= at);
        let before_ok = candidate == low
            || probe(consumer, topic, partition, candidate - 1)?
                .is_some_and(|(offset, timestamp)| offset >= candidate || timestamp < at);
        if here_ok && before_ok {
            return Ok((candidate, true));
        }
    }
    let found = first_at_or_after(low, high, at, |offset| {
        probe(consumer, topic, partition, offset)
    })?;
    Ok((found, false))
}

#[cfg(test)]
mod tests {
    use super::first_at_or_after;

    /// A partition: (offset, timestamp) records, with gaps in the offsets.
    fn log() -> Vec<(i64, i64)> {
        vec![
            (0, 10),
            (1, 20),
            (4, 30),
            (5, 30),
            (6, 40),
            (9, 50),
            (10, 60),
        ]
    }

    fn first_from(log: &[(i64, i64)]) -> impl FnMut(i64) -> anyhow::Result<Option<(i64, i64)>> {
        move |offset| Ok(log.iter().copied().find(|(o, _)| *o >= offset))
    }

    #[test]
    fn the_search_finds_the_first_record_at_or_after_a_time_across_offset_gaps() {
        let log = log();
        for (at, expected) in [
            (0, 0),
            (10, 0),
            (15, 1),
            (25, 2),
            (30, 2),
            (35, 6),
            (41, 7),
            (60, 10),
            (61, 11),
        ] {
            let found = first_at_or_after(0, 11, at, first_from(&log)).unwrap();
            // Reading from `found` starts at the first record at or after `at`.
            let first = log.iter().find(|(o, _)| *o >= found).map(|(o, _)| *o);
            let wanted = log.iter().find(|(_, t)| *t >= at).map(|(o, _)| *o);
            assert_eq!(
                first, wanted,
                "at {at}: found {found}, expected about {expected}"
            );
        }
    }

    #[test]
    fn a_search_probes_logarithmically_many_records() {
        let log: Vec<(i64, i64)> = (0..1_000_000).map(|o| (o, o * 2)).collect();
        let mut probes = 0;
        let found = first_at_or_after(0, 1_000_000, 1_000_001, |offset| {
            probes += 1;
            Ok(log.get(offset as usize).copied())
        })
        .unwrap();
        assert_eq!(found, 500_001);
        assert!(probes <= 21, "{probes} probes");
    }
}

//! The audit log checked against its checkpoints (`replay-tool audit verify`): each
//! partition's records are folded into the same hash chain the sealer keeps
//! (`platform::chain`) and compared with every signed checkpoint, so that a record changed,
//! deleted, inserted or moved after it was sealed is found, with its offset, and so is a lost,
//! forged or stale checkpoint. Pure: the caller reads the topics.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use events::audit::AuditCheckpoint;
use platform::chain::Chain;
use platform::signing::SignatureFault;

/// What is wrong, at one offset of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    /// No signature or key id: not written by an audit writer.
    Unsigned,
    /// Signed by a key the keyring does not trust.
    UnknownKey,
    /// The signature does not match and the record was not sealed otherwise: written wrongly
    /// signed (a forger claiming a trusted key).
    BadSignature,
    /// Sealed, then changed: its bytes no longer match its signature or the chain.
    AlteredRecord,
    /// Sealed, then deleted from the middle of the log.
    MissingRecord,
    /// Sealed records missing from the end of a checkpoint's range: the log was cut short.
    TruncatedRange,
    /// More records in a sealed range than were sealed.
    InsertedRecord,
    /// As many records as were sealed, all correctly signed, in another order or replaced.
    ReorderedRecord,
    /// A checkpoint is missing from the checkpoints topic, or a partition has none.
    MissingCheckpoint,
    /// A checkpoint that is unsigned, wrongly signed, does not decode, or does not follow the
    /// previous one.
    BrokenCheckpoint,
    /// The newest checkpoint is older than the sealing interval allows: the sealer is not
    /// running, or the log's tail (with its checkpoints) was cut.
    StaleCheckpoint,
}

impl From<SignatureFault> for Kind {
    fn from(fault: SignatureFault) -> Self {
        match fault {
            SignatureFault::Unsigned => Kind::Unsigned,
            SignatureFault::UnknownKey => Kind::UnknownKey,
            SignatureFault::BadSignature => Kind::BadSignature,
        }
    }
}

impl Kind {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kind::Unsigned => "unsigned record (not written by an audit writer)",
            Kind::UnknownKey => "signed by a key the keyring does not trust",
            Kind::BadSignature => "signature does not match (written by someone else)",
            Kind::AlteredRecord => "record changed after it was sealed",
            Kind::MissingRecord => "sealed record(s) deleted",
            Kind::TruncatedRange => "sealed records cut from the end of the log",
            Kind::InsertedRecord => "record inserted into a sealed range",
            Kind::ReorderedRecord => "sealed records reordered or replaced",
            Kind::MissingCheckpoint => "checkpoint missing",
            Kind::BrokenCheckpoint => "checkpoint broken",
            Kind::StaleCheckpoint => "newest checkpoint too old",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Finding {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
}

/// A checkpoint as read from its topic.
#[derive(Debug, Clone)]
pub(crate) struct ReadCheckpoint {
    pub(crate) checkpoint: AuditCheckpoint,
    /// SHA-256 of its value bytes (what the next one names).
    pub(crate) value_hash: String,
    /// Its offset in the checkpoints topic.
    pub(crate) offset: i64,
    pub(crate) signature: Result<(), SignatureFault>,
}

/// What verify found in one partition.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct PartitionSummary {
    pub(crate) partition: i32,
    pub(crate) records: u64,
    /// Records whose signature holds.
    pub(crate) verified: u64,
    /// Checkpoints that matched the log.
    pub(crate) checkpoints: u64,
    /// The last offset covered by a checkpoint.
    pub(crate) sealed_through: Option<i64>,
    /// Records after the newest checkpoint (not sealed yet).
    pub(crate) unsealed: u64,
    /// Records written before the first checkpoint's range, or in a range whose earlier
    /// checkpoints expired with the log's retention: signatures checked, chain not.
    pub(crate) unanchored: u64,
    pub(crate) newest_checkpoint: Option<DateTime<Utc>>,
}

/// The records of one checkpoint's range seen so far.
#[derive(Debug, Default)]
struct Range {
    count: i64,
    last: Option<i64>,
    first_gap: Option<i64>,
    faults: Vec<(i64, SignatureFault)>,
}

/// Checks one partition's records, in offset order, against its checkpoints.
pub(crate) struct PartitionCheck {
    summary: PartitionSummary,
    pending: VecDeque<ReadCheckpoint>,
    /// `None` until anchored (when the first checkpoint is not the partition's first).
    chain: Option<Chain>,
    range: Range,
    /// The end of the newest checkpoint closed.
    closed_end: Option<i64>,
    newest: Option<AuditCheckpoint>,
    findings: Vec<Finding>,
}

impl PartitionCheck {
    /// `checkpoints` in the order of the checkpoints topic; `log_start` is the partition's
    /// first offset (later than 0 once retention deleted records); a checkpoint sealed before
    /// `expired_before` is one whose records retention may have deleted.
    pub(crate) fn new(
        topic: &str,
        partition: i32,
        checkpoints: Vec<ReadCheckpoint>,
        log_start: i64,
        expired_before: DateTime<Utc>,
    ) -> PartitionCheck {
        let mut findings = Vec::new();
        let mut trusted: VecDeque<ReadCheckpoint> = VecDeque::new();
        let finding = |offset, kind, detail: String| Finding {
            partition,
            offset,
            kind,
            detail: Some(detail),
        };
        // Ranges the log no longer holds from their start: gone with retention (nothing to
        // check), or deleted early (a finding).
        let mut kept = Vec::new();
        let mut deleted_early = None;
        for read in checkpoints {
            let cp = &read.checkpoint;
            if read.signature.is_ok() && cp.start_offset < log_start {
                if cp.sealed_at >= expired_before && deleted_early.is_none() {
                    deleted_early = Some(finding(
                        cp.start_offset,
                        Kind::MissingRecord,
                        format!(
                            "the log starts at offset {log_start}, but checkpoint {} sealed records from offset {} at {}, within the retention period: they were deleted early",
                            cp.sequence,
                            cp.start_offset,
                            cp.sealed_at.to_rfc3339()
                        ),
                    ));
                }
                if cp.end_offset <= log_start {
                    continue;
                }
            }
            kept.push(read);
        }
        findings.extend(deleted_early);
        for read in kept {
            let cp = &read.checkpoint;
            if let Err(fault) = read.signature {
                findings.push(finding(
                    cp.start_offset,
                    Kind::BrokenCheckpoint,
                    format!(
                        "checkpoint {} (offset {} of the checkpoints topic): {}",
                        cp.sequence,
                        read.offset,
                        Kind::from(fault).describe()
                    ),
                ));
                continue;
            }
            match trusted.back().map(|r| &r.checkpoint) {
                None if cp.sequence > 1 && log_start == 0 && cp.sealed_at >= expired_before => findings.push(finding(
                    log_start,
                    Kind::MissingCheckpoint,
                    format!(
                        "the first checkpoint is number {}: 1..{} are missing and the log has lost nothing to retention",
                        cp.sequence,
                        cp.sequence - 1
                    ),
                )),
                None => {}
                Some(prev) if cp.sequence <= prev.sequence => {
                    findings.push(finding(
                        cp.start_offset,
                        Kind::BrokenCheckpoint,
                        format!(
                            "checkpoint {} (offset {} of the checkpoints topic) repeats or goes back from {}",
                            cp.sequence, read.offset, prev.sequence
                        ),
                    ));
                    continue;
                }
                Some(prev) if cp.sequence > prev.sequence + 1 => findings.push(finding(
                    prev.end_offset,
                    Kind::MissingCheckpoint,
                    format!(
                        "checkpoints {}..{} are missing (between offsets {} and {} of the checkpoints topic)",
                        prev.sequence + 1,
                        cp.sequence - 1,
                        trusted.back().map(|r| r.offset).unwrap_or_default(),
                        read.offset
                    ),
                )),
                Some(prev) => {
                    let previous = &trusted.back().expect("has a previous").value_hash;
                    if cp.previous_checkpoint.as_deref() != Some(previous.as_str())
                        || cp.start_offset != prev.end_offset
                        || cp.chain_length != prev.chain_length + cp.record_count
                    {
                        findings.push(finding(
                            cp.start_offset,
                            Kind::BrokenCheckpoint,
                            format!(
                                "checkpoint {} (offset {} of the checkpoints topic) does not follow checkpoint {}",
                                cp.sequence, read.offset, prev.sequence
                            ),
                        ));
                    }
                }
            }
            trusted.push_back(read);
        }
        // Checked from genesis only when the first checkpoint is the partition's first and
        // the log still holds its whole range; otherwise from the first checkpoint's head.
        let chain = match trusted.front() {
            Some(first)
                if first.checkpoint.sequence == 1 && first.checkpoint.start_offset >= log_start =>
            {
                Some(Chain::genesis(topic, partition))
            }
            _ => None,
        };
        PartitionCheck {
            summary: PartitionSummary {
                partition,
                ..Default::default()
            },
            pending: trusted,
            chain,
            range: Range::default(),
            closed_end: None,
            newest: None,
            findings,
        }
    }

    /// The next record of the partition and whether its signature holds.
    pub(crate) fn record(
        &mut self,
        message: &impl rdkafka::Message,
        signature: Result<(), SignatureFault>,
    ) {
        let offset = message.offset();
        self.summary.records += 1;
        while self
            .pending
            .front()
            .is_some_and(|r| r.checkpoint.end_offset <= offset)
        {
            self.close(false);
        }
        // Inside a checkpoint's range, or past a checkpoint (a lost checkpoint's range is
        // chained on and checked by the next one).
        let chained = self.pending.front().is_some_and(|next| {
            offset >= next.checkpoint.start_offset || self.closed_end.is_some()
        });
        if chained {
            if let Some(chain) = &mut self.chain {
                chain.append_message(message);
            }
            let expected = self.range.last.map(|last| last + 1).or(self.closed_end);
            let range = &mut self.range;
            if let Some(expected) = expected.filter(|e| offset > *e) {
                range.first_gap.get_or_insert(expected);
            }
            range.count += 1;
            range.last = Some(offset);
            if let Err(fault) = signature {
                range.faults.push((offset, fault));
            }
        } else {
            if self.pending.is_empty() {
                self.summary.unsealed += 1;
            } else {
                self.summary.unanchored += 1;
            }
            self.signature_finding(offset, signature);
        }
        if signature.is_ok() {
            self.summary.verified += 1;
        }
    }

    fn signature_finding(&mut self, offset: i64, signature: Result<(), SignatureFault>) {
        if let Err(fault) = signature {
            self.findings.push(Finding {
                partition: self.summary.partition,
                offset,
                kind: fault.into(),
                detail: None,
            });
        }
    }

    /// Compares the chain with the next checkpoint, whose range has been read.
    fn close(&mut self, at_end: bool) {
        let read = self.pending.pop_front().expect("a checkpoint to close");
        let cp = read.checkpoint;
        let range = std::mem::take(&mut self.range);
        let partition = self.summary.partition;
        let mut faults = range.faults;
        if let Some(chain) = &self.chain {
            let (length, expected) = (chain.length(), cp.chain_length);
            let held = chain.head() == cp.chain_hash && length == expected;
            let describe = |what: String| {
                Some(format!(
                    "checkpoint {} sealed offsets {}..{} (chain length {expected}); {what}",
                    cp.sequence,
                    cp.start_offset,
                    cp.end_offset - 1
                ))
            };
            let mut chain_finding = None;
            if !held {
                // Sealed as written, changed since: the signature and the chain both break.
                let altered: Vec<i64> = faults
                    .iter()
                    .filter(|f| f.1 == SignatureFault::BadSignature)
                    .map(|f| f.0)
                    .collect();
                faults.retain(|f| f.1 != SignatureFault::BadSignature);
                for offset in &altered {
                    self.findings.push(Finding {
                        partition,
                        offset: *offset,
                        kind: Kind::AlteredRecord,
                        detail: describe("its bytes no longer match its signature".into()),
                    });
                }
                chain_finding = if length < expected {
                    let missing = expected - length;
                    let cut = at_end && range.last.is_none_or(|last| last + 1 < cp.end_offset);
                    Some(if cut {
                        let from = range.last.map_or(cp.start_offset, |l| l + 1);
                        Finding {
                            partition,
                            offset: from,
                            kind: Kind::TruncatedRange,
                            detail: describe(format!(
                                "the log ends at offset {}: {missing} sealed record(s) are gone",
                                from - 1
                            )),
                        }
                    } else {
                        Finding {
                            partition,
                            offset: range.first_gap.unwrap_or(cp.start_offset),
                            kind: Kind::MissingRecord,
                            detail: describe(format!("the log holds {missing} record(s) fewer")),
                        }
                    })
                } else if length > expected {
                    Some(Finding {
                        partition,
                        offset: faults.first().map_or(cp.start_offset, |f| f.0),
                        kind: Kind::InsertedRecord,
                        detail: describe(format!(
                            "the log holds {} record(s) more",
                            length - expected
                        )),
                    })
                } else if altered.is_empty() {
                    Some(Finding {
                        partition,
                        offset: cp.start_offset,
                        kind: Kind::ReorderedRecord,
                        detail: describe("every record is signed but the chain differs".into()),
                    })
                } else {
                    None
                };
            }
            self.findings.extend(chain_finding);
            if held {
                self.summary.checkpoints += 1;
                self.summary.sealed_through = Some(cp.end_offset - 1).filter(|o| *o >= 0);
            }
        } else {
            self.summary.unanchored += range.count as u64;
        }
        for (offset, fault) in faults {
            self.signature_finding(offset, Err(fault));
        }
        // Whatever happened, the next range is checked from this checkpoint's head.
        self.chain = Chain::resume(&cp.chain_hash, cp.chain_length);
        self.closed_end = Some(cp.end_offset);
        self.summary.newest_checkpoint = Some(cp.sealed_at);
        self.newest = Some(cp);
    }

    /// Closes the remaining checkpoints once the log is read, checks that the newest is
    /// recent enough, and returns the summary and the findings in offset order.
    pub(crate) fn finish(
        mut self,
        now: DateTime<Utc>,
        max_age: chrono::Duration,
    ) -> (PartitionSummary, Vec<Finding>) {
        while !self.pending.is_empty() {
            self.close(true);
        }
        let partition = self.summary.partition;
        match &self.newest {
            None => self.findings.push(Finding {
                partition,
                offset: 0,
                kind: Kind::MissingCheckpoint,
                detail: Some("no checkpoint: the partition was never sealed (is the audit sealer running?)".into()),
            }),
            Some(newest) if now - newest.sealed_at > max_age => self.findings.push(Finding {
                partition,
                offset: newest.end_offset,
                kind: Kind::StaleCheckpoint,
                detail: Some(format!(
                    "the newest checkpoint ({}) was sealed at {}, more than {} s ago: records after offset {} are not sealed",
                    newest.sequence,
                    newest.sealed_at.to_rfc3339(),
                    max_age.num_seconds(),
                    newest.end_offset - 1
                )),
            }),
            Some(_) => {}
        }
        self.findings.sort_by_key(|f| f.offset);
        (self.summary, self.findings)
    }
}

#[cfg(test)]
mod tests {
    use audit_sealer::{PartitionSeal, SealPolicy};
    use platform::chain::checkpoint_hash;
    use rdkafka::Timestamp;
    use rdkafka::message::{OwnedHeaders, OwnedMessage};

    use super::*;

    const TOPIC: &str = "healthcare.audit.phi_access";

    fn record(offset: i64, value: &str) -> OwnedMessage {
        OwnedMessage::new(
            Some(value.as_bytes().to_vec()),
            Some(b"patient".to_vec()),
            TOPIC.into(),
            Timestamp::CreateTime(1_700_000_000_000),
            2,
            offset,
            Some(OwnedHeaders::new()),
        )
    }

    /// A log of `n` records at offsets 0.. (skipping `gaps`), sealed every `every` records by
    /// the sealer's own code.
    fn sealed_log(n: i64, gaps: &[i64], every: i64) -> (Vec<OwnedMessage>, Vec<ReadCheckpoint>) {
        let policy = SealPolicy {
            interval: std::time::Duration::from_secs(3600),
            max_records: every,
        };
        let now = Utc::now();
        let mut seal = PartitionSeal::new(TOPIC, 2, 0);
        let mut checkpoints = Vec::new();
        let mut publish = |seal: &mut PartitionSeal| {
            let checkpoint = seal.checkpoint(now, "test");
            let value = format!("checkpoint {}", checkpoint.sequence).into_bytes();
            seal.sealed(&checkpoint, &value);
            checkpoints.push(ReadCheckpoint {
                value_hash: checkpoint_hash(&value),
                offset: checkpoints.len() as i64,
                checkpoint,
                signature: Ok(()),
            });
        };
        publish(&mut seal);
        let mut log = Vec::new();
        for offset in (0..n + gaps.len() as i64).filter(|o| !gaps.contains(o)) {
            let message = record(offset, &format!("access {offset}"));
            seal.absorb(&message);
            log.push(message);
            if seal.due(now, &policy) {
                publish(&mut seal);
            }
        }
        if seal.pending() > 0 {
            publish(&mut seal);
        }
        (log, checkpoints)
    }

    /// Verifies `log`; records whose value ends in `!` fail their signature with `fault`.
    fn check(
        log: &[OwnedMessage],
        checkpoints: Vec<ReadCheckpoint>,
        fault: SignatureFault,
        age: chrono::Duration,
    ) -> (PartitionSummary, Vec<(i64, Kind)>) {
        check_from(log, checkpoints, fault, age, 0)
    }

    fn check_from(
        log: &[OwnedMessage],
        checkpoints: Vec<ReadCheckpoint>,
        fault: SignatureFault,
        age: chrono::Duration,
        log_start: i64,
    ) -> (PartitionSummary, Vec<(i64, Kind)>) {
        let expired_before = Utc::now() - chrono::Duration::days(2190);
        let mut check = PartitionCheck::new(TOPIC, 2, checkpoints, log_start, expired_before);
        for message in log {
            let bad = rdkafka::Message::payload(message).is_some_and(|v| v.ends_with(b"!"));
            check.record(message, if bad { Err(fault) } else { Ok(()) });
        }
        let (summary, findings) = check.finish(Utc::now() + age, chrono::Duration::seconds(300));
        (
            summary,
            findings.into_iter().map(|f| (f.offset, f.kind)).collect(),
        )
    }

    fn fresh(log: &[OwnedMessage], checkpoints: Vec<ReadCheckpoint>) -> Vec<(i64, Kind)> {
        check(
            log,
            checkpoints,
            SignatureFault::BadSignature,
            chrono::Duration::zero(),
        )
        .1
    }

    #[test]
    fn a_sealed_log_with_offset_gaps_verifies_clean() {
        let (log, checkpoints) = sealed_log(10, &[4], 3);
        let (summary, findings) = check(
            &log,
            checkpoints,
            SignatureFault::BadSignature,
            chrono::Duration::zero(),
        );
        assert_eq!(findings, vec![]);
        assert_eq!((summary.records, summary.verified), (10, 10));
        assert_eq!(
            (
                summary.checkpoints,
                summary.sealed_through,
                summary.unsealed
            ),
            (5, Some(10), 0)
        );
    }

    #[test]
    fn given_a_sealed_log_when_a_record_is_changed_then_it_is_named_as_altered() {
        let (mut log, checkpoints) = sealed_log(10, &[], 3);
        log[4] = record(4, "access 4 changed!");
        assert_eq!(fresh(&log, checkpoints), vec![(4, Kind::AlteredRecord)]);
    }

    #[test]
    fn records_gone_with_retention_are_not_findings_and_records_deleted_early_are() {
        let (log, mut checkpoints) = sealed_log(10, &[], 3);
        // Retention deleted the first four records (and, in segments, not yet their
        // checkpoints), which were sealed six years ago.
        let long_ago = Utc::now() - chrono::Duration::days(2200);
        for c in &mut checkpoints {
            c.checkpoint.sealed_at = long_ago;
        }
        let (summary, findings) = check_from(
            &log[4..],
            checkpoints.clone(),
            SignatureFault::BadSignature,
            chrono::Duration::zero(),
            4,
        );
        // Only that the newest checkpoint is old: the sealer stopped long ago.
        assert_eq!(findings, vec![(10, Kind::StaleCheckpoint)]);
        assert_eq!(summary.records, 6);
        // The same log cut yesterday: the sealed records were deleted early.
        for c in &mut checkpoints {
            c.checkpoint.sealed_at = Utc::now();
        }
        let (_, findings) = check_from(
            &log[4..],
            checkpoints,
            SignatureFault::BadSignature,
            chrono::Duration::zero(),
            4,
        );
        assert_eq!(findings, vec![(0, Kind::MissingRecord)]);
    }

    #[test]
    fn a_change_and_a_deletion_in_one_range_are_both_named() {
        let (mut log, checkpoints) = sealed_log(10, &[], 10);
        log[2] = record(2, "changed!");
        log.remove(5);
        assert_eq!(
            fresh(&log, checkpoints),
            vec![(2, Kind::AlteredRecord), (5, Kind::MissingRecord)]
        );
    }

    #[test]
    fn given_a_sealed_log_when_a_record_is_deleted_then_its_offset_is_named() {
        let (mut log, checkpoints) = sealed_log(10, &[], 3);
        log.remove(4);
        assert_eq!(
            fresh(&log, checkpoints.clone()),
            vec![(4, Kind::MissingRecord)]
        );
        // The first of a range, too.
        let (mut log, _) = sealed_log(10, &[], 3);
        log.remove(3);
        assert_eq!(fresh(&log, checkpoints), vec![(3, Kind::MissingRecord)]);
    }

    #[test]
    fn given_a_sealed_log_when_its_tail_is_cut_then_the_truncation_is_named() {
        let (mut log, checkpoints) = sealed_log(10, &[], 4);
        log.truncate(9);
        assert_eq!(fresh(&log, checkpoints), vec![(9, Kind::TruncatedRange)]);
    }

    #[test]
    fn given_a_sealed_log_when_a_record_is_slipped_into_a_gap_then_it_is_named() {
        let (mut log, checkpoints) = sealed_log(10, &[5], 4);
        log.insert(5, record(5, "forged!"));
        let findings = check(
            &log,
            checkpoints,
            SignatureFault::Unsigned,
            chrono::Duration::zero(),
        )
        .1;
        assert_eq!(
            findings,
            vec![(5, Kind::InsertedRecord), (5, Kind::Unsigned)]
        );
    }

    #[test]
    fn given_a_sealed_log_when_two_records_swap_places_then_the_range_is_named() {
        let (mut log, checkpoints) = sealed_log(10, &[], 5);
        log[6] = record(6, "access 7");
        log[7] = record(7, "access 6");
        assert_eq!(fresh(&log, checkpoints), vec![(5, Kind::ReorderedRecord)]);
    }

    #[test]
    fn a_lost_checkpoint_is_named_and_its_records_are_still_checked_by_the_next() {
        let (log, mut checkpoints) = sealed_log(10, &[], 3);
        checkpoints.remove(2);
        assert_eq!(
            fresh(&log, checkpoints.clone()),
            vec![(3, Kind::MissingCheckpoint)]
        );
        let mut changed = log.clone();
        changed[4] = record(4, "changed!");
        assert_eq!(
            fresh(&changed, checkpoints),
            vec![(3, Kind::MissingCheckpoint), (4, Kind::AlteredRecord)]
        );
    }

    #[test]
    fn a_forged_or_unlinked_checkpoint_is_broken() {
        let (log, mut checkpoints) = sealed_log(10, &[], 3);
        checkpoints[2].signature = Err(SignatureFault::UnknownKey);
        let findings = fresh(&log, checkpoints);
        assert!(
            findings.contains(&(3, Kind::BrokenCheckpoint)),
            "{findings:?}"
        );
        let (log, mut checkpoints) = sealed_log(10, &[], 3);
        checkpoints[2].checkpoint.previous_checkpoint = Some("0".repeat(64));
        assert_eq!(fresh(&log, checkpoints), vec![(3, Kind::BrokenCheckpoint)]);
    }

    #[test]
    fn an_old_newest_checkpoint_is_stale_and_a_partition_without_any_is_unsealed() {
        let (log, checkpoints) = sealed_log(4, &[], 3);
        let (_, findings) = check(
            &log,
            checkpoints,
            SignatureFault::BadSignature,
            chrono::Duration::seconds(301),
        );
        assert_eq!(findings, vec![(4, Kind::StaleCheckpoint)]);
        let (summary, findings) = check(
            &log,
            Vec::new(),
            SignatureFault::BadSignature,
            chrono::Duration::zero(),
        );
        assert_eq!(findings, vec![(0, Kind::MissingCheckpoint)]);
        assert_eq!(summary.unsealed, 4);
    }

    #[test]
    fn records_after_the_newest_checkpoint_are_unsealed_and_only_their_signatures_count() {
        let (mut log, checkpoints) = sealed_log(6, &[], 3);
        log.push(record(6, "later"));
        log.push(record(7, "forged!"));
        let (summary, findings) = check(
            &log,
            checkpoints,
            SignatureFault::Unsigned,
            chrono::Duration::zero(),
        );
        assert_eq!(findings, vec![(7, Kind::Unsigned)]);
        assert_eq!((summary.unsealed, summary.sealed_through), (2, Some(5)));
    }
}

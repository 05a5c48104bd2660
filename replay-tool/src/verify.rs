//! `replay-tool audit verify`: reads every partition of `healthcare.audit.phi_access` to its
//! end, checks each record's signature against the writers' keyring, and recomputes each
//! partition's hash chain against the sealer's signed checkpoints
//! (`healthcare.audit.phi_access.checkpoints`, see `seals`). A record produced straight to
//! the topic (unsigned), signed by a key the keyring does not trust, changed, deleted,
//! inserted or moved after it was sealed, a lost or broken checkpoint, and a newest
//! checkpoint older than the sealing interval allows are findings, each with its partition
//! and offset; the topics' retention is read from the broker. Exit status: 0 clean,
//! 2 findings, 1 the check could not run.
//!
//! `replay-tool audit keygen` makes a writer's signing key and appends its public key to a
//! keyring.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use events::audit::AuditCheckpoint;
use events::catalog::{AUDIT_CHECKPOINTS, AUDIT_PHI_ACCESS, topic};
use platform::config::KafkaArgs;
use platform::signing::{Keyring, RecordSigner};

use crate::seals::{self, PartitionCheck, ReadCheckpoint};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The writers' public keys: `<key id> <public key>` lines (see `audit keygen`).
    #[arg(long, env = "HEALTHPLANE_AUDIT_KEYRING")]
    keyring: PathBuf,
    /// The keys trusted to sign checkpoints, when they are kept apart from the writers' (so
    /// that a writer's key, e.g. the internet-facing query API's, cannot sign a checkpoint);
    /// by default the keyring above.
    #[arg(long, env = "HEALTHPLANE_AUDIT_SEALER_KEYRING")]
    sealer_keyring: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// A partition whose newest checkpoint is older than this (seconds) is a finding: the
    /// sealer stopped, or the log's tail was cut with its checkpoints. The sealer writes one
    /// per partition every interval (60 s by default).
    #[arg(long, default_value_t = 300)]
    max_checkpoint_age: u64,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key (created with mode 0600; never overwritten).
    #[arg(long)]
    key: PathBuf,
    /// The keyring to add the public key to (created if missing).
    #[arg(long)]
    keyring: PathBuf,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let (private, line) = RecordSigner::generate()?;
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    file.open(&args.key)
        .with_context(|| {
            format!(
                "cannot create {} (it is never overwritten)",
                args.key.display()
            )
        })?
        .write_all(format!("{private}\n").as_bytes())?;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&args.keyring)
        .with_context(|| format!("cannot open the keyring {}", args.keyring.display()))?
        .write_all(format!("{line}\n").as_bytes())?;
    println!("{line}");
    Ok(())
}

/// The audit topic's retention as the broker describes it, checked against the catalog's
/// six years and deletion-only cleanup (a compacted audit log would lose accesses).
#[derive(Debug, serde::Serialize)]
struct RetentionCheck {
    topic: &'static str,
    retention_ms: Option<String>,
    cleanup_policy: Option<String>,
    /// What is wrong with it; empty when it holds.
    problems: Vec<String>,
    /// Why the configuration could not be read (then nothing was checked).
    unavailable: Option<String>,
}

async fn retention(kafka: &KafkaArgs, name: &'static str) -> RetentionCheck {
    let spec = topic(name).expect("audit topics are in the catalog");
    match platform::kafka::topic_config(&kafka.kafka_brokers, name).await {
        Err(e) => RetentionCheck {
            topic: name,
            retention_ms: None,
            cleanup_policy: None,
            problems: Vec::new(),
            unavailable: Some(format!("{e:#}")),
        },
        Ok(config) => {
            let retention_ms = config.get("retention.ms").cloned();
            let cleanup_policy = config.get("cleanup.policy").cloned();
            let mut problems = Vec::new();
            match retention_ms.as_deref().map(str::parse::<i64>) {
                Some(Ok(ms)) if ms < 0 || ms >= spec.retention_ms() => {}
                Some(Ok(ms)) => problems.push(format!(
                    "retention.ms is {ms}: records older than {} days are deleted, the log must keep {} days",
                    ms / 86_400_000,
                    spec.retention_days
                )),
                _ => problems.push("retention.ms is not described".into()),
            }
            if cleanup_policy.as_deref() != Some("delete") {
                problems.push(format!(
                    "cleanup.policy is {}: it must be delete (compaction drops accesses)",
                    cleanup_policy.as_deref().unwrap_or("not described")
                ));
            }
            RetentionCheck {
                topic: name,
                retention_ms,
                cleanup_policy,
                problems,
                unavailable: None,
            }
        }
    }
}

/// Reads every partition of the audit log from its start (or from where it reaches
/// `since`) to the end the broker reports when a fetch comes back empty, handing each record to
/// `each`; returns how many records it read from each partition.
pub(crate) async fn scan_audit_log(
    kafka: &KafkaArgs,
    since: Option<crate::audit::Since>,
    mut each: impl AsyncFnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<BTreeMap<i32, u64>> {
    let partitions = topic(AUDIT_PHI_ACCESS)
        .expect("audit topic is in the catalog")
        .partitions;
    let consumer = crate::audit::replay_consumer(kafka)?;
    let mut assignment = TopicPartitionList::new();
    let mut records: BTreeMap<i32, u64> = BTreeMap::new();
    // The last offset read per partition.
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    let mut open = Vec::new();
    let mut expected = 0usize;
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(AUDIT_PHI_ACCESS, partition, Duration::from_secs(10))
            .context("cannot reach the broker to read the audit log")?;
        records.insert(partition, 0);
        let start = match since.and_then(|s| s.from.map(|from| (from, s.clock_skew))) {
            Some((from, skew)) if high > low => {
                crate::seek::start_offset(
                    &consumer,
                    AUDIT_PHI_ACCESS,
                    partition,
                    (low, high),
                    from,
                    chrono::Duration::seconds(i64::from(skew)),
                )?
                .0
            }
            _ => low,
        };
        if high > start {
            assignment.add_partition_offset(AUDIT_PHI_ACCESS, partition, Offset::Offset(start))?;
            open.push(partition);
            expected += (high - start) as usize;
        }
    }
    if !open.is_empty() {
        consumer.assign(&assignment)?;
    }
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut progress = crate::audit::ProgressLine::new();
    let mut read = 0usize;
    let expected = expected.max(1);
    while !open.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "timed out reading the audit log");
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = match message {
            Ok(m) => m,
            Err(rdkafka::error::KafkaError::PartitionEOF(partition)) => {
                open.retain(|p| *p != partition);
                continue;
            }
            Err(e) => return Err(e).context("reading the audit log"),
        };
        // Offsets only grow within a partition: a record delivered again (tansu repeats a
        // batch after a gap in the offsets) is not another record.
        let partition = message.partition();
        if last.get(&partition).is_some_and(|l| message.offset() <= *l) {
            continue;
        }
        last.insert(partition, message.offset());
        *records.entry(partition).or_default() += 1;
        read += 1;
        progress.update(read, read as f64 / expected as f64);
        each(&message).await?;
    }
    progress.finish();
    Ok(records)
}

/// Every checkpoint in the checkpoints topic, by sealed partition, with its signature
/// checked; a record that does not decode is a finding of its own.
async fn read_checkpoints(
    kafka: &KafkaArgs,
    keyring: &Keyring,
) -> anyhow::Result<(BTreeMap<i32, Vec<ReadCheckpoint>>, Vec<seals::Finding>)> {
    let codec = schemas::EventCodec::new(&kafka.schema_registry_url);
    let consumer = crate::audit::replay_consumer(kafka)?;
    let (low, high) = consumer
        .fetch_watermarks(AUDIT_CHECKPOINTS, 0, Duration::from_secs(10))
        .context("cannot reach the broker to read the checkpoints")?;
    let mut checkpoints: BTreeMap<i32, Vec<ReadCheckpoint>> = BTreeMap::new();
    let mut findings = Vec::new();
    if high <= low {
        return Ok((checkpoints, findings));
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(AUDIT_CHECKPOINTS, 0, Offset::Offset(low))?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut previous: Option<i64> = None;
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out reading the checkpoints"
        );
        let message = match consumer.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(e).context("reading the checkpoints"),
            Some(Ok(m)) => m,
        };
        // The checkpoints written while verify runs are not needed: stop at the end seen at
        // the start, even if the sealer keeps the partition from ever reporting its end.
        let last = message.offset() + 1 >= high;
        if previous.is_some_and(|p| message.offset() <= p) {
            continue; // delivered again, not another checkpoint
        }
        previous = Some(message.offset());
        let value = message.payload().unwrap_or_default();
        let signature = keyring.verify_message(AUDIT_CHECKPOINTS, &message);
        match codec.decode::<AuditCheckpoint>(Some(value)).await {
            Ok(checkpoint) if checkpoint.topic == AUDIT_PHI_ACCESS => {
                checkpoints
                    .entry(checkpoint.partition)
                    .or_default()
                    .push(ReadCheckpoint {
                        checkpoint,
                        value_hash: platform::chain::checkpoint_hash(value),
                        offset: message.offset(),
                        signature,
                    })
            }
            other => findings.push(seals::Finding {
                partition: message
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok()?.parse().ok())
                    .unwrap_or(-1),
                offset: 0,
                kind: seals::Kind::BrokenCheckpoint,
                detail: Some(format!(
                    "the record at offset {} of the checkpoints topic is not a checkpoint of the audit log ({})",
                    message.offset(),
                    match other {
                        Err(e) => e.to_string(),
                        Ok(c) => format!("it seals {}", c.topic),
                    }
                )),
            }),
        }
        if last {
            break;
        }
    }
    Ok((checkpoints, findings))
}

pub async fn verify(kafka: &KafkaArgs, args: VerifyArgs) -> anyhow::Result<()> {
    let keyring = Keyring::from_file(&args.keyring)?;
    anyhow::ensure!(
        !keyring.is_empty(),
        "the keyring {} holds no key",
        args.keyring.display()
    );
    let partitions = topic(AUDIT_PHI_ACCESS)
        .expect("audit topic is in the catalog")
        .partitions;
    let sealers = match &args.sealer_keyring {
        Some(path) => Keyring::from_file(path)?,
        None => keyring.clone(),
    };
    let (mut checkpoints, mut findings) = read_checkpoints(kafka, &sealers).await?;
    let starts = {
        let consumer = crate::audit::replay_consumer(kafka)?;
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(AUDIT_PHI_ACCESS, p, Duration::from_secs(10))
                    .map(|(low, _)| low)
                    .context("cannot reach the broker to read the audit log")
            })
            .collect::<anyhow::Result<Vec<i64>>>()?
    };
    // Records sealed before this may be gone with the log's retention (a week's slack for
    // whole segments expiring together).
    let expired_before = chrono::Utc::now()
        - chrono::Duration::milliseconds(
            topic(AUDIT_PHI_ACCESS)
                .expect("audit topic is in the catalog")
                .retention_ms(),
        )
        + chrono::Duration::days(7);
    let mut checks: BTreeMap<i32, PartitionCheck> = (0..partitions)
        .map(|p| {
            let ranges = checkpoints.remove(&p).unwrap_or_default();
            (
                p,
                PartitionCheck::new(
                    AUDIT_PHI_ACCESS,
                    p,
                    ranges,
                    starts[p as usize],
                    expired_before,
                ),
            )
        })
        .collect();
    for (partition, _) in checkpoints {
        findings.push(seals::Finding {
            partition,
            offset: 0,
            kind: seals::Kind::BrokenCheckpoint,
            detail: Some(format!(
                "checkpoints name partition {partition}, which the audit log does not have"
            )),
        });
    }
    scan_audit_log(kafka, None, async |message| {
        let signature = keyring.verify_message(AUDIT_PHI_ACCESS, message);
        if let Some(check) = checks.get_mut(&message.partition()) {
            check.record(message, signature);
        }
        Ok(())
    })
    .await?;
    let now = chrono::Utc::now();
    let max_age = chrono::Duration::seconds(args.max_checkpoint_age as i64);
    let mut reports = Vec::new();
    for check in checks.into_values() {
        let (summary, found) = check.finish(now, max_age);
        reports.push(summary);
        findings.extend(found);
    }
    let records: u64 = reports.iter().map(|r| r.records).sum();
    let retention = [
        retention(kafka, AUDIT_PHI_ACCESS).await,
        retention(kafka, AUDIT_CHECKPOINTS).await,
    ];
    let retention_problems = retention.iter().any(|r| !r.problems.is_empty());
    match args.format {
        Format::Jsonl => {
            for report in &reports {
                println!("{}", serde_json::json!({"partition_report": report}));
            }
            for finding in &findings {
                println!("{}", serde_json::json!({"finding": finding}));
            }
            for retention in &retention {
                println!("{}", serde_json::json!({ "retention": retention }));
            }
            println!(
                "{}",
                serde_json::json!({"summary": {"records": records, "findings": findings.len(), "keys": keyring.len()}})
            );
        }
        Format::Table => {
            let rows: Vec<[String; 7]> = reports
                .iter()
                .map(|r| {
                    [
                        r.partition.to_string(),
                        r.records.to_string(),
                        r.verified.to_string(),
                        r.checkpoints.to_string(),
                        r.sealed_through.map_or("-".into(), |o| o.to_string()),
                        r.unsealed.to_string(),
                        r.newest_checkpoint.map_or("none".into(), |t| {
                            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        }),
                    ]
                })
                .collect();
            let header = [
                "partition",
                "records",
                "signed ok",
                "checkpoints ok",
                "sealed through",
                "unsealed",
                "newest checkpoint",
            ];
            println!("{}", crate::audit::render_table(&header, &rows));
            for f in &findings {
                println!(
                    "FINDING partition {} offset {}: {}{}",
                    f.partition,
                    f.offset,
                    f.kind.describe(),
                    f.detail
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                );
            }
            for retention in &retention {
                match &retention.unavailable {
                    Some(why) => println!(
                        "retention of {}: not checked, the broker cannot describe the topic ({why})",
                        retention.topic
                    ),
                    None => println!(
                        "retention of {}: retention.ms={} cleanup.policy={}{}",
                        retention.topic,
                        retention.retention_ms.as_deref().unwrap_or("?"),
                        retention.cleanup_policy.as_deref().unwrap_or("?"),
                        if retention.problems.is_empty() {
                            " (six years, deletion only: ok)".to_string()
                        } else {
                            format!(": {}", retention.problems.join("; "))
                        }
                    ),
                }
            }
            println!(
                "{records} records in {partitions} partitions, {} finding(s), {} trusted key(s)",
                findings.len(),
                keyring.len()
            );
        }
    }
    if !findings.is_empty() || retention_problems {
        std::io::stdout().flush()?;
        std::process::exit(2);
    }
    Ok(())
}

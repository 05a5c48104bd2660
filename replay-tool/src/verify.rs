//! `replay-tool audit verify`: reads every partition of `healthcare.audit.phi_access` to its
//! end and checks each record's signature against the writers' keyring — a record produced
//! straight to the topic (unsigned), signed by a key the keyring does not trust, or changed
//! since it was signed is a finding, with its partition and offset. Exit status: 0 clean,
//! 2 findings, 1 the check could not run.
//!
//! `replay-tool audit keygen` makes a writer's signing key and appends its public key to a
//! keyring.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use events::catalog::{AUDIT_PHI_ACCESS, topic};
use platform::config::KafkaArgs;
use platform::signing::{KEY_ID_HEADER, Keyring, RecordSigner, SIGNATURE_HEADER, SignatureFault};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers, Message};
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
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
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

/// What is wrong with one record.
#[derive(Debug, serde::Serialize)]
struct Finding {
    partition: i32,
    offset: i64,
    kind: SignatureFault,
}

/// The audit topic's retention as the broker describes it, checked against the catalog's
/// six years and deletion-only cleanup (a compacted audit log would lose accesses).
#[derive(Debug, serde::Serialize)]
struct RetentionCheck {
    retention_ms: Option<String>,
    cleanup_policy: Option<String>,
    /// What is wrong with it; empty when it holds.
    problems: Vec<String>,
    /// Why the configuration could not be read (then nothing was checked).
    unavailable: Option<String>,
}

async fn retention(kafka: &KafkaArgs) -> RetentionCheck {
    let spec = topic(AUDIT_PHI_ACCESS).expect("audit topic is in the catalog");
    match platform::kafka::topic_config(&kafka.kafka_brokers, AUDIT_PHI_ACCESS).await {
        Err(e) => RetentionCheck {
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
                retention_ms,
                cleanup_policy,
                problems,
                unavailable: None,
            }
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct PartitionReport {
    pub(crate) partition: i32,
    pub(crate) records: u64,
    pub(crate) verified: u64,
    pub(crate) first_offset: Option<i64>,
    pub(crate) last_offset: Option<i64>,
}

/// Reads every partition of the audit log from its start to the end the broker reports when
/// a fetch comes back empty, handing each record to `each`; returns how many records each
/// partition held.
pub(crate) async fn scan_audit_log(
    kafka: &KafkaArgs,
    mut each: impl AsyncFnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<BTreeMap<i32, PartitionReport>> {
    let partitions = topic(AUDIT_PHI_ACCESS)
        .expect("audit topic is in the catalog")
        .partitions;
    let consumer = crate::audit::replay_consumer(kafka)?;
    let mut assignment = TopicPartitionList::new();
    let mut reports: BTreeMap<i32, PartitionReport> = BTreeMap::new();
    let mut open = Vec::new();
    let mut expected = 0usize;
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(AUDIT_PHI_ACCESS, partition, Duration::from_secs(10))
            .context("cannot reach the broker to read the audit log")?;
        reports.insert(
            partition,
            PartitionReport {
                partition,
                ..Default::default()
            },
        );
        if high > low {
            assignment.add_partition_offset(AUDIT_PHI_ACCESS, partition, Offset::Offset(low))?;
            open.push(partition);
            expected += (high - low) as usize;
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
        let report = reports.entry(message.partition()).or_default();
        report.records += 1;
        report.first_offset.get_or_insert(message.offset());
        report.last_offset = Some(message.offset());
        read += 1;
        progress.update(read, read as f64 / expected as f64);
        each(&message).await?;
    }
    progress.finish();
    Ok(reports)
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
    let mut findings = Vec::new();
    let mut verified: BTreeMap<i32, u64> = BTreeMap::new();
    let mut reports = scan_audit_log(kafka, async |message| {
        let header = |name: &str| {
            message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
            })
        };
        match keyring.verify(
            AUDIT_PHI_ACCESS,
            message.key().unwrap_or_default(),
            message.payload().unwrap_or_default(),
            header(KEY_ID_HEADER),
            header(SIGNATURE_HEADER),
        ) {
            Ok(()) => *verified.entry(message.partition()).or_default() += 1,
            Err(kind) => findings.push(Finding {
                partition: message.partition(),
                offset: message.offset(),
                kind,
            }),
        }
        Ok(())
    })
    .await?;
    for (partition, count) in verified {
        reports.entry(partition).or_default().verified = count;
    }
    let records: u64 = reports.values().map(|r| r.records).sum();
    let retention = retention(kafka).await;
    match args.format {
        Format::Jsonl => {
            for report in reports.values() {
                println!("{}", serde_json::json!({"partition_report": report}));
            }
            for finding in &findings {
                println!("{}", serde_json::json!({"finding": finding}));
            }
            println!("{}", serde_json::json!({ "retention": retention }));
            println!(
                "{}",
                serde_json::json!({"summary": {"records": records, "findings": findings.len(), "keys": keyring.len()}})
            );
        }
        Format::Table => {
            println!("partition  records  verified  offsets");
            for r in reports.values() {
                let range = match (r.first_offset, r.last_offset) {
                    (Some(a), Some(b)) => format!("{a}..={b}"),
                    _ => "(empty)".into(),
                };
                println!(
                    "{:<9}  {:<7}  {:<8}  {range}",
                    r.partition, r.records, r.verified
                );
            }
            for f in &findings {
                let what = match f.kind {
                    SignatureFault::Unsigned => "unsigned record (not written by an audit writer)",
                    SignatureFault::UnknownKey => "signed by a key the keyring does not trust",
                    SignatureFault::BadSignature => {
                        "signature does not match: the record was changed"
                    }
                };
                println!(
                    "FINDING partition {} offset {}: {what}",
                    f.partition, f.offset
                );
            }
            match &retention.unavailable {
                Some(why) => {
                    println!("retention: not checked, the broker cannot describe the topic ({why})")
                }
                None => println!(
                    "retention: retention.ms={} cleanup.policy={}{}",
                    retention.retention_ms.as_deref().unwrap_or("?"),
                    retention.cleanup_policy.as_deref().unwrap_or("?"),
                    if retention.problems.is_empty() {
                        " (six years, deletion only: ok)".to_string()
                    } else {
                        format!(": {}", retention.problems.join("; "))
                    }
                ),
            }
            println!(
                "{records} records in {partitions} partitions, {} finding(s), {} trusted key(s)",
                findings.len(),
                keyring.len()
            );
        }
    }
    if !findings.is_empty() || !retention.problems.is_empty() {
        std::io::stdout().flush()?;
        std::process::exit(2);
    }
    Ok(())
}

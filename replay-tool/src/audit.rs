//! `replay-tool audit`: replays `healthcare.audit.phi_access` for one patient.
//!
//! Records are keyed by patient id and partitioned like the Java client does (murmur2), so only
//! the patient's partition is read, from its start to its current end.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use events::audit::PhiAccessed;
use events::catalog::{AUDIT_PHI_ACCESS, topic};
use platform::config::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use schemas::EventCodec;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
    Csv,
}

/// `replay-tool audit`: replay the accesses that match (one patient's, or every partition's),
/// or one of the log's other tasks.
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Exit status: 0 done (or clean), 1 the command could not run (e.g. the broker \
                  or registry did not answer; the reason is on stderr), 2 verify or reconcile \
                  found something. Reports go to stdout; the summary, warnings and, on a \
                  terminal, a progress line go to stderr."
)]
pub struct AuditCommand {
    #[command(subcommand)]
    task: Option<AuditTask>,
    #[command(flatten)]
    replay: AuditArgs,
}

#[derive(Debug, clap::Subcommand)]
enum AuditTask {
    /// Check the audit log: every record signed by a trusted key, and every partition's hash
    /// chain against the sealer's signed checkpoints (nothing altered, deleted, inserted,
    /// reordered or cut off since it was sealed). Exit 0 when clean, 2 when something is found.
    Verify(crate::verify::VerifyArgs),
    /// Make an audit writer's signing key and add its public key to a keyring.
    Keygen(crate::verify::KeygenArgs),
    /// The accounting of one patient's record (HIPAA 164.528; "who accessed my record"):
    /// every access with who, in what role, what, why, the outcome and from where, and a
    /// summary per user; break-the-glass reads stand out.
    Report(crate::report::ReportArgs),
    /// Show that the audit index (`phiAccessLog`) and the topic hold the same accesses:
    /// counts per partition and each event id only one holds. Exit 0 same, 2 different.
    Reconcile(crate::reconcile::ReconcileArgs),
}

pub async fn run(kafka: &KafkaArgs, command: AuditCommand) -> anyhow::Result<()> {
    match command.task {
        Some(AuditTask::Verify(args)) => crate::verify::verify(kafka, args).await,
        Some(AuditTask::Keygen(args)) => crate::verify::keygen(args),
        Some(AuditTask::Report(args)) => crate::report::run(kafka, args).await,
        Some(AuditTask::Reconcile(args)) => crate::reconcile::run(kafka, args).await,
        None => replay(kafka, command.replay).await,
    }
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The patient whose accesses to list (reads only their partition); without it, every
    /// partition is read (e.g. `--actor` for what one user looked at, `--purpose ETREAT` for
    /// every break-the-glass read).
    #[arg(long)]
    patient: Option<Uuid>,
    /// Only accesses by this user id.
    #[arg(long)]
    actor: Option<String>,
    #[command(flatten)]
    since: Since,
    /// Only accesses before this time (RFC 3339, or a date: YYYY-MM-DD, exclusive).
    #[arg(long, value_parser = parse_time)]
    to: Option<DateTime<Utc>>,
    /// Only this action: read, search or export.
    #[arg(long, value_parser = ["read", "search", "export"])]
    action: Option<String>,
    /// Only this outcome: success, denied or error.
    #[arg(long, value_parser = ["success", "denied", "error"])]
    outcome: Option<String>,
    /// Only this purpose of use, e.g. ETREAT for the break-the-glass reads.
    #[arg(long)]
    purpose: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// Progress on stderr while a long read runs, when stderr is a terminal (never in a pipe or a
/// log): records read and how far through the offsets it is, redrawn at most twice a second.
pub(crate) struct ProgressLine {
    shown: bool,
    last: std::time::Instant,
    tty: bool,
}

impl ProgressLine {
    pub(crate) fn new() -> Self {
        use std::io::IsTerminal;
        ProgressLine {
            shown: false,
            last: std::time::Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// `done` records read, `fraction` of the offsets covered.
    pub(crate) fn update(&mut self, done: usize, fraction: f64) {
        if !self.tty || self.last.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last = std::time::Instant::now();
        self.shown = true;
        eprint!(
            "\r{done} records read ({:.0}%)\x1b[K",
            (fraction * 100.0).clamp(0.0, 100.0)
        );
    }

    /// Clears the line before the summary.
    pub(crate) fn finish(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
            self.shown = false;
        }
    }
}

/// A consumer context that does not log partition EOF, which the replay reads on purpose to
/// know it reached the end (librdkafka reports it as a "global error"); other errors are
/// logged as before.
pub(crate) struct ReplayContext;

impl rdkafka::ClientContext for ReplayContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::error!(%error, reason, "librdkafka error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReplayContext {}

/// A consumer of the audit log for the replay tool: no group commits, partition EOF reported.
pub(crate) fn replay_consumer(kafka: &KafkaArgs) -> anyhow::Result<BaseConsumer<ReplayContext>> {
    platform::kafka::client_config(&kafka.kafka_brokers)
        .set("group.id", "healthplane-replay-tool")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(ReplayContext)
        .context("cannot create a Kafka consumer")
}

/// The JSON name of a serialized enum value (`read`, `success`, ...).
pub(crate) fn name_of(value: impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(crate) fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        })
        .map_err(|_| format!("`{s}` is neither an RFC 3339 time nor a YYYY-MM-DD date"))
}

/// One patient's accesses, read from their partition of the log (to its end).
pub(crate) struct PatientLog {
    pub(crate) accesses: Vec<PhiAccessed>,
    partition: i32,
    scanned: usize,
    undecodable: usize,
}

/// Where a replay starts: the earliest access wanted, and how far writers' clocks may differ.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct Since {
    /// Only accesses at or after this time (RFC 3339, or a date: YYYY-MM-DD); the read seeks
    /// to where the partition reaches it.
    #[arg(long, value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// How far apart (seconds) the audit writers' clocks may be: the seek aims this much
    /// earlier than `--from`.
    #[arg(long, default_value_t = 300)]
    pub clock_skew: u32,
}

pub(crate) async fn read_patient(
    kafka: &KafkaArgs,
    patient: Uuid,
    since: Since,
) -> anyhow::Result<PatientLog> {
    let partitions = topic(AUDIT_PHI_ACCESS)
        .expect("audit topic is in the catalog")
        .partitions;
    let key = patient.to_string();
    let partition = platform::kafka::partition_for_key(key.as_bytes(), partitions);
    let consumer = replay_consumer(kafka)?;
    let (low, high) = consumer
        .fetch_watermarks(AUDIT_PHI_ACCESS, partition, Duration::from_secs(10))
        .context("cannot reach the broker to read the audit log")?;
    let codec = EventCodec::new(&kafka.schema_registry_url);
    let mut log = PatientLog {
        accesses: Vec::new(),
        partition,
        scanned: 0,
        undecodable: 0,
    };
    let start = match since.from {
        Some(from) if high > low => {
            let skew = chrono::Duration::seconds(i64::from(since.clock_skew));
            let (start, broker_right) = crate::seek::start_offset(
                &consumer,
                AUDIT_PHI_ACCESS,
                partition,
                (low, high),
                from,
                skew,
            )?;
            if !broker_right {
                tracing::debug!(
                    start,
                    "the broker's offset for the time did not hold; searched"
                );
            }
            start
        }
        _ => low,
    };
    if high > low {
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(AUDIT_PHI_ACCESS, partition, Offset::Offset(start))?;
        consumer.assign(&assignment)?;
        // Read to the end of the partition as the broker reports it when a fetch comes back
        // empty (partition EOF), not to the high watermark read up front: that may trail the
        // last batch (the embedded broker reports it low), and auditors must see every access.
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        let mut progress = ProgressLine::new();
        let mut last: Option<i64> = None;
        loop {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "timed out reading the audit log"
            );
            let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let message = match message {
                Ok(m) => m,
                Err(rdkafka::error::KafkaError::PartitionEOF(_)) => {
                    progress.finish();
                    break;
                }
                Err(e) => return Err(e).context("reading the audit log"),
            };
            if last.is_some_and(|last| message.offset() <= last) {
                continue; // delivered again, not another record
            }
            last = Some(message.offset());
            log.scanned += 1;
            progress.update(
                log.scanned,
                (message.offset() - start + 1) as f64 / (high - start).max(1) as f64,
            );
            if message.key() != Some(key.as_bytes()) {
                continue;
            }
            match codec.decode::<PhiAccessed>(message.payload()).await {
                Ok(access) if access.patient_id == patient => log.accesses.push(access),
                Ok(_) => {}
                Err(e) if e.is_transient() => {
                    return Err(e).context("the schema registry is unavailable");
                }
                Err(e) => {
                    log.undecodable += 1;
                    eprintln!(
                        "warning: skipping undecodable audit record at offset {}: {e}",
                        message.offset()
                    );
                }
            }
        }
    }
    log.accesses.sort_by_key(|a| a.occurred_at);
    Ok(log)
}

impl PatientLog {
    /// The closing lines on stderr: what was read, what matched, how long it took.
    pub(crate) fn summarize(&self, matched: usize, started: std::time::Instant) {
        if self.undecodable > 0 {
            eprintln!(
                "warning: {} audit record(s) could not be decoded",
                self.undecodable
            );
        }
        eprintln!(
            "{} record(s) of partition {} (the patient's) scanned, {matched} matched, in {:.1} s",
            self.scanned,
            self.partition,
            started.elapsed().as_secs_f64()
        );
    }
}

async fn replay(kafka: &KafkaArgs, args: AuditArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let wanted = |a: &PhiAccessed| {
        args.actor.as_ref().is_none_or(|actor| &a.actor.id == actor)
            && args.since.from.is_none_or(|from| a.occurred_at >= from)
            && args.to.is_none_or(|to| a.occurred_at < to)
            && args.action.as_ref().is_none_or(|x| name_of(a.action) == *x)
            && args
                .outcome
                .as_ref()
                .is_none_or(|x| name_of(a.outcome) == *x)
            && args.purpose.as_ref().is_none_or(|x| a.purpose_of_use == *x)
    };
    if let Some(patient) = args.patient {
        let log = read_patient(kafka, patient, args.since).await?;
        let accesses: Vec<PhiAccessed> =
            log.accesses.iter().filter(|a| wanted(a)).cloned().collect();
        print(&accesses, args.format)?;
        log.summarize(accesses.len(), started);
        return Ok(());
    }
    // Every patient: every partition, from where it reaches `--from`.
    let codec = EventCodec::new(&kafka.schema_registry_url);
    let mut accesses = Vec::new();
    let mut undecodable = 0usize;
    let scanned = crate::verify::scan_audit_log(kafka, Some(args.since), async |message| {
        match codec.decode::<PhiAccessed>(message.payload()).await {
            Ok(access) if wanted(&access) => accesses.push(access),
            Ok(_) => {}
            Err(e) if e.is_transient() => {
                return Err(e).context("the schema registry is unavailable");
            }
            Err(e) => {
                undecodable += 1;
                eprintln!(
                    "warning: skipping undecodable audit record at partition {} offset {}: {e}",
                    message.partition(),
                    message.offset()
                );
            }
        }
        Ok(())
    })
    .await?;
    accesses.sort_by_key(|a| a.occurred_at);
    print(&accesses, args.format)?;
    if undecodable > 0 {
        eprintln!("warning: {undecodable} audit record(s) could not be decoded");
    }
    let partitions = scanned.len();
    let scanned: u64 = scanned.values().sum();
    eprintln!(
        "{scanned} record(s) of {partitions} partitions scanned, {} matched, in {:.1} s",
        accesses.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

const COLUMNS: [&str; 13] = [
    "occurred_at",
    "actor_id",
    "actor_role",
    "action",
    "resource_type",
    "resource_ids",
    "purpose_of_use",
    "outcome",
    "client_ip",
    "forwarded_for",
    "user_agent",
    "request_id",
    "detail",
];

fn row(a: &PhiAccessed) -> [String; 13] {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_default();
    [
        a.occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        a.actor.id.clone(),
        a.actor.role.to_string(),
        text(&serde_json::to_value(a.action).unwrap_or_default()),
        a.resource_type.clone(),
        a.resource_ids.join(" "),
        a.purpose_of_use.clone(),
        text(&serde_json::to_value(a.outcome).unwrap_or_default()),
        a.client_ip.clone().unwrap_or_default(),
        a.forwarded_for.clone().unwrap_or_default(),
        a.user_agent.clone().unwrap_or_default(),
        a.request_id.clone(),
        a.detail.clone().unwrap_or_default(),
    ]
}

/// A CSV cell's text: a cell a spreadsheet would run as a formula (starting with `=`, `+`,
/// `-`, `@`, a tab or a carriage return; OWASP's CSV injection advice) is prefixed with `'`,
/// so an attacker-chosen user agent or detail cannot run in an auditor's spreadsheet. The
/// `csv` writer does the RFC 4180 quoting.
pub(crate) fn neutralised(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

/// A plain-text table (no borders: it is read in a terminal and pasted into reports), with
/// `comfy-table` measuring the columns.
pub(crate) fn render_table<H: ToString, R: AsRef<[C]>, C: ToString>(
    header: &[H],
    rows: &[R],
) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(header.iter().map(ToString::to_string));
    for row in rows {
        table.add_row(row.as_ref().iter().map(ToString::to_string));
    }
    // Columns start at the line's start and are two spaces apart.
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The accesses as CSV, with a header row.
fn csv(accesses: &[PhiAccessed]) -> anyhow::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(COLUMNS)?;
    for a in accesses {
        writer.write_record(row(a).iter().map(|cell| neutralised(cell).into_owned()))?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

fn print(accesses: &[PhiAccessed], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Jsonl => {
            for a in accesses {
                println!("{}", serde_json::to_string(a)?);
            }
        }
        Format::Csv => print!("{}", csv(accesses)?),
        Format::Table => {
            let rows: Vec<[String; 13]> = accesses.iter().map(row).collect();
            println!("{}", render_table(&COLUMNS, &rows));
            println!(
                "({} access{})",
                rows.len(),
                if rows.len() == 1 { "" } else { "es" }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{neutralised, render_table};

    #[test]
    fn tables_start_at_the_line_start_with_aligned_columns() {
        let table = render_table(&["a", "bb"], &[["xyz", "1"], ["p", "22"]]);
        assert_eq!(table, "a    bb\nxyz  1\np    22");
    }

    fn cell(s: &str) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record([neutralised(s).as_ref()]).unwrap();
        String::from_utf8(writer.into_inner().unwrap())
            .unwrap()
            .trim_end()
            .to_string()
    }

    #[test]
    fn formula_cells_are_neutralised_and_quoting_still_holds() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-2+3"), "'-2+3");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("TREAT"), "TREAT");
        assert_eq!(cell("a,b"), "\"a,b\"");
    }
}

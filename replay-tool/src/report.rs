//! `replay-tool audit report --patient <id>`: the accounting of accesses to one patient's
//! record (HIPAA 45 CFR 164.528; what a patient asking "who looked at my record" gets): each
//! access — when, who and in what role, what action on which resource type, why, the outcome,
//! from where — oldest first, then a summary per user. Break-the-glass reads (purpose
//! `ETREAT`) stand out: marked `!` in the table, `break_glass` in CSV and JSON, counted per
//! user.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use events::audit::PhiAccessed;
use platform::config::KafkaArgs;
use uuid::Uuid;

use crate::audit::{Since, name_of, neutralised, parse_time, read_patient};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
    Csv,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The patient whose record the report accounts for.
    #[arg(long)]
    patient: Uuid,
    #[command(flatten)]
    since: Since,
    /// Only accesses before this time (RFC 3339, or YYYY-MM-DD; exclusive).
    #[arg(long, value_parser = parse_time)]
    to: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Read the audit index (the audit projector's database, e.g.
    /// `postgres://healthplane_query:…@db/audit_service`) instead of the log: an index scan of
    /// the patient's rows, however long the log. It holds what the projector has applied
    /// (`audit reconcile` shows that it matches the log).
    #[arg(long)]
    database_url: Option<String>,
}

/// One line of the accounting.
#[derive(Debug, serde::Serialize)]
struct Line {
    when: String,
    who: String,
    role: String,
    action: String,
    resource_type: String,
    resources: usize,
    purpose: String,
    outcome: String,
    from: String,
    break_glass: bool,
    /// The break-the-glass reason, or why access was denied.
    detail: String,
    request_id: String,
}

fn line(a: &PhiAccessed) -> Line {
    Line {
        when: a
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        who: a.actor.id.clone(),
        role: a.actor.role.to_string(),
        action: name_of(a.action),
        resource_type: a.resource_type.clone(),
        resources: a.resource_ids.len(),
        purpose: a.purpose_of_use.clone(),
        outcome: name_of(a.outcome),
        from: a.client_ip.clone().unwrap_or_default(),
        break_glass: a.purpose_of_use == "ETREAT",
        detail: a.detail.clone().unwrap_or_default(),
        request_id: a.request_id.clone(),
    }
}

/// What one user did with the record.
#[derive(Debug, Default, serde::Serialize)]
struct ActorSummary {
    who: String,
    roles: Vec<String>,
    accesses: usize,
    denied: usize,
    break_glass: usize,
    first: String,
    last: String,
}

fn summaries(lines: &[Line]) -> Vec<ActorSummary> {
    let mut by_actor: BTreeMap<&str, ActorSummary> = BTreeMap::new();
    for l in lines {
        let s = by_actor.entry(&l.who).or_insert_with(|| ActorSummary {
            who: l.who.clone(),
            first: l.when.clone(),
            ..Default::default()
        });
        if !s.roles.contains(&l.role) {
            s.roles.push(l.role.clone());
        }
        s.accesses += 1;
        s.denied += usize::from(l.outcome == "denied");
        s.break_glass += usize::from(l.break_glass);
        s.last = l.when.clone();
    }
    by_actor.into_values().collect()
}

const HEADER: [&str; 12] = [
    "when",
    "who",
    "role",
    "action",
    "resource_type",
    "resources",
    "purpose",
    "outcome",
    "from",
    "break_glass",
    "detail",
    "request_id",
];

fn cells(l: &Line) -> [String; 12] {
    [
        l.when.clone(),
        l.who.clone(),
        l.role.clone(),
        l.action.clone(),
        l.resource_type.clone(),
        l.resources.to_string(),
        l.purpose.clone(),
        l.outcome.clone(),
        l.from.clone(),
        if l.break_glass { "yes" } else { "" }.to_string(),
        l.detail.clone(),
        l.request_id.clone(),
    ]
}

/// The patient's accesses from the audit index, oldest first.
async fn read_index(url: &str, args: &ReportArgs) -> anyhow::Result<Vec<Line>> {
    let pool = platform::db::connect_reader(url, platform::db::READ_MODEL_SCHEMA, 1).await?;
    type Row = (
        DateTime<Utc>,
        String,
        String,
        String,
        String,
        i32,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT occurred_at, actor_id, actor_role, action, resource_type,
                jsonb_array_length(resource_ids), purpose_of_use, outcome, client_ip, detail,
                request_id
           FROM phi_accesses
          WHERE patient_id = $1
            AND occurred_at >= COALESCE($2, '-infinity'::timestamptz)
            AND occurred_at < COALESCE($3, 'infinity'::timestamptz)
          ORDER BY occurred_at, event_id",
    )
    .bind(args.patient)
    .bind(args.since.from)
    .bind(args.to)
    .fetch_all(&pool)
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot read the audit index: {}",
            platform::db::loggable(&e)
        )
    })?;
    Ok(rows
        .into_iter()
        .map(|r| Line {
            when: r.0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            who: r.1,
            role: r.2,
            action: r.3,
            resource_type: r.4,
            resources: usize::try_from(r.5).unwrap_or_default(),
            break_glass: r.6 == "ETREAT",
            purpose: r.6,
            outcome: r.7,
            from: r.8.unwrap_or_default(),
            detail: r.9.unwrap_or_default(),
            request_id: r.10,
        })
        .collect())
}

pub async fn run(kafka: &KafkaArgs, args: ReportArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (lines, log) = match &args.database_url {
        Some(url) => (read_index(url, &args).await?, None),
        None => {
            let log = read_patient(kafka, args.patient, args.since).await?;
            let lines = log
                .accesses
                .iter()
                .filter(|a| {
                    args.since.from.is_none_or(|from| a.occurred_at >= from)
                        && args.to.is_none_or(|to| a.occurred_at < to)
                })
                .map(line)
                .collect();
            (lines, Some(log))
        }
    };
    let summary = summaries(&lines);
    match args.format {
        Format::Jsonl => {
            for l in &lines {
                println!("{}", serde_json::json!({ "access": l }));
            }
            for s in &summary {
                println!("{}", serde_json::json!({ "actor_summary": s }));
            }
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(std::io::stdout());
            writer.write_record(HEADER)?;
            for l in &lines {
                writer.write_record(cells(l).iter().map(|c| neutralised(c).into_owned()))?;
            }
            writer.flush()?;
        }
        Format::Table => table(&args, &lines, &summary),
    }
    match log {
        Some(log) => log.summarize(lines.len(), started),
        None => eprintln!(
            "{} access(es) from the audit index, in {:.3} s",
            lines.len(),
            started.elapsed().as_secs_f64()
        ),
    }
    Ok(())
}

fn table(args: &ReportArgs, lines: &[Line], summary: &[ActorSummary]) {
    let period = match (args.since.from, args.to) {
        (None, None) => "all time".to_string(),
        (from, to) => format!(
            "{} to {}",
            from.map_or("the start".into(), |t| t.to_rfc3339()),
            to.map_or("now".into(), |t| t.to_rfc3339())
        ),
    };
    println!(
        "Accesses to the record of patient {} ({period})",
        args.patient
    );
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let mut row = vec![if l.break_glass { "!" } else { "" }.to_string()];
            row.extend(cells(l));
            row.remove(10); // the break_glass column: the `!` says it
            row
        })
        .collect();
    let mut header = vec![String::new()];
    header.extend(HEADER.iter().map(|h| h.to_string()));
    header.remove(10);
    print_table(&header, &rows);
    println!("\nBy user");
    let header: Vec<String> = [
        "who",
        "roles",
        "accesses",
        "denied",
        "break_glass",
        "first",
        "last",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    let rows: Vec<Vec<String>> = summary
        .iter()
        .map(|s| {
            vec![
                s.who.clone(),
                s.roles.join(","),
                s.accesses.to_string(),
                s.denied.to_string(),
                s.break_glass.to_string(),
                s.first.clone(),
                s.last.clone(),
            ]
        })
        .collect();
    print_table(&header, &rows);
    let glass: usize = summary.iter().map(|s| s.break_glass).sum();
    println!(
        "\n{} access(es) by {} user(s); {glass} break-the-glass (marked !)",
        lines.len(),
        summary.len()
    );
}

fn print_table(header: &[String], rows: &[Vec<String>]) {
    println!("{}", crate::audit::render_table(header, rows));
}

//! Audit log benchmarks, release build, in one run:
//! - the whole PHI access log replayed with decode and a filter (`replay-tool audit --purpose
//!   ETREAT`), and verified (`replay-tool audit verify`: every signature, every partition's
//!   hash chain against the sealer's checkpoints), next to a raw librdkafka consume of the same
//!   topic from the same broker, tansu on SQLite storage as in the local stack (target: ≥ 50%
//!   of raw);
//! - one patient's access report (`replay-tool audit report --database-url`) from an audit
//!   index holding 10 million rows over six years, next to the bare SQL query (target < 1 s).
//!
//! Run with `./deploy/bench.sh audit`. `HEALTHPLANE_BENCH_AUDIT_RECORDS` sets the log's size
//! (default 100,000), `HEALTHPLANE_BENCH_AUDIT_ROWS` the index's (default 10,000,000).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use events::audit::{AccessAction, AccessOutcome, PHI_ACCESSED, PhiAccessed};
use events::catalog::AUDIT_PHI_ACCESS;
use events::{Actor, Role};
use platform::signing::RecordSigner;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::EventCodec;
use tests::bench::{Measure, report};
use tests::{Cluster, OwnCluster, Sealer, audit_keys, bin_dir, postgres_server};
use uuid::Uuid;

fn fresh_database(name: &str) -> String {
    format!(
        "{}/hp_test_{}_{name}",
        postgres_server(),
        &Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Writes `n` signed access records (one in 97 a break-the-glass read), as the query API does.
async fn write_log(cluster: &Cluster, n: usize) -> anyhow::Result<()> {
    let signer = RecordSigner::from_file(&audit_keys().0)?;
    let codec = EventCodec::new(&cluster.registry_url);
    let mut config = platform::kafka::producer_config(&cluster.brokers, Duration::from_secs(120));
    config
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000");
    let producer: FutureProducer = config.create()?;
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let mut sends = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let patient =
                Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + (i % 5_000) as u128);
            let access = PhiAccessed {
                event_id: Uuid::now_v7(),
                event_type: PHI_ACCESSED.into(),
                occurred_at: chrono::Utc::now(),
                actor: Actor {
                    id: format!("dr-bench-{}", i % 200),
                    role: Role::Practitioner,
                },
                patient_id: patient,
                action: AccessAction::Read,
                resource_type: "Patient".into(),
                resource_ids: vec![patient.to_string()],
                purpose_of_use: if i % 97 == 0 { "ETREAT" } else { "TREAT" }.into(),
                outcome: AccessOutcome::Success,
                client_ip: Some("10.1.2.3".into()),
                forwarded_for: None,
                user_agent: Some("provider-portal/2.3".into()),
                request_id: format!("bench-{i}"),
                service: "query-api".into(),
                detail: None,
            };
            let value = codec.encode(AUDIT_PHI_ACCESS, &access).await?;
            let key = patient.to_string();
            let headers = signer.signed_headers(
                OwnedHeaders::new(),
                AUDIT_PHI_ACCESS,
                key.as_bytes(),
                &value,
            );
            let producer = &producer;
            sends.push(async move {
                producer
                    .send(
                        FutureRecord::to(AUDIT_PHI_ACCESS)
                            .key(&key)
                            .payload(&value)
                            .headers(headers),
                        Duration::from_secs(120),
                    )
                    .await
                    .map_err(|(e, _)| anyhow::anyhow!("{e}"))
            });
        }
        for result in futures::future::join_all(sends).await {
            result?;
        }
    }
    eprintln!(
        "wrote {n} signed audit records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Seconds `replay-tool <args>` takes, its output thrown away; fails unless it exits 0.
fn replay_tool_seconds(cluster: &Cluster, args: &[&str]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = Command::new(bin_dir().join("replay-tool"))
        .args(args)
        .env("HEALTHPLANE_KAFKA_BROKERS", &cluster.brokers)
        .env("HEALTHPLANE_SCHEMA_REGISTRY_URL", &cluster.registry_url)
        .env("HEALTHPLANE_AUDIT_KEYRING", &audit_keys().1)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()?;
    anyhow::ensure!(
        status.success(),
        "replay-tool {args:?} exited with {status}"
    );
    Ok(started.elapsed().as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Fills a fresh audit index with `rows` accesses over six years to 100,000 patients, and one
/// patient with 5,000 accesses; returns its URL and the two patients.
async fn fill_index(rows: usize) -> anyhow::Result<(String, Uuid, Uuid)> {
    let url = fresh_database("audit_index");
    let pool = platform::db::connect_schema(&url, platform::db::READ_MODEL_SCHEMA, 2).await?;
    platform::db::migrate(&pool, "audit", projections::audit::MIGRATIONS).await?;
    // Load without indexes, then build them: as a restore would.
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = 'phi_accesses'",
    )
    .fetch_all(&pool)
    .await?;
    sqlx::raw_sql("ALTER TABLE phi_accesses DROP CONSTRAINT phi_accesses_pkey")
        .execute(&pool)
        .await?;
    for (name, _) in &indexes {
        sqlx::raw_sql(&format!("DROP INDEX IF EXISTS read_model.{name}"))
            .execute(&pool)
            .await?;
    }
    let started = Instant::now();
    let insert = "INSERT INTO phi_accesses
        SELECT gen_random_uuid(), now() - random() * interval '2190 days',
               md5(($3 + g % 100000)::text)::uuid, 'user-' || (g % 5000),
               CASE WHEN g % 3 = 0 THEN 'admin' ELSE 'practitioner' END,
               CASE WHEN g % 10 = 0 THEN 'search' ELSE 'read' END, 'Patient',
               jsonb_build_array(md5(($3 + g % 100000)::text)),
               CASE WHEN g % 97 = 0 THEN 'ETREAT' ELSE 'TREAT' END,
               CASE WHEN g % 50 = 0 THEN 'denied' ELSE 'success' END,
               '10.0.' || (g % 250) || '.' || (g % 200), 'provider-portal/2.3',
               'req-' || g, 'query-api', NULL
          FROM generate_series($1::bigint, $2::bigint) g";
    let mut from = 0usize;
    while from < rows {
        let to = (from + 1_000_000).min(rows) - 1;
        sqlx::query(insert)
            .bind(from as i64)
            .bind(to as i64)
            .bind(0i64)
            .execute(&pool)
            .await?;
        from = to + 1;
        eprintln!("  {from} index rows loaded");
    }
    // A patient seen often: 5,000 accesses over the six years.
    sqlx::query(insert)
        .bind(0i64)
        .bind(4_999i64)
        .bind(1_000_000i64)
        .execute(&pool)
        .await?;
    sqlx::query("UPDATE phi_accesses SET patient_id = md5('1000000')::uuid WHERE patient_id IN (SELECT md5((1000000 + g)::text)::uuid FROM generate_series(1, 99999) g)")
        .execute(&pool)
        .await?;
    sqlx::raw_sql("ALTER TABLE phi_accesses ADD PRIMARY KEY (event_id)")
        .execute(&pool)
        .await?;
    for (name, definition) in &indexes {
        if name != "phi_accesses_pkey" {
            sqlx::raw_sql(definition).execute(&pool).await?;
        }
    }
    sqlx::raw_sql("ANALYZE phi_accesses").execute(&pool).await?;
    eprintln!(
        "loaded and indexed {rows} audit index rows in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let typical: Uuid = sqlx::query_scalar("SELECT md5('4242')::uuid")
        .fetch_one(&pool)
        .await?;
    let frequent: Uuid = sqlx::query_scalar("SELECT md5('1000000')::uuid")
        .fetch_one(&pool)
        .await?;
    Ok((url, typical, frequent))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs bench binaries without `--bench`: nothing to do then.
    if !tests::bench::requested() {
        return Ok(());
    }
    let records = tests::bench::env_number("HEALTHPLANE_BENCH_AUDIT_RECORDS", 100_000);
    let index_rows = tests::bench::env_number("HEALTHPLANE_BENCH_AUDIT_ROWS", 10_000_000);
    // A broker of its own on SQLite storage, as the local stack runs it.
    let (own, _) = OwnCluster::start().await;
    let cluster = own.cluster.clone();
    let mut rows = Vec::new();

    write_log(&cluster, records).await?;
    let lock = fresh_database("sealer");
    platform::db::connect(&lock, 1).await?;
    let log_dir =
        std::env::temp_dir().join(format!("healthplane-bench-{}", Uuid::new_v4().simple()));
    let sealer = Sealer::start("audit-sealer", &cluster, &lock, &log_dir, 1_000, 10_000).await;
    // Sealed through the end before verify is timed.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (status, stdout, _) =
            tests::replay_tool_status(&cluster, &["audit", "verify", "--format", "jsonl"]);
        let unsealed: u64 = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|l| l.get("partition_report")?.get("unsealed")?.as_u64())
            .sum();
        if unsealed == 0 {
            anyhow::ensure!(
                status == 0,
                "verify found problems in the benchmark's log:\n{stdout}"
            );
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the sealer never caught up");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(sealer);

    let mut raw = Vec::new();
    let mut replay = Vec::new();
    let mut verify = Vec::new();
    let mut total = 0;
    for _ in 0..3 {
        let (n, seconds) = tests::bench::raw_consume(&cluster.brokers, &[AUDIT_PHI_ACCESS])?;
        total = n;
        raw.push(seconds);
        replay.push(replay_tool_seconds(
            &cluster,
            &["audit", "--purpose", "ETREAT", "--format", "jsonl"],
        )?);
        verify.push(replay_tool_seconds(
            &cluster,
            &["audit", "verify", "--format", "jsonl"],
        )?);
    }
    let rate = |seconds: f64| total as f64 / seconds;
    let raw_rate = rate(median(raw));
    for (what, seconds) in [
        (
            "full-log replay, decode + filter (`audit --purpose ETREAT`)",
            median(replay),
        ),
        (
            "full-log verify, signatures + chains (`audit verify`)",
            median(verify),
        ),
    ] {
        rows.push(Measure::rate(
            &format!("{what}, {total} records"),
            "records",
            rate(seconds),
            Some(("librdkafka consume of the same topic", raw_rate)),
            ">= 50% of raw",
        ));
    }

    let (index, typical, frequent) = fill_index(index_rows).await?;
    let pool = sqlx::PgPool::connect(&index).await?;
    for (who, patient) in [
        ("a typical patient", typical),
        ("a patient seen often", frequent),
    ] {
        let accesses: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM read_model.phi_accesses WHERE patient_id = $1",
        )
        .bind(patient)
        .fetch_one(&pool)
        .await?;
        let mut report = Vec::new();
        let mut query = Vec::new();
        for _ in 0..5 {
            let patient = patient.to_string();
            report.push(replay_tool_seconds(
                &cluster,
                &[
                    "audit",
                    "report",
                    "--patient",
                    &patient,
                    "--database-url",
                    &index,
                    "--format",
                    "csv",
                ],
            )?);
            let started = Instant::now();
            let rows: Vec<(chrono::DateTime<chrono::Utc>, String)> = sqlx::query_as(
                "SELECT occurred_at, actor_id FROM read_model.phi_accesses WHERE patient_id = $1 ORDER BY occurred_at",
            )
            .bind(uuid::Uuid::parse_str(&patient)?)
            .fetch_all(&pool)
            .await?;
            std::hint::black_box(rows);
            query.push(started.elapsed().as_secs_f64());
        }
        let (report_seconds, query) = (median(report), median(query));
        rows.push(Measure::text(
            &format!(
                "patient access report from the index of {index_rows} rows: {who}, {accesses} accesses in six years"
            ),
            format!("{:.0} ms (whole command)", report_seconds * 1000.0),
            format!("{:.1} ms (the SQL alone)", query * 1000.0),
            format!("{:.0}x", report_seconds / query),
            "< 1 s",
        ));
    }
    report("audit", &rows)
}

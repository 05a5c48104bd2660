//! Projection throughput, next to the raw limit measured in the same run: how fast each
//! projector folds events from Kafka into its read model, how fast a full rebuild replays the
//! event store, and how fast PostgreSQL takes the resulting rows with a plain COPY; and, for
//! the projectors reading Kafka, how fast a plain librdkafka consumer reads the same records.
//! Run with `./deploy/bench.sh` (a throwaway broker and registry); `HEALTHPLANE_BENCH_EVENTS`
//! sets the number of events per projection (default 20000).

use std::time::{Duration, Instant};

use events::catalog::{OBSERVATION_CREATED, PATIENT_CREATED, PATIENT_UPDATED};
use events::examples::example_record;
use futures::StreamExt;
use projections::Projection;
use projections::rebuild::{RebuildOptions, rebuild};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::EventCodec;
use sqlx::Connection;
use tests::bench::{Measure, report};
use tests::{Cluster, Projector, postgres_server};
use uuid::Uuid;

fn fresh_database(name: &str) -> String {
    format!(
        "{}/hp_test_{}_{name}",
        postgres_server(),
        &Uuid::new_v4().simple().to_string()[..12]
    )
}

/// `count` aggregates; each gets the records of `topics` in order (versions 1, 2, ...).
fn records(topics: &[&'static str], count: usize) -> Vec<(&'static str, Uuid, serde_json::Value)> {
    let mut out = Vec::with_capacity(count * topics.len());
    for _ in 0..count {
        let id = Uuid::now_v7();
        for (i, topic) in topics.iter().enumerate() {
            let mut record = example_record(topic, id).expect("example");
            record["event_id"] = serde_json::json!(Uuid::now_v7());
            record["aggregate_version"] = serde_json::json!(i + 1);
            out.push((*topic, id, record));
        }
    }
    out
}

/// Writes the records to the event store (as published outbox rows), for the rebuild.
async fn store(
    events_url: &str,
    records: &[(&'static str, Uuid, serde_json::Value)],
) -> anyhow::Result<()> {
    let pool = platform::db::connect(events_url, 2).await?;
    platform::db::migrate(&pool, "event-store", event_store::MIGRATIONS).await?;
    for chunk in records.chunks(5_000) {
        let chunk: Vec<(&str, serde_json::Value)> = chunk
            .iter()
            .map(|(topic, _, r)| (*topic, r.clone()))
            .collect();
        event_store::import_published(&pool, "bench", &chunk).await?;
    }
    Ok(())
}

/// Produces the records to their topics (keyed by aggregate id) and waits for every ack.
async fn produce(
    cluster: &Cluster,
    records: &[(&'static str, Uuid, serde_json::Value)],
) -> anyhow::Result<()> {
    let codec = EventCodec::new(&cluster.registry_url);
    let producer: FutureProducer =
        platform::kafka::producer_config(&cluster.brokers, Duration::from_secs(60)).create()?;
    let mut encoded = Vec::with_capacity(records.len());
    for (topic, id, record) in records {
        encoded.push((
            *topic,
            id.to_string(),
            codec.encode_json(topic, record).await?,
        ));
    }
    let sends = futures::stream::iter(encoded.iter().map(|(topic, key, bytes)| {
        producer.send(
            FutureRecord::to(topic).key(key).payload(bytes),
            Duration::from_secs(60),
        )
    }))
    .buffer_unordered(1_000);
    let results: Vec<_> = sends.collect().await;
    anyhow::ensure!(
        results.iter().all(Result::is_ok),
        "some records were not acknowledged"
    );
    Ok(())
}

/// Seconds from the projector being ready until its table folded `events` of the given ids.
async fn projector_seconds(
    cluster: &Cluster,
    kind: &str,
    table: &str,
    ids: &[Uuid],
    events: i64,
) -> anyhow::Result<f64> {
    let log_dir =
        std::env::temp_dir().join(format!("healthplane-bench-{}", Uuid::new_v4().simple()));
    let projector = Projector::start(kind, cluster, &log_dir).await;
    let started = Instant::now();
    let read_model = projector.read_model().await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let folded: i64 = sqlx::query_scalar(&format!(
            // A join, not `id = ANY($1)`: that compares every row with every id (a profile of
            // this benchmark once showed PostgreSQL busy with it, not with the projector).
            "SELECT COALESCE(sum(t.version), 0)::BIGINT FROM {table} t JOIN UNNEST($1::UUID[]) AS i (id) ON i.id = t.id"
        ))
        .bind(ids)
        .fetch_one(&read_model)
        .await
        .unwrap_or(0);
        if folded >= events {
            return Ok(started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the {kind} projector folded {folded} of {events} events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Seconds for a plain `COPY ... FROM STDIN` of the rows of `table` (from `source`) into an
/// empty table of the same shape in the same PostgreSQL.
async fn copy_seconds(source: &str, table: &str) -> anyhow::Result<(f64, u64)> {
    let mut conn = sqlx::PgConnection::connect(source).await?;
    let mut out = conn
        .copy_out_raw(&format!("COPY read_model.{table} TO STDOUT"))
        .await?;
    let mut data = Vec::new();
    while let Some(chunk) = out.next().await {
        data.extend_from_slice(&chunk?);
    }
    drop(out);
    sqlx::raw_sql(&format!(
        "CREATE TABLE public.copy_{table} (LIKE read_model.{table} INCLUDING ALL)"
    ))
    .execute(&mut conn)
    .await?;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(&format!("COPY public.copy_{table} FROM STDIN"))
        .await?;
    copy.send(data).await?;
    let rows = copy.finish().await?;
    Ok((started.elapsed().as_secs_f64(), rows))
}

async fn rebuild_seconds<P: Projection>(
    projection: &P,
    events_url: &str,
) -> anyhow::Result<(f64, String)> {
    let target = fresh_database("rebuild");
    let options = RebuildOptions {
        database_url: target.clone(),
        event_store_url: events_url.to_string(),
        batch_size: 5_000,
        restart: true,
        reset_offsets: Default::default(),
    };
    let report = rebuild(projection, &options, |_| {}).await?;
    Ok((report.seconds, target))
}

struct Line {
    what: String,
    events: f64,
    seconds: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs bench binaries without `--bench`: nothing to do then.
    if !tests::bench::requested() {
        return Ok(());
    }
    let events: usize = tests::bench::env_number("HEALTHPLANE_BENCH_EVENTS", 20_000);
    let cluster = Cluster::shared();
    let events_url = fresh_database("events");
    let mut lines = Vec::new();
    // (what, projector events/s, a plain consumer's records/s on the same topics)
    let mut consumed = Vec::new();

    // Patients: created then updated (update-heavy); observations: created only (insert-only).
    for (kind, table, topics, projection_table) in [
        (
            "patient",
            "patients",
            &[PATIENT_CREATED, PATIENT_UPDATED][..],
            "patients",
        ),
        (
            "laboratory",
            "observations",
            &[OBSERVATION_CREATED][..],
            "observations",
        ),
    ] {
        let batch = records(topics, events / topics.len());
        let ids: Vec<Uuid> = batch
            .iter()
            .map(|(_, id, _)| *id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let n = batch.len() as f64;
        store(&events_url, &batch).await?;
        produce(&cluster, &batch).await?;
        let (read, read_seconds) = tests::bench::raw_consume(&cluster.brokers, topics)?;
        let projector =
            projector_seconds(&cluster, kind, projection_table, &ids, batch.len() as i64).await?;
        lines.push(Line {
            what: format!("{kind} projector (Kafka -> {table})"),
            events: n,
            seconds: projector,
        });
        consumed.push((
            format!("{kind} projector (Kafka -> {table}) next to reading its topics"),
            n / projector,
            read as f64 / read_seconds,
        ));
        let (rebuild, rebuilt) = match kind {
            "patient" => {
                rebuild_seconds(&projections::patient::PatientProjection, &events_url).await?
            }
            _ => {
                rebuild_seconds(
                    &projections::laboratory::LaboratoryProjection::default(),
                    &events_url,
                )
                .await?
            }
        };
        lines.push(Line {
            what: format!("{kind} full rebuild (event store -> {table})"),
            events: n,
            seconds: rebuild,
        });
        let (copy, rows) = copy_seconds(&rebuilt, table).await?;
        lines.push(Line {
            what: format!("raw COPY of the same {rows} {table} rows"),
            events: n,
            seconds: copy,
        });
    }

    println!(
        "\nprojection throughput ({} events per projection, same machine, same run)",
        events
    );
    println!(
        "{:<52} {:>10} {:>14} {:>12}",
        "what", "seconds", "events/s", "vs COPY"
    );
    for group in lines.chunks(3) {
        let copy_rate = group[2].events / group[2].seconds;
        for line in group {
            let rate = line.events / line.seconds;
            println!(
                "{:<52} {:>10.3} {:>14.0} {:>11.3}x",
                line.what,
                line.seconds,
                rate,
                rate / copy_rate
            );
        }
    }
    // The one table: each projector, caught up from the topic and rebuilt from the event
    // store, next to a raw COPY of the rows it wrote.
    let mut rows = Vec::new();
    for group in lines.chunks(3) {
        let copy_rate = group[2].events / group[2].seconds;
        for line in &group[..2] {
            rows.push(Measure::rate(
                &line.what,
                "events",
                line.events / line.seconds,
                Some(("PostgreSQL COPY of the same rows", copy_rate)),
                ">= 30% of COPY",
            ));
        }
    }
    // From Kafka, a projector can fold no faster than a plain consumer reads its topics.
    for (what, rate, read) in consumed {
        rows.push(Measure::rate(
            &what,
            "events",
            rate,
            Some(("plain librdkafka consume of the same records", read)),
            "—",
        ));
    }
    report("projection", &rows)
}

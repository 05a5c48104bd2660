//! Rebuilding a read model from the event store, the system of record (the domain topics keep
//! only 7–30 days).
//!
//! The new model is built in the schema `read_model_rebuild` while the live `read_model` keeps
//! serving; progress is kept there, so an interrupted rebuild resumes. Then, in one
//! transaction holding the projection's lock exclusively (the projector's batches take it
//! shared), the rebuild catches up, takes over the live projector's offsets, and renames the
//! schemas: readers see the old model or the new one, never a partial one.
//!
//! Positions in the event store are allocated before commit, so a transaction can commit a
//! lower position after a higher one was read. The final catch-up therefore re-reads a window
//! of positions behind the last one built, and re-reads the whole stream of any aggregate the
//! new model still holds an early event for; re-applied events are duplicates and change nothing.

use std::time::Instant;

use anyhow::Context;
use platform::db::READ_MODEL_SCHEMA;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use std::collections::HashMap;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::log_check::Stored;
use crate::runner::{self, Projection, Record};

/// The schema a rebuild fills.
pub const BUILD_SCHEMA: &str = "read_model_rebuild";
/// How many positions behind the last one built the final catch-up re-reads.
pub const CATCH_UP_WINDOW: i64 = 50_000;

/// Where and how to rebuild.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// The projection's database.
    pub database_url: String,
    pub event_store_url: String,
    /// Events per transaction.
    pub batch_size: i64,
    /// Discard an interrupted rebuild instead of resuming it.
    pub restart: bool,
    /// Offsets the rebuilt model starts from instead of the live projector's, stored in the
    /// swap's transaction (a projector recovering from offsets outside the log passes the log
    /// start of those partitions).
    pub reset_offsets: HashMap<(String, i32), Stored>,
}

/// How far a rebuild has come.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub events_per_second: f64,
}

/// What a finished rebuild did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub events: u64,
    pub resumed_at: u64,
    pub seconds: f64,
}

fn records(events: Vec<event_store::PublishedEvent>) -> Vec<Record> {
    events
        .into_iter()
        .map(|e| Record {
            json: e.record(),
            topic: e.topic,
        })
        .collect()
}

/// Rebuilds `projection` from the event store and swaps it in; `progress` is called after each batch.
pub async fn rebuild<P: Projection>(
    projection: &P,
    options: &RebuildOptions,
    mut progress: impl FnMut(Progress),
) -> anyhow::Result<Report> {
    let name = projection.name();
    let topics = &projection.topics()[..];
    anyhow::ensure!(
        projection.rebuilds_from_event_store(),
        "the {name} read model is not in the event store: its history is its topic (kept six years). \
         To rebuild it, stop the {name} projector, drop the schema read_model in its database, and \
         start the projector again: it replays the topic from the beginning"
    );
    let (admin, mut guard, build) =
        begin(projection, &options.database_url, options.restart).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS rebuild_progress (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            position BIGINT NOT NULL,
            events BIGINT NOT NULL,
            started_at TIMESTAMPTZ NOT NULL DEFAULT now());
         INSERT INTO rebuild_progress (id, position, events) VALUES (1, 0, 0) ON CONFLICT DO NOTHING;",
    )
    .execute(&build)
    .await?;
    let (mut position, resumed_at): (i64, i64) =
        sqlx::query_as("SELECT position, events FROM rebuild_progress")
            .fetch_one(&build)
            .await?;
    let events = platform::db::connect(&options.event_store_url, 2).await?;
    let total = event_store::count_published(&events, topics)
        .await
        .context("cannot read the event store")?;
    let started = Instant::now();
    let mut done = resumed_at as u64;
    // The next batch is read from the event store while this one is applied (two at most in
    // hand): reading and writing overlap instead of taking turns.
    let (ready, mut batches) = tokio::sync::mpsc::channel::<anyhow::Result<(i64, Vec<Record>)>>(1);
    let reader = tokio::spawn({
        let (events, topics, size) = (events.clone(), projection.topics(), options.batch_size);
        let mut after = position;
        async move {
            loop {
                let batch = match event_store::published_after(&events, &topics, after, size).await
                {
                    Ok(batch) => batch,
                    Err(e) => {
                        let _ = ready.send(Err(e.into())).await;
                        return;
                    }
                };
                let Some(last) = batch.last().map(|e| e.position) else {
                    return;
                };
                after = last;
                if ready.send(Ok((last, records(batch)))).await.is_err() {
                    return;
                }
            }
        }
    });
    while let Some(next) = batches.recv().await {
        let (last, records) = next?;
        let mut tx = build.begin().await?;
        projection.apply(&mut tx, &records).await?;
        done += records.len() as u64;
        sqlx::query("UPDATE rebuild_progress SET position = $1, events = $2")
            .bind(last)
            .bind(done as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        position = last;
        let rate = (done - resumed_at as u64) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        progress(Progress {
            done,
            total: total.max(done as i64) as u64,
            events_per_second: rate,
        });
    }
    reader.await?;
    build.close().await;

    swap(
        projection,
        &admin,
        &events,
        position,
        &options.reset_offsets,
    )
    .await?;
    sqlx::query("SELECT pg_advisory_unlock(hashtext('rebuild:' || $1))")
        .bind(name)
        .execute(&mut *guard)
        .await?;
    Ok(Report {
        events: done,
        resumed_at: resumed_at as u64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Takes the projection's rebuild lock (one rebuild at a time; held by the returned
/// connection) and opens the build schema, fresh if `restart`: the admin pool, the lock's
/// connection, the build pool.
async fn begin<P: Projection>(
    projection: &P,
    database_url: &str,
    restart: bool,
) -> anyhow::Result<(PgPool, sqlx::pool::PoolConnection<sqlx::Postgres>, PgPool)> {
    let name = projection.name();
    let admin = platform::db::connect(database_url, 2).await?;
    let mut guard = admin.acquire().await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('rebuild:' || $1))")
            .bind(name)
            .fetch_one(&mut *guard)
            .await?;
    anyhow::ensure!(
        locked,
        "another rebuild of the {name} projection is running"
    );
    if restart {
        sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {BUILD_SCHEMA} CASCADE"))
            .execute(&admin)
            .await?;
    }
    let build = platform::db::connect_schema(database_url, BUILD_SCHEMA, 2).await?;
    runner::migrate(&build, projection).await?;
    Ok((admin, guard, build))
}

/// Catches up from the event store and swaps the rebuilt schema in, atomically, with the
/// projector paused.
async fn swap<P: Projection>(
    projection: &P,
    admin: &PgPool,
    events: &PgPool,
    position: i64,
    reset_offsets: &HashMap<(String, i32), Stored>,
) -> anyhow::Result<()> {
    swap_with(projection, admin, reset_offsets, async |tx| {
        catch_up_from_event_store(projection, tx, events, position).await
    })
    .await
}

/// The events the rebuild has not applied yet: those that committed late, behind the last
/// position built, and the whole streams of aggregates still waiting for an earlier event.
async fn catch_up_from_event_store<P: Projection>(
    projection: &P,
    tx: &mut PgConnection,
    events: &PgPool,
    position: i64,
) -> anyhow::Result<()> {
    let name = projection.name();
    let topics = &projection.topics()[..];
    // Events that committed late, behind the last position built.
    let mut after = (position - CATCH_UP_WINDOW).max(0);
    loop {
        let batch = event_store::published_after(events, topics, after, 5_000).await?;
        let Some(last) = batch.last().map(|e| e.position) else {
            break;
        };
        let records = records(batch);
        projection.apply(&mut *tx, &records).await?;
        after = last;
    }
    // Aggregates still waiting for an earlier event: re-read their whole streams.
    let waiting: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT aggregate_id FROM projection_pending WHERE projection = $1",
    )
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    if !waiting.is_empty() {
        let records = records(event_store::published_streams(events, topics, &waiting).await?);
        projection.apply(&mut *tx, &records).await?;
    }
    Ok(())
}

/// Swaps the rebuilt schema in, atomically, with the projector paused: `catch_up` applies
/// (in the swap's transaction, the build schema first on the search path) what the live model
/// has and the rebuilt one lacks; the rebuilt model then takes over the live offsets.
async fn swap_with<P: Projection>(
    projection: &P,
    admin: &PgPool,
    reset_offsets: &HashMap<(String, i32), Stored>,
    catch_up: impl AsyncFnOnce(&mut PgConnection) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let name = projection.name();
    let mut conn = admin.acquire().await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('projection:' || $1))")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(&format!("SET LOCAL search_path = {BUILD_SCHEMA}, public"))
        .execute(&mut *tx)
        .await?;
    catch_up(&mut tx).await?;
    let live_schema: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(READ_MODEL_SCHEMA)
            .fetch_one(&mut *tx)
            .await?;
    let live_offsets: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{READ_MODEL_SCHEMA}.projection_offsets"))
        .fetch_one(&mut *tx)
        .await?;
    if live_offsets {
        take_over_offsets(&mut tx, name).await?;
    }
    if !reset_offsets.is_empty() {
        runner::store_offsets(&mut tx, name, reset_offsets).await?;
    }
    let retire_live = if live_schema {
        format!("ALTER SCHEMA {READ_MODEL_SCHEMA} RENAME TO {READ_MODEL_SCHEMA}_replaced;")
    } else {
        String::new()
    };
    if live_schema {
        // The new model keeps the live one's owner and readers (e.g. the query API's role),
        // whoever ran the rebuild: an administrator's rebuild must not lock the readers out.
        sqlx::raw_sql(&format!(
            "DO $$ DECLARE live record; r record; BEGIN
               SELECT oid, nspowner::regrole::text AS owner INTO live
                 FROM pg_namespace WHERE nspname = '{READ_MODEL_SCHEMA}';
               FOR r IN SELECT DISTINCT a.grantee::regrole::text AS reader
                        FROM pg_namespace n, aclexplode(n.nspacl) a
                        WHERE n.oid = live.oid AND a.privilege_type = 'USAGE'
                          AND a.grantee <> 0 AND a.grantee <> n.nspowner LOOP
                 EXECUTE format('GRANT USAGE ON SCHEMA {BUILD_SCHEMA} TO %s', r.reader);
                 EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA {BUILD_SCHEMA} TO %s', r.reader);
               END LOOP;
               IF live.owner <> current_user THEN
                 EXECUTE format('ALTER SCHEMA {BUILD_SCHEMA} OWNER TO %s', live.owner);
                 FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = '{BUILD_SCHEMA}' LOOP
                   EXECUTE format('ALTER TABLE {BUILD_SCHEMA}.%I OWNER TO %s', r.tablename, live.owner);
                 END LOOP;
               END IF;
             END $$;"
        ))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS {BUILD_SCHEMA}.rebuild_progress;
         {retire_live}
         ALTER SCHEMA {BUILD_SCHEMA} RENAME TO {READ_MODEL_SCHEMA};
         DROP SCHEMA IF EXISTS {READ_MODEL_SCHEMA}_replaced CASCADE;"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The rebuilt model continues from where the live projector is: its offsets.
async fn take_over_offsets(conn: &mut PgConnection, projection: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "DELETE FROM {BUILD_SCHEMA}.projection_offsets WHERE projection = $1"
    ))
    .bind(projection)
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {BUILD_SCHEMA}.projection_offsets
         SELECT * FROM {READ_MODEL_SCHEMA}.projection_offsets WHERE projection = $1"
    ))
    .bind(projection)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Where to rebuild a model whose history is its topic (the PHI access index), and how.
#[derive(Debug, Clone)]
pub struct TopicRebuildOptions {
    /// The projection's database.
    pub database_url: String,
    pub brokers: String,
    pub registry_url: String,
    /// Records per transaction.
    pub batch_size: usize,
    /// Discard an interrupted rebuild instead of resuming it.
    pub restart: bool,
}

/// A consumer that reports partition EOF (the end of what the log holds now).
fn eof_consumer(brokers: &str) -> anyhow::Result<BaseConsumer> {
    platform::kafka::client_config(brokers)
        .set("group.id", "healthplane-rebuild")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .context("cannot create a Kafka consumer")
}

/// Reads the assigned partitions to their ends (or `until`, exclusive, where given), decoding
/// each record; calls `batch` with every `size` records and the offsets they reach.
async fn read_partitions(
    consumer: &BaseConsumer,
    codec: &schemas::EventCodec,
    mut open: Vec<(String, i32)>,
    until: &HashMap<(String, i32), i64>,
    size: usize,
    mut batch: impl AsyncFnMut(Vec<Record>, HashMap<(String, i32), Stored>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let (mut records, mut offsets, mut skipped) = (Vec::new(), HashMap::new(), 0u64);
    let deadline = Instant::now() + std::time::Duration::from_secs(24 * 3600);
    while !open.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "timed out reading the topic");
        let message = match consumer.poll(std::time::Duration::from_millis(500)) {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                open.retain(|(_, p)| *p != partition);
                continue;
            }
            Some(Err(e)) => return Err(e).context("reading the topic"),
        };
        let at = (message.topic().to_string(), message.partition());
        if until.get(&at).is_some_and(|end| message.offset() >= *end) {
            open.retain(|o| *o != at);
            continue;
        }
        offsets.insert(
            at,
            Stored {
                next: message.offset() + 1,
                fingerprint: Some(crate::log_check::fingerprint(
                    message.key(),
                    message.payload(),
                )),
            },
        );
        match codec.decode_json(message.payload()).await {
            Ok(json) => records.push(Record {
                topic: message.topic().to_string(),
                json,
            }),
            Err(e) if e.is_transient() => return Err(e.into()),
            // Already a dead letter of the live projector's.
            Err(_) => skipped += 1,
        }
        if records.len() >= size {
            batch(std::mem::take(&mut records), std::mem::take(&mut offsets)).await?;
        }
    }
    if !records.is_empty() || !offsets.is_empty() {
        batch(records, offsets).await?;
    }
    Ok(skipped)
}

/// Rebuilds a model whose history is its topics (the PHI access index, kept six years) from
/// the log, and swaps it in: the topics are read to their current ends into the build schema
/// (resumable: the build keeps its offsets), then, with the projector paused, the rebuild
/// reads on to where the live projector is and takes over its offsets.
pub async fn rebuild_from_topics<P: Projection>(
    projection: &P,
    options: &TopicRebuildOptions,
    mut progress: impl FnMut(Progress),
) -> anyhow::Result<Report> {
    let name = projection.name();
    let (admin, mut guard, build) =
        begin(projection, &options.database_url, options.restart).await?;
    let resume = runner::stored_offsets(&build, name).await?;
    let codec = schemas::EventCodec::new(&options.registry_url);
    let consumer = eof_consumer(&options.brokers)?;
    let mut assignment = TopicPartitionList::new();
    let (mut open, mut total, mut resumed_at) = (Vec::new(), 0u64, 0u64);
    for topic in projection.topics() {
        let partitions = events::catalog::topic(topic)
            .with_context(|| format!("{topic} is not in the topic catalog"))?
            .partitions;
        for partition in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, std::time::Duration::from_secs(10))
                .context("cannot reach the broker")?;
            let start = resume
                .get(&(topic.to_string(), partition))
                .map_or(low, |s| s.next.max(low));
            resumed_at += (start - low).max(0) as u64;
            total += (high - low).max(0) as u64;
            if high > start {
                assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
                open.push((topic.to_string(), partition));
            }
        }
    }
    let started = Instant::now();
    let mut done = resumed_at;
    if !open.is_empty() {
        consumer.assign(&assignment)?;
    }
    read_partitions(
        &consumer,
        &codec,
        open,
        &HashMap::new(),
        options.batch_size,
        async |records, offsets| {
            let mut tx = build.begin().await?;
            projection.apply(&mut tx, &records).await?;
            runner::store_offsets(&mut tx, name, &offsets).await?;
            tx.commit().await?;
            done += records.len() as u64;
            let rate = (done - resumed_at) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress(Progress {
                done,
                total: total.max(done),
                events_per_second: rate,
            });
            Ok(())
        },
    )
    .await?;
    let built = runner::stored_offsets(&build, name).await?;
    build.close().await;

    swap_with(projection, &admin, &HashMap::new(), async |tx| {
        // On to where the live projector is (its offsets are taken over next).
        let live: Vec<(String, i32, i64)> = sqlx::query_as(&format!(
            "SELECT topic, partition, next_offset FROM {READ_MODEL_SCHEMA}.projection_offsets
             WHERE projection = $1"
        ))
        .bind(name)
        .fetch_all(&mut *tx)
        .await
        .unwrap_or_default();
        let mut assignment = TopicPartitionList::new();
        let (mut open, mut until) = (Vec::new(), HashMap::new());
        for (topic, partition, live_next) in live {
            let from = built.get(&(topic.clone(), partition)).map_or(0, |s| s.next);
            if live_next > from {
                assignment.add_partition_offset(&topic, partition, Offset::Offset(from))?;
                until.insert((topic.clone(), partition), live_next);
                open.push((topic, partition));
            }
        }
        if open.is_empty() {
            return Ok(());
        }
        let consumer = eof_consumer(&options.brokers)?;
        consumer.assign(&assignment)?;
        read_partitions(
            &consumer,
            &codec,
            open,
            &until,
            usize::MAX,
            async |records, _| {
                projection.apply(&mut *tx, &records).await?;
                Ok(())
            },
        )
        .await
        .map(|_| ())
    })
    .await?;
    sqlx::query("SELECT pg_advisory_unlock(hashtext('rebuild:' || $1))")
        .bind(name)
        .execute(&mut *guard)
        .await?;
    Ok(Report {
        events: done,
        resumed_at,
        seconds: started.elapsed().as_secs_f64(),
    })
}

//! The write path, on a broker of its own with SQLite storage (as the local stack), next to the
//! raw limits measured in the same run:
//! - the command API at saturation (32 concurrent clients registering patients, each command
//!   its own transaction with its outbox row), with the outbox relay running in the same
//!   process: commands/s, p50/p99, and the deepest the outbox got (does the relay keep up?);
//!   next to single-row transactional inserts into PostgreSQL by as many connections;
//! - the relay alone draining a backlog the API built with the relay off: events/s, next to a
//!   plain librdkafka producer (idempotent, acks=all) sending as many records of the same size
//!   and headers to the same broker;
//! - end-to-end latency at a fixed 1,000 commands/s, from each command's `201` to its event
//!   read back from the broker.
//!
//! Run with `./deploy/bench.sh write`; `HEALTHPLANE_BENCH_SECONDS` sets each load's length
//! (default 15).

use std::time::{Duration, Instant};

use events::Role;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tests::bench::{Measure, report};
use tests::{Databases, OwnCluster, Process, Stack, ada, http_client, token};

const CLIENTS: usize = 32;

/// CPU seconds (user + system) used so far by every process whose name (`/proc/<pid>/comm`)
/// starts with one of `names`, by name; this process counts as `load generator`.
fn cpu_seconds(names: &[&str]) -> std::collections::BTreeMap<String, f64> {
    fn ticks(stat: &str) -> Option<f64> {
        // After the parenthesised name: state, then fields 4.. ; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
    }
    let hz = 100.0; // USER_HZ on Linux
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let Some(name) = names.iter().find(|n| comm.trim().starts_with(*n)) else {
            continue;
        };
        if let Some(t) = std::fs::read_to_string(path.join("stat"))
            .ok()
            .as_deref()
            .and_then(ticks)
        {
            *out.entry(name.to_string()).or_insert(0.0) += t / hz;
        }
    }
    if let Some(t) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(ticks)
    {
        out.insert("load generator".into(), t / hz);
    }
    out
}

/// Each process's share of the machine's CPU between two `cpu_seconds` readings.
fn cpu_shares(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    seconds: f64,
) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    after
        .iter()
        .map(|(name, t)| {
            let used = t - before.get(name).copied().unwrap_or(0.0);
            format!("{name} {:.0}%", 100.0 * used / (seconds * cores))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Records/s a plain producer gets acknowledged, sending `n` records of `size` bytes with the
/// four headers of a Healthplane record, all at once.
async fn raw_produce(brokers: &str, n: usize, size: usize) -> anyhow::Result<f64> {
    let topic = "healthplane.bench.raw-produce";
    let spec = events::catalog::TopicSpec {
        name: topic,
        partitions: 6,
        retention_days: 1,
        key: "a uuid",
        producer: "the benchmark",
        consumers: &[],
    };
    platform::kafka::ensure_topics(brokers, &[spec], 1).await?;
    let producer: FutureProducer =
        platform::kafka::producer_config(brokers, Duration::from_secs(120)).create()?;
    let payload = vec![b'x'; size];
    let started = Instant::now();
    let keys: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    // The headers every Healthplane record carries (event_type, event_id, correlation_id,
    // traceparent), at their sizes: the broker stores each.
    let traceparent = format!("00-{}-{}-01", "a".repeat(32), "b".repeat(16));
    let sends = keys.iter().map(|key| {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "event_type",
                value: Some("PatientRegistered"),
            })
            .insert(Header {
                key: "event_id",
                value: Some(key.as_str()),
            })
            .insert(Header {
                key: "correlation_id",
                value: Some(key.as_str()),
            })
            .insert(Header {
                key: "traceparent",
                value: Some(traceparent.as_str()),
            });
        producer.send(
            FutureRecord::to(topic)
                .key(key)
                .payload(&payload)
                .headers(headers),
            Duration::from_secs(120),
        )
    });
    for result in futures::future::join_all(sends).await {
        result.map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Rows/s `clients` connections insert, one row per transaction, for `seconds`.
async fn raw_inserts(url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let pool = platform::db::connect(url, clients as u32).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS bench_single_row (id BIGSERIAL PRIMARY KEY, body JSONB NOT NULL)",
    )
    .execute(&pool)
    .await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers = (0..clients).map(|_| {
        let pool = pool.clone();
        async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO bench_single_row (body) VALUES ($1)")
                    .bind(serde_json::json!({"name": "Ada Lovelace", "n": n}))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                n += 1;
            }
            Ok::<_, sqlx::Error>(n)
        }
    });
    let mut total = 0;
    for n in futures::future::join_all(workers).await {
        total += n?;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

struct Load {
    accepted: u64,
    other: u64,
    seconds: f64,
    p50: Duration,
    p99: Duration,
}

/// `CLIENTS` clients registering patients as fast as the API answers, for `seconds`.
async fn saturate(command_url: &str, seconds: u64) -> Load {
    let http = http_client();
    let admin = token(Role::Admin, "bench-front-desk", None);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers = (0..CLIENTS).map(|_| {
        let (http, admin) = (http.clone(), admin.clone());
        let url = format!("{command_url}/v1/patients");
        async move {
            let (mut accepted, mut other, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < deadline {
                let sent = Instant::now();
                let status = http
                    .post(&url)
                    .bearer_auth(&admin)
                    .json(&ada())
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                latencies.push(sent.elapsed());
                if status == 201 {
                    accepted += 1;
                } else {
                    other += 1;
                }
            }
            (accepted, other, latencies)
        }
    });
    let mut load = Load {
        accepted: 0,
        other: 0,
        seconds: 0.0,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
    };
    let mut latencies = Vec::new();
    for (accepted, other, mut l) in futures::future::join_all(workers).await {
        load.accepted += accepted;
        load.other += other;
        latencies.append(&mut l);
    }
    load.seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    if !latencies.is_empty() {
        load.p50 = latencies[latencies.len() / 2];
        load.p99 = latencies[latencies.len() * 99 / 100];
    }
    load
}

async fn unpublished(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(pool)
            .await?,
    )
}

/// A command API of its own on the stack's event store (`extra` args, e.g. `--no-relay`).
async fn command_api(stack: &Stack, extra: &[&str]) -> (Process, String) {
    let database = Databases::as_role(
        &stack.databases.event_store,
        platform::provision::Service::Command,
    );
    tests::start_command_api(
        "command-api-bench",
        &stack.cluster,
        &database,
        extra,
        &stack.log_dir,
    )
    .await
}

/// End-to-end latency at a fixed rate: `rate` commands/s for `seconds`, sent on schedule
/// (open loop); each command's latency runs from its `201` to when a consumer of
/// `healthcare.patient.created` on the same broker receives its event (an upper bound of the
/// broker's ack). Returns p50, p99, and how many events never arrived within a minute.
async fn end_to_end(
    command_url: &str,
    brokers: &str,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<(Duration, Duration, usize)> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;
    let topic = events::catalog::PATIENT_CREATED;
    let consumer: StreamConsumer = platform::kafka::client_config(brokers)
        .set("group.id", format!("bench-e2e-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let partitions = events::catalog::topic(topic).expect("catalog").partitions;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        assignment.add_partition_offset(topic, p, rdkafka::Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    let received = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = consumer.recv() => {
                        if let Ok(m) = message
                            && let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok())
                        {
                            received.lock().expect("lock").insert(key.to_string(), Instant::now());
                        }
                    }
                    _ = stop_rx.changed() => return,
                }
            }
        })
    };
    let http = http_client();
    let admin = token(Role::Admin, "bench-front-desk", None);
    let url = format!("{command_url}/v1/patients");
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = Vec::new();
    for _ in 0..rate * seconds {
        ticker.tick().await;
        let (http, admin, url) = (http.clone(), admin.clone(), url.clone());
        sent.push(tokio::spawn(async move {
            let response = http
                .post(&url)
                .bearer_auth(&admin)
                .json(&ada())
                .send()
                .await
                .ok()?;
            let accepted = Instant::now();
            if response.status().as_u16() != 201 {
                return None;
            }
            let body: serde_json::Value = response.json().await.ok()?;
            Some((body["id"].as_str()?.to_string(), accepted))
        }));
    }
    let mut accepted = Vec::new();
    for handle in sent {
        if let Some(a) = handle.await? {
            accepted.push(a);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let seen = received.lock().expect("lock").len();
        if seen >= accepted.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    reader.await?;
    let received = received.lock().expect("lock");
    let mut latencies: Vec<Duration> = accepted
        .iter()
        .filter_map(|(id, at)| received.get(id).map(|r| r.saturating_duration_since(*at)))
        .collect();
    let missing = accepted.len() - latencies.len();
    latencies.sort();
    anyhow::ensure!(!latencies.is_empty(), "no event arrived");
    Ok((
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        missing,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs bench binaries without `--bench`: nothing to do then.
    if !tests::bench::requested() {
        return Ok(());
    }
    let seconds: u64 = tests::bench::env_number("HEALTHPLANE_BENCH_SECONDS", 15);
    let (own, _) = OwnCluster::start().await;
    let mut stack = Stack::start_with(own.cluster.clone(), Databases::fresh()).await;
    let events = platform::db::connect(&stack.databases.event_store, 2).await?;
    let mut rows = Vec::new();

    // The stack's own command API (relay on) at saturation; the outbox sampled meanwhile.
    eprintln!("command API at saturation for {seconds} s ({CLIENTS} clients, relay on)");
    let sampler = {
        let events = events.clone();
        tokio::spawn(async move {
            let mut deepest = 0;
            let deadline = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < deadline {
                deepest = deepest.max(unpublished(&events).await.unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            deepest
        })
    };
    const PROCESSES: [&str; 4] = ["command-api", "postgres", "tansu", "projector"];
    let cpu_before = cpu_seconds(&PROCESSES);
    let load = saturate(&stack.command_url, seconds).await;
    let cpu = cpu_shares(&cpu_before, &cpu_seconds(&PROCESSES), load.seconds);
    let deepest = sampler.await?;
    let rss = stack.processes[0].rss_kib();
    let drained = Instant::now();
    while unpublished(&events).await? > 0 {
        anyhow::ensure!(
            drained.elapsed() < Duration::from_secs(600),
            "the outbox never drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_after = drained.elapsed().as_secs_f64();
    eprintln!("1,000 commands/s for {seconds} s, each followed to its event on the broker");
    let (e2e_p50, e2e_p99, lost) =
        end_to_end(&stack.command_url, &stack.cluster.brokers, 1_000, seconds).await?;
    rows.push(Measure::text(
        "end-to-end latency at 1,000 commands/s: `201` to the event read from the broker (p50 / p99)",
        format!(
            "{:.0} / {:.0} ms{}",
            e2e_p50.as_secs_f64() * 1e3,
            e2e_p99.as_secs_f64() * 1e3,
            if lost > 0 { format!(" ({lost} not seen within a minute)") } else { String::new() }
        ),
        "—".into(),
        "—".into(),
        "p99 < 100 ms",
    ));
    while unpublished(&events).await? > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let raw_inserts = raw_inserts(
        &format!("{}_raw", stack.databases.event_store),
        CLIENTS,
        seconds,
    )
    .await?;
    rows.push(Measure::rate(
        &format!("command API at saturation ({CLIENTS} clients, `POST /v1/patients`, relay on)"),
        "commands",
        load.accepted as f64 / load.seconds,
        Some((
            "single-row transactional inserts, as many connections",
            raw_inserts,
        )),
        ">= 5,000 commands/s",
    ));
    rows.push(Measure::text(
        "command latency at saturation (p50 / p99)",
        format!(
            "{:.1} / {:.1} ms",
            load.p50.as_secs_f64() * 1e3,
            load.p99.as_secs_f64() * 1e3
        ),
        "—".into(),
        "—".into(),
        "—",
    ));
    rows.push(Measure::text(
        "outbox depth at the API's saturation rate (deepest; drained after the load)",
        format!("{deepest} events; empty {drain_after:.1} s after"),
        "—".into(),
        "—".into(),
        "bounded",
    ));
    rows.push(Measure::text(
        "machine CPU during the saturation, by process (of all cores)",
        cpu,
        "—".into(),
        "—".into(),
        "—",
    ));
    rows.push(Measure::text(
        "command API RSS after the load",
        format!("{} MiB", rss / 1024),
        "—".into(),
        "—".into(),
        "< 256 MiB",
    ));
    anyhow::ensure!(
        load.other == 0 || load.accepted > 0,
        "no command was accepted"
    );
    if load.other > 0 {
        eprintln!("{} commands were not accepted (not 201)", load.other);
    }

    // The relay alone, draining a backlog built with the relay off.
    stack.processes[0].kill();
    let (mut quiet, quiet_url) = command_api(&stack, &["--no-relay"]).await;
    eprintln!("building a backlog with the relay off for {seconds} s");
    let cpu_before = cpu_seconds(&PROCESSES);
    let backlog_load = saturate(&quiet_url, seconds).await;
    let quiet_cpu = cpu_shares(&cpu_before, &cpu_seconds(&PROCESSES), backlog_load.seconds);
    quiet.kill();
    let backlog = unpublished(&events).await?;
    let batch = std::env::var("HEALTHPLANE_RELAY_BATCH_SIZE").unwrap_or_else(|_| "2000".into());
    let (mut relay, relay_url) = command_api(&stack, &["--relay-batch-size", &batch]).await;
    let started = Instant::now();
    while unpublished(&events).await? > 0 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the relay never drained the backlog"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let relay_rate = backlog as f64 / started.elapsed().as_secs_f64();
    // Where the relay's time went, from its own metrics.
    let metrics = http_client()
        .get(format!("{relay_url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let phase = |name: &str| -> f64 {
        let prefix = format!("healthplane_outbox_relay_phase_seconds_total{{phase=\"{name}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let phases = ["lease", "encode", "ack", "mark"].map(|p| (p, phase(p)));
    relay.kill();
    let size = 420; // about a PatientRegistered record
    let produce = raw_produce(&own.cluster.brokers, backlog.max(20_000) as usize, size).await?;
    rows.push(Measure::rate(
        &format!(
            "outbox relay draining {backlog} events (built at {:.0} commands/s with the relay off)",
            backlog_load.accepted as f64 / backlog_load.seconds
        ),
        "events",
        relay_rate,
        Some((
            "librdkafka produce of as many records of the same size and headers, idempotent, acks=all",
            produce,
        )),
        ">= 50% of raw",
    ));
    rows.push(Measure::text(
        &format!(
            "command API at saturation with the relay off: {:.0} commands/s, p99 {:.1} ms; CPU by process",
            backlog_load.accepted as f64 / backlog_load.seconds,
            backlog_load.p99.as_secs_f64() * 1e3
        ),
        quiet_cpu,
        "—".into(),
        "—".into(),
        "—",
    ));
    let total: f64 = phases.iter().map(|p| p.1).sum::<f64>().max(1e-9);
    rows.push(Measure::text(
        &format!("relay time by phase while draining (batches of {batch})"),
        phases
            .iter()
            .map(|(name, s)| format!("{name} {:.0}%", 100.0 * s / total))
            .collect::<Vec<_>>()
            .join(", "),
        "—".into(),
        "—".into(),
        "—",
    ));
    report("write", &rows)
}

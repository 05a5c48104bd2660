//! Journey: the broker was away for a while under load and the outbox holds 100,000
//! unpublished events. The relay drains them all, in order per aggregate, holding a bounded
//! number of locks, while the command API keeps answering.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use events::Role;
use events::catalog::{PATIENT_CREATED, PATIENT_UPDATED};
use rdkafka::message::{Headers, Message};
use reqwest::Method;
use serde_json::json;
use tests::{Cluster, Databases, OwnCluster, Process, ada, read_topic, token};
use uuid::Uuid;

/// Aggregates in the backlog, each with `VERSIONS` events: 100,000 events.
const AGGREGATES: i64 = 25_000;
const VERSIONS: i64 = 4;

/// A command API on the event store `database`, with or without its relay, once ready; and its URL.
async fn command_api(
    cluster: &Cluster,
    database: &str,
    relay: bool,
    dir: &std::path::Path,
) -> (Process, String) {
    let (name, args): (_, &[&str]) = if relay {
        ("command-api-relay", &[])
    } else {
        ("command-api-no-relay", &["--no-relay"])
    };
    tests::start_command_api(name, cluster, database, args, dir).await
}

async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let admin = token(Role::Admin, "backlog-e2e", None);
    let mut request = http.request(method, url).bearer_auth(admin).json(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("command API answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Registers a patient as an admin.
async fn register(http: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let url = format!("{url}/v1/patients");
    send(http, Method::POST, &url, &ada(), &[]).await
}

#[tokio::test]
async fn a_backlog_of_100000_events_drains_in_aggregate_order_with_bounded_locks() {
    // A cluster of its own: 100,000 events would slow every test that reads a topic from the start.
    let (own, _) = OwnCluster::start_in_memory().await;
    let cluster = own.cluster.clone();
    let databases = Databases::fresh();
    let dir = std::env::temp_dir()
        .join("healthplane-tests")
        .join(Uuid::new_v4().simple().to_string());
    let http = tests::http_client();

    // A seed patient, created and updated with the relay off: the templates of the backlog.
    let (mut quiet, url) = command_api(&cluster, &databases.event_store, false, &dir).await;
    let (status, created) = register(&http, &url).await;
    assert_eq!(status, 201, "{created}");
    let seed: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let (status, updated) = send(
        &http,
        Method::PATCH,
        &format!("{url}/v1/patients/{seed}"),
        &json!({"telecom": [{"system": "phone", "value": "+44 20 7946 0001"}]}),
        &[("If-Match", "1")],
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    quiet.kill();

    // The backlog: version 1 of every aggregate, then version 2 of every aggregate, ... so that
    // each aggregate's events lie far apart in the outbox, across many batches.
    let store = platform::db::connect(&databases.event_store, 2)
        .await
        .expect("event store");
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, aggregate_version, event_type,
                             payload, occurred_at, correlation_id, actor_id, actor_role)
         SELECT gen_random_uuid(), 'patient', md5($1::TEXT || a::TEXT)::uuid, v, t.event_type, t.payload,
                now(), 'backlog-e2e', t.actor_id, t.actor_role
         FROM generate_series(1, $2::BIGINT) AS v, generate_series(1, $3::BIGINT) AS a,
              LATERAL (SELECT * FROM events WHERE aggregate_id = $4::uuid
                       AND aggregate_version = LEAST(v, 2)) AS t
         ORDER BY v, a",
    )
    .bind(seed.to_string())
    .bind(VERSIONS)
    .bind(AGGREGATES)
    .bind(seed)
    .execute(&store)
    .await
    .expect("bulk events");
    sqlx::query(
        "INSERT INTO outbox (event_id, aggregate_id, topic)
         SELECT event_id, aggregate_id,
                CASE WHEN aggregate_version = 1 THEN $1 ELSE $2 END
         FROM events WHERE correlation_id = 'backlog-e2e' ORDER BY global_position",
    )
    .bind(PATIENT_CREATED)
    .bind(PATIENT_UPDATED)
    .execute(&store)
    .await
    .expect("bulk outbox");
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&store)
        .await
        .unwrap();
    assert!(backlog >= 100_000, "{backlog}");

    // The relay starts on the backlog; commands keep arriving meanwhile.
    let (mut relay, url) = command_api(&cluster, &databases.event_store, true, &dir).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let (mut max_relay_locks, mut max_locks, mut samples) = (0i64, 0i64, 0);
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    loop {
        let (relay_locks, locks): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE locktype = 'advisory' AND classid = 8082 AND objsubid = 2),
                    count(*)
             FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&store)
        .await
        .unwrap();
        max_relay_locks = max_relay_locks.max(relay_locks);
        max_locks = max_locks.max(locks);
        samples += 1;
        let (status, _) = register(&http, &url).await;
        *statuses.entry(status).or_default() += 1;
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox o JOIN events e ON e.event_id = o.event_id
             WHERE o.published_at IS NULL AND e.correlation_id = 'backlog-e2e'",
        )
        .fetch_one(&store)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        relay.assert_running();
        assert!(
            Instant::now() < deadline,
            "the outbox did not drain: {left} backlog events left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    // The commands sent meanwhile follow.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&store)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} events left in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "drained {backlog} events in {seconds:.1} s ({:.0} events/s); at most {max_relay_locks} relay locks \
         and {max_locks} locks in the database over {samples} samples; commands answered {statuses:?}",
        backlog as f64 / seconds
    );
    assert_eq!(
        statuses.keys().collect::<Vec<_>>(),
        vec![&201],
        "commands during the drain: {statuses:?}"
    );
    assert!(samples >= 3, "too few samples to say anything about locks");
    assert!(
        max_relay_locks >= 1,
        "never saw the relay's lease: sampled too coarsely?"
    );
    assert!(
        max_relay_locks <= i64::from(commands::store::RELAY_LOCK_BUCKETS),
        "the relay held {max_relay_locks} advisory locks"
    );
    let log = std::fs::read_to_string(dir.join("command-api-relay.log")).unwrap_or_default();
    assert!(!log.contains("out of shared memory"), "{log}");
    assert!(
        !log.contains("batch failed"),
        "a relay batch failed during the drain"
    );

    // Every event is on its topic, and each aggregate's events were published in version order.
    let order_violations: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
           SELECT o.published_at < lag(o.published_at) OVER w AS early
           FROM outbox o JOIN events e ON e.event_id = o.event_id
           WHERE e.correlation_id = 'backlog-e2e'
           WINDOW w AS (PARTITION BY e.aggregate_id ORDER BY e.aggregate_version)) x
         WHERE early",
    )
    .fetch_one(&store)
    .await
    .unwrap();
    assert_eq!(
        order_violations, 0,
        "events marked published before their predecessors"
    );
    let versions: HashMap<Uuid, (Uuid, i64)> = sqlx::query_as::<_, (Uuid, Uuid, i64)>(
        "SELECT event_id, aggregate_id, aggregate_version FROM events WHERE correlation_id = 'backlog-e2e'",
    )
    .fetch_all(&store)
    .await
    .unwrap()
    .into_iter()
    .map(|(event, aggregate, version)| (event, (aggregate, version)))
    .collect();
    let event_id = |m: &rdkafka::message::OwnedMessage| -> Option<Uuid> {
        m.headers()?
            .iter()
            .find(|h| h.key == "event_id")
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
    };
    let mut seen: HashMap<Uuid, Vec<(i32, i64, i64)>> = HashMap::new();
    let mut published = 0;
    for topic in [PATIENT_CREATED, PATIENT_UPDATED] {
        for m in read_topic(&cluster.brokers, topic) {
            if let Some((aggregate, version)) = event_id(&m).and_then(|e| versions.get(&e)) {
                published += 1;
                if topic == PATIENT_UPDATED {
                    seen.entry(*aggregate)
                        .or_default()
                        .push((m.partition(), m.offset(), *version));
                }
            }
        }
    }
    assert!(
        published >= versions.len(),
        "{published} of {} events on the topics",
        versions.len()
    );
    assert_eq!(seen.len() as i64, AGGREGATES);
    for (aggregate, mut updates) in seen {
        updates.sort();
        let in_order: Vec<i64> = updates.iter().map(|u| u.2).collect();
        let mut sorted = in_order.clone();
        sorted.sort();
        assert_eq!(
            in_order, sorted,
            "updates of {aggregate} out of order on the topic"
        );
        assert!(
            updates.windows(2).all(|w| w[0].0 == w[1].0),
            "{aggregate} spans partitions"
        );
    }
}

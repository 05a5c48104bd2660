//! Journey: two nurses (fifty, here) edit the same chart at once, and a clinician double-clicks:
//! one version wins, the rest are told, retries write nothing.

use std::time::{Duration, Instant};

use events::Role;
use events::catalog::{PATIENT_CREATED, PATIENT_UPDATED};
use futures::future::join_all;
use rdkafka::message::Message;
use reqwest::Method;
use serde_json::json;
use tests::{Stack, ada, read_topic_until, token};

use crate::commands::event_count;

async fn unpublished(stack: &Stack) -> i64 {
    let pool = sqlx::PgPool::connect(&stack.databases.event_store)
        .await
        .expect("event store");
    let n = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&pool)
        .await
        .expect("outbox");
    pool.close().await;
    n
}

/// Waits (bounded) until the relay has published every committed event.
async fn drain_outbox(stack: &Stack) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while unpublished(stack).await > 0 {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many records `topic` holds for `key`, once it holds at least one (bounded wait).
async fn count_on(stack: &Stack, topic: &str, key: &str) -> usize {
    let mine = |records: &[rdkafka::message::OwnedMessage]| {
        records
            .iter()
            .filter(|m| m.key() == Some(key.as_bytes()))
            .count()
    };
    mine(&read_topic_until(&stack.cluster.brokers, topic, |r| mine(r) > 0).await)
}

#[tokio::test]
async fn fifty_concurrent_updates_with_one_if_match_make_exactly_one_version() {
    let stack = Stack::start().await;
    let admin = token(Role::Admin, "front-desk", None);
    let id = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/patients/{id}");
    let updates = (0..50).map(|i| {
        let body =
            json!({"telecom": [{"system": "phone", "value": format!("+44 20 7946 {:04}", 1000 + i)}]})
                .to_string();
        stack.command(
            Method::PATCH,
            &path,
            Some(&admin),
            &[("If-Match", "\"1\"")],
            body.into_bytes(),
        )
    });
    let answers = join_all(updates).await;
    let ok: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 200).collect();
    let conflicts = answers
        .iter()
        .filter(|(s, _, b)| *s == 409 && b["currentVersion"] == 2)
        .count();
    assert_eq!(
        (ok.len(), conflicts),
        (1, 49),
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    assert_eq!(ok[0].2["version"], 2);

    let pool = sqlx::PgPool::connect(&stack.databases.event_store)
        .await
        .unwrap();
    let versions: Vec<i64> = sqlx::query_scalar(
        "SELECT aggregate_version FROM events WHERE aggregate_id = $1::uuid ORDER BY 1",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        versions,
        vec![1, 2],
        "the event store holds exactly one new version"
    );
    drain_outbox(&stack).await;
    assert_eq!(
        count_on(&stack, PATIENT_UPDATED, &id).await,
        1,
        "the topic holds exactly one new version"
    );
}

#[tokio::test]
async fn idempotency_keys_replay_the_first_answer_and_racing_retries_write_once() {
    let stack = Stack::start().await;
    let admin = token(Role::Admin, "front-desk", None);
    let before = event_count(&stack).await;
    let body = ada().to_string().into_bytes();
    let key = [("Idempotency-Key", "register-ada-1")];

    let (s1, h1, first) = stack
        .command(
            Method::POST,
            "/v1/patients",
            Some(&admin),
            &key,
            body.clone(),
        )
        .await;
    assert_eq!(s1, 201, "{first}");
    let (s2, h2, again) = stack
        .command(
            Method::POST,
            "/v1/patients",
            Some(&admin),
            &key,
            body.clone(),
        )
        .await;
    assert_eq!(
        (s2, &again),
        (201, &first),
        "a retry gets the original answer"
    );
    assert_eq!(
        (h2["etag"].clone(), h2["location"].clone()),
        (h1["etag"].clone(), h1["location"].clone())
    );
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(
        event_count(&stack).await,
        before + 1,
        "the retry wrote nothing"
    );

    let other = ada().to_string().into_bytes();
    let (s, _, reused) = stack
        .command(Method::POST, "/v1/patients", Some(&admin), &key, other)
        .await;
    assert_eq!(
        (
            s,
            reused["type"]
                .as_str()
                .unwrap()
                .ends_with("idempotency-key-reused")
        ),
        (422, true),
        "{reused}"
    );

    // Ten identical requests racing: one patient, one event, one answer.
    let racing_body = ada().to_string().into_bytes();
    let racing = (0..10).map(|_| {
        stack.command(
            Method::POST,
            "/v1/patients",
            Some(&admin),
            &[("Idempotency-Key", "register-racing")],
            racing_body.clone(),
        )
    });
    let answers = join_all(racing).await;
    assert!(
        answers.iter().all(|(s, _, _)| *s == 201),
        "{:?}",
        answers
            .iter()
            .map(|a| (a.0, a.2.clone()))
            .collect::<Vec<_>>()
    );
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(_, _, b)| b["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(event_count(&stack).await, before + 2);

    // Keys belong to their user: another user's same key is another command.
    let other_admin = token(Role::Admin, "front-desk-2", None);
    // (Their patient has an identifier of its own: identifiers are unique across patients.)
    let (s, _, theirs) = stack
        .command(
            Method::POST,
            "/v1/patients",
            Some(&other_admin),
            &key,
            ada().to_string().into_bytes(),
        )
        .await;
    assert_eq!(s, 201);
    assert_ne!(theirs["id"], first["id"]);

    // Updates too: a retried PATCH is one version.
    let path = format!("/v1/patients/{}", first["id"].as_str().unwrap());
    let patch = br#"{"gender": "other"}"#.to_vec();
    let headers = [("If-Match", "1"), ("Idempotency-Key", "fix-gender")];
    let (s1, _, u1) = stack
        .command(Method::PATCH, &path, Some(&admin), &headers, patch.clone())
        .await;
    let (s2, _, u2) = stack
        .command(Method::PATCH, &path, Some(&admin), &headers, patch)
        .await;
    assert_eq!((s1, s2, u1["version"].clone()), (200, 200, json!(2)));
    assert_eq!(u1, u2);
    drain_outbox(&stack).await;
    assert_eq!(
        count_on(&stack, PATIENT_CREATED, first["id"].as_str().unwrap()).await,
        1
    );
    assert_eq!(
        count_on(&stack, PATIENT_UPDATED, first["id"].as_str().unwrap()).await,
        1
    );
}

#[tokio::test]
async fn two_relays_publish_every_event_once_in_aggregate_order() {
    let stack = Stack::start().await;
    // A second command API, with its own relay, on the same event store.
    let port = tests::free_port();
    let mut second = tests::Process::spawn(
        "command-api-2",
        &tests::bin_dir().join("command-api"),
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            &stack.databases.event_store,
        ],
        &[
            ("HEALTHPLANE_KAFKA_BROKERS", stack.cluster.brokers.clone()),
            (
                "HEALTHPLANE_SCHEMA_REGISTRY_URL",
                stack.cluster.registry_url.clone(),
            ),
        ],
        &stack.log_dir,
    );
    let second_url = format!("http://127.0.0.1:{port}");
    tests::wait_ready(
        &mut second,
        &format!("{second_url}/health/ready"),
        Duration::from_secs(60),
    )
    .await;

    let admin = token(Role::Admin, "front-desk", None);
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(
            stack.register(&ada()).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Each patient gets 6 updates in order, sent alternately to the two APIs; patients in parallel.
    let edits = ids.iter().map(|id| {
        let (admin, second_url, stack) = (&admin, &second_url, &stack);
        async move {
            for version in 1..=6 {
                let url = if version % 2 == 0 { second_url } else { &stack.command_url };
                let body = json!({"telecom": [{"system": "phone", "value": format!("+44 1632 9600{version:02}")}]});
                let response = stack
                    .http
                    .patch(format!("{url}/v1/patients/{id}"))
                    .bearer_auth(admin)
                    .header("If-Match", version.to_string())
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }
    });
    join_all(edits).await;
    drain_outbox(&stack).await;

    let expected = ids.len() * 6;
    let updates = read_topic_until(&stack.cluster.brokers, PATIENT_UPDATED, |records| {
        records
            .iter()
            .filter(|m| ids.iter().any(|id| m.key() == Some(id.as_bytes())))
            .count()
            >= expected
    })
    .await;
    let codec = schemas::EventCodec::new(&stack.cluster.registry_url);
    for id in &ids {
        let mut mine: Vec<_> = updates
            .iter()
            .filter(|m| m.key() == Some(id.as_bytes()))
            .collect();
        mine.sort_by_key(|m| (m.partition(), m.offset()));
        let mut versions = Vec::new();
        for m in mine {
            versions.push(
                codec.decode_json(m.payload()).await.unwrap()["aggregate_version"]
                    .as_i64()
                    .unwrap(),
            );
        }
        assert_eq!(
            versions,
            (2..=7).collect::<Vec<_>>(),
            "patient {id}: each update once, in order"
        );
    }
}

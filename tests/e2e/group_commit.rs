//! Journey: a busy front desk and ward send many commands at once; the event store commits them
//! in shared transactions (group commit) and still answers each as if it had been alone: the
//! stream that moved on is a conflict, the identifier another patient holds is refused, a
//! repeated idempotency key writes once, and nothing of a refused append is kept.

use std::collections::HashMap;

use chrono::Utc;
use event_store::{AppendError, EventStore, GroupCommit, NewEvent, StoredResponse, StreamAppend};
use events::{Actor, Envelope, Role};
use futures::future::join_all;
use serde_json::json;
use tests::Databases;
use uuid::Uuid;

const TOPIC: &str = "healthcare.patient.created";

fn patient(id: Uuid, expected_version: i64, identifiers: &[&str]) -> StreamAppend {
    let ids: Vec<serde_json::Value> = identifiers
        .iter()
        .map(|v| json!({"system": "http://hl7.org/fhir/sid/us-ssn", "value": v}))
        .collect();
    StreamAppend {
        aggregate_type: "patient",
        aggregate_id: id,
        expected_version,
        events: vec![NewEvent {
            envelope: Envelope {
                event_id: Uuid::now_v7(),
                event_type: "PatientCreated".into(),
                aggregate_id: id,
                aggregate_version: expected_version + 1,
                occurred_at: Utc::now(),
                correlation_id: Uuid::new_v4().to_string(),
                causation_id: None,
                actor: Actor {
                    id: "front-desk".into(),
                    role: Role::Admin,
                },
            },
            payload: json!({"identifiers": ids}),
            topic: Some(TOPIC),
        }],
    }
}

fn keyed(key: &str) -> StoredResponse {
    StoredResponse {
        principal: "front-desk".into(),
        key: key.into(),
        request_hash: "h".into(),
        status: 201,
        body: json!({}),
        location: None,
        etag: None,
    }
}

#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Answer {
    Ok,
    Conflict(i64),
    AlreadyProcessed,
    IdentifierTaken,
}

fn answer(result: Result<(), AppendError>) -> Answer {
    match result {
        Ok(()) => Answer::Ok,
        Err(AppendError::Conflict { current, .. }) => Answer::Conflict(current),
        Err(AppendError::AlreadyProcessed) => Answer::AlreadyProcessed,
        Err(AppendError::IdentifierTaken { .. }) => Answer::IdentifierTaken,
        Err(AppendError::Store(e)) => panic!("store failure: {e}"),
    }
}

#[tokio::test]
async fn concurrent_appends_share_transactions_and_each_gets_the_answer_it_would_alone() {
    let url = Databases::fresh().event_store;
    let pool = platform::db::connect(&url, 16).await.expect("event store");
    platform::db::migrate(&pool, "event-store", event_store::MIGRATIONS)
        .await
        .expect("migrate");
    let store = EventStore::with_group_commit(
        pool.clone(),
        GroupCommit {
            max_batch: 64,
            in_flight: 1,
        },
    );
    // Given a patient who holds SSN 900-00-0001, and a stream at version 1.
    let holder = Uuid::now_v7();
    let moved_on = Uuid::now_v7();
    store
        .append(vec![patient(holder, 0, &["900-00-0001"])], None, None)
        .await
        .expect("holder");
    store
        .append(vec![patient(moved_on, 0, &[])], None, None)
        .await
        .expect("stream at version 1");

    // When, all at once: 150 fresh registrations with SSNs of their own; 20 appends to one new
    // stream at version 0; 10 claims of the holder's SSN (written another way); 10 pairs of
    // patients claiming one new SSN per pair; 10 pairs of requests with one idempotency key
    // per pair; 10 appends to the stream at version 1 that expect version 0.
    let contested = Uuid::now_v7();
    let mut appends: Vec<(&str, Vec<StreamAppend>, Option<StoredResponse>)> = Vec::new();
    for i in 0..150 {
        let ssn = format!("800-{:02}-{:04}", i / 100, i);
        appends.push(("fresh", vec![patient(Uuid::now_v7(), 0, &[&ssn])], None));
    }
    for _ in 0..20 {
        appends.push(("contested", vec![patient(contested, 0, &[])], None));
    }
    for _ in 0..10 {
        appends.push((
            "taken",
            vec![patient(Uuid::now_v7(), 0, &["900000001"])],
            None,
        ));
    }
    for pair in 0..10 {
        let ssn = format!("700-00-{pair:04}");
        for _ in 0..2 {
            appends.push(("pair", vec![patient(Uuid::now_v7(), 0, &[&ssn])], None));
        }
    }
    for pair in 0..10 {
        for _ in 0..2 {
            let key = format!("key-{pair}");
            appends.push((
                "keyed",
                vec![patient(Uuid::now_v7(), 0, &[])],
                Some(keyed(&key)),
            ));
        }
    }
    for _ in 0..10 {
        appends.push(("stale", vec![patient(moved_on, 0, &[])], None));
    }
    let kinds: Vec<&str> = appends.iter().map(|(k, _, _)| *k).collect();
    let results = join_all(
        appends
            .into_iter()
            .map(|(_, streams, response)| store.append(streams, None, response)),
    )
    .await;

    // Then each kind got exactly the answers it would have got alone.
    let mut answers: HashMap<(&str, Answer), usize> = HashMap::new();
    for (kind, result) in kinds.iter().zip(results) {
        *answers.entry((kind, answer(result))).or_default() += 1;
    }
    let expected: HashMap<(&str, Answer), usize> = [
        (("fresh", Answer::Ok), 150),
        (("contested", Answer::Ok), 1),
        (("contested", Answer::Conflict(1)), 19),
        (("taken", Answer::IdentifierTaken), 10),
        (("pair", Answer::Ok), 10),
        (("pair", Answer::IdentifierTaken), 10),
        (("keyed", Answer::Ok), 10),
        (("keyed", Answer::AlreadyProcessed), 10),
        (("stale", Answer::Conflict(1)), 10),
    ]
    .into_iter()
    .collect();
    assert_eq!(answers, expected);

    // Nothing of a refused append was kept: one event and one outbox row per accepted append,
    // one identifier per SSN, each held by a patient whose registration was accepted.
    let accepted = 2 + 150 + 1 + 10 + 10;
    let (events, outbox): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM outbox WHERE topic = $1)",
    )
    .bind(TOPIC)
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!((events, outbox), (accepted, accepted));
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM patient_identifiers i
         WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.aggregate_id = i.patient_id)",
    )
    .fetch_one(&pool)
    .await
    .expect("identifiers");
    let claimed: i64 = sqlx::query_scalar("SELECT count(*) FROM patient_identifiers")
        .fetch_one(&pool)
        .await
        .expect("identifiers");
    assert_eq!((orphans, claimed), (0, 1 + 150 + 10));
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&pool)
        .await
        .expect("keys");
    assert_eq!(keys, 10);

    // And the appends did share transactions: the events were written by far fewer
    // transactions (xmin) than there were appends.
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM events")
        .fetch_one(&pool)
        .await
        .expect("xmin");
    assert!(
        transactions * 2 < accepted,
        "{accepted} appends were committed by {transactions} transactions"
    );
    pool.close().await;
}

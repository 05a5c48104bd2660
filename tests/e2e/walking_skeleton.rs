//! Journey: register a patient over HTTP, read it in a portal over GraphQL, find that read in
//! the PHI access log and with `replay-tool audit`; and a data team decodes the event.

use events::Role;
use events::audit::{AccessAction, AccessOutcome, PhiAccessed};
use events::catalog::{AUDIT_PHI_ACCESS, PATIENT_CREATED};
use rdkafka::message::{Headers, Message};
use schemas::EventCodec;
use tests::{Stack, ada, python_consume, read_topic, token};

use crate::{PATIENT_QUERY, read_until_visible};

#[tokio::test]
async fn a_registered_patient_is_read_over_graphql_and_the_read_is_audited() {
    let stack = Stack::start().await;
    let created = stack.register(&ada()).await;
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["version"], 1);

    let (request_id, patient) = read_until_visible(&stack, &id, "dr-hopper").await;
    assert_eq!(patient["name"]["text"], "Ada Lovelace");
    assert_eq!(patient["birthDate"], "1815-12-10");
    assert_eq!(patient["gender"], "female");
    assert_eq!(patient["version"], 1);
    assert_eq!(patient["address"]["postalCode"], "SW1Y 4JH");

    // The audit topic holds exactly one access event for that patient and that request.
    let codec = EventCodec::new(&stack.cluster.registry_url);
    let mut matching = Vec::new();
    for message in read_topic(&stack.cluster.brokers, AUDIT_PHI_ACCESS) {
        if message.key() != Some(id.as_bytes()) {
            continue;
        }
        let access: PhiAccessed = codec
            .decode(message.payload())
            .await
            .expect("audit record decodes");
        if access.request_id == request_id {
            matching.push(access);
        }
    }
    assert_eq!(matching.len(), 1, "{matching:?}");
    let access = &matching[0];
    assert_eq!(access.patient_id.to_string(), id);
    assert_eq!(
        (access.actor.id.as_str(), access.actor.role),
        ("dr-hopper", Role::Admin)
    );
    assert_eq!(
        (access.action, access.outcome),
        (AccessAction::Read, AccessOutcome::Success)
    );
    assert_eq!(access.purpose_of_use, "HOPERAT");
    assert_eq!(access.resource_ids, vec![id.clone()]);

    // replay-tool prints it.
    let jsonl = stack.replay_tool(&["audit", "--patient", &id, "--format", "jsonl"]);
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["request_id"] == request_id.as_str())
            .count(),
        1,
        "{jsonl}"
    );
    let table = stack.replay_tool(&["audit", "--patient", &id]);
    assert!(
        table.contains(&request_id) && table.contains("dr-hopper"),
        "{table}"
    );
    let other = stack.replay_tool(&[
        "audit",
        "--patient",
        &id,
        "--actor",
        "somebody-else",
        "--format",
        "csv",
    ]);
    assert_eq!(other.lines().count(), 1, "only the header: {other}");
}

#[tokio::test]
async fn the_created_event_is_on_its_topic_with_key_headers_and_envelope() {
    let stack = Stack::start().await;
    let created = stack.register(&ada()).await;
    let id = created["id"].as_str().expect("id").to_string();
    let event_id = created["eventIds"][0]
        .as_str()
        .expect("event id")
        .to_string();
    let _ = read_until_visible(&stack, &id, "dr-hopper").await;

    let codec = EventCodec::new(&stack.cluster.registry_url);
    let messages: Vec<_> = read_topic(&stack.cluster.brokers, PATIENT_CREATED)
        .into_iter()
        .filter(|m| m.key() == Some(id.as_bytes()))
        .collect();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    let payload = message.payload().expect("payload");
    assert_eq!(payload[0], 0, "Confluent wire format: magic byte 0");
    let headers: std::collections::HashMap<String, String> = message
        .headers()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h.key.to_string(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert_eq!(headers["event_type"], "PatientCreated");
    assert_eq!(headers["event_id"], event_id);
    assert!(headers.contains_key("correlation_id") && headers["traceparent"].starts_with("00-"));
    let record = codec.decode_json(Some(payload)).await.expect("decodes");
    assert_eq!(record["event_id"], event_id.as_str());
    assert_eq!(record["aggregate_id"], id.as_str());
    assert_eq!(record["aggregate_version"], 1);
    assert_eq!(record["actor"]["role"], "admin");
    assert_eq!(record["birth_date"], "1815-12-10");
}

#[tokio::test]
async fn a_consistency_token_reads_the_write_at_once() {
    let stack = Stack::start().await;
    // Warm the pipeline, so the bounded wait measures catch-up, not start-up.
    let first = stack.register(&ada()).await;
    let _ = read_until_visible(&stack, first["id"].as_str().unwrap(), "dr-hopper").await;

    let created = stack.register(&ada()).await;
    let token_header = created["consistencyToken"]
        .as_str()
        .expect("token")
        .to_string();
    // The token was issued to the admin who registered the patient, and opens only for them.
    let admin = token(Role::Admin, "admin-e2e", None);
    let (status, _, body) = stack
        .graphql(
            &admin,
            &[("X-Consistency-Token", &token_header)],
            PATIENT_QUERY,
            serde_json::json!({"id": created["id"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["patient"]["id"], created["id"], "{body}");
}

#[tokio::test]
async fn a_python_confluent_kafka_consumer_decodes_the_created_event() {
    let stack = Stack::start().await;
    let created = stack.register(&ada()).await;
    let id = created["id"].as_str().expect("id").to_string();
    let line = python_consume(&stack.cluster, PATIENT_CREATED, &id);
    assert_eq!(line["key"], id.as_str());
    assert_eq!(line["headers"]["event_type"], "PatientCreated");
    assert_eq!(line["value"]["aggregate_id"], id.as_str());
    assert_eq!(line["value"]["name"]["family"], "Lovelace");
    assert_eq!(line["value"]["gender"], "female");
    assert_eq!(line["value"]["birth_date"], "1815-12-10");
}

#[tokio::test]
async fn a_patient_reads_only_their_own_record_and_denials_are_audited() {
    let stack = Stack::start().await;
    let ada_id = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other_id = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = read_until_visible(&stack, &other_id, "dr-hopper").await;

    let patient = token(Role::Patient, "ada", Some(ada_id.parse().unwrap()));
    let request_id = uuid::Uuid::new_v4().to_string();
    let (_, _, body) = stack
        .graphql(
            &patient,
            &[("X-Request-Id", &request_id)],
            PATIENT_QUERY,
            serde_json::json!({"id": other_id}),
        )
        .await;
    assert!(body["data"]["patient"].is_null(), "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );

    let log = stack.replay_tool(&["audit", "--patient", &other_id, "--format", "jsonl"]);
    let denied: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["request_id"] == request_id.as_str())
        .collect();
    assert_eq!(denied.len(), 1, "{log}");
    assert_eq!(denied[0]["outcome"], "denied");
    assert_eq!(denied[0]["actor"]["id"], "ada");

    // A filter PostgreSQL cannot use is the caller's mistake, not an outage.
    let doctor = token(Role::Practitioner, "dr-hopper", None);
    let (_, _, body) = stack
        .graphql(
            &doctor,
            &[],
            "query($f: String) { patients(filter: {family: $f}) { edges { cursor } } }",
            serde_json::json!({"f": "Love\u{0}"}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );

    // Unauthenticated: 401, no data.
    let response = stack
        .http
        .post(&stack.graphql_url)
        .json(&serde_json::json!({"query": PATIENT_QUERY, "variables": {"id": ada_id}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn replay_tool_lists_every_access_including_the_end_of_the_last_batch() {
    let stack = Stack::start().await;
    let id = stack.register(&ada()).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let _ = read_until_visible(&stack, &id, "dr-hopper").await;
    // Ten reads at once: the audit producer batches their records into one partition.
    let practitioner = token(Role::Admin, "dr-burst", None);
    let request_ids: Vec<String> = (0..10)
        .map(|i| format!("burst-{i}-{}", uuid::Uuid::new_v4()))
        .collect();
    let headers: Vec<[(&str, &str); 1]> = request_ids
        .iter()
        .map(|rid| [("X-Request-Id", rid.as_str())])
        .collect();
    let reads = headers.iter().map(|h| {
        stack.graphql(
            &practitioner,
            h,
            PATIENT_QUERY,
            serde_json::json!({"id": id}),
        )
    });
    for (status, _, body) in futures::future::join_all(reads).await {
        assert_eq!(status, 200, "{body}");
        assert!(body["data"]["patient"].is_object(), "{body}");
    }
    let log = stack.replay_tool(&[
        "audit",
        "--patient",
        &id,
        "--actor",
        "dr-burst",
        "--format",
        "jsonl",
    ]);
    for rid in &request_ids {
        assert!(
            log.contains(rid.as_str()),
            "replay-tool missed {rid}:\n{log}"
        );
    }
    assert_eq!(log.lines().count(), 10, "{log}");
}

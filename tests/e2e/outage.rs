//! Journey: the broker goes down in the middle of clinic hours. Commands keep being accepted;
//! when the broker returns, every acknowledged event reaches its topic exactly once, in order
//! per aggregate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use events::Role;
use events::catalog::{PATIENT_CREATED, PATIENT_UPDATED};
use rdkafka::message::{Headers, Message, OwnedMessage};
use reqwest::Method;
use serde_json::json;
use tests::{Databases, OwnCluster, Stack, ada, metrics_text, read_topic, token};

fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test]
async fn commands_accepted_during_a_broker_outage_are_published_once_in_order_when_it_returns() {
    let (mut own, _) = OwnCluster::start().await;
    // A short delivery timeout, so that the outage outlasts it and the relay's retry path runs,
    // and a short stall threshold, so that the relay reports itself stalled during it.
    let fast_failure = [
        ("HEALTHPLANE_RELAY_DELIVERY_TIMEOUT_MS", "2000".to_string()),
        ("HEALTHPLANE_RELAY_STALL_AFTER_S", "3".to_string()),
    ];
    let stack = Stack::start_with_env(own.cluster.clone(), Databases::fresh(), &fast_failure).await;
    let admin = token(Role::Admin, "front-desk", None);
    // (aggregate id, event id, version) of every acknowledged event.
    let mut acknowledged: Vec<(String, String, i64)> = Vec::new();
    let warm = stack.register(&ada()).await;
    acknowledged.push((
        warm["id"].as_str().unwrap().into(),
        warm["eventIds"][0].as_str().unwrap().into(),
        1,
    ));

    own.kill_broker();
    for i in 0..5 {
        let created = stack.register(&ada()).await;
        let id = created["id"].as_str().unwrap().to_string();
        acknowledged.push((
            id.clone(),
            created["eventIds"][0].as_str().unwrap().into(),
            1,
        ));
        for version in 1..=2 {
            let body = json!({"telecom": [{"system": "phone", "value": format!("+44 1632 96{i}{version}")}]});
            let (status, _, answer) = stack
                .command(
                    Method::PATCH,
                    &format!("/v1/patients/{id}"),
                    Some(&admin),
                    &[("If-Match", &version.to_string())],
                    body.to_string().into_bytes(),
                )
                .await;
            assert_eq!(status, 200, "accepted while the broker is down: {answer}");
            acknowledged.push((
                id.clone(),
                answer["eventIds"][0].as_str().unwrap().into(),
                version + 1,
            ));
        }
    }
    // Publication fails and is retried until the relay reports itself stalled: not ready on
    // `/health/relay`, with the reason, while `/health/ready` still accepts commands.
    let relay_health = format!("{}/health/relay", stack.command_url);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = stack.http.get(&relay_health).send().await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status == 503 {
            let reason = body["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("outbox relay stalled") && reason.contains("events waiting"),
                "{body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never reported the stall: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ready = stack
        .http
        .get(format!("{}/health/ready", stack.command_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200, "commands are still accepted");
    let stalled = metrics_text(&stack.http, &stack.command_url).await;
    assert!(
        stalled.contains("healthplane_outbox_relay_stalled 1"),
        "{stalled}"
    );
    own.start_broker().await;

    let deadline = Instant::now() + Duration::from_secs(120);
    let published = loop {
        let mut messages = read_topic(&own.cluster.brokers, PATIENT_CREATED);
        messages.extend(read_topic(&own.cluster.brokers, PATIENT_UPDATED));
        let ids: Vec<String> = messages
            .iter()
            .filter_map(|m| header(m, "event_id"))
            .collect();
        if acknowledged
            .iter()
            .all(|(_, event_id, _)| ids.contains(event_id))
        {
            break messages;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged events never reached the broker"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The outage outlasted the delivery timeout: the relay's failure-and-retry path ran.
    let metrics = metrics_text(&stack.http, &stack.command_url).await;
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("healthplane_outbox_publish_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        failures >= 1.0,
        "no publish failed during the outage:\n{metrics}"
    );
    // Recovered: healthy again, and the log said both what happened and that it is over.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack
        .http
        .get(&relay_health)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the relay never reported its recovery"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = std::fs::read_to_string(stack.log_dir.join("command-api.log")).unwrap();
    assert!(log.contains("outbox relay stalled"), "no stall in the log");
    assert!(
        log.contains("outbox relay recovered"),
        "no recovery in the log"
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &published {
        *seen
            .entry(header(m, "event_id").unwrap_or_default())
            .or_default() += 1;
    }
    for (aggregate, event_id, _) in &acknowledged {
        assert_eq!(
            seen.get(event_id),
            Some(&1),
            "event {event_id} of {aggregate} is on the topic {:?} times",
            seen.get(event_id)
        );
    }
    // Per aggregate, updates sit in one partition in version order.
    let versions_of = |aggregate: &str| -> Vec<i64> {
        let mut updates: Vec<&OwnedMessage> = published
            .iter()
            .filter(|m| m.topic() == PATIENT_UPDATED && m.key() == Some(aggregate.as_bytes()))
            .collect();
        updates.sort_by_key(|m| (m.partition(), m.offset()));
        updates
            .iter()
            .map(|m| {
                acknowledged
                    .iter()
                    .find(|(_, e, _)| Some(e.clone()) == header(m, "event_id"))
                    .map(|a| a.2)
                    .unwrap_or(-1)
            })
            .collect()
    };
    for (aggregate, _, version) in &acknowledged {
        if *version == 1 && aggregate != warm["id"].as_str().unwrap() {
            assert_eq!(versions_of(aggregate), vec![2, 3], "{aggregate}");
        }
    }
}

//! Journey: the broker loses its data under a running stack (its storage reset, the topics
//! recreated empty). The patient projector's stored offsets now point past the end of the log:
//! it says so (not ready, with the reason; a metric), rebuilds from the event store instead of
//! waiting at offsets that will not come back, and every patient, from before and after, is
//! visible through GraphQL.

use std::time::{Duration, Instant};

use sqlx::Connection;
use tests::{Databases, OwnCluster, Stack, ada, metrics_text};

use crate::read_until_visible;

async fn health(stack: &Stack) -> (u16, serde_json::Value) {
    let response = stack
        .http
        .get(format!("{}/health/ready", stack.projector_url))
        .send()
        .await
        .expect("projector answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Registers four patients; returns their ids.
async fn register_four(stack: &Stack) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..4 {
        let created = stack.register(&ada()).await;
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    ids
}

#[tokio::test]
async fn a_projector_whose_offsets_fall_outside_a_reset_log_reports_it_and_recovers() {
    let (mut own, _) = OwnCluster::start().await;
    let databases = Databases::fresh();
    let stack = Stack::start_with(own.cluster.clone(), databases.clone()).await;
    let before = register_four(&stack).await;
    for id in &before {
        read_until_visible(&stack, id, "dr-reset").await;
    }

    // A reader holds the model (as a batch would): the recovery's swap waits for it, so the
    // not-ready state can be seen however fast the rebuild is.
    let mut reader = sqlx::PgConnection::connect(&databases.patient)
        .await
        .expect("patient database");
    sqlx::query("SELECT pg_advisory_lock_shared(hashtext('projection:patient'))")
        .execute(&mut reader)
        .await
        .unwrap();

    own.reset_broker();
    own.start_broker().await;
    own.bootstrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let reason = loop {
        let (status, body) = health(&stack).await;
        if status == 503
            && body["reason"]
                .as_str()
                .is_some_and(|r| r.contains("rebuilding"))
        {
            break body["reason"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the projector never reported its offsets outside the log: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        reason.contains("healthcare.patient.created/")
            && reason.contains("stored offset")
            && reason.contains("beyond the log end")
            && reason.contains("the log holds offsets [0, "),
        "{reason}"
    );
    let metrics = metrics_text(&stack.http, &stack.projector_url).await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("healthplane_projection_offset_outside_log{") && l.ends_with(" 1")
        ),
        "{metrics}"
    );

    // The reader lets go: the rebuilt model is swapped in and the projector is ready again.
    sqlx::query("SELECT pg_advisory_unlock_shared(hashtext('projection:patient'))")
        .execute(&mut reader)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = health(&stack).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready again: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = metrics_text(&stack.http, &stack.projector_url).await;
    assert!(
        metrics.contains("healthplane_projection_recoveries_total 1"),
        "{metrics}"
    );

    // Patients registered after the reset land at the start of the new log and are read; the
    // earlier ones are still there.
    let after = register_four(&stack).await;
    for id in after.iter().chain(&before) {
        let (_, patient) = read_until_visible(&stack, id, "dr-reset").await;
        assert_eq!(patient["name"]["family"], "Lovelace");
    }
}

//! Journeys: read models stay exactly right through crashes, out-of-order delivery and poison
//! messages, and can be rebuilt from the event store while they serve queries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use events::Role;
use events::catalog::{APPOINTMENT_CANCELLED, APPOINTMENT_SCHEDULED, PATIENT_CREATED};
use events::examples::example_record;
use futures::future::join_all;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::Method;
use serde_json::json;
use sqlx::PgPool;
use tests::{Projector, Stack, ada, read_topic_until, replay_tool, token};
use uuid::Uuid;

use crate::{PATIENT_QUERY, read_until_visible};

/// Registers `patients` patients and gives each `updates` demographic updates, 25 at a time.
async fn write_patients(stack: &Stack, patients: usize, updates: i64) -> Vec<Uuid> {
    let admin = token(Role::Admin, "front-desk", None);
    let mut ids = Vec::new();
    for chunk in 0..patients.div_ceil(25) {
        let count = 25.min(patients - chunk * 25);
        let bodies: Vec<serde_json::Value> = (0..count).map(|_| ada()).collect();
        let created = join_all(bodies.iter().map(|b| stack.register(b))).await;
        let chunk_ids: Vec<String> = created
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        for version in 1..=updates {
            let admin = &admin;
            let patches = chunk_ids.iter().map(|id| {
                let body = json!({"telecom": [{"system": "phone", "value": format!("+44 1632 9{version:05}")}]});
                let headers = [("If-Match", version.to_string())];
                async move {
                    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let (status, _, body) = stack
                        .command(Method::PATCH, &format!("/v1/patients/{id}"), Some(admin), &headers, body.to_string().into_bytes())
                        .await;
                    assert_eq!(status, 200, "{body}");
                }
            });
            join_all(patches).await;
        }
        ids.extend(chunk_ids.iter().map(|id| id.parse::<Uuid>().unwrap()));
    }
    ids
}

async fn patient_events(stack: &Stack) -> i64 {
    let pool = PgPool::connect(&stack.databases.event_store).await.unwrap();
    let n = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'patient'")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// Waits (bounded) until the patient read model has folded the `events` events of `ids`.
/// (Tests share the broker, so a read model also holds other tests' patients.)
async fn caught_up(read_model: &PgPool, ids: &[Uuid], events: i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let folded: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(version), 0)::BIGINT FROM patients WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_one(read_model)
        .await
        .unwrap_or(0);
        if folded == events {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the read model folded {folded} of {events} events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The patient read model of `ids`, row for row.
async fn snapshot(read_model: &PgPool, ids: &[Uuid]) -> (serde_json::Value, serde_json::Value) {
    let patients = sqlx::query_scalar(
        "SELECT COALESCE(jsonb_agg(to_jsonb(t) ORDER BY id), '[]') FROM patients t WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(read_model)
    .await
    .unwrap();
    let identifiers = sqlx::query_scalar(
        "SELECT COALESCE(jsonb_agg(to_jsonb(t) ORDER BY patient_id, system, value), '[]') FROM patient_identifiers t
         WHERE patient_id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(read_model)
    .await
    .unwrap();
    (patients, identifiers)
}

#[tokio::test]
async fn a_projector_killed_at_random_moments_ends_identical_to_a_clean_rebuild() {
    let stack = Stack::start().await;
    let mut crashy = Projector::start_with(
        "patient",
        &stack.cluster,
        &stack.log_dir,
        Some(&stack.databases.event_store),
    )
    .await;
    let writing = AtomicBool::new(true);
    let crashes = AtomicUsize::new(0);
    let writer = async {
        // At least 400 patients, and writes go on until the projector was killed three times
        // while they were being written (however fast the write path is).
        let mut ids = Vec::new();
        while ids.len() < 400 || crashes.load(Ordering::Relaxed) < 3 {
            ids.extend(write_patients(&stack, 100, 4).await);
        }
        writing.store(false, Ordering::Release);
        ids
    };
    let crasher = async {
        let mut seed: u64 = 0x0c4a_5e5e;
        while writing.load(Ordering::Acquire) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            tokio::time::sleep(Duration::from_millis(300 + seed % 900)).await;
            crashy.crash();
            crashes.fetch_add(1, Ordering::Relaxed);
            crashy.restart().await;
        }
    };
    let (ids, ()) = tokio::join!(writer, crasher);
    assert!(
        crashes.load(Ordering::Relaxed) >= 3,
        "the projector was killed only {crashes:?} times"
    );
    // Each patient: registered, then updated four times.
    let events = patient_events(&stack).await;
    assert_eq!(events, ids.len() as i64 * 5);
    let crashed_model = crashy.read_model().await;
    caught_up(&crashed_model, &ids, events).await;
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projection_pending WHERE aggregate_id = ANY($1)")
            .bind(&ids)
            .fetch_one(&crashed_model)
            .await
            .unwrap();
    assert_eq!(pending, 0);

    // A clean rebuild from the event store, into a database of its own.
    let clean = format!(
        "{}/hp_test_{}_clean",
        tests::postgres_server(),
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let out = replay_tool(
        &stack.cluster,
        &[
            "rebuild",
            "--projection",
            "patient",
            "--database-url",
            &clean,
            "--event-store-url",
            &stack.databases.event_store,
        ],
    );
    assert!(
        out.contains(&format!("rebuilt patient: {events} events")),
        "{out}"
    );
    let clean_model = platform::db::connect_schema(&clean, platform::db::READ_MODEL_SCHEMA, 2)
        .await
        .unwrap();
    let (crashed, rebuilt) = (
        snapshot(&crashed_model, &ids).await,
        snapshot(&clean_model, &ids).await,
    );
    assert_eq!(crashed.0.as_array().map(Vec::len), Some(ids.len()));
    assert!(
        crashed == rebuilt,
        "the crashed projector's read model differs from a clean rebuild"
    );
}

#[tokio::test]
async fn a_cancellation_delivered_before_its_scheduling_ends_cancelled() {
    let stack = Stack::start().await;
    let patient = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let projector = Projector::start("appointment", &stack.cluster, &stack.log_dir).await;
    let read_model = projector.read_model().await;
    let codec = schemas::EventCodec::new(&stack.cluster.registry_url);
    let producer: FutureProducer =
        platform::kafka::producer_config(&stack.cluster.brokers, Duration::from_secs(30))
            .create()
            .unwrap();
    let appointment = Uuid::now_v7();
    let send = |topic: &'static str| {
        let mut record = example_record(topic, appointment).unwrap();
        record["patient_id"] = json!(patient);
        let (codec, producer, key) = (&codec, &producer, appointment.to_string());
        async move {
            let bytes = codec.encode_json(topic, &record).await.unwrap();
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&bytes),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    };
    // The cancellation (version 2) first: it is held, nothing is shown.
    send(APPOINTMENT_CANCELLED).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held: i64 =
            sqlx::query_scalar("SELECT count(*) FROM projection_pending WHERE aggregate_id = $1")
                .bind(appointment)
                .fetch_one(&read_model)
                .await
                .unwrap();
        if held == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the early cancellation was not held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown: i64 = sqlx::query_scalar("SELECT count(*) FROM appointments WHERE id = $1")
        .bind(appointment)
        .fetch_one(&read_model)
        .await
        .unwrap();
    assert_eq!(shown, 0);

    // Then the scheduling (version 1): both apply, in order.
    send(APPOINTMENT_SCHEDULED).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let row = loop {
        let row: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT to_jsonb(a) FROM appointments a WHERE id = $1")
                .bind(appointment)
                .fetch_optional(&read_model)
                .await
                .unwrap();
        if let Some(row) = row.filter(|r| r["version"] == 2) {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "the appointment never reached version 2"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(row["status"], "cancelled");
    assert_eq!(row["cancel_reason"], "patient");
    assert_eq!(
        row["patient_display"], "Ada Lovelace",
        "the patient's name is denormalized"
    );
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projection_pending WHERE aggregate_id = $1")
            .bind(appointment)
            .fetch_one(&read_model)
            .await
            .unwrap();
    assert_eq!(held, 0);
}

#[tokio::test]
async fn a_poison_record_goes_to_the_dead_letter_topic_and_the_projector_carries_on() {
    let stack = Stack::start().await;
    let projector = Projector::start("patient", &stack.cluster, &stack.log_dir).await;
    let producer: FutureProducer =
        platform::kafka::producer_config(&stack.cluster.brokers, Duration::from_secs(30))
            .create()
            .unwrap();
    let codec = schemas::EventCodec::new(&stack.cluster.registry_url);
    // Not Avro at all; and a well-formed record of an event type the projection cannot apply.
    let garbage_key = format!("poison-{}", Uuid::new_v4());
    let garbage = b"this is not an Avro record".to_vec();
    let unknown_key = Uuid::now_v7();
    let mut unknown = example_record(PATIENT_CREATED, unknown_key).unwrap();
    unknown["event_type"] = json!("PatientTeleported");
    let unknown_bytes = codec.encode_json(PATIENT_CREATED, &unknown).await.unwrap();
    let unknown_key_text = unknown_key.to_string();
    for (key, payload) in [
        (garbage_key.as_str(), &garbage),
        (unknown_key_text.as_str(), &unknown_bytes),
    ] {
        producer
            .send(
                FutureRecord::to(PATIENT_CREATED).key(key).payload(payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    // Events after the poison are applied.
    let id = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let read_model = projector.read_model().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM patients WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&read_model)
        .await
        .unwrap()
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the projector stopped at the poison record"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let dlq = "healthcare.dlq.patient-projector";
    let ours = |m: &rdkafka::message::OwnedMessage| {
        m.key() == Some(garbage_key.as_bytes()) || m.key() == Some(unknown_key_text.as_bytes())
    };
    let dead = read_topic_until(&stack.cluster.brokers, dlq, |r| {
        r.iter().filter(|m| ours(m)).count() >= 2
    })
    .await;
    // Every patient projector on the shared broker dead-letters them; ours counted two.
    let dead: Vec<_> = dead.iter().filter(|m| ours(m)).collect();
    assert!(dead.len() >= 2);
    for message in dead {
        let headers: std::collections::HashMap<&str, String> = message
            .headers()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.key,
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        assert_eq!(headers["dlq_source_topic"], PATIENT_CREATED);
        assert!(!headers["dlq_reason"].is_empty());
        assert!(
            headers["dlq_source_partition"].parse::<i32>().is_ok()
                && headers["dlq_source_offset"].parse::<i64>().is_ok()
        );
        let original = if message.key() == Some(garbage_key.as_bytes()) {
            &garbage
        } else {
            &unknown_bytes
        };
        assert_eq!(
            message.payload(),
            Some(original.as_slice()),
            "the dead letter keeps the original bytes"
        );
    }
    let metrics = reqwest::get(projector.health_url.replace("/health/ready", "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("healthplane_projection_events_dead_lettered_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn rebuilding_while_queries_run_never_shows_an_empty_or_partial_model() {
    let stack = Stack::start().await;
    let ids = write_patients(&stack, 150, 2).await;
    let read_model =
        platform::db::connect_schema(&stack.databases.patient, platform::db::READ_MODEL_SCHEMA, 4)
            .await
            .unwrap();
    caught_up(&read_model, &ids, 450).await;
    let before = snapshot(&read_model, &ids).await;

    // An interrupted rebuild leaves its progress behind ...
    let mut first = tests::Process::spawn(
        "rebuild-interrupted",
        &tests::bin_dir().join("replay-tool"),
        &[
            "rebuild",
            "--projection",
            "patient",
            "--database-url",
            &stack.databases.patient,
            "--event-store-url",
            &stack.databases.event_store,
            "--batch-size",
            "10",
        ],
        &[],
        &stack.log_dir,
    );
    let admin = PgPool::connect(&stack.databases.patient).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let progress: Option<i64> =
            sqlx::query_scalar("SELECT events FROM read_model_rebuild.rebuild_progress")
                .fetch_optional(&admin)
                .await
                .unwrap_or(None);
        if progress.is_some_and(|p| p > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the rebuild made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();

    // ... and the resumed one runs while portals query.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let (read_model, stop, ids) = (read_model.clone(), stop.clone(), ids.clone());
        async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let count: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM patients WHERE id = ANY($1)")
                        .bind(&ids)
                        .fetch_one(&read_model)
                        .await
                        .unwrap();
                seen.push(count);
            }
            seen
        }
    });
    let practitioner = token(Role::Admin, "dr-rebuild", None);
    let graphql_reader = async {
        let mut answers = 0;
        while !stop.load(Ordering::Acquire) {
            let (status, _, body) = stack
                .graphql(
                    &practitioner,
                    &[],
                    PATIENT_QUERY,
                    json!({"id": ids[answers % ids.len()]}),
                )
                .await;
            assert_eq!(status, 200);
            assert!(
                body["data"]["patient"].is_object(),
                "a portal saw no patient during the rebuild: {body}"
            );
            answers += 1;
            // A portal's pace, under the caller's rate (50 requests/s): the rebuild may take
            // longer than the burst of 100 lasts.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        answers
    };
    let rebuild = tokio::task::spawn_blocking({
        let (cluster, patient_db, events_db, stop) = (
            stack.cluster.clone(),
            stack.databases.patient.clone(),
            stack.databases.event_store.clone(),
            stop.clone(),
        );
        move || {
            let out = replay_tool(
                &cluster,
                &[
                    "rebuild",
                    "--projection",
                    "patient",
                    "--database-url",
                    &patient_db,
                    "--event-store-url",
                    &events_db,
                    "--batch-size",
                    "10",
                ],
            );
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Release);
            out
        }
    });
    let (out, answers) = tokio::join!(rebuild, graphql_reader);
    let out = out.unwrap();
    let counts = reader.await.unwrap();
    assert!(
        out.contains("resumed at") && out.contains("swapped in"),
        "{out}"
    );
    assert!(
        counts.len() > 20 && answers > 5,
        "too few queries ran: {} SQL, {answers} GraphQL",
        counts.len()
    );
    assert!(
        counts.iter().all(|c| *c == 150),
        "a query saw a partial model: {:?}",
        counts.iter().filter(|c| **c != 150).collect::<Vec<_>>()
    );
    assert!(
        snapshot(&read_model, &ids).await == before,
        "the rebuilt model differs from the one it replaced"
    );

    // The live projector carries on into the new model.
    let next = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = read_until_visible(&stack, &next, "dr-rebuild").await;
}

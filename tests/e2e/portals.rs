//! Journey: a portal built on Apollo Client or urql batches its queries (a JSON array of
//! operations); each operation is authorized and audited on its own, and a batch over the cap
//! is refused whole.

use std::time::{Duration, Instant};

use events::Role;
use serde_json::{Value, json};
use tests::{Stack, ada, token};

use crate::{PATIENT_QUERY, read_until_visible};

/// Starts `projection`'s projector on `database`, as the projector role.
pub async fn projector(stack: &Stack, projection: &str, database: &str) -> tests::Projector {
    let database = tests::Databases::as_role(database, platform::provision::Service::Projector);
    tests::Projector::start_on(projection, &stack.cluster, &stack.log_dir, &database, None).await
}

async fn batch(stack: &Stack, who: &str, operations: Value, request_id: &str) -> (u16, Value) {
    let response = stack
        .http
        .post(&stack.graphql_url)
        .bearer_auth(who)
        .header("X-Request-Id", request_id)
        .json(&operations)
        .send()
        .await
        .expect("the query API answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_batch_answers_each_operation_as_its_caller_may_and_audits_each() {
    let stack = Stack::start().await;
    let own = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = read_until_visible(&stack, &own, "dr-hopper").await;
    let _ = read_until_visible(&stack, &other, "dr-hopper").await;
    let patient = token(Role::Patient, "ada", Some(own.parse().unwrap()));
    let request_id = uuid::Uuid::new_v4().to_string();

    let (status, answers) = batch(
        &stack,
        &patient,
        json!([
            {"query": PATIENT_QUERY, "variables": {"id": own}},
            {"query": PATIENT_QUERY, "variables": {"id": other}},
        ]),
        &request_id,
    )
    .await;
    assert_eq!(status, 200, "{answers}");
    assert_eq!(
        answers[0]["data"]["patient"]["id"],
        own.as_str(),
        "{answers}"
    );
    assert!(answers[1]["data"]["patient"].is_null(), "{answers}");
    assert_eq!(answers[1]["errors"][0]["extensions"]["code"], "FORBIDDEN");

    // One record each: the read of their own record, the refusal of the other's.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outcomes: Vec<String> = [&own, &other]
            .iter()
            .flat_map(|id| {
                stack
                    .replay_tool(&["audit", "--patient", id, "--format", "jsonl"])
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|a| a["request_id"] == request_id.as_str())
                    .map(|a| format!("{}:{}", a["patient_id"].as_str().unwrap(), a["outcome"]))
                    .collect::<Vec<_>>()
            })
            .collect();
        if outcomes.len() >= 2 {
            assert_eq!(
                outcomes,
                vec![format!("{own}:\"success\""), format!("{other}:\"denied\"")]
            );
            break;
        }
        assert!(Instant::now() < deadline, "not audited: {outcomes:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Eleven operations are one too many.
    let eleven: Vec<Value> = (0..11)
        .map(|_| json!({"query": "{ __typename }"}))
        .collect();
    let (status, body) = batch(&stack, &patient, json!(eleven), "over-the-cap").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("1 to 10 operations"),
        "{body}"
    );
}

const ACCESS_LOG_QUERY: &str = "query($patient: ID!) {
    phiAccessLog(filter: {patientId: $patient, purposeOfUse: \"ETREAT\"}, first: 10) {
        edges { node { id actorId actorRole purposeOfUse outcome detail requestId resourceType } }
        pageInfo { hasNextPage }
    } }";

#[tokio::test]
async fn an_auditor_finds_a_break_the_glass_read_in_the_access_log_and_that_search_is_audited() {
    let stack = Stack::start().await;
    let id = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = read_until_visible(&stack, &id, "dr-hopper").await;
    let doctor = token(Role::Practitioner, "dr-house", None);
    let glass = uuid::Uuid::new_v4().to_string();
    let (status, _, body) = stack
        .graphql(
            &doctor,
            &[
                ("X-Request-Id", &glass),
                ("X-Purpose-Of-Use", "ETREAT"),
                ("X-Break-Glass-Reason", "cardiac arrest on ward 3"),
            ],
            PATIENT_QUERY,
            json!({"id": id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The audit index, served by its projector as the projector role.
    let _audit = projector(&stack, "audit", &stack.databases.audit).await;
    let auditor = token(Role::Auditor, "auditor-1", None);
    let search = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let (status, _, body) = stack
            .graphql(
                &auditor,
                &[("X-Request-Id", &search)],
                ACCESS_LOG_QUERY,
                json!({"patient": id}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let edges = body["data"]["phiAccessLog"]["edges"].as_array().cloned();
        if let Some(edge) = edges
            .unwrap_or_default()
            .into_iter()
            .find(|e| e["node"]["requestId"] == glass.as_str())
        {
            break edge["node"].clone();
        }
        assert!(Instant::now() < deadline, "never indexed: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(found["actorId"], "dr-house");
    assert_eq!(found["purposeOfUse"], "ETREAT");
    assert_eq!(found["detail"], "break-the-glass: cardiac arrest on ward 3");

    // Only auditors read the log.
    let (_, _, body) = stack
        .graphql(&doctor, &[], ACCESS_LOG_QUERY, json!({"patient": id}))
        .await;
    assert_forbidden(&body);

    // A search of a patient's accesses that finds none is on the record too.
    let nobody = uuid::Uuid::now_v7().to_string();
    let empty = uuid::Uuid::new_v4().to_string();
    let (status, _, body) = stack
        .graphql(
            &auditor,
            &[("X-Request-Id", &empty)],
            ACCESS_LOG_QUERY,
            json!({"patient": nobody}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = stack.replay_tool(&["audit", "--patient", &nobody, "--format", "jsonl"]);
        if log.contains(&empty) && log.contains("AuditEvent") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the empty search was not audited: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The auditor's search is itself on the record, against the patient it showed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = stack.replay_tool(&["audit", "--patient", &id, "--format", "jsonl"]);
        let searched = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|a| a["request_id"] == search.as_str() && a["resource_type"] == "AuditEvent");
        if let Some(record) = searched {
            assert_eq!(record["actor"]["id"], "auditor-1");
            assert_eq!(record["purpose_of_use"], "HOPERAT");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log search was not audited: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const APPOINTMENTS_QUERY: &str = "query($filter: AppointmentFilter) {
    appointments(filter: $filter) { edges { node { id patientId practitionerId status } } } }";

async fn appointments_of(
    stack: &Stack,
    who: &str,
    patient: &str,
    headers: &[(&str, &str)],
) -> Value {
    let filter = json!({"filter": {"patientId": patient}});
    stack
        .graphql(who, headers, APPOINTMENTS_QUERY, filter)
        .await
        .2
}

async fn appointment_by_id(stack: &Stack, who: &str, id: &str) -> Value {
    let query = "query($id: ID!) { appointment(id: $id) { id } }";
    stack.graphql(who, &[], query, json!({"id": id})).await.2
}

/// Asks until the answer is not FORBIDDEN (the care team is a projection: it follows the
/// write that puts a practitioner on it by a moment).
async fn until_answered<F: std::future::Future<Output = Value>>(ask: impl Fn() -> F) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = ask().await;
        if body["errors"][0]["extensions"]["code"] != "FORBIDDEN" {
            return body;
        }
        assert!(Instant::now() < deadline, "still refused: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_forbidden(body: &Value) {
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
}

fn appointment_ids(body: &Value) -> Vec<String> {
    body["data"]["appointments"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["node"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn appointments_are_read_by_their_patient_and_practitioner_and_others_only_by_breaking_the_glass()
 {
    let stack = Stack::start().await;
    let _projector = projector(&stack, "appointment", &stack.databases.appointment).await;
    let ada = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bob = stack.register(&tests::ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = token(Role::Admin, "front-desk", None);
    let mut booked = Vec::new();
    for patient in [&ada, &bob] {
        let (status, _, body) = stack
            .command(
                reqwest::Method::POST,
                "/v1/appointments",
                Some(&admin),
                &[],
                crate::commands::schedule_body(patient, 24, 25)
                    .to_string()
                    .into_bytes(),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        booked.push(body["id"].as_str().unwrap().to_string());
    }
    let (ada_visit, bob_visit) = (booked[0].clone(), booked[1].clone());

    // The patient sees their own appointment (once the projection has it) and only theirs.
    let ada_token = token(Role::Patient, "ada", Some(ada.parse().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, body) = stack
            .graphql(&ada_token, &[], APPOINTMENTS_QUERY, json!({}))
            .await;
        if appointment_ids(&body) == vec![ada_visit.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "never visible: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = appointments_of(&stack, &ada_token, &bob, &[]).await;
    assert_forbidden(&body);
    let body = appointment_by_id(&stack, &ada_token, &bob_visit).await;
    assert_forbidden(&body);

    // dr-hopper (the practitioner on both) has both patients in their care once the care
    // team has the appointments; another practitioner is refused, on every path, until
    // breaking the glass.
    let hopper = token(Role::Practitioner, "dr-hopper", None);
    let body = until_answered(|| appointments_of(&stack, &hopper, &bob, &[])).await;
    assert_eq!(appointment_ids(&body), vec![bob_visit.clone()], "{body}");
    let other = token(Role::Practitioner, "dr-other", None);
    let body = appointments_of(&stack, &other, &bob, &[]).await;
    assert_forbidden(&body);
    let (_, _, body) = stack
        .graphql(&other, &[], APPOINTMENTS_QUERY, json!({}))
        .await;
    assert!(appointment_ids(&body).is_empty(), "{body}");
    let body = appointment_by_id(&stack, &other, &bob_visit).await;
    assert_forbidden(&body);
    let (_, _, body) = stack
        .graphql(
            &other,
            &[
                ("X-Purpose-Of-Use", "ETREAT"),
                ("X-Break-Glass-Reason", "covering for dr-hopper"),
            ],
            APPOINTMENTS_QUERY,
            json!({"filter": {"patientId": bob}}),
        )
        .await;
    assert_eq!(appointment_ids(&body), vec![bob_visit], "{body}");
}

const OBSERVATIONS_QUERY: &str = "query($patient: ID!, $after: String) {
    observations(patientId: $patient, code: \"8867-4\", first: 100, after: $after) {
        edges { node { id valueQuantity { value unit } effectiveAt } }
        pageInfo { hasNextPage endCursor } } }";

#[tokio::test]
async fn a_patient_pages_through_their_250_results_exactly_once_each_and_no_one_elses() {
    let stack = Stack::start().await;
    let _projector = projector(&stack, "laboratory", &stack.databases.laboratory).await;
    let ada = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let doctor = token(Role::Practitioner, "dr-hopper", None);
    let mut recorded = Vec::new();
    for chunk in (0..250).collect::<Vec<i32>>().chunks(25) {
        let writes = chunk.iter().map(|i| {
            let body =
                crate::commands::vital_body(&ada, None, "8867-4", 60.0 + f64::from(i % 40), "/min");
            let (stack, doctor) = (&stack, &doctor);
            async move {
                let (status, _, json) = stack
                    .command(
                        reqwest::Method::POST,
                        "/v1/observations",
                        Some(doctor),
                        &[],
                        body.to_string().into_bytes(),
                    )
                    .await;
                assert_eq!(status, 201, "{json}");
                json["id"].as_str().unwrap().to_string()
            }
        });
        recorded.extend(futures::future::join_all(writes).await);
    }

    // Read 100 at a time until the pages stop, as the patient.
    let patient = token(Role::Patient, "ada", Some(ada.parse().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let read = loop {
        let mut read: Vec<(String, String)> = Vec::new();
        let mut after = Value::Null;
        loop {
            let (status, _, body) = stack
                .graphql(
                    &patient,
                    &[],
                    OBSERVATIONS_QUERY,
                    json!({"patient": ada, "after": after}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let page = &body["data"]["observations"];
            for edge in page["edges"].as_array().unwrap() {
                read.push((
                    edge["node"]["effectiveAt"].as_str().unwrap().to_string(),
                    edge["node"]["id"].as_str().unwrap().to_string(),
                ));
            }
            if page["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
        if read.len() >= 250 || Instant::now() > deadline {
            break read;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut ids: Vec<String> = read.iter().map(|(_, id)| id.clone()).collect();
    let ordered = read.windows(2).all(|w| w[0] <= w[1]);
    ids.sort();
    recorded.sort();
    assert_eq!(ids, recorded, "every result exactly once");
    assert!(ordered, "oldest first");

    // Another patient's results are refused, and so are a stranger practitioner's reads.
    let bob = token(Role::Patient, "bob", Some(uuid::Uuid::now_v7()));
    let (_, _, body) = stack
        .graphql(
            &bob,
            &[],
            OBSERVATIONS_QUERY,
            json!({"patient": ada, "after": null}),
        )
        .await;
    assert_forbidden(&body);
    let stranger = token(Role::Practitioner, "dr-other", None);
    let (_, _, body) = stack
        .graphql(
            &stranger,
            &[],
            OBSERVATIONS_QUERY,
            json!({"patient": ada, "after": null}),
        )
        .await;
    assert_forbidden(&body);
}

#[tokio::test]
async fn a_patient_reads_their_prescriptions_with_dosage_and_the_prescriber_reads_them_too() {
    let stack = Stack::start().await;
    let _projector = projector(&stack, "pharmacy", &stack.databases.pharmacy).await;
    let ada = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let doctor = token(Role::Practitioner, "dr-hopper", None);
    let (status, _, written) = stack
        .command(
            reqwest::Method::POST,
            "/v1/medication-requests",
            Some(&doctor),
            &[],
            crate::commands::prescription_body(&ada, None)
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, 201, "{written}");
    let query = "query($patient: ID!) { medicationRequests(patientId: $patient, status: \"active\") {
        edges { node { id medication { code display } dosage { text dose { value unit } frequency periodUnit }
                       requesterId refills } } } }";
    let patient = token(Role::Patient, "ada", Some(ada.parse().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let node = loop {
        let (status, _, body) = stack
            .graphql(&patient, &[], query, json!({"patient": ada}))
            .await;
        assert_eq!(status, 200, "{body}");
        if let Some(edge) = body["data"]["medicationRequests"]["edges"].get(0) {
            break edge["node"].clone();
        }
        assert!(Instant::now() < deadline, "never visible: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(node["id"], written["id"]);
    assert_eq!(node["medication"]["code"], "314076");
    assert_eq!(node["dosage"]["text"], "10 mg once a day");
    assert_eq!(node["dosage"]["dose"]["unit"], "mg");
    assert_eq!(node["requesterId"], "dr-hopper");

    let body = until_answered(|| async {
        let (_, _, body) = stack
            .graphql(&doctor, &[], query, json!({"patient": ada}))
            .await;
        body
    })
    .await;
    assert_eq!(
        body["data"]["medicationRequests"]["edges"][0]["node"]["id"], written["id"],
        "{body}"
    );
    let bob = token(Role::Patient, "bob", Some(uuid::Uuid::now_v7()));
    let (_, _, body) = stack
        .graphql(&bob, &[], query, json!({"patient": ada}))
        .await;
    assert_forbidden(&body);
}

#[tokio::test]
async fn an_encounter_is_read_by_its_patient_and_practitioner_and_by_others_only_breaking_the_glass()
 {
    let stack = Stack::start().await;
    let _projector = projector(&stack, "encounter", &stack.databases.encounter).await;
    let ada = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let hopper = token(Role::Practitioner, "dr-hopper", None);
    let (status, _, started) = stack
        .command(
            reqwest::Method::POST,
            "/v1/encounters",
            Some(&hopper),
            &[],
            crate::commands::encounter_body(&ada, None)
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let encounter = started["id"].as_str().unwrap().to_string();
    let by_id = "query($id: ID!) { encounter(id: $id) { id status classCode practitionerId } }";
    let listed = "{ encounters { edges { node { id status } } } }";

    let patient = token(Role::Patient, "ada", Some(ada.parse().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, body) = stack.graphql(&patient, &[], listed, json!({})).await;
        if body["data"]["encounters"]["edges"][0]["node"]["id"] == encounter.as_str() {
            assert_eq!(
                body["data"]["encounters"]["edges"][0]["node"]["status"],
                "in-progress"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never visible: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = until_answered(|| async {
        let (_, _, body) = stack
            .graphql(&hopper, &[], by_id, json!({"id": encounter}))
            .await;
        body
    })
    .await;
    assert_eq!(body["data"]["encounter"]["classCode"], "AMB", "{body}");

    let other = token(Role::Practitioner, "dr-other", None);
    let (_, _, body) = stack
        .graphql(&other, &[], by_id, json!({"id": encounter}))
        .await;
    assert_forbidden(&body);
    let (_, _, body) = stack.graphql(&other, &[], listed, json!({})).await;
    assert!(
        body["data"]["encounters"]["edges"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{body}"
    );
    let glass = [
        ("X-Purpose-Of-Use", "ETREAT"),
        ("X-Break-Glass-Reason", "night cover"),
    ];
    let (_, _, body) = stack
        .graphql(&other, &glass, by_id, json!({"id": encounter}))
        .await;
    assert_eq!(
        body["data"]["encounter"]["id"],
        encounter.as_str(),
        "{body}"
    );
}

#[tokio::test]
async fn with_the_broker_down_no_query_returns_patient_data_and_says_why() {
    let (mut own, _) = tests::OwnCluster::start_in_memory().await;
    // (The query API's audit writer gives up on a lost broker after 5 s.)
    let stack = Stack::start_with(own.cluster.clone(), tests::Databases::fresh()).await;
    let ada = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, patient) = read_until_visible(&stack, &ada, "dr-hopper").await;
    assert_eq!(patient["id"], ada.as_str());

    own.kill_broker();
    // An admin reads every patient: each read below would carry PHI if it were answered.
    let doctor = token(Role::Admin, "front-desk", None);
    for (query, variables) in [
        (PATIENT_QUERY, json!({"id": ada})),
        (
            "{ patients(filter: {family: \"Love\"}) { edges { node { id name { text } } } } }",
            json!({}),
        ),
    ] {
        let (status, _, body) = stack.graphql(&doctor, &[], query, variables).await;
        assert_eq!(status, 200, "{body}");
        let text = body.to_string();
        assert!(
            !text.contains("Lovelace") && !text.contains("1815"),
            "PHI left: {body}"
        );
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "AUDIT_UNAVAILABLE",
            "{body}"
        );
    }

    // Nothing silent: the API says it cannot serve, and why, instead of "ready".
    let ready = stack.graphql_url.replace("/graphql", "/health/ready");
    let response = stack.http.get(&ready).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("audit writes are failing"),
        "{body}"
    );
    let metrics =
        tests::metrics_text(&stack.http, stack.graphql_url.trim_end_matches("/graphql")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("healthplane_audit_write_failures_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_consistency_token_waits_for_the_projection_that_serves_it_and_says_when_it_cannot() {
    let stack = Stack::start().await;
    let _appointments = projector(&stack, "appointment", &stack.databases.appointment).await;
    let ada = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = token(Role::Admin, "front-desk", None);
    let (status, _, booked) = stack
        .command(
            reqwest::Method::POST,
            "/v1/appointments",
            Some(&admin),
            &[],
            crate::commands::schedule_body(&ada, 24, 25)
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, 201, "{booked}");
    // Read at once with the token: the answer has the write.
    let sealed = booked["consistencyToken"].as_str().unwrap();
    let (status, _, body) = stack
        .graphql(
            &admin,
            &[("X-Consistency-Token", sealed)],
            "query($id: ID!) { appointment(id: $id) { id status } }",
            json!({"id": booked["id"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["appointment"]["id"], booked["id"], "{body}");

    // No encounter projector runs here: the read cannot catch up, and the answer says so
    // instead of answering with what it has.
    let doctor = token(Role::Practitioner, "dr-hopper", None);
    let (status, _, started) = stack
        .command(
            reqwest::Method::POST,
            "/v1/encounters",
            Some(&doctor),
            &[],
            crate::commands::encounter_body(&ada, None)
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let (status, _, body) = stack
        .graphql(
            &doctor,
            &[(
                "X-Consistency-Token",
                started["consistencyToken"].as_str().unwrap(),
            )],
            "query($id: ID!) { encounter(id: $id) { id } }",
            json!({"id": started["id"]}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CONSISTENCY_TIMEOUT",
        "{body}"
    );
}

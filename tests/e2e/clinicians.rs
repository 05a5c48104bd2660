//! Journey: a clinician's portal lists the patients in their care with each one's
//! appointments, encounters, observations and prescriptions nested, following the links
//! between them; one request costs the same few SQL statements for 5 patients or 20, and
//! writes one audit record per patient. Patients outside their care are refused, on every
//! path, until the clinician breaks the glass.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use events::Role;
use events::audit::{AccessOutcome, PhiAccessed};
use events::catalog::AUDIT_PHI_ACCESS;
use reqwest::Method;
use schemas::EventCodec;
use serde_json::{Value, json};
use tests::{Stack, ada, token};

use crate::commands::{at_hours, encounter_body, prescription_body, send, vital_body};

/// A practitioner of this test's own: every stack on the shared broker reads every patient's
/// events, so another test's practitioner would share the care team.
fn practitioner() -> String {
    format!("dr-{}", uuid::Uuid::new_v4().simple())
}

const NESTED_QUERY: &str = "query($first: Int!) { patients(first: $first) { edges { node {
    id name { text }
    appointments(first: 10) { edges { node { id status patient { id } } } }
    encounters(first: 10) { edges { node { id status appointment { id status } } } }
    observations(first: 10) { edges { node { id valueQuantity { value unit } encounter { id } } } }
    medicationRequests(first: 10) { edges { node { id dosage { text } encounter { id } } } }
} } pageInfo { hasNextPage } } }";

/// A patient's four records: appointment → encounter (completed) → observation and
/// prescription in it. Returns the patient's id.
async fn patient_with_a_visit(
    stack: &Stack,
    (doctor, practitioner): (&str, &str),
    admin: &str,
) -> String {
    let patient = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let schedule = json!({"patientId": patient, "practitionerId": practitioner,
        "start": at_hours(1), "end": at_hours(2)});
    let (s, appointment) = send(
        stack,
        Method::POST,
        "/v1/appointments",
        admin,
        &[],
        &schedule,
    )
    .await;
    assert_eq!(s, 201, "{appointment}");
    let body = encounter_body(&patient, Some(&id(&appointment)));
    let (s, encounter) = send(stack, Method::POST, "/v1/encounters", doctor, &[], &body).await;
    assert_eq!(s, 201, "{encounter}");
    let body = vital_body(&patient, Some(&id(&encounter)), "8867-4", 72.0, "/min");
    let (s, vital) = send(stack, Method::POST, "/v1/observations", doctor, &[], &body).await;
    assert_eq!(s, 201, "{vital}");
    let body = prescription_body(&patient, Some(&id(&encounter)));
    let path = "/v1/medication-requests";
    let (s, prescription) = send(stack, Method::POST, path, doctor, &[], &body).await;
    assert_eq!(s, 201, "{prescription}");
    let complete = format!("/v1/encounters/{}/complete", id(&encounter));
    let body = json!({"dischargeDisposition": "home"});
    let (s, done) = send(
        stack,
        Method::POST,
        &complete,
        doctor,
        &[("If-Match", "\"1\"")],
        &body,
    )
    .await;
    assert_eq!(s, 200, "{done}");
    patient
}

/// Whether every listed patient has its four records, linked, with the visit fulfilled.
fn complete(body: &Value, patients: usize) -> bool {
    let edges = body["data"]["patients"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    edges.len() == patients
        && edges.iter().all(|e| {
            let n = &e["node"];
            n["appointments"]["edges"][0]["node"]["status"] == "fulfilled"
                && n["encounters"]["edges"][0]["node"]["status"] == "finished"
                && !n["observations"]["edges"][0]["node"]["encounter"]["id"].is_null()
                && !n["medicationRequests"]["edges"][0]["node"]["id"].is_null()
        })
}

async fn statements(stack: &Stack) -> u64 {
    let metrics =
        tests::metrics_text(&stack.http, stack.graphql_url.trim_end_matches("/graphql")).await;
    metrics
        .lines()
        .filter(|l| l.starts_with("healthplane_read_model_statements_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The statements one request costs, and its answer.
async fn cost(stack: &Stack, who: &str, request_id: &str, first: usize) -> (u64, Value) {
    let before = statements(stack).await;
    let (status, _, body) = stack
        .graphql(
            who,
            &[("X-Request-Id", request_id)],
            NESTED_QUERY,
            json!({"first": first}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    (statements(stack).await - before, body)
}

#[tokio::test]
async fn a_clinicians_patient_list_with_nested_records_costs_the_same_few_statements_for_5_or_20_patients()
 {
    let stack = Stack::start().await;
    let _projectors = stack.start_clinical_projectors().await;
    let me = practitioner();
    let doctor = token(Role::Practitioner, &me, None);
    let admin = token(Role::Admin, "front-desk", None);
    let mut mine = BTreeSet::new();
    for _ in 0..4 {
        let visits = (0..5).map(|_| patient_with_a_visit(&stack, (&doctor, &me), &admin));
        mine.extend(futures::future::join_all(visits).await);
    }
    // A patient not in their care.
    let stranger = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Wait until every projection has every record (the care team included).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, _, body) = stack
            .graphql(&doctor, &[], NESTED_QUERY, json!({"first": 20}))
            .await;
        if complete(&body, 20) {
            break;
        }
        assert!(Instant::now() < deadline, "never complete: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The list is the patients in their care, each with its records and links.
    // Each size three times: a DataLoader batches the keys that arrive within 1 ms, and on a
    // loaded machine one field's keys can straddle two batches now and then.
    let mut small = Vec::new();
    for _ in 0..3 {
        small.push(
            cost(&stack, &doctor, &uuid::Uuid::new_v4().to_string(), 5)
                .await
                .0,
        );
    }
    let mut large = Vec::new();
    for _ in 0..2 {
        large.push(
            cost(&stack, &doctor, &uuid::Uuid::new_v4().to_string(), 20)
                .await
                .0,
        );
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let (last, body) = cost(&stack, &doctor, &request_id, 20).await;
    large.push(last);
    let listed: BTreeSet<String> = body["data"]["patients"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, mine, "exactly the patients in their care");
    assert!(!listed.contains(&stranger));
    let first = &body["data"]["patients"]["edges"][0]["node"];
    let appointment = &first["appointments"]["edges"][0]["node"];
    assert_eq!(appointment["patient"]["id"], first["id"], "{first}");
    assert_eq!(
        first["encounters"]["edges"][0]["node"]["appointment"]["id"], appointment["id"],
        "{first}"
    );
    assert_eq!(
        first["observations"]["edges"][0]["node"]["encounter"]["id"],
        first["encounters"]["edges"][0]["node"]["id"],
        "{first}"
    );
    assert_eq!(
        first["medicationRequests"]["edges"][0]["node"]["dosage"]["text"],
        "10 mg once a day"
    );

    // No N+1: one statement per field whatever the count of patients — the list, the care
    // check, four pages and four links: 10 (read one by one, 20 patients with four
    // connections and their links would be 1 + 20 × 9). Two links that load the same kind
    // (an observation's and a prescription's encounter) may share one, so 9 or 10; a batch
    // split by timing adds one now and then, never one per patient.
    println!("statements: {small:?} for 5 patients, {large:?} for 20");
    const PER_FIELD: u64 = 1 + 1 + 4 + 4;
    let fewest = |runs: &[u64]| runs.iter().copied().min().unwrap();
    let most = |runs: &[u64]| runs.iter().copied().max().unwrap();
    assert!(
        fewest(&small) <= PER_FIELD && fewest(&large) <= PER_FIELD,
        "{small:?} statements for 5 patients, {large:?} for 20"
    );
    assert!(
        most(&large) <= PER_FIELD + 3,
        "{large:?} statements for 20 patients: something loads per patient"
    );

    // One success record per patient for the request, listing what it returned.
    let codec = EventCodec::new(&stack.cluster.registry_url);
    let deadline = Instant::now() + Duration::from_secs(30);
    let records: BTreeMap<String, PhiAccessed> = loop {
        let mut records = BTreeMap::new();
        let mut count = 0;
        for message in tests::read_topic(&stack.cluster.brokers, AUDIT_PHI_ACCESS) {
            use rdkafka::message::Message;
            let access: PhiAccessed = codec.decode(message.payload()).await.unwrap();
            if access.request_id == request_id {
                count += 1;
                records.insert(access.patient_id.to_string(), access);
            }
        }
        if count >= 20 || Instant::now() > deadline {
            assert_eq!(count, 20, "one record per patient");
            break records;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(records.keys().cloned().collect::<BTreeSet<_>>(), mine);
    let record = &records[first["id"].as_str().unwrap()];
    assert_eq!(record.outcome, AccessOutcome::Success);
    assert_eq!(record.purpose_of_use, "TREAT");
    let types: BTreeSet<&str> = record.resource_type.split(',').collect();
    assert_eq!(
        types,
        BTreeSet::from([
            "Patient",
            "Appointment",
            "Encounter",
            "Observation",
            "MedicationRequest"
        ])
    );
    let appointment_ref = format!("Appointment/{}", appointment["id"].as_str().unwrap());
    assert!(record.resource_ids.contains(&appointment_ref), "{record:?}");
    // Patient, appointment, encounter, observation, prescription: each once.
    assert_eq!(record.resource_ids.len(), 5, "{record:?}");

    // A patient outside their care: refused on every path, until the glass is broken.
    let paths = [
        (
            "query($id: ID!) { patient(id: $id) { id } }",
            json!({"id": stranger}),
        ),
        (
            "query($id: ID!) { observations(patientId: $id) { edges { node { id } } } }",
            json!({"id": stranger}),
        ),
        (
            "query($id: ID!) { appointments(filter: {patientId: $id}) { edges { node { id } } } }",
            json!({"id": stranger}),
        ),
        (
            "query($id: ID!) { medicationRequests(patientId: $id) { edges { node { id } } } }",
            json!({"id": stranger}),
        ),
    ];
    for (query, variables) in &paths {
        let (_, _, body) = stack.graphql(&doctor, &[], query, variables.clone()).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{body}"
        );
        assert!(!body.to_string().contains("Lovelace"), "{body}");
    }
    let glass = [
        ("X-Purpose-Of-Use", "ETREAT"),
        ("X-Break-Glass-Reason", "collapsed in the waiting room"),
    ];
    let (_, _, body) = stack
        .graphql(&doctor, &glass, paths[0].0, paths[0].1.clone())
        .await;
    assert_eq!(body["data"]["patient"]["id"], stranger.as_str(), "{body}");
}

const OWN_QUERY: &str = "query($id: ID!) { patient(id: $id) { id
    appointments { edges { node { id status } } }
    encounters { edges { node { id } } }
    observations { edges { node { id } } }
    medicationRequests { edges { node { id } } } } }";

/// The ids of the first appointment, encounter, observation and prescription in an answer to
/// [`OWN_QUERY`].
fn record_ids(body: &Value) -> Vec<String> {
    let patient = &body["data"]["patient"];
    [
        "appointments",
        "encounters",
        "observations",
        "medicationRequests",
    ]
    .iter()
    .filter_map(|f| {
        patient[f]["edges"][0]["node"]["id"]
            .as_str()
            .map(str::to_string)
    })
    .collect()
}

/// The success records of the audit log for `request_id`.
async fn successes(stack: &Stack, request_id: &str) -> Vec<PhiAccessed> {
    let codec = EventCodec::new(&stack.cluster.registry_url);
    let mut found = Vec::new();
    for message in tests::read_topic(&stack.cluster.brokers, AUDIT_PHI_ACCESS) {
        use rdkafka::message::Message;
        let access: PhiAccessed = codec.decode(message.payload()).await.unwrap();
        if access.request_id == request_id && access.outcome == AccessOutcome::Success {
            found.push(access);
        }
    }
    found
}

#[tokio::test]
async fn a_patient_reads_their_own_records_on_every_path_and_no_one_elses_and_each_read_is_audited_once()
 {
    let stack = Stack::start().await;
    let _projectors = stack.start_clinical_projectors().await;
    let me = practitioner();
    let doctor = token(Role::Practitioner, &me, None);
    let admin = token(Role::Admin, "front-desk", None);
    let visits = (0..4).map(|_| patient_with_a_visit(&stack, (&doctor, &me), &admin));
    let patients: Vec<String> = futures::future::join_all(visits).await;
    let (ada, bob) = (&patients[0], &patients[1]);

    // Ada reads her own records, nested, once the projections have them.
    let own = token(Role::Patient, "ada", Some(ada.parse().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, body) = stack
            .graphql(&own, &[], OWN_QUERY, json!({"id": ada}))
            .await;
        if record_ids(&body).len() == 4
            && body["data"]["patient"]["appointments"]["edges"][0]["node"]["status"] == "fulfilled"
        {
            break;
        }
        assert!(Instant::now() < deadline, "never complete: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Every patient's records are in every projection.
    let mut all = Vec::new();
    for patient in &patients {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, _, body) = stack
                .graphql(&admin, &[], OWN_QUERY, json!({"id": patient}))
                .await;
            if record_ids(&body).len() == 4 {
                all.push(record_ids(&body));
                break;
            }
            assert!(Instant::now() < deadline, "never complete: {body}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let bobs = all[1].clone();

    // Bob's records, on every path: nested, top-level by patient, by filter, by guessed id.
    let id_paths = [("appointment", &bobs[0]), ("encounter", &bobs[1])];
    for (field, id) in id_paths {
        let query = format!("query($id: ID!) {{ {field}(id: $id) {{ id patientId }} }}");
        let (_, _, body) = stack.graphql(&own, &[], &query, json!({"id": id})).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{body}"
        );
        assert!(body["data"][field].is_null(), "{body}");
    }
    for (query, variables) in [
        (OWN_QUERY, json!({"id": bob})),
        (
            "query($id: ID!) { observations(patientId: $id) { edges { node { id } } } }",
            json!({"id": bob}),
        ),
        (
            "query($id: ID!) { medicationRequests(patientId: $id) { edges { node { id } } } }",
            json!({"id": bob}),
        ),
        (
            "query($id: ID!) { appointments(filter: {patientId: $id}) { edges { node { id } } } }",
            json!({"id": bob}),
        ),
        (
            "query($id: ID!) { encounters(filter: {patientId: $id}) { edges { node { id } } } }",
            json!({"id": bob}),
        ),
    ] {
        let (_, _, body) = stack.graphql(&own, &[], query, variables).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{query}: {body}"
        );
        for id in &bobs {
            assert!(!body.to_string().contains(id.as_str()), "{body}");
        }
    }
    // Counts of one patient's records, nested or by a filter naming her; none across patients.
    let (_, _, body) = stack
        .graphql(
            &own,
            &[],
            "query($id: ID!) {
                patient(id: $id) { observations(first: 1) { totalCount pageInfo { hasNextPage } } }
                appointments(filter: {patientId: $id}) { totalCount }
                medicationRequests(patientId: $id, status: \"active\") { totalCount }
                encounters { totalCount } }",
            json!({"id": ada}),
        )
        .await;
    assert_eq!(
        body["data"]["patient"]["observations"]["totalCount"], 1,
        "{body}"
    );
    assert_eq!(body["data"]["appointments"]["totalCount"], 1, "{body}");
    assert_eq!(
        body["data"]["medicationRequests"]["totalCount"], 1,
        "{body}"
    );
    assert!(body["data"]["encounters"]["totalCount"].is_null(), "{body}");

    // A status outside the code set is the caller's mistake, named, not an empty list.
    let (_, _, body) = stack
        .graphql(
            &own,
            &[],
            "{ appointments(filter: {status: \"bogus\"}) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("fulfilled"),
        "{body}"
    );

    // Unfiltered lists hold only her own.
    let (_, _, body) = stack
        .graphql(&own, &[], "{ appointments { edges { node { patientId } } } encounters { edges { node { patientId } } } }", json!({}))
        .await;
    for field in ["appointments", "encounters"] {
        let edges = body["data"][field]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 1, "{body}");
        assert_eq!(edges[0]["node"]["patientId"], ada.as_str());
    }

    // Count match: four reads of four patients, each of another resource type, are exactly
    // four success records, each of its patient.
    let reads = [
        ("query($id: ID!) { patient(id: $id) { id } }", &patients[0]),
        (
            "query($id: ID!) { observations(patientId: $id) { edges { node { id } } } }",
            &patients[1],
        ),
        (
            "query($id: ID!) { appointments(filter: {patientId: $id}) { edges { node { id } } } }",
            &patients[2],
        ),
        (
            "query($id: ID!) { medicationRequests(patientId: $id) { edges { node { id } } } }",
            &patients[3],
        ),
        // A search that finds nothing still looked at the record.
        (
            "query($id: ID!) { observations(patientId: $id, code: \"0000-0\") { edges { node { id } } } }",
            &patients[0],
        ),
    ];
    let mut requests = Vec::new();
    let mut empty_search = String::new();
    for (query, patient) in reads {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (status, _, body) = stack
            .graphql(
                &admin,
                &[("X-Request-Id", &request_id)],
                query,
                json!({"id": patient}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "{body}");
        if query.contains("0000-0") {
            empty_search = request_id.clone();
        }
        requests.push((request_id, patient.clone()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (request_id, patient) in requests {
        let found = loop {
            let found = successes(&stack, &request_id).await;
            if !found.is_empty() || Instant::now() > deadline {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].patient_id.to_string(), patient);
        assert_eq!(found[0].resource_ids.is_empty(), request_id == empty_search);
    }
}

#[tokio::test]
async fn a_practitioner_cannot_book_their_way_into_a_patients_care() {
    let stack = Stack::start().await;
    let _projectors = stack.start_clinical_projectors().await;
    let me = practitioner();
    let doctor = token(Role::Practitioner, &me, None);
    let patient = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let read = "query($id: ID!) { patient(id: $id) { id } }";
    let forbidden = |body: &Value| body["errors"][0]["extensions"]["code"] == "FORBIDDEN";

    // Booking a colleague (who would then read the record) is the front desk's, not theirs.
    let colleague = json!({"patientId": patient, "practitionerId": practitioner(),
        "start": at_hours(1), "end": at_hours(2)});
    let (s, body) = send(
        &stack,
        Method::POST,
        "/v1/appointments",
        &doctor,
        &[],
        &colleague,
    )
    .await;
    assert_eq!(s, 403, "{body}");

    // A booking with themselves puts them in the patient's care, until it is cancelled.
    let own = json!({"patientId": patient, "practitionerId": me,
        "start": at_hours(1), "end": at_hours(2)});
    let (s, booked) = send(&stack, Method::POST, "/v1/appointments", &doctor, &[], &own).await;
    assert_eq!(s, 201, "{booked}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, body) = stack
            .graphql(&doctor, &[], read, json!({"id": patient}))
            .await;
        if !forbidden(&body) {
            assert_eq!(body["data"]["patient"]["id"], patient.as_str(), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "never in care: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cancel = format!("/v1/appointments/{}/cancel", booked["id"].as_str().unwrap());
    let (s, body) = send(
        &stack,
        Method::POST,
        &cancel,
        &doctor,
        &[("If-Match", "\"1\"")],
        &json!({"reason": "booked by mistake"}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, body) = stack
            .graphql(&doctor, &[], read, json!({"id": patient}))
            .await;
        if forbidden(&body) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still in care after the cancellation: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A token that also carries the admin role reads as the practitioner it acts as.
    let both = platform::auth::mint_hs256(
        tests::TEST_JWT_SECRET,
        &me,
        &[Role::Practitioner, Role::Admin],
        None,
        chrono::Duration::minutes(10),
    );
    let (_, _, body) = stack
        .graphql(&both, &[], read, json!({"id": patient}))
        .await;
    assert!(forbidden(&body), "{body}");
}

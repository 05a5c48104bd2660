//! Journey: an attacker with network access only tries the shortest paths around the patient
//! compartment — oversized and half-sent requests, query amplification, forged consistency
//! tokens, a spoofed client address, another person's identifier — and each is refused at
//! once, with nothing changed, while honest callers are served.

use std::time::{Duration, Instant};

use events::Role;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tests::{Databases, Stack, ada, token};

use crate::{PATIENT_QUERY, read_until_visible};

fn authority(url: &str) -> String {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// Reads what the server sends until it closes the connection (bounded).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&answer).into()),
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => return None,
        }
    }
}

fn graphql_code(body: &serde_json::Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn a_50_mb_body_is_refused_before_it_is_read_and_half_sent_requests_are_disconnected() {
    let stack = Stack::start_with_env(
        tests::Cluster::shared(),
        Databases::fresh(),
        &[("HEALTHPLANE_HTTP_HEADER_TIMEOUT_MS", "1000".to_string())],
    )
    .await;
    let query_api = &stack.processes[2];
    let address = authority(&stack.graphql_url);
    let rss_before = query_api.rss_kib();

    // A declared 50 MB body without a token: the answer comes before a byte of it is sent.
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        50 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the server answered without waiting for the body");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // The same body sent chunked (no length to check): refused for want of a token, unread.
    let stream = TcpStream::connect(&address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let sender = tokio::spawn(async move {
        let chunk = vec![b'x'; 1024 * 1024];
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        let mut sent = 0;
        while sent < 50 {
            match tokio::time::timeout(Duration::from_secs(5), writer.write_all(&frame)).await {
                Ok(Ok(())) => sent += 1,
                // Refused (connection closed) or not read (the server stopped reading).
                _ => break,
            }
        }
        sent
    });
    let mut answer = [0u8; 128];
    let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut answer))
        .await
        .expect("an answer while the body was still coming")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let sent = sender.await.unwrap();
    assert!(sent < 50, "all 50 MiB were read without a token");
    let rss_after = query_api.rss_kib();
    assert!(
        rss_after < rss_before + 16 * 1024,
        "the query API grew from {rss_before} KiB to {rss_after} KiB"
    );

    // 200 connections that send half a request header and stop...
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(format!("POST /graphql HTTP/1.1\r\nHost: {address}\r\nX-Slow: ").as_bytes())
            .await
            .unwrap();
        idle.push(stream);
    }
    // ...do not keep an honest caller out...
    let created = stack.register(&ada()).await;
    let id = created["id"].as_str().unwrap();
    let (_, patient) = read_until_visible(&stack, id, "dr-hopper").await;
    assert_eq!(patient["id"], id);
    // ...and the server closes every one of them (header timeout 1 s here, 5 s by default).
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(
            read_until_closed(stream, Duration::from_secs(10))
                .await
                .is_some(),
            "half-sent connection {i} is still open"
        );
    }
}

#[tokio::test]
async fn query_amplification_is_refused_before_any_read_and_callers_are_rate_limited() {
    let stack = Stack::start_with_env(
        tests::Cluster::shared(),
        Databases::fresh(),
        &[
            ("HEALTHPLANE_GRAPHQL_RATE_PER_S", "1".to_string()),
            ("HEALTHPLANE_GRAPHQL_RATE_BURST", "3".to_string()),
        ],
    )
    .await;
    let doctor = token(Role::Practitioner, "dr-amplifier", None);

    // 200 aliases of a full page.
    let aliases: String = (0..200)
        .map(|i| format!("p{i}: patients(first: 100) {{ edges {{ node {{ id }} }} }} "))
        .collect();
    let (status, _, body) = stack
        .graphql(
            &doctor,
            &[],
            &format!("{{ {aliases} }}"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(graphql_code(&body), "BAD_USER_INPUT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("aliases")
    );

    // Within the alias cap, the page sizes count: 10 x 100 patients of 10 fields each is over
    // the complexity limit.
    let pages: String = (0..10)
        .map(|i| format!("p{i}: patients(first: 100) {{ edges {{ node {{ id name {{ text given family }} birthDate gender telecom {{ value }} }} }} }} "))
        .collect();
    let (_, _, body) = stack
        .graphql(
            &doctor,
            &[],
            &format!("{{ {pages} }}"),
            serde_json::json!({}),
        )
        .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("complex"),
        "{body}"
    );
    assert!(body["data"].is_null(), "{body}");

    // The fourth request in a burst of three is one too many for this caller, not for others.
    let (status, _, body) = stack
        .graphql(&doctor, &[], "{ __typename }", serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, headers_after, body) = stack
        .graphql(&doctor, &[], "{ __typename }", serde_json::json!({}))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(graphql_code(&body), "RATE_LIMITED", "{body}");
    assert!(headers_after.contains_key("retry-after"));
    let other = token(Role::Practitioner, "dr-other", None);
    let (status, _, _) = stack
        .graphql(&other, &[], "{ __typename }", serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
    let metrics =
        tests::metrics_text(&stack.http, stack.graphql_url.trim_end_matches("/graphql")).await;
    assert!(
        metrics.contains("healthplane_graphql_rate_limited_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_forged_or_foreign_consistency_token_is_refused_at_once() {
    let stack = Stack::start().await;
    let created = stack.register(&ada()).await;
    let id = created["id"].as_str().unwrap();
    let issued = created["consistencyToken"].as_str().unwrap();
    assert!(!issued.contains(id), "the token is opaque: {issued}");

    let forged = format!("patient:{id}:999");
    let mut tampered = issued.to_string();
    tampered.replace_range(5..6, if &issued[5..6] == "A" { "B" } else { "A" });
    let someone_else = token(Role::Practitioner, "dr-nosy", None);
    let owner = token(Role::Admin, "admin-e2e", None);
    for (who, presented) in [
        (&owner, forged.as_str()),
        (&owner, tampered.as_str()),
        (&someone_else, issued),
    ] {
        let started = Instant::now();
        let (status, _, body) = stack
            .graphql(
                who,
                &[("X-Consistency-Token", presented)],
                PATIENT_QUERY,
                serde_json::json!({"id": id}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(graphql_code(&body), "BAD_USER_INPUT", "{body}");
        assert!(
            started.elapsed() < tests_wait(),
            "a refused token must not start the consistency wait"
        );
    }
}

/// The query API's consistency wait: a refusal that took this long waited.
fn tests_wait() -> Duration {
    Duration::from_secs(2)
}

#[tokio::test]
async fn a_spoofed_forwarded_for_is_recorded_but_is_not_the_client_address() {
    let stack = Stack::start().await;
    let created = stack.register(&ada()).await;
    let id = created["id"].as_str().unwrap().to_string();
    let _ = read_until_visible(&stack, &id, "dr-hopper").await;
    let doctor = token(Role::Admin, "dr-hopper", None);
    let request_id = uuid::Uuid::new_v4().to_string();
    let (status, _, body) = stack
        .graphql(
            &doctor,
            &[
                ("X-Request-Id", &request_id),
                ("X-Forwarded-For", "6.6.6.6"),
                ("User-Agent", "=HYPERLINK(\"http://evil.example\")"),
            ],
            PATIENT_QUERY,
            serde_json::json!({"id": id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let access = loop {
        let log = stack.replay_tool(&["audit", "--patient", &id, "--format", "jsonl"]);
        if let Some(access) = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|a| a["request_id"] == request_id.as_str())
        {
            break access;
        }
        assert!(
            Instant::now() < deadline,
            "the access was not audited: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(access["client_ip"], "127.0.0.1", "{access}");
    assert_eq!(access["forwarded_for"], "6.6.6.6", "{access}");
    assert_eq!(
        access["user_agent"], "=HYPERLINK(\"http://evil.example\")",
        "{access}"
    );

    // The auditors' CSV export does not hand the attacker's user agent to a spreadsheet as a
    // formula.
    let csv = stack.replay_tool(&["audit", "--patient", &id, "--format", "csv"]);
    let line = csv
        .lines()
        .find(|l| l.contains(&request_id))
        .expect("the access is in the export");
    assert!(!line.contains(",=") && !line.contains(",\"="), "{line}");
    assert!(line.contains("'=HYPERLINK"), "{line}");
}

#[tokio::test]
async fn anothers_identifier_cannot_be_taken_by_registering_or_updating() {
    let stack = Stack::start().await;
    let ssn = serde_json::json!([{"system": "http://hl7.org/fhir/sid/us-ssn", "value": format!("123-45-{}", rand_digits())}]);
    let mut first = ada();
    first["identifier"] = ssn.clone();
    let owner = stack.register(&first).await;

    let admin = token(Role::Admin, "admin-e2e", None);
    let mut second = ada();
    second["identifier"] = ssn.clone();
    let events_before = event_count(&stack).await;
    let (status, _, problem) = stack
        .command(
            reqwest::Method::POST,
            "/v1/patients",
            Some(&admin),
            &[],
            second.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        problem["identifierSystem"],
        "http://hl7.org/fhir/sid/us-ssn"
    );
    assert!(
        !problem.to_string().contains(owner["id"].as_str().unwrap()),
        "no other patient named"
    );

    // Near-duplicates are the same identifier: another spelling of the system, the value
    // without dashes or in full-width digits. Invisible characters are refused outright.
    let digits = ssn[0]["value"].as_str().unwrap().to_string();
    let full_width: String = digits
        .chars()
        .map(|c| {
            c.to_digit(10)
                .map_or(c, |d| char::from_u32(0xFF10 + d).unwrap())
        })
        .collect();
    for (system, value, expected) in [
        ("HTTP://HL7.ORG/FHIR/SID/US-SSN", digits.clone(), 409),
        (
            "http://hl7.org/fhir/sid/us-ssn",
            digits.replace('-', ""),
            409,
        ),
        ("http://hl7.org/fhir/sid/us-ssn", full_width, 409),
        (
            "http://hl7.org/fhir/sid/us-ssn",
            format!("{digits}\u{200b}"),
            422,
        ),
    ] {
        let mut near = ada();
        near["identifier"] = json!([{"system": system, "value": value}]);
        let (status, _, problem) = stack
            .command(
                reqwest::Method::POST,
                "/v1/patients",
                Some(&admin),
                &[],
                near.to_string().into_bytes(),
            )
            .await;
        assert_eq!(status, expected, "{system} {value:?}: {problem}");
    }

    // A patient updating their own record to another person's SSN.
    let mallory = stack.register(&ada()).await;
    let mallory_id = mallory["id"].as_str().unwrap();
    let patient = token(Role::Patient, "mallory", Some(mallory_id.parse().unwrap()));
    let (status, problem) = patch(&stack, mallory_id, &patient, json!({"identifier": ssn})).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        event_count(&stack).await,
        events_before + 1,
        "only mallory's registration was written"
    );

    // The owner keeps theirs through an update of something else, and may give it up.
    let owner_id = owner["id"].as_str().unwrap();
    let mrn =
        json!({"identifier": [{"system": "urn:mrn", "value": format!("MRN-{}", rand_digits())}]});
    let (status, body) = patch(&stack, owner_id, &admin, mrn).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = patch(&stack, mallory_id, &patient, json!({"identifier": ssn})).await;
    assert_eq!(status, 200, "a released identifier can be claimed: {body}");
}

/// PATCHes patient `id` at version 1; returns the status and body.
async fn patch(
    stack: &Stack,
    id: &str,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let (status, _, body) = stack
        .command(
            reqwest::Method::PATCH,
            &format!("/v1/patients/{id}"),
            Some(token),
            &[("If-Match", "\"1\"")],
            body.to_string().into_bytes(),
        )
        .await;
    (status, body)
}

fn rand_digits() -> String {
    format!("{:04}", uuid::Uuid::new_v4().as_u128() % 10_000)
}

async fn event_count(stack: &Stack) -> i64 {
    let pool = sqlx::PgPool::connect(&stack.databases.event_store)
        .await
        .unwrap();
    let n = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

#[tokio::test]
async fn answers_are_not_cached_or_sniffed() {
    let stack = Stack::start().await;
    let created = stack.register(&ada()).await;
    let id = created["id"].as_str().unwrap().to_string();
    let _ = read_until_visible(&stack, &id, "dr-hopper").await;
    let doctor = token(Role::Admin, "dr-hopper", None);
    let (_, headers, _) = stack
        .graphql(&doctor, &[], PATIENT_QUERY, serde_json::json!({"id": id}))
        .await;
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let admin = token(Role::Admin, "admin-e2e", None);
    let (status, headers, _) = stack
        .command(
            reqwest::Method::PATCH,
            &format!("/v1/patients/{id}"),
            Some(&admin),
            &[("If-Match", "\"1\"")],
            serde_json::json!({"gender": "other"})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn the_query_api_role_cannot_write_a_read_model() {
    use platform::provision::Service;
    let stack = Stack::start().await;
    let created = stack.register(&ada()).await;
    let id = created["id"].as_str().unwrap().to_string();
    let _ = read_until_visible(&stack, &id, "dr-hopper").await;

    // Exactly what the query API connects as.
    let url = Databases::as_role(&stack.databases.patient, Service::Query);
    let mut reader = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("the query role may connect");
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM read_model.patients WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&id).unwrap())
        .fetch_one(&mut reader)
        .await
        .expect("the query role may read");
    assert_eq!(seen, 1);
    for write in [
        format!("UPDATE read_model.patients SET family_name = 'Mallory' WHERE id = '{id}'"),
        "DELETE FROM read_model.patients".to_string(),
        "INSERT INTO read_model.patients (id) VALUES (gen_random_uuid())".to_string(),
        "CREATE TABLE read_model.stolen (x int)".to_string(),
        "CREATE TABLE public.stolen (x int)".to_string(),
        "DROP TABLE read_model.patients".to_string(),
    ] {
        let error = sqlx::raw_sql(&write)
            .execute(&mut reader)
            .await
            .expect_err(&write);
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.to_string());
        // 42501 insufficient_privilege (42P01 would mean the test is wrong).
        assert!(matches!(code.as_deref(), Some("42501")), "{write}: {error}");
    }
    // Nor may it reach the event store.
    let events = Databases::as_role(&stack.databases.event_store, Service::Query);
    assert!(
        <sqlx::PgConnection as sqlx::Connection>::connect(&events)
            .await
            .is_err(),
        "the query role connected to the event store"
    );
}

#[tokio::test]
async fn the_declared_purpose_is_one_the_role_may_declare_and_break_the_glass_is_recorded() {
    let stack = Stack::start().await;
    let created = stack.register(&ada()).await;
    let id = created["id"].as_str().unwrap().to_string();
    let _ = read_until_visible(&stack, &id, "dr-hopper").await;
    let query = |who: String, headers: Vec<(&'static str, &'static str)>| {
        let (stack, id) = (&stack, id.clone());
        async move {
            let request_id = uuid::Uuid::new_v4().to_string();
            let mut all: Vec<(&str, &str)> = headers;
            all.push(("X-Request-Id", &request_id));
            let (status, _, body) = stack
                .graphql(&who, &all, PATIENT_QUERY, json!({"id": id}))
                .await;
            (status, body, request_id)
        }
    };
    let patient = token(Role::Patient, "ada", Some(id.parse().unwrap()));
    let doctor = token(Role::Practitioner, "dr-hopper", None);
    let admin = token(Role::Admin, "front-desk", None);

    // A patient cannot claim to be treating; a practitioner cannot invent a purpose; breaking
    // the glass without a reason is refused.
    for (who, headers) in [
        (patient.clone(), vec![("X-Purpose-Of-Use", "TREAT")]),
        (doctor.clone(), vec![("X-Purpose-Of-Use", "XXXXXXXX")]),
        (doctor.clone(), vec![("X-Purpose-Of-Use", "ETREAT")]),
    ] {
        let (status, body, _) = query(who, headers).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(graphql_code(&body), "BAD_USER_INPUT", "{body}");
    }
    // Break-the-glass with a reason is served and recorded with it; an admin's read is
    // healthcare operations.
    let (status, body, glass) = query(
        doctor,
        vec![
            ("X-Purpose-Of-Use", "ETREAT"),
            (
                "X-Break-Glass-Reason",
                "unconscious in the emergency department",
            ),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, operations) = query(admin, vec![]).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = stack.replay_tool(&["audit", "--patient", &id, "--format", "jsonl"]);
        let accesses: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let find = |request: &str| {
            accesses
                .iter()
                .find(|a| a["request_id"] == request)
                .cloned()
        };
        if let (Some(glass), Some(operations)) = (find(&glass), find(&operations)) {
            assert_eq!(glass["purpose_of_use"], "ETREAT");
            assert_eq!(
                glass["detail"],
                "break-the-glass: unconscious in the emergency department"
            );
            assert_eq!(operations["purpose_of_use"], "HOPERAT");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the accesses were not audited: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

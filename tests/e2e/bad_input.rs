//! Journey: a portal sends bad commands; each gets the documented status and a problem+json
//! body, and nothing is written.

use events::Role;
use reqwest::Method;
use tests::{Stack, TEST_JWT_SECRET, ada, token};

use crate::commands::event_count;

fn assert_problem(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &serde_json::Value,
    expected: u16,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "{body}"
    );
    assert_eq!(body["status"], expected, "{body}");
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
}

fn field_errors(body: &serde_json::Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn bad_commands_get_the_documented_errors_and_write_nothing() {
    let stack = Stack::start().await;
    let admin = token(Role::Admin, "admin-e2e", None);
    let before = event_count(&stack).await;
    let post = |token: Option<String>, body: Vec<u8>| {
        let stack = &stack;
        async move {
            stack
                .command(Method::POST, "/v1/patients", token.as_deref(), &[], body)
                .await
        }
    };

    let (s, h, b) = post(Some(admin.clone()), b"{\"identifier\": [".to_vec()).await;
    assert_problem(s, &h, &b, 400);

    // A member named twice would mean one thing to a gateway reading the first and another
    // to us reading the last.
    let twice = ada()
        .to_string()
        .replacen('{', "{\"gender\": \"male\", ", 1);
    let (s, h, b) = post(Some(admin.clone()), twice.into_bytes()).await;
    assert_problem(s, &h, &b, 400);
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("`gender` appears twice"),
        "{b}"
    );

    let mut missing = ada();
    missing.as_object_mut().unwrap().remove("gender");
    let (s, h, b) = post(Some(admin.clone()), missing.to_string().into_bytes()).await;
    assert_problem(s, &h, &b, 422);
    assert_eq!(field_errors(&b), vec!["$.gender"]);

    let mut bad_date = ada();
    bad_date["birthDate"] = "2023-02-30".into();
    let (s, h, b) = post(Some(admin.clone()), bad_date.to_string().into_bytes()).await;
    assert_problem(s, &h, &b, 422);
    assert_eq!(field_errors(&b), vec!["$.birthDate"]);

    let mut unknown = ada();
    unknown["favouriteColour"] = "teal".into();
    let (s, h, b) = post(Some(admin.clone()), unknown.to_string().into_bytes()).await;
    assert_problem(s, &h, &b, 422);
    assert!(
        b["detail"].as_str().unwrap().contains("favouriteColour"),
        "{b}"
    );

    let expired = platform::auth::mint_hs256(
        TEST_JWT_SECRET,
        "admin-e2e",
        &[Role::Admin],
        None,
        chrono::Duration::minutes(-10),
    );
    let (s, h, b) = post(Some(expired), ada().to_string().into_bytes()).await;
    assert_problem(s, &h, &b, 401);

    let forged = platform::auth::mint_hs256(
        "not-the-secret",
        "admin-e2e",
        &[Role::Admin],
        None,
        chrono::Duration::minutes(10),
    );
    let (s, h, b) = post(Some(forged), ada().to_string().into_bytes()).await;
    assert_problem(s, &h, &b, 401);

    let (s, h, b) = post(None, ada().to_string().into_bytes()).await;
    assert_problem(s, &h, &b, 401);

    let auditor = token(Role::Auditor, "auditor-e2e", None);
    let (s, h, b) = post(Some(auditor), ada().to_string().into_bytes()).await;
    assert_problem(s, &h, &b, 403);

    let (s, h, b) = post(Some(admin.clone()), vec![b' '; 70 * 1024]).await;
    assert_problem(s, &h, &b, 413);

    assert_eq!(
        event_count(&stack).await,
        before,
        "a refused command wrote an event"
    );

    // Updates: the version guard.
    let created = stack.register(&ada()).await;
    let path = format!("/v1/patients/{}", created["id"].as_str().unwrap());
    let after_register = event_count(&stack).await;
    let patch = br#"{"gender": "other"}"#.to_vec();

    let (s, h, b) = stack
        .command(Method::PATCH, &path, Some(&admin), &[], patch.clone())
        .await;
    assert_problem(s, &h, &b, 412);

    let (s, h, b) = stack
        .command(
            Method::PATCH,
            &path,
            Some(&admin),
            &[("If-Match", "\"7\"")],
            patch.clone(),
        )
        .await;
    assert_problem(s, &h, &b, 409);
    assert_eq!(b["currentVersion"], 1);

    let (s, h, b) = stack
        .command(
            Method::PATCH,
            "/v1/patients/0190a0e4-0000-7000-8000-000000000000",
            Some(&admin),
            &[("If-Match", "\"1\"")],
            patch.clone(),
        )
        .await;
    assert_problem(s, &h, &b, 404);

    assert_eq!(
        event_count(&stack).await,
        after_register,
        "a refused update wrote an event"
    );

    let (s, h, b) = stack
        .command(
            Method::PATCH,
            &path,
            Some(&admin),
            &[("If-Match", "\"1\"")],
            patch.clone(),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h["etag"], "\"2\"");
    assert_eq!(b["version"], 2);

    // The same stale version again is now a conflict.
    let (s, h, b) = stack
        .command(
            Method::PATCH,
            &path,
            Some(&admin),
            &[("If-Match", "\"1\"")],
            patch,
        )
        .await;
    assert_problem(s, &h, &b, 409);
    assert_eq!(b["currentVersion"], 2);
}

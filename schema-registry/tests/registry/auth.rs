//! Who may change the registry: writes without valid HTTP Basic credentials are 401 and
//! change nothing; reads, the lookup and the compatibility dry run stay open.

use reqwest::Method;
use serde_json::json;

use crate::{PASSWORD, Registry, USER, error_code, spawn_registry, v1, v2_compatible};

/// Every kind of write, with its body.
fn writes() -> Vec<(Method, &'static str, Option<serde_json::Value>)> {
    vec![
        (
            Method::POST,
            "/subjects/a-value/versions",
            Some(v2_compatible()),
        ),
        (
            Method::POST,
            "/subjects/new-value/versions?normalize=false",
            Some(v1()),
        ),
        (
            Method::PUT,
            "/config",
            Some(json!({"compatibility": "NONE"})),
        ),
        (
            Method::PUT,
            "/config/a-value",
            Some(json!({"compatibility": "NONE"})),
        ),
        (Method::DELETE, "/config/a-value", None),
        (Method::DELETE, "/subjects/a-value/versions/1", None),
        (
            Method::DELETE,
            "/subjects/a-value/versions/1?permanent=true",
            None,
        ),
        (Method::DELETE, "/subjects/a-value", None),
        (Method::DELETE, "/subjects/a-value?permanent=true", None),
    ]
}

async fn refused_writes_metric(r: &Registry) -> String {
    let text = r
        .http
        .get(format!("{}/metrics", r.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("healthplane_schema_registry_refused_writes_total "))
        .unwrap_or_else(|| panic!("no refused-writes counter in {text}"))
        .to_string()
}

#[tokio::test]
async fn writes_without_valid_credentials_are_401_and_change_nothing() {
    let r = spawn_registry().await;
    r.post("/subjects/a-value/versions", v1()).await;
    r.put(
        "/config/a-value",
        json!({"compatibility": "FULL_TRANSITIVE"}),
    )
    .await;

    let callers = [
        r.anonymous(),
        r.as_user(Some((USER, "ci-password-012345678X"))),
        r.as_user(Some(("mallory", PASSWORD))),
        r.as_user(Some((USER, ""))),
    ];
    let mut refused = 0;
    for caller in &callers {
        for (method, path, body) in writes() {
            let mut request = caller.request(method.clone(), path);
            if let Some(body) = body {
                request = request
                    .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                    .body(body.to_string());
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path}");
            assert_eq!(
                response.headers()["www-authenticate"],
                "Basic realm=\"healthplane-schema-registry\"",
                "{method} {path}"
            );
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(error_code(&body), 40101, "{method} {path}: {body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
            refused += 1;
        }
    }
    // A header that is not Basic at all.
    let response = r
        .anonymous()
        .request(Method::PUT, "/config")
        .header("Authorization", "Bearer something")
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(json!({"compatibility": "NONE"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    refused += 1;

    // Nothing changed.
    assert_eq!(r.get("/subjects").await, (200, json!(["a-value"])));
    assert_eq!(r.get("/subjects/a-value/versions").await, (200, json!([1])));
    assert_eq!(
        r.get("/config/a-value").await,
        (200, json!({"compatibilityLevel": "FULL_TRANSITIVE"}))
    );
    assert_eq!(
        r.get("/config").await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    assert_eq!(
        refused_writes_metric(&r).await,
        format!("healthplane_schema_registry_refused_writes_total {refused}")
    );
}

#[tokio::test]
async fn reads_the_lookup_and_the_dry_run_need_no_credentials() {
    let r = spawn_registry().await;
    r.post("/subjects/a-value/versions", v1()).await;
    let anonymous = r.anonymous();
    for path in [
        "/subjects",
        "/subjects/a-value/versions",
        "/subjects/a-value/versions/latest",
        "/subjects/a-value/versions/1/schema",
        "/schemas/ids/1",
        "/schemas/types",
        "/config",
        "/config/a-value?defaultToGlobal=true",
    ] {
        assert_eq!(anonymous.get(path).await.0, 200, "{path}");
    }
    let (status, found) = anonymous.post("/subjects/a-value", v1()).await;
    assert_eq!((status, found["id"].clone()), (200, json!(1)));
    assert_eq!(
        anonymous
            .post(
                "/compatibility/subjects/a-value/versions/latest",
                v2_compatible()
            )
            .await,
        (200, json!({"is_compatible": true}))
    );
    assert_eq!(
        anonymous
            .post("/compatibility/subjects/a-value/versions", v2_compatible())
            .await,
        (200, json!({"is_compatible": true}))
    );
    // Wrong credentials on a read do not matter either: reads are open.
    assert_eq!(
        r.as_user(Some((USER, "wrong"))).get("/subjects").await.0,
        200
    );
    assert_eq!(
        refused_writes_metric(&r).await,
        "healthplane_schema_registry_refused_writes_total 0"
    );
}

#[tokio::test]
async fn every_configured_user_may_write() {
    let r = spawn_registry().await;
    let other = r.as_user(Some(("other", "other-password-0123")));
    assert_eq!(
        other.post("/subjects/a-value/versions", v1()).await,
        (200, json!({"id": 1}))
    );
    assert_eq!(
        other
            .put("/config/a-value", json!({"compatibility": "FULL"}))
            .await,
        (200, json!({"compatibility": "FULL"}))
    );
    assert_eq!(
        other.delete("/config/a-value").await,
        (200, json!({"compatibilityLevel": "FULL"}))
    );
    assert_eq!(other.delete("/subjects/a-value").await, (200, json!([1])));
    assert_eq!(
        other.delete("/subjects/a-value?permanent=true").await,
        (200, json!([1]))
    );
}

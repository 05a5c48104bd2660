//! The schema registry's REST API, called over HTTP: Confluent's status codes, error codes and
//! bodies for registration, reads, lookup, compatibility, configuration and deletes; who may
//! write; and the encoder's use of it.

mod auth;
mod encoder;

use std::sync::Arc;

use platform::metrics::Metrics;
use schema_registry::{self as registry, auth::Users, store::Store};
use serde_json::{Value as Json, json};

/// The registry's users in these tests.
const USER: &str = "ci";
const PASSWORD: &str = "ci-password-0123456789";

#[derive(Clone)]
struct Registry {
    url: String,
    http: reqwest::Client,
    /// Sent with every request when set.
    credentials: Option<(String, String)>,
}

/// Starts the registry on a free port with a fresh database; the helper writes as `USER`.
async fn spawn_registry() -> Registry {
    let server = std::env::var("HEALTHPLANE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| platform::config::DEFAULT_POSTGRES_URL.into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    let pool = platform::db::connect(&format!("{server}/hp_test_{}_sr", &id[..12]), 4)
        .await
        .expect("PostgreSQL is running (./deploy/test.sh starts it)");
    platform::db::migrate(&pool, "schema-registry", registry::store::MIGRATIONS)
        .await
        .expect("migrations");
    let app = registry::router(
        Store::new(pool.clone()),
        Users::parse(&format!("{USER}:{PASSWORD},other:other-password-0123")).unwrap(),
        Arc::new(Metrics::default()),
        platform::http::postgres_ready(pool),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Registry {
        url,
        http: reqwest::Client::new(),
        credentials: Some((USER.into(), PASSWORD.into())),
    }
}

impl Registry {
    /// The same registry, called without credentials.
    fn anonymous(&self) -> Registry {
        self.as_user(None)
    }

    /// The same registry, called with `credentials`.
    fn as_user(&self, credentials: Option<(&str, &str)>) -> Registry {
        Registry {
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            ..self.clone()
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Json>) -> (u16, Json) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("registry answers");
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            content_type, "application/vnd.schemaregistry.v1+json",
            "{path}"
        );
        (status, response.json().await.expect("JSON body"))
    }

    async fn get(&self, path: &str) -> (u16, Json) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Json) -> (u16, Json) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Json) -> (u16, Json) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Json) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

fn schema(extra_fields: Json) -> Json {
    let mut fields = vec![json!({"name": "name", "type": "string"})];
    fields.extend(extra_fields.as_array().cloned().unwrap_or_default());
    json!({"schema": json!({"type": "record", "name": "Person", "namespace": "test", "fields": fields}).to_string()})
}

fn v1() -> Json {
    schema(json!([]))
}

/// Adds an optional field: backward and forward compatible.
fn v2_compatible() -> Json {
    schema(json!([{"name": "nickname", "type": ["null", "string"], "default": null}]))
}

/// Adds a required field without a default: not backward compatible.
fn v2_incompatible() -> Json {
    schema(json!([{"name": "age", "type": "int"}]))
}

fn error_code(body: &Json) -> i64 {
    body["error_code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error_code in {body}"))
}

#[tokio::test]
async fn registering_is_idempotent_and_ids_are_global() {
    let r = spawn_registry().await;
    let (status, body) = r.post("/subjects/a-value/versions", v1()).await;
    assert_eq!((status, body.clone()), (200, json!({"id": 1})));
    // The same schema again: the same id, no new version.
    assert_eq!(
        r.post("/subjects/a-value/versions", v1()).await,
        (200, json!({"id": 1}))
    );
    assert_eq!(r.get("/subjects/a-value/versions").await, (200, json!([1])));
    // The same schema under another subject: the same global id.
    assert_eq!(
        r.post("/subjects/b-value/versions", v1()).await,
        (200, json!({"id": 1}))
    );
    // Whitespace and key order do not make a new schema.
    let spaced = json!({"schema": "{ \"namespace\": \"test\", \"name\": \"Person\", \"type\": \"record\", \"fields\": [ {\"type\": \"string\", \"name\": \"name\"} ] }"});
    assert_eq!(
        r.post("/subjects/a-value/versions", spaced).await,
        (200, json!({"id": 1}))
    );
    assert_eq!(
        r.post("/subjects/a-value/versions", v2_compatible()).await,
        (200, json!({"id": 2}))
    );
    assert_eq!(
        r.get("/subjects/a-value/versions").await,
        (200, json!([1, 2]))
    );
}

#[tokio::test]
async fn subjects_versions_and_schemas_read_back() {
    let r = spawn_registry().await;
    r.post("/subjects/a-value/versions", v1()).await;
    r.post("/subjects/a-value/versions", v2_compatible()).await;
    assert_eq!(r.get("/subjects").await, (200, json!(["a-value"])));
    let (status, latest) = r.get("/subjects/a-value/versions/latest").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            latest["subject"].clone(),
            latest["version"].clone(),
            latest["id"].clone()
        ),
        (json!("a-value"), json!(2), json!(2))
    );
    let (_, first) = r.get("/subjects/a-value/versions/1").await;
    assert_eq!(first["schema"], v1()["schema"]);
    let (status, by_id) = r.get("/schemas/ids/1").await;
    assert_eq!(
        (status, by_id["schema"].clone()),
        (200, v1()["schema"].clone())
    );
    let (status, raw) = r.get("/subjects/a-value/versions/1/schema").await;
    assert_eq!((status, raw["name"].clone()), (200, json!("Person")));
    assert_eq!(r.get("/schemas/types").await, (200, json!(["AVRO"])));

    let (status, body) = r.get("/schemas/ids/99").await;
    assert_eq!((status, error_code(&body)), (404, 40403));
    let (status, body) = r.get("/subjects/nope/versions").await;
    assert_eq!((status, error_code(&body)), (404, 40401));
    let (status, body) = r.get("/subjects/nope/versions/latest").await;
    assert_eq!((status, error_code(&body)), (404, 40401));
    let (status, body) = r.get("/subjects/a-value/versions/3").await;
    assert_eq!((status, error_code(&body)), (404, 40402));
    let (status, body) = r.get("/subjects/a-value/versions/zero").await;
    assert_eq!((status, error_code(&body)), (422, 42202));
}

#[tokio::test]
async fn lookup_finds_only_registered_schemas() {
    let r = spawn_registry().await;
    r.post("/subjects/a-value/versions", v1()).await;
    let (status, found) = r.post("/subjects/a-value", v1()).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            found["subject"].clone(),
            found["version"].clone(),
            found["id"].clone()
        ),
        (json!("a-value"), json!(1), json!(1))
    );
    assert!(found["schema"].is_string());
    let (status, body) = r.post("/subjects/a-value", v2_compatible()).await;
    assert_eq!((status, error_code(&body)), (404, 40403));
    let (status, body) = r.post("/subjects/nope", v1()).await;
    assert_eq!((status, error_code(&body)), (404, 40401));
}

#[tokio::test]
async fn invalid_schemas_and_levels_are_refused_and_change_nothing() {
    let r = spawn_registry().await;
    for bad in [
        json!({"schema": "{\"type\": \"record\"}"}),
        json!({"schema": "not json"}),
        json!({"schema": ""}),
        json!({"schema": "{\"type\": \"record\", \"name\": \"X\", \"fields\": [{\"name\": \"f\", \"type\": \"strin\"}]}"}),
        json!({"schema": "{}", "schemaType": "PROTOBUF"}),
    ] {
        let (status, body) = r.post("/subjects/a-value/versions", bad.clone()).await;
        assert_eq!((status, error_code(&body)), (422, 42201), "{bad}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, body) = r.get("/subjects").await;
    assert_eq!((status, body), (200, json!([])), "nothing was registered");

    let (status, body) = r
        .put("/config", json!({"compatibility": "SOMETIMES"}))
        .await;
    assert_eq!((status, error_code(&body)), (422, 42203));
    assert_eq!(
        r.get("/config").await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
}

#[tokio::test]
async fn compatibility_is_enforced_under_each_subjects_level() {
    let r = spawn_registry().await;
    r.post("/subjects/a-value/versions", v1()).await;

    // The dry run.
    let (status, verdict) = r
        .post(
            "/compatibility/subjects/a-value/versions/latest?verbose=true",
            v2_incompatible(),
        )
        .await;
    assert_eq!(
        (status, verdict["is_compatible"].clone()),
        (200, json!(false))
    );
    assert!(
        verdict["messages"][0]
            .as_str()
            .is_some_and(|m| m.contains("age")),
        "{verdict}"
    );
    let (_, verdict) = r
        .post(
            "/compatibility/subjects/a-value/versions/1",
            v2_compatible(),
        )
        .await;
    assert_eq!(verdict, json!({"is_compatible": true}));
    let (status, body) = r
        .post("/compatibility/subjects/a-value/versions/7", v1())
        .await;
    assert_eq!((status, error_code(&body)), (404, 40402));

    // BACKWARD (the default) refuses an added required field.
    let (status, body) = r
        .post("/subjects/a-value/versions", v2_incompatible())
        .await;
    assert_eq!((status, error_code(&body)), (409, 409));
    assert!(body["message"].as_str().unwrap().contains("incompatible"));
    assert_eq!(r.get("/subjects/a-value/versions").await, (200, json!([1])));

    // Per-subject levels.
    assert_eq!(r.get("/config/a-value").await.0, 404);
    assert_eq!(error_code(&r.get("/config/a-value").await.1), 40408);
    assert_eq!(
        r.get("/config/a-value?defaultToGlobal=true").await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    assert_eq!(
        r.put("/config/a-value", json!({"compatibility": "NONE"}))
            .await,
        (200, json!({"compatibility": "NONE"}))
    );
    assert_eq!(
        r.get("/config/a-value").await,
        (200, json!({"compatibilityLevel": "NONE"}))
    );
    assert_eq!(
        r.post("/subjects/a-value/versions", v2_incompatible())
            .await,
        (200, json!({"id": 2}))
    );

    // FULL_TRANSITIVE holds every new version to every earlier one, both ways.
    r.put(
        "/config/b-value",
        json!({"compatibility": "FULL_TRANSITIVE"}),
    )
    .await;
    r.post("/subjects/b-value/versions", v1()).await;
    assert_eq!(
        r.post("/subjects/b-value/versions", v2_compatible())
            .await
            .0,
        200
    );
    let removed_field = json!({"schema": json!({"type": "record", "name": "Person", "namespace": "test", "fields": [
        {"name": "nickname", "type": ["null", "string"], "default": null}]}).to_string()});
    let (status, body) = r.post("/subjects/b-value/versions", removed_field).await;
    assert_eq!((status, error_code(&body)), (409, 409));
    assert_eq!(
        r.delete("/config/a-value").await,
        (200, json!({"compatibilityLevel": "NONE"}))
    );
}

#[tokio::test]
async fn soft_and_permanent_deletes_behave_like_confluent() {
    let r = spawn_registry().await;
    r.post("/subjects/a-value/versions", v1()).await;
    r.post("/subjects/a-value/versions", v2_compatible()).await;

    // Permanent before soft: refused.
    let (status, body) = r
        .delete("/subjects/a-value/versions/2?permanent=true")
        .await;
    assert_eq!((status, error_code(&body)), (404, 40407));
    let (status, body) = r.delete("/subjects/a-value?permanent=true").await;
    assert_eq!((status, error_code(&body)), (404, 40405));

    // Soft-delete one version: hidden, but readable with deleted=true; its id still resolves.
    assert_eq!(
        r.delete("/subjects/a-value/versions/2").await,
        (200, json!(2))
    );
    assert_eq!(r.get("/subjects/a-value/versions").await, (200, json!([1])));
    assert_eq!(
        r.get("/subjects/a-value/versions?deleted=true").await,
        (200, json!([1, 2]))
    );
    assert_eq!(
        error_code(&r.get("/subjects/a-value/versions/2").await.1),
        40402
    );
    assert_eq!(
        r.get("/subjects/a-value/versions/2?deleted=true").await.0,
        200
    );
    assert_eq!(r.get("/schemas/ids/2").await.0, 200);
    let (status, body) = r.delete("/subjects/a-value/versions/2").await;
    assert_eq!((status, error_code(&body)), (404, 40406));
    let (status, body) = r.post("/subjects/a-value", v2_compatible()).await;
    assert_eq!((status, error_code(&body)), (404, 40403));
    assert_eq!(
        r.post("/subjects/a-value?deleted=true", v2_compatible())
            .await
            .0,
        200
    );

    // Soft-delete the subject: gone from listings and lookups, the ids still resolve.
    assert_eq!(r.delete("/subjects/a-value").await, (200, json!([1])));
    assert_eq!(r.get("/subjects").await, (200, json!([])));
    assert_eq!(
        r.get("/subjects?deleted=true").await,
        (200, json!(["a-value"]))
    );
    assert_eq!(
        error_code(&r.post("/subjects/a-value", v1()).await.1),
        40401
    );
    assert_eq!(r.get("/schemas/ids/1").await.0, 200);
    let (status, body) = r.delete("/subjects/a-value").await;
    assert_eq!((status, error_code(&body)), (404, 40404));

    // Registering again continues the version numbers and keeps the id.
    assert_eq!(
        r.post("/subjects/a-value/versions", v1()).await,
        (200, json!({"id": 1}))
    );
    assert_eq!(r.get("/subjects/a-value/versions").await, (200, json!([3])));

    // Permanent delete after soft delete removes the versions for good.
    assert_eq!(
        r.delete("/subjects/a-value/versions/3").await,
        (200, json!(3))
    );
    assert_eq!(
        r.delete("/subjects/a-value?permanent=true").await,
        (200, json!([1, 2, 3]))
    );
    assert_eq!(r.get("/subjects?deleted=true").await, (200, json!([])));
    assert_eq!(error_code(&r.delete("/subjects/a-value").await.1), 40401);
}

#[tokio::test]
async fn unknown_routes_answer_in_the_registry_format() {
    let r = spawn_registry().await;
    let (status, body) = r.get("/no/such/route").await;
    assert_eq!((status, error_code(&body)), (404, 404));
}

#[tokio::test]
async fn boolean_query_flags_are_read_in_any_case_as_pythons_client_sends_them() {
    let r = spawn_registry().await;
    r.post("/subjects/a-value/versions", v1()).await;
    let (status, found) = r
        .post("/subjects/a-value?normalize=False&deleted=False", v1())
        .await;
    assert_eq!((status, found["id"].clone()), (200, json!(1)));
    assert_eq!(
        r.get("/config/a-value?defaultToGlobal=True").await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    assert_eq!(r.delete("/subjects/a-value").await, (200, json!([1])));
    assert_eq!(
        r.get("/subjects?deleted=TRUE").await,
        (200, json!(["a-value"]))
    );
    assert_eq!(
        r.delete("/subjects/a-value?permanent=True").await,
        (200, json!([1]))
    );
}

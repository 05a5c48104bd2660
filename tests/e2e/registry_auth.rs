//! Journey: a data team's standard Python client (confluent-kafka's `SchemaRegistryClient`)
//! may read the registry freely, but changes it only with `basic.auth.user.info`: without it,
//! registering a schema, setting a compatibility level or deleting a subject is 401.

use std::process::Command;

use serde_json::{Value as Json, json};
use tests::Cluster;

/// Runs `ops` with the Python client against the shared registry, with `user_info` as
/// `basic.auth.user.info` when given; returns one result per op: `{"ok": ...}` or
/// `{"status", "code", "message"}` from `SchemaRegistryError`.
const SCRIPT: &str = r#"
import json, os, sys
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

url, subject, ops = sys.argv[1], sys.argv[2], sys.argv[3:]
conf = {"url": url}
if os.environ.get("USER_INFO"):
    conf["basic.auth.user.info"] = os.environ["USER_INFO"]
client = SchemaRegistryClient(conf)

def schema(extra):
    fields = [{"name": "name", "type": "string"}]
    if extra:
        fields.append({"name": "nickname", "type": ["null", "string"], "default": None})
    return Schema(json.dumps({"type": "record", "name": "Probe", "namespace": "test", "fields": fields}), "AVRO")

def run(op):
    if op == "register-v1":
        return client.register_schema(subject, schema(False))
    if op == "register-v2":
        return client.register_schema(subject, schema(True))
    if op == "lookup-v1":
        return client.lookup_schema(subject, schema(False)).schema_id
    if op == "set-compatibility":
        return client.set_compatibility(subject_name=subject, level="NONE")
    if op == "get-compatibility":
        return client.get_compatibility(subject)
    if op == "versions":
        return client.get_versions(subject)
    if op == "test-compatibility-verbose":
        return client.test_compatibility(subject, schema(True), verbose=True)
    if op == "delete":
        return client.delete_subject(subject)
    if op == "delete-permanent":
        return client.delete_subject(subject, permanent=True)
    raise ValueError(op)

results = []
for op in ops:
    try:
        results.append({"ok": run(op)})
    except SchemaRegistryError as e:
        results.append({"status": e.http_status_code, "code": e.error_code, "message": e.error_message})
print(json.dumps(results, default=str))
"#;

fn python(cluster: &Cluster, subject: &str, user_info: Option<&str>, ops: &[&str]) -> Vec<Json> {
    let python =
        std::env::var("HEALTHPLANE_PYTHON").expect("HEALTHPLANE_PYTHON: run ./deploy/test.sh");
    let mut command = Command::new(python);
    command
        .args(["-c", SCRIPT, &cluster.registry_url, subject])
        .args(ops)
        .env_remove("USER_INFO");
    if let Some(user_info) = user_info {
        command.env("USER_INFO", user_info);
    }
    let output = command.output().expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{ops:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Json> = serde_json::from_str(stdout.trim()).expect("JSON results");
    assert_eq!(results.len(), ops.len(), "{results:?}");
    results
}

fn assert_unauthorized(result: &Json, what: &str) {
    assert_eq!(
        (result["status"].clone(), result["code"].clone()),
        (json!(401), json!(40101)),
        "{what}: {result}"
    );
}

#[tokio::test]
async fn the_python_client_changes_the_registry_only_with_basic_auth_user_info() {
    let cluster = Cluster::shared();
    let user_info = std::env::var("HEALTHPLANE_TEST_SCHEMA_REGISTRY_USER_INFO")
        .expect("HEALTHPLANE_TEST_SCHEMA_REGISTRY_USER_INFO: run ./deploy/test.sh");
    // A throwaway subject, no topic's: other tests never see it.
    let subject = format!("e2e-registry-auth-{}-value", uuid::Uuid::new_v4().simple());

    let anonymous = python(
        &cluster,
        &subject,
        None,
        &["register-v1", "set-compatibility", "lookup-v1"],
    );
    assert_unauthorized(&anonymous[0], "register_schema without credentials");
    assert_unauthorized(&anonymous[1], "set_compatibility without credentials");
    // Nothing was registered.
    assert_eq!(anonymous[2]["status"], 404, "{}", anonymous[2]);

    let wrong = python(
        &cluster,
        &subject,
        Some("healthplane-test:not-the-password-0123"),
        &["register-v1", "set-compatibility"],
    );
    assert_unauthorized(&wrong[0], "register_schema with a wrong password");
    assert_unauthorized(&wrong[1], "set_compatibility with a wrong password");

    let authorised = python(
        &cluster,
        &subject,
        Some(&user_info),
        &["register-v1", "set-compatibility", "lookup-v1"],
    );
    let id = authorised[0]["ok"].clone();
    assert!(
        id.is_u64(),
        "register_schema with credentials: {authorised:?}"
    );
    assert!(
        authorised[1]["ok"].to_string().contains("NONE"),
        "set_compatibility with credentials: {authorised:?}"
    );
    assert_eq!(authorised[2]["ok"], id, "{authorised:?}");

    // Reads stay open; further changes do not.
    let anonymous = python(
        &cluster,
        &subject,
        None,
        &[
            "lookup-v1",
            "get-compatibility",
            "versions",
            "register-v2",
            "delete",
            "test-compatibility-verbose",
        ],
    );
    assert_eq!(anonymous[0]["ok"], id, "{anonymous:?}");
    assert_eq!(anonymous[1]["ok"], "NONE", "{anonymous:?}");
    assert_eq!(anonymous[2]["ok"], json!([1]), "{anonymous:?}");
    assert_unauthorized(&anonymous[3], "register_schema without credentials");
    assert_unauthorized(&anonymous[4], "delete_subject without credentials");
    // The client's compatibility dry run sends `verbose=True` (Python's spelling): it is a
    // read, and an added optional field is compatible.
    assert_eq!(anonymous[5]["ok"], true, "{anonymous:?}");

    // Leave the shared registry as it was.
    let cleanup = python(
        &cluster,
        &subject,
        Some(&user_info),
        &["delete", "delete-permanent"],
    );
    assert_eq!(cleanup[0]["ok"], json!([1]), "{cleanup:?}");
    assert_eq!(cleanup[1]["ok"], json!([1]), "{cleanup:?}");
}

//! The encoder writes with the schema compiled into Healthplane, found by content: a newer
//! version someone registers does not change what it writes, an unregistered schema is a
//! hold that names `replay-tool bootstrap`, and an unreachable registry is transient.

use events::catalog::{AUDIT_PHI_ACCESS, value_subject};
use events::examples::{EXAMPLE_PATIENT, example_record};
use platform::config::Secret;
use schemas::client::{UserInfo, register_all};
use schemas::{CodecError, EventCodec};
use serde_json::{Value as Json, json};

use crate::{PASSWORD, USER, spawn_registry};

fn credentials(password: &str) -> UserInfo {
    UserInfo {
        user: USER.to_string(),
        password: Secret::new(password.to_string()),
    }
}

fn schema_id(bytes: &[u8]) -> u32 {
    assert_eq!(bytes[0], 0, "magic byte");
    u32::from_be_bytes(bytes[1..5].try_into().unwrap())
}

#[tokio::test]
async fn a_newer_registered_version_does_not_change_what_the_encoder_writes() {
    let r = spawn_registry().await;
    register_all(&r.url, &credentials(PASSWORD))
        .await
        .expect("bootstrap registers");
    let subject = value_subject(AUDIT_PHI_ACCESS);
    let compiled = schemas::catalog::latest(AUDIT_PHI_ACCESS).unwrap();
    let (_, found) = r
        .post(
            &format!("/subjects/{subject}"),
            json!({"schema": compiled.avsc}),
        )
        .await;
    let compiled_id = found["id"].as_u64().unwrap() as u32;

    let record = example_record(AUDIT_PHI_ACCESS, EXAMPLE_PATIENT).unwrap();
    let cached = EventCodec::new(&r.url);
    let before = cached.encode_json(AUDIT_PHI_ACCESS, &record).await.unwrap();
    assert_eq!(schema_id(&before), compiled_id);

    // Someone with write access loosens the subject and registers a version without the actor
    // and the patient: it becomes the latest.
    let mut stripped: Json = serde_json::from_str(compiled.avsc).unwrap();
    stripped["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "actor" && f["name"] != "patient_id");
    r.put(
        &format!("/config/{subject}"),
        json!({"compatibility": "NONE"}),
    )
    .await;
    let (status, registered) = r
        .post(
            &format!("/subjects/{subject}/versions"),
            json!({"schema": stripped.to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{registered}");
    let (_, latest) = r.get(&format!("/subjects/{subject}/versions/latest")).await;
    assert_ne!(latest["id"].as_u64().unwrap() as u32, compiled_id);

    // Neither a codec that had looked the schema up nor a new one writes with it.
    for codec in [&cached, &EventCodec::new(&r.url)] {
        let bytes = codec.encode_json(AUDIT_PHI_ACCESS, &record).await.unwrap();
        assert_eq!(schema_id(&bytes), compiled_id);
        let decoded = codec.decode_json(Some(&bytes)).await.unwrap();
        assert_eq!(decoded["actor"], record["actor"]);
        assert_eq!(decoded["patient_id"], record["patient_id"]);
    }
}

#[tokio::test]
async fn an_unregistered_schema_is_a_hold_naming_bootstrap_and_a_missing_registry_is_transient() {
    let r = spawn_registry().await;
    let codec = EventCodec::new(&r.url);
    let record = example_record(AUDIT_PHI_ACCESS, EXAMPLE_PATIENT).unwrap();
    let version = schemas::catalog::latest(AUDIT_PHI_ACCESS).unwrap().version;
    match codec.encode_json(AUDIT_PHI_ACCESS, &record).await {
        Err(CodecError::DoesNotFitSchema(message)) => {
            assert!(
                message.contains(&format!("{} v{version}", value_subject(AUDIT_PHI_ACCESS))),
                "{message}"
            );
            assert!(message.contains("not registered"), "{message}");
            assert!(message.contains("replay-tool bootstrap"), "{message}");
        }
        other => panic!("expected DoesNotFitSchema, got {other:?}"),
    }
    // The failure is not remembered: once bootstrap has run, the same codec writes.
    register_all(&r.url, &credentials(PASSWORD)).await.unwrap();
    assert!(codec.encode_json(AUDIT_PHI_ACCESS, &record).await.is_ok());

    // A field the compiled schema does not have is refused, not dropped.
    let mut hostile = record.clone();
    hostile["smuggled"] = json!("x");
    assert!(matches!(
        codec.encode_json(AUDIT_PHI_ACCESS, &hostile).await,
        Err(CodecError::DoesNotFitSchema(m)) if m.contains("$.smuggled")
    ));

    let nowhere = EventCodec::new(&format!("http://127.0.0.1:{}", free_port()));
    let e = nowhere
        .encode_json(AUDIT_PHI_ACCESS, &record)
        .await
        .expect_err("no registry");
    assert!(matches!(e, CodecError::RegistryUnavailable(_)), "{e:?}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn bootstrap_with_a_wrong_credential_fails_naming_the_setting() {
    let r = spawn_registry().await;
    let e = register_all(&r.url, &credentials("not-the-password-at-all"))
        .await
        .expect_err("refused");
    let message = format!("{e:#}");
    assert!(
        message.contains("HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO"),
        "{message}"
    );
    assert!(!message.contains("not-the-password-at-all"), "{message}");
    assert_eq!(r.get("/subjects").await, (200, json!([])));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

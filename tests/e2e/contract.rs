//! Journey: a data team reads every documented topic with standard clients, and the registry
//! refuses a schema change that would break them.

use std::time::Duration;

use events::catalog::{CATALOG, PATIENT_CREATED, value_subject};
use events::examples::example_record;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::EventCodec;
use serde_json::json;
use tests::{Cluster, get_json, python_consume, read_topic};

#[tokio::test]
async fn every_topic_carries_its_event_to_our_codec_and_to_a_python_consumer() {
    let cluster = Cluster::shared();
    let codec = EventCodec::new(&cluster.registry_url);
    let producer: FutureProducer =
        platform::kafka::producer_config(&cluster.brokers, Duration::from_secs(30))
            .create()
            .expect("producer");
    for topic in CATALOG {
        let key = uuid::Uuid::now_v7();
        let record = example_record(topic.name, key).expect("example");
        let bytes = codec
            .encode_json(topic.name, &record)
            .await
            .expect("encodes with the registered schema");
        let key_text = key.to_string();
        let event_type = record["event_type"].as_str().unwrap().to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: "event_type",
            value: Some(event_type.as_str()),
        });
        producer
            .send(
                FutureRecord::to(topic.name)
                    .key(&key_text)
                    .payload(&bytes)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("the broker acknowledges");

        // Our codec reads it back from the topic.
        let message = read_topic(&cluster.brokers, topic.name)
            .into_iter()
            .find(|m| m.key() == Some(key_text.as_bytes()))
            .expect("the record is on its topic");
        let decoded = codec.decode_json(message.payload()).await.expect("decodes");
        assert_eq!(decoded["event_id"], record["event_id"], "{}", topic.name);
        assert_eq!(
            decoded["event_type"], record["event_type"],
            "{}",
            topic.name
        );

        // So does confluent-kafka's AvroDeserializer, with the schema from the registry.
        let line = python_consume(&cluster, topic.name, &key_text);
        assert_eq!(
            line["value"]["event_id"], record["event_id"],
            "{}",
            topic.name
        );
        assert_eq!(line["headers"]["event_type"], event_type, "{}", topic.name);
        let fields = record.as_object().unwrap().keys();
        for field in fields {
            assert!(
                line["value"].get(field).is_some(),
                "{}: python sees no `{field}`",
                topic.name
            );
        }
    }
}

#[tokio::test]
async fn the_registry_holds_every_topic_and_refuses_a_breaking_patient_schema() {
    let cluster = Cluster::shared();
    let http = tests::http_client();
    let registry = &cluster.registry_url;
    let subjects: Vec<String> =
        serde_json::from_value(get_json(&http, &format!("{registry}/subjects")).await).unwrap();
    for topic in CATALOG {
        assert!(
            subjects.contains(&value_subject(topic.name)),
            "{} has no registered schema",
            topic.name
        );
    }

    let subject = value_subject(PATIENT_CREATED);
    let latest = get_json(
        &http,
        &format!("{registry}/subjects/{subject}/versions/latest"),
    )
    .await;
    let mut schema: serde_json::Value =
        serde_json::from_str(latest["schema"].as_str().unwrap()).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "blood_type", "type": "string", "doc": "required, no default: breaks old data"}));
    let body = json!({"schema": schema.to_string()});

    let check = http
        .post(format!(
            "{}/compatibility/subjects/{subject}/versions/latest",
            cluster.registry_url
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        check.json::<serde_json::Value>().await.unwrap()["is_compatible"],
        false
    );

    // As a user who may write: the refusal is the compatibility rule's, not the credentials'.
    let user_info = std::env::var("HEALTHPLANE_TEST_SCHEMA_REGISTRY_USER_INFO")
        .expect("HEALTHPLANE_TEST_SCHEMA_REGISTRY_USER_INFO: run ./deploy/test.sh");
    let (user, password) = user_info.split_once(':').expect("user:password");
    let response = http
        .post(format!(
            "{}/subjects/{subject}/versions",
            cluster.registry_url
        ))
        .basic_auth(user, Some(password))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error_code"], 409, "{error}");

    let versions = get_json(&http, &format!("{registry}/subjects/{subject}/versions")).await;
    assert_eq!(
        versions,
        json!([1, 2]),
        "the refused schema was not registered"
    );
}

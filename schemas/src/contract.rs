//! The contract checks: the evolution gate over the released schema versions, and the proof
//! that the Rust event types and the Avro schemas describe the same records.

use apache_avro::Schema;

use crate::catalog::{SCHEMAS, compatibility_for, versions};
use crate::compatibility::{Level, check_compatibility};

/// Checks that each released version of each topic is compatible with its earlier versions
/// under the subject's level; returns every violation.
pub fn evolution_gate() -> Vec<String> {
    let mut topics: Vec<&str> = SCHEMAS.iter().map(|s| s.topic).collect();
    topics.dedup();
    topics
        .into_iter()
        .filter_map(|topic| {
            let released: Vec<Schema> = versions(topic)
                .iter()
                .map(|s| Schema::parse_str(s.avsc).expect("released schemas parse"))
                .collect();
            check_versions(compatibility_for(topic), &released)
                .err()
                .map(|e| format!("{topic}: {e}"))
        })
        .collect()
}

/// Checks each of `versions` (oldest first) against the ones before it under `level`.
pub fn check_versions(level: Level, versions: &[Schema]) -> Result<(), String> {
    (1..versions.len()).try_for_each(|n| {
        check_compatibility(level, &versions[n], &versions[..n])
            .map_err(|e| format!("v{}: {e}", n + 1))
    })
}

/// Every object key path in `json`, e.g. `dosage.route.code`.
fn paths(json: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match json {
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| {
            let path = format!("{prefix}{k}");
            out.insert(path.clone());
            paths(v, &format!("{path}."), out);
        }),
        serde_json::Value::Array(items) => items.iter().for_each(|v| paths(v, prefix, out)),
        _ => {}
    }
}

/// `json` written with `writer` and read back (with `reader`, if given).
fn round_trip(
    json: &serde_json::Value,
    writer: &Schema,
    reader: Option<&Schema>,
) -> Result<serde_json::Value, String> {
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    let value = crate::json_avro::json_to_avro(json, writer).map_err(|e| e.to_string())?;
    let bytes = GenericDatumWriter::builder(writer)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .map_err(|e| e.to_string())?;
    let decoded = GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()
        .and_then(|r| r.read_value(&mut bytes.as_slice()))
        .map_err(|e| e.to_string())?;
    crate::json_avro::avro_to_json(&decoded)
}

/// What is wrong between `kinds` and the released schemas, one sentence per problem naming
/// the event type and the piece: no released schema for its topic, an example that does not
/// fit the schema, a field the Rust type loses, or a schema field the Rust type does not know.
pub fn event_problems(kinds: &[events::registry::EventKind]) -> Vec<String> {
    let mut problems = Vec::new();
    for kind in kinds {
        let Some(released) = crate::catalog::latest(kind.topic) else {
            problems.push(format!(
                "{}: no released schema for {} (add schemas/avro/{}/v1.avsc)",
                kind.event_type, kind.topic, kind.topic
            ));
            continue;
        };
        let name = format!("{} ({} v{})", kind.event_type, kind.topic, released.version);
        let schema = match Schema::parse_str(released.avsc) {
            Ok(schema) => schema,
            Err(e) => {
                problems.push(format!("{name}: the schema does not parse: {e}"));
                continue;
            }
        };
        let original = (kind.example)(uuid::Uuid::from_u128(1));
        let decoded = match round_trip(&original, &schema, None) {
            Ok(decoded) => decoded,
            Err(e) => {
                problems.push(format!("{name}: its example does not fit the schema: {e}"));
                continue;
            }
        };
        match ((kind.typed)(decoded.clone()), (kind.typed)(original)) {
            (Ok(read), Ok(written)) if read == written => {
                let (mut in_avro, mut in_rust) = (Default::default(), Default::default());
                paths(&decoded, "", &mut in_avro);
                paths(&read, "", &mut in_rust);
                if in_avro != in_rust {
                    problems.push(format!(
                        "{name}: the schema and the Rust type disagree on fields: {:?}",
                        in_avro.symmetric_difference(&in_rust).collect::<Vec<_>>()
                    ));
                }
            }
            (Ok(_), Ok(_)) => problems.push(format!("{name}: Avro loses part of the example")),
            (Err(e), _) | (_, Err(e)) => problems.push(format!(
                "{name}: the record does not read as the Rust type: {e}"
            )),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use events::EventRecord;
    use events::audit::{AuditCheckpoint, PhiAccessed};
    use events::catalog::{self as topics, CATALOG};
    use events::examples::{EXAMPLE_PATIENT, example_record};
    use events::patient::PatientCreated;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::Value as Json;

    use super::*;
    use crate::catalog::latest;
    use crate::json_avro::json_to_avro;

    fn through<T: Serialize + DeserializeOwned>(json: Json) -> Json {
        let typed: T =
            serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{e}: {json}"));
        serde_json::to_value(typed).expect("serializes")
    }

    /// The record after a trip through the topic's Rust type.
    fn typed(topic: &str, json: Json) -> Json {
        if topic == topics::AUDIT_PHI_ACCESS {
            return through::<PhiAccessed>(json);
        }
        if topic == topics::AUDIT_CHECKPOINTS {
            return through::<AuditCheckpoint>(json);
        }
        let kind = events::registry::by_topic(topic)
            .unwrap_or_else(|| panic!("no event type is published on {topic}"));
        (kind.typed)(json).unwrap_or_else(|e| panic!("{topic}: {e}"))
    }

    fn encode_decode(json: &Json, writer: &Schema, reader: Option<&Schema>) -> Json {
        round_trip(json, writer, reader).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_documented_topic_has_a_released_schema() {
        for topic in CATALOG {
            assert!(latest(topic.name).is_some(), "{} has no schema", topic.name);
        }
    }

    #[test]
    fn every_event_type_fits_its_schema() {
        assert_eq!(
            event_problems(events::registry::EVENTS),
            Vec::<String>::new()
        );
    }

    /// A throwaway event type published on a documented topic, to show what the contract
    /// says when its schema was not updated.
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct PatientTeleported {
        patient_id: uuid::Uuid,
        destination: String,
    }

    impl events::DomainEvent for PatientTeleported {
        const EVENT_TYPE: &'static str = "PatientTeleported";
        const TOPIC: &'static str = topics::PATIENT_UPDATED;
        const AGGREGATE: events::registry::Aggregate = events::registry::Aggregate::Patient;
        fn example() -> events::registry::Example<Self> {
            events::registry::Example {
                version: 2,
                actor: events::Actor {
                    id: "front-desk-3".into(),
                    role: events::Role::Admin,
                },
                payload: PatientTeleported {
                    patient_id: EXAMPLE_PATIENT,
                    destination: "Mars".into(),
                },
            }
        }
    }

    #[test]
    fn an_event_type_whose_schema_was_not_written_is_named() {
        let problems = event_problems(&[events::registry::kind::<PatientTeleported>()]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "PatientTeleported (healthcare.patient.updated v2): its example does not fit the schema"
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn every_event_type_round_trips_through_its_schema() {
        for topic in CATALOG {
            let schema = Schema::parse_str(latest(topic.name).unwrap().avsc).unwrap();
            let original = example_record(topic.name, EXAMPLE_PATIENT).unwrap();
            let decoded = encode_decode(&original, &schema, None);
            // Nothing the Rust type holds is lost in Avro ...
            assert_eq!(
                typed(topic.name, decoded.clone()),
                typed(topic.name, original),
                "{}",
                topic.name
            );
            // ... and every field of the schema is known to the Rust type.
            let (mut in_avro, mut in_rust) = (BTreeSet::new(), BTreeSet::new());
            paths(&decoded, "", &mut in_avro);
            paths(&typed(topic.name, decoded), "", &mut in_rust);
            assert_eq!(
                in_avro, in_rust,
                "{}: schema and Rust type disagree",
                topic.name
            );
        }
    }

    #[test]
    fn every_record_and_field_is_documented_in_the_namespace() {
        fn walk(json: &Json, at: &str, missing: &mut Vec<String>) {
            match json {
                Json::Object(map) => {
                    let is_named = matches!(
                        map.get("type").and_then(Json::as_str),
                        Some("record" | "enum")
                    );
                    let is_field =
                        map.contains_key("name") && !is_named && map.contains_key("type");
                    let documented = map
                        .get("doc")
                        .and_then(Json::as_str)
                        .is_some_and(|d| !d.is_empty());
                    if (is_named || is_field) && !documented {
                        missing.push(format!(
                            "{at}/{}",
                            map.get("name").and_then(Json::as_str).unwrap_or("?")
                        ));
                    }
                    map.values().for_each(|v| walk(v, at, missing));
                }
                Json::Array(items) => items.iter().for_each(|v| walk(v, at, missing)),
                _ => {}
            }
        }
        for s in SCHEMAS {
            let json: Json = serde_json::from_str(s.avsc).unwrap();
            assert_eq!(
                json["namespace"], "health.healthplane.events",
                "{}",
                s.topic
            );
            let mut missing = Vec::new();
            walk(&json, &format!("{} v{}", s.topic, s.version), &mut missing);
            assert!(missing.is_empty(), "undocumented: {missing:?}");
        }
    }

    #[test]
    fn the_domain_events_carry_the_envelope() {
        let envelope = events::envelope::ENVELOPE_FIELDS;
        for topic in CATALOG.iter().filter(|t| t.carries_domain_events()) {
            let json: Json = serde_json::from_str(latest(topic.name).unwrap().avsc).unwrap();
            let names: Vec<&str> = json["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap())
                .collect();
            assert_eq!(names[..envelope.len()], envelope, "{}", topic.name);
        }
    }

    #[test]
    fn released_versions_pass_the_evolution_gate() {
        assert_eq!(evolution_gate(), Vec::<String>::new());
    }

    #[test]
    fn the_gate_refuses_an_incompatible_change() {
        let v1 = Schema::parse_str(versions(topics::PATIENT_CREATED)[0].avsc).unwrap();
        let mut json: Json =
            serde_json::from_str(versions(topics::PATIENT_CREATED)[0].avsc).unwrap();
        json["fields"].as_array_mut().unwrap().push(serde_json::json!(
            {"name": "blood_type", "type": "string", "doc": "A new required field without a default."}
        ));
        let bad = Schema::parse(&json).unwrap();
        let verdict = check_versions(Level::Backward, &[v1.clone(), bad.clone()]);
        assert!(
            verdict.is_err_and(|e| e.contains("v2")),
            "an added required field must be refused"
        );
        // Removing a field is fine backward but not forward: FULL_TRANSITIVE refuses it.
        assert!(check_versions(Level::Forward, &[bad, v1]).is_err());
    }

    #[test]
    fn patient_v1_and_v2_readers_read_each_others_data() {
        let [v1, v2] =
            [0, 1].map(|i| Schema::parse_str(versions(topics::PATIENT_CREATED)[i].avsc).unwrap());
        let record = example_record(topics::PATIENT_CREATED, EXAMPLE_PATIENT).unwrap();
        assert_eq!(record["preferred_language"], "en-GB");

        // A reader still on v1 decodes data written with v2: the new field is skipped.
        let old_reader = encode_decode(&record, &v2, Some(&v1));
        assert!(old_reader.get("preferred_language").is_none());
        assert_eq!(old_reader["name"]["family"], "Lovelace");

        // A reader on v2 decodes data written with v1 (by a producer that knew no
        // `preferred_language`: v1 refuses a record carrying it): the new field takes its default.
        let mut v1_record = record.clone();
        v1_record
            .as_object_mut()
            .unwrap()
            .remove("preferred_language");
        assert!(json_to_avro(&record, &v1).is_err_and(|e| e.path == "$.preferred_language"));
        let new_reader = encode_decode(&v1_record, &v1, Some(&v2));
        assert_eq!(new_reader["preferred_language"], Json::Null);
        let typed_v1: EventRecord<PatientCreated> = serde_json::from_value(new_reader).unwrap();
        assert_eq!(typed_v1.payload.demographics.preferred_language, None);
        assert_eq!(typed_v1.payload.demographics.name.family, "Lovelace");
    }
}

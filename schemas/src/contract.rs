//! The contract checks: the evolution gate over the released schema versions, and the proof
//! that the Rust event types and the Avro schemas describe the same records.

use apache_avro::Schema;

use crate::catalog::{SCHEMAS, compatibility_for, versions};
use crate::registry::store::check_compatibility;

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
pub fn check_versions(level: &str, versions: &[Schema]) -> Result<(), String> {
    (1..versions.len()).try_for_each(|n| {
        check_compatibility(level, &versions[n], &versions[..n])
            .map_err(|e| format!("v{}: {e}", n + 1))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    use events::EventRecord;
    use events::appointment::{AppointmentCancelled, AppointmentScheduled};
    use events::audit::PhiAccessed;
    use events::catalog::{self as topics, CATALOG};
    use events::encounter::{EncounterCompleted, EncounterStarted};
    use events::examples::{EXAMPLE_PATIENT, example_record};
    use events::medication::MedicationPrescribed;
    use events::observation::ObservationCreated;
    use events::patient::{PatientCreated, PatientUpdated};
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::Value as Json;

    use super::*;
    use crate::catalog::latest;
    use crate::json_avro::{avro_to_json, json_to_avro};

    fn through<T: Serialize + DeserializeOwned>(json: Json) -> Json {
        let typed: T =
            serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{e}: {json}"));
        serde_json::to_value(typed).expect("serializes")
    }

    /// The record after a trip through the topic's Rust type.
    fn typed(topic: &str, json: Json) -> Json {
        match topic {
            topics::PATIENT_CREATED => through::<EventRecord<PatientCreated>>(json),
            topics::PATIENT_UPDATED => through::<EventRecord<PatientUpdated>>(json),
            topics::APPOINTMENT_SCHEDULED => through::<EventRecord<AppointmentScheduled>>(json),
            topics::APPOINTMENT_CANCELLED => through::<EventRecord<AppointmentCancelled>>(json),
            topics::ENCOUNTER_STARTED => through::<EventRecord<EncounterStarted>>(json),
            topics::ENCOUNTER_COMPLETED => through::<EventRecord<EncounterCompleted>>(json),
            topics::OBSERVATION_CREATED => through::<EventRecord<ObservationCreated>>(json),
            topics::MEDICATION_PRESCRIBED => through::<EventRecord<MedicationPrescribed>>(json),
            topics::AUDIT_PHI_ACCESS => through::<PhiAccessed>(json),
            other => panic!("no Rust type for {other}"),
        }
    }

    /// Every object key path in `json`, e.g. `dosage.route.code`.
    fn paths(json: &Json, prefix: &str, out: &mut BTreeSet<String>) {
        match json {
            Json::Object(map) => map.iter().for_each(|(k, v)| {
                let path = format!("{prefix}{k}");
                out.insert(path.clone());
                paths(v, &format!("{path}."), out);
            }),
            Json::Array(items) => items.iter().for_each(|v| paths(v, prefix, out)),
            _ => {}
        }
    }

    fn encode_decode(json: &Json, writer: &Schema, reader: Option<&Schema>) -> Json {
        let value =
            json_to_avro(json, writer).unwrap_or_else(|e| panic!("does not fit the schema: {e}"));
        let bytes = GenericDatumWriter::builder(writer)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .expect("encodes");
        let decoded = GenericDatumReader::builder(writer)
            .maybe_reader_schema(reader)
            .build()
            .and_then(|r| r.read_value(&mut bytes.as_slice()))
            .expect("decodes");
        avro_to_json(&decoded)
    }

    #[test]
    fn every_documented_topic_has_a_released_schema() {
        for topic in CATALOG {
            assert!(latest(topic.name).is_some(), "{} has no schema", topic.name);
        }
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
        let envelope = [
            "event_id",
            "event_type",
            "aggregate_id",
            "aggregate_version",
            "occurred_at",
            "correlation_id",
            "causation_id",
            "actor",
        ];
        for topic in CATALOG
            .iter()
            .filter(|t| t.name != topics::AUDIT_PHI_ACCESS)
        {
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
        let verdict = check_versions("BACKWARD", &[v1.clone(), bad.clone()]);
        assert!(
            verdict.is_err_and(|e| e.contains("v2")),
            "an added required field must be refused"
        );
        // Removing a field is fine backward but not forward: FULL_TRANSITIVE refuses it.
        assert!(check_versions("FORWARD", &[bad, v1]).is_err());
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

//! The Avro schemas of the documented topics, embedded from `schemas/avro/<topic>/v<n>.avsc`.

/// One released schema version of a topic's values.
#[derive(Debug, Clone, Copy)]
pub struct TopicSchema {
    pub topic: &'static str,
    pub version: u32,
    pub avsc: &'static str,
}

macro_rules! schema {
    ($topic:literal, $version:literal) => {
        TopicSchema {
            topic: $topic,
            version: $version,
            avsc: include_str!(concat!("../avro/", $topic, "/v", $version, ".avsc")),
        }
    };
}

/// Every released schema, oldest version first within a topic.
pub const SCHEMAS: &[TopicSchema] = &[
    schema!("healthcare.patient.created", 1),
    schema!("healthcare.patient.created", 2),
    schema!("healthcare.patient.updated", 1),
    schema!("healthcare.patient.updated", 2),
    schema!("healthcare.appointment.scheduled", 1),
    schema!("healthcare.appointment.cancelled", 1),
    schema!("healthcare.encounter.started", 1),
    schema!("healthcare.encounter.completed", 1),
    schema!("healthcare.observation.created", 1),
    schema!("healthcare.medication.prescribed", 1),
    schema!("healthcare.audit.phi_access", 1),
    schema!("healthcare.audit.phi_access", 2),
];

/// Every released version of `topic`, oldest first.
pub fn versions(topic: &str) -> Vec<&'static TopicSchema> {
    let mut versions: Vec<_> = SCHEMAS.iter().filter(|s| s.topic == topic).collect();
    versions.sort_by_key(|s| s.version);
    versions
}

/// The newest released schema of `topic`.
pub fn latest(topic: &str) -> Option<&'static TopicSchema> {
    SCHEMAS
        .iter()
        .filter(|s| s.topic == topic)
        .max_by_key(|s| s.version)
}

/// The compatibility level each subject is held to (Confluent names).
pub fn compatibility_for(topic: &str) -> &'static str {
    if topic == events::catalog::AUDIT_PHI_ACCESS {
        "FULL_TRANSITIVE"
    } else {
        "BACKWARD"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_schema_parses_and_names_a_documented_topic() {
        for s in SCHEMAS {
            apache_avro::Schema::parse_str(s.avsc)
                .unwrap_or_else(|e| panic!("{} v{}: {e}", s.topic, s.version));
            assert!(events::catalog::topic(s.topic).is_some(), "{}", s.topic);
        }
    }
}

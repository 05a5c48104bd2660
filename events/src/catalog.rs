//! The topic catalog: the documented topics with their partitions, retention, key and owners.
//!
//! Names, partition counts and retention are a public contract with the data teams
//! (see `docs` and `../shared/design/platform.md`); change them only with a migration plan.

/// `healthcare.patient.created`
pub const PATIENT_CREATED: &str = "healthcare.patient.created";
/// `healthcare.patient.updated`
pub const PATIENT_UPDATED: &str = "healthcare.patient.updated";
/// `healthcare.appointment.scheduled`
pub const APPOINTMENT_SCHEDULED: &str = "healthcare.appointment.scheduled";
/// `healthcare.appointment.cancelled`
pub const APPOINTMENT_CANCELLED: &str = "healthcare.appointment.cancelled";
/// `healthcare.encounter.started`
pub const ENCOUNTER_STARTED: &str = "healthcare.encounter.started";
/// `healthcare.encounter.completed`
pub const ENCOUNTER_COMPLETED: &str = "healthcare.encounter.completed";
/// `healthcare.observation.created`
pub const OBSERVATION_CREATED: &str = "healthcare.observation.created";
/// `healthcare.medication.prescribed`
pub const MEDICATION_PRESCRIBED: &str = "healthcare.medication.prescribed";
/// `healthcare.audit.phi_access`: the six-year PHI access log.
pub const AUDIT_PHI_ACCESS: &str = "healthcare.audit.phi_access";
/// `healthcare.audit.phi_access.checkpoints`: the audit sealer's signed, chained checkpoints
/// over the PHI access log, kept as long as the log.
pub const AUDIT_CHECKPOINTS: &str = "healthcare.audit.phi_access.checkpoints";

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// One documented topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    pub partitions: i32,
    pub retention_days: i64,
    /// What the record key holds.
    pub key: &'static str,
    /// The component that produces it.
    pub producer: &'static str,
    /// The components that consume it.
    pub consumers: &'static [&'static str],
}

impl TopicSpec {
    /// `retention.ms` as configured on the broker.
    pub fn retention_ms(&self) -> i64 {
        self.retention_days * DAY_MS
    }

    /// The Schema Registry subject of the record value (TopicNameStrategy).
    pub fn value_subject(&self) -> String {
        value_subject(self.name)
    }

    /// Whether the outbox relay publishes domain events (with the envelope) on it, as opposed
    /// to the audit log and its checkpoints.
    pub fn carries_domain_events(&self) -> bool {
        self.producer == RELAY
    }
}

/// The Schema Registry subject of a topic's record values (TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

const fn spec(
    name: &'static str,
    partitions: i32,
    retention_days: i64,
    key: &'static str,
    producer: &'static str,
    consumers: &'static [&'static str],
) -> TopicSpec {
    TopicSpec {
        name,
        partitions,
        retention_days,
        key,
        producer,
        consumers,
    }
}

/// Every documented topic, in catalog order.
pub const CATALOG: [TopicSpec; 10] = [
    spec(
        PATIENT_CREATED,
        6,
        7,
        "patient id",
        RELAY,
        &["projections: patient, appointment"],
    ),
    spec(
        PATIENT_UPDATED,
        6,
        7,
        "patient id",
        RELAY,
        &["projections: patient, appointment"],
    ),
    spec(
        APPOINTMENT_SCHEDULED,
        6,
        7,
        "appointment id",
        RELAY,
        &["projections: appointment"],
    ),
    spec(
        APPOINTMENT_CANCELLED,
        6,
        7,
        "appointment id",
        RELAY,
        &["projections: appointment"],
    ),
    spec(
        ENCOUNTER_STARTED,
        6,
        7,
        "encounter id",
        RELAY,
        &["projections: encounter"],
    ),
    spec(
        ENCOUNTER_COMPLETED,
        6,
        7,
        "encounter id",
        RELAY,
        &["projections: encounter"],
    ),
    spec(
        OBSERVATION_CREATED,
        12,
        30,
        "observation id",
        RELAY,
        &["projections: laboratory"],
    ),
    spec(
        MEDICATION_PRESCRIBED,
        6,
        30,
        "medication request id",
        RELAY,
        &["projections: pharmacy"],
    ),
    spec(
        AUDIT_PHI_ACCESS,
        12,
        2190,
        "patient id",
        "query-api",
        &["projections: audit", "replay-tool audit", "audit-sealer"],
    ),
    spec(
        AUDIT_CHECKPOINTS,
        1,
        2190,
        "sealed partition of the audit log",
        "audit-sealer",
        &["replay-tool audit verify", "audit-sealer (on restart)"],
    ),
];

const RELAY: &str = "commands (outbox relay)";

/// Looks a documented topic up by name.
pub fn topic(name: &str) -> Option<&'static TopicSpec> {
    CATALOG.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_matches_the_documented_contract() {
        let audit = topic(AUDIT_PHI_ACCESS).expect("audit topic is documented");
        assert_eq!(audit.partitions, 12);
        assert_eq!(audit.retention_ms(), 2190 * 86_400_000);
        assert_eq!(
            topic(OBSERVATION_CREATED).unwrap().retention_ms(),
            30 * 86_400_000
        );
        assert_eq!(topic(PATIENT_CREATED).unwrap().retention_ms(), 604_800_000);
        assert_eq!(audit.value_subject(), "healthcare.audit.phi_access-value");
        for t in CATALOG.iter().filter(|t| t.name != AUDIT_CHECKPOINTS) {
            let rest = t
                .name
                .strip_prefix("healthcare.")
                .expect("healthcare.<aggregate>.<event>");
            assert_eq!(rest.split('.').count(), 2, "{}", t.name);
        }
        // The checkpoints live beside the log they seal, as long as it.
        let checkpoints = topic(AUDIT_CHECKPOINTS).unwrap();
        assert!(checkpoints.name.starts_with(AUDIT_PHI_ACCESS));
        assert_eq!(checkpoints.retention_ms(), audit.retention_ms());
        let domain: Vec<_> = CATALOG
            .iter()
            .filter(|t| t.carries_domain_events())
            .collect();
        assert_eq!(domain.len(), 8);
    }
}

//! The one list of domain event types. Each type declares, next to its struct (its
//! [`DomainEvent`] impl), its `event_type`, topic, aggregate and example; this module turns
//! those into [`EventKind`]s, and everything else derives from [`EVENTS`]: the commands'
//! dispatch, the projectors' topics, the schema contract, the examples and the topic docs.
//!
//! Adding an event type is its struct and impl plus one line in [`EVENTS`]. A missing impl
//! member does not compile; a missing line, a topic outside the catalog, a topic without a
//! schema or an example that does not fit it fails a test that names the piece
//! ([`problems`] here, `schemas::contract` for the schema).

use uuid::Uuid;

use crate::appointment::{AppointmentCancelled, AppointmentScheduled};
use crate::catalog::{self, CATALOG};
use crate::encounter::{EncounterCompleted, EncounterStarted};
use crate::medication::MedicationPrescribed;
use crate::observation::ObservationCreated;
use crate::patient::{PatientCreated, PatientUpdated};
use crate::{Actor, DomainEvent, Envelope, EventRecord};

/// The aggregates whose streams the events belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregate {
    Patient,
    Appointment,
    Encounter,
    Observation,
    MedicationRequest,
}

impl Aggregate {
    pub const ALL: [Aggregate; 5] = [
        Aggregate::Patient,
        Aggregate::Appointment,
        Aggregate::Encounter,
        Aggregate::Observation,
        Aggregate::MedicationRequest,
    ];

    /// The name in the event store (`aggregate_type`) and in messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Aggregate::Patient => "patient",
            Aggregate::Appointment => "appointment",
            Aggregate::Encounter => "encounter",
            Aggregate::Observation => "observation",
            Aggregate::MedicationRequest => "medication_request",
        }
    }
}

impl std::str::FromStr for Aggregate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Aggregate::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not an aggregate"))
    }
}

impl std::fmt::Display for Aggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event type's example: its payload, and the envelope's version and actor.
#[derive(Debug, Clone)]
pub struct Example<E> {
    pub version: i64,
    pub actor: Actor,
    pub payload: E,
}

/// What the platform knows about one event type.
#[derive(Debug, Clone, Copy)]
pub struct EventKind {
    pub event_type: &'static str,
    pub topic: &'static str,
    pub aggregate: Aggregate,
    /// The example record (envelope and fields, as on the topic) of aggregate `key`.
    pub example: fn(Uuid) -> serde_json::Value,
    /// A record after a trip through the Rust type, or why it does not fit.
    pub typed: fn(serde_json::Value) -> Result<serde_json::Value, String>,
}

fn example_record<E: DomainEvent>(key: Uuid) -> serde_json::Value {
    let example = E::example();
    let envelope = Envelope {
        event_id: Uuid::from_u128(key.as_u128() ^ example.version as u128 ^ 0xe0e0),
        event_type: E::EVENT_TYPE.to_string(),
        aggregate_id: key,
        aggregate_version: example.version,
        occurred_at: crate::examples::at(9, 30),
        correlation_id: "req-7f3a9c".to_string(),
        causation_id: None,
        actor: example.actor,
    };
    serde_json::to_value(EventRecord {
        envelope,
        payload: example.payload,
    })
    .expect("example events serialize")
}

fn typed<E: DomainEvent>(record: serde_json::Value) -> Result<serde_json::Value, String> {
    let typed: EventRecord<E> = crate::typed::from_value(&record)?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// The [`EventKind`] of `E`.
pub const fn kind<E: DomainEvent>() -> EventKind {
    EventKind {
        event_type: E::EVENT_TYPE,
        topic: E::TOPIC,
        aggregate: E::AGGREGATE,
        example: example_record::<E>,
        typed: typed::<E>,
    }
}

/// Every domain event type published on a topic.
pub const EVENTS: &[EventKind] = &[
    kind::<PatientCreated>(),
    kind::<PatientUpdated>(),
    kind::<AppointmentScheduled>(),
    kind::<AppointmentCancelled>(),
    kind::<EncounterStarted>(),
    kind::<EncounterCompleted>(),
    kind::<ObservationCreated>(),
    kind::<MedicationPrescribed>(),
];

/// The event type published on `topic`.
pub fn by_topic(topic: &str) -> Option<&'static EventKind> {
    EVENTS.iter().find(|k| k.topic == topic)
}

/// The event type named `event_type`.
pub fn by_type(event_type: &str) -> Option<&'static EventKind> {
    EVENTS.iter().find(|k| k.event_type == event_type)
}

/// What is wrong with `kinds` as the platform's event list, one sentence per problem: a
/// topic outside the catalog, a domain topic of the catalog without an event type, two
/// event types on one topic or with one name.
pub fn problems(kinds: &[EventKind]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        if catalog::topic(kind.topic).is_none() {
            problems.push(format!(
                "{} is published on {}, which is not in the topic catalog (events::catalog::CATALOG)",
                kind.event_type, kind.topic
            ));
        }
        if kinds[..i].iter().any(|k| k.topic == kind.topic) {
            problems.push(format!(
                "{}: a second event type on {}",
                kind.event_type, kind.topic
            ));
        }
        if kinds[..i].iter().any(|k| k.event_type == kind.event_type) {
            problems.push(format!("{} is listed twice", kind.event_type));
        }
    }
    for topic in CATALOG.iter().filter(|t| t.carries_domain_events()) {
        if !kinds.iter().any(|k| k.topic == topic.name) {
            problems.push(format!(
                "{} is in the topic catalog but no event type in events::registry::EVENTS is published on it",
                topic.name
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[test]
    fn the_event_list_matches_the_topic_catalog() {
        assert_eq!(problems(EVENTS), Vec::<String>::new());
    }

    #[test]
    fn every_example_reads_back_through_its_type() {
        for kind in EVENTS {
            let example = (kind.example)(crate::examples::EXAMPLE_PATIENT);
            assert_eq!(example["event_type"], kind.event_type);
            assert_eq!(
                (kind.typed)(example.clone()),
                Ok(example),
                "{}",
                kind.event_type
            );
        }
    }

    /// A throwaway event type, to show what the registry says when a piece is missing.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct PatientTeleported {
        patient_id: Uuid,
    }

    impl DomainEvent for PatientTeleported {
        const EVENT_TYPE: &'static str = "PatientTeleported";
        const TOPIC: &'static str = "healthcare.patient.teleported";
        const AGGREGATE: Aggregate = Aggregate::Patient;
        fn example() -> Example<Self> {
            Example {
                version: 3,
                actor: crate::examples::admin(),
                payload: PatientTeleported {
                    patient_id: crate::examples::EXAMPLE_PATIENT,
                },
            }
        }
    }

    #[test]
    fn a_new_event_type_without_its_topic_or_its_line_is_named() {
        // Listed, but its topic was never added to the catalog:
        let mut kinds = EVENTS.to_vec();
        kinds.push(kind::<PatientTeleported>());
        assert_eq!(
            problems(&kinds),
            vec![
                "PatientTeleported is published on healthcare.patient.teleported, which is not \
                  in the topic catalog (events::catalog::CATALOG)"
                    .to_string()
            ]
        );
        // An event type forgotten in the list leaves its catalog topic without one:
        let without: Vec<EventKind> = EVENTS
            .iter()
            .filter(|k| k.event_type != "AppointmentCancelled")
            .copied()
            .collect();
        assert_eq!(
            problems(&without),
            vec![
                "healthcare.appointment.cancelled is in the topic catalog but no event type in \
                  events::registry::EVENTS is published on it"
                    .to_string()
            ]
        );
        // Listed twice:
        let mut twice = EVENTS.to_vec();
        twice.push(kind::<PatientCreated>());
        assert_eq!(problems(&twice).len(), 2, "{:?}", problems(&twice));
    }
}

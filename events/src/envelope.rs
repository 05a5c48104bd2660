//! The envelope every domain event carries, and the actor who caused it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The roles of the platform's users (the `roles` claim of a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Patient,
    Practitioner,
    Admin,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Patient,
        Role::Practitioner,
        Role::Admin,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Practitioner => "practitioner",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role `{s}` (expected patient, practitioner, admin or auditor)")
            })
    }
}

/// Who did it: the token's subject and the role they acted in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: String,
    pub role: Role,
}

/// The names of the envelope's fields in a topic record, in order.
pub const ENVELOPE_FIELDS: [&str; 8] = [
    "event_id",
    "event_type",
    "aggregate_id",
    "aggregate_version",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "actor",
];

/// The fields every domain event starts with (named in [`ENVELOPE_FIELDS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_id: Uuid,
    /// 1 for the event that creates the aggregate, then +1 per event.
    pub aggregate_version: i64,
    pub occurred_at: DateTime<Utc>,
    /// The request that led to this event.
    pub correlation_id: String,
    /// The message that directly caused this event, if it was not a request.
    pub causation_id: Option<String>,
    pub actor: Actor,
}

/// A full topic record: the envelope followed by the event's own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord<P> {
    #[serde(flatten)]
    pub envelope: Envelope,
    #[serde(flatten)]
    pub payload: P,
}

#[cfg(test)]
mod envelope_fields {
    #[test]
    fn the_field_list_is_the_envelope_as_serialized() {
        let record = (crate::registry::EVENTS[0].example)(crate::examples::EXAMPLE_PATIENT);
        let envelope: super::Envelope = serde_json::from_value(record).unwrap();
        let json = serde_json::to_value(envelope).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = super::ENVELOPE_FIELDS.to_vec();
        expected.sort();
        assert_eq!(keys, expected);
    }
}

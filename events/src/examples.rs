//! One realistic example record per documented topic. The schema round-trip tests, the
//! every-topic end-to-end test and the generated topic documentation all use these, so the
//! Rust types, the Avro schemas and the docs are checked against the same data.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{
    AUDIT_CHECKPOINT_SEALED, AccessAction, AccessOutcome, AuditCheckpoint, PHI_ACCESSED,
    PhiAccessed,
};
use crate::catalog;
use crate::clinical::{Coding, Quantity, UCUM};
use crate::patient::{Address, ContactPoint, Demographics, Gender, HumanName, Identifier};
use crate::{Actor, Role};

/// The patient the examples are about.
pub const EXAMPLE_PATIENT: Uuid = Uuid::from_u128(0x0190_a0e4_6f3c_7b1e_9d2a_5c8e_1f4b_7a01);

pub(crate) fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, hour, minute, 0)
        .single()
        .expect("valid time")
}

fn to_json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).expect("example events serialize")
}

pub(crate) fn admin() -> Actor {
    Actor {
        id: "front-desk-3".into(),
        role: Role::Admin,
    }
}

pub(crate) fn practitioner() -> Actor {
    Actor {
        id: "dr-hopper".into(),
        role: Role::Practitioner,
    }
}

pub(crate) fn ucum(value: f64, unit: &str) -> Quantity {
    Quantity {
        value,
        unit: unit.into(),
        system: UCUM.into(),
    }
}

pub(crate) fn coding(system: &str, code: &str, display: &str) -> Coding {
    Coding {
        system: system.into(),
        code: code.into(),
        display: Some(display.into()),
    }
}

/// Ada Lovelace's demographics (the api.md example).
pub fn demographics() -> Demographics {
    Demographics {
        identifiers: vec![Identifier {
            system: "urn:oid:2.16.840.1.113883.4.1".into(),
            value: "123-45-6789".into(),
        }],
        name: HumanName {
            given: vec!["Ada".into()],
            family: "Lovelace".into(),
        },
        gender: Gender::Female,
        birth_date: chrono::NaiveDate::from_ymd_opt(1815, 12, 10).expect("valid date"),
        telecom: vec![ContactPoint {
            system: "phone".into(),
            value: "+44 20 7946 0000".into(),
        }],
        address: Some(Address {
            line: vec!["12 St James's Square".into()],
            city: Some("London".into()),
            postal_code: Some("SW1Y 4JH".into()),
            country: Some("GB".into()),
        }),
        preferred_language: Some("en-GB".into()),
    }
}

/// An example record of `topic` (envelope and event fields, as JSON) whose key is `key`:
/// the aggregate id, or the patient id on the audit topic. `None` for an undocumented topic.
/// Domain events' examples are declared with their types (see [`crate::registry`]).
pub fn example_record(topic: &str, key: Uuid) -> Option<serde_json::Value> {
    if topic == catalog::AUDIT_PHI_ACCESS {
        return Some(audit_example(key));
    }
    if topic == catalog::AUDIT_CHECKPOINTS {
        return Some(checkpoint_example());
    }
    crate::registry::by_topic(topic).map(|kind| (kind.example)(key))
}

/// An access to patient `key`'s record.
fn audit_example(key: Uuid) -> serde_json::Value {
    to_json(&PhiAccessed {
        event_id: Uuid::from_u128(0x0190_a0e4_7000_7000_8000_0000_0000_aa01),
        event_type: PHI_ACCESSED.into(),
        occurred_at: at(14, 5),
        actor: practitioner(),
        patient_id: key,
        action: AccessAction::Read,
        resource_type: "Patient".into(),
        resource_ids: vec![key.to_string()],
        purpose_of_use: "TREAT".into(),
        outcome: AccessOutcome::Success,
        client_ip: Some("10.20.30.40".into()),
        forwarded_for: Some("203.0.113.7".into()),
        user_agent: Some("provider-portal/2.3".into()),
        request_id: "req-7f3a9c".into(),
        service: "query-api".into(),
        detail: None,
    })
}

/// The third checkpoint over partition 7 of the audit log.
fn checkpoint_example() -> serde_json::Value {
    to_json(&AuditCheckpoint {
        event_id: Uuid::from_u128(0x0190_a0e4_7000_7000_8000_0000_0000_cc03),
        event_type: AUDIT_CHECKPOINT_SEALED.into(),
        sealed_at: at(14, 6),
        topic: catalog::AUDIT_PHI_ACCESS.into(),
        partition: 7,
        sequence: 3,
        start_offset: 1_200,
        end_offset: 1_342,
        record_count: 142,
        chain_length: 1_342,
        chain_hash: "9f2c6a0d5e81b7f34c1a9e0d27b6f5c38a4e1d0b9c7f26e5a3d8b1c4f7e0a2d6".into(),
        previous_checkpoint: Some(
            "4b7e1f0a9c3d6e2b8a5f1c7d0e4b9a3f6c2d8e1b7a0f5c9d3e6b2a8f4c1d7e0b".into(),
        ),
        sealer: "audit-sealer-0/1".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CATALOG;

    #[test]
    fn every_documented_topic_has_an_example() {
        for topic in CATALOG {
            let example = example_record(topic.name, EXAMPLE_PATIENT).expect(topic.name);
            assert!(example.get("event_id").is_some(), "{}", topic.name);
        }
    }
}

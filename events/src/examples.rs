//! One realistic example record per documented topic. The schema round-trip tests, the
//! every-topic end-to-end test and the generated topic documentation all use these, so the
//! Rust types, the Avro schemas and the docs are checked against the same data.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::appointment::{AppointmentCancelled, AppointmentScheduled};
use crate::audit::{AccessAction, AccessOutcome, PHI_ACCESSED, PhiAccessed};
use crate::catalog;
use crate::clinical::{ACT_CODE, Coding, LOINC, Quantity, RXNORM, UCUM};
use crate::encounter::{EncounterCompleted, EncounterStarted};
use crate::medication::{Dosage, MedicationPrescribed};
use crate::observation::ObservationCreated;
use crate::patient::{
    Address, ContactPoint, Demographics, Gender, HumanName, Identifier, PatientCreated,
    PatientUpdated,
};
use crate::{Actor, DomainEvent, Envelope, EventRecord, Role};

/// The patient the examples are about.
pub const EXAMPLE_PATIENT: Uuid = Uuid::from_u128(0x0190_a0e4_6f3c_7b1e_9d2a_5c8e_1f4b_7a01);

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, hour, minute, 0)
        .single()
        .expect("valid time")
}

fn envelope<E: DomainEvent>(aggregate_id: Uuid, version: i64, actor: Actor) -> Envelope {
    Envelope {
        event_id: Uuid::from_u128(aggregate_id.as_u128() ^ version as u128 ^ 0xe0e0),
        event_type: E::EVENT_TYPE.to_string(),
        aggregate_id,
        aggregate_version: version,
        occurred_at: at(9, 30),
        correlation_id: "req-7f3a9c".to_string(),
        causation_id: None,
        actor,
    }
}

fn record<E: DomainEvent>(
    aggregate_id: Uuid,
    version: i64,
    actor: Actor,
    payload: E,
) -> serde_json::Value {
    to_json(&EventRecord {
        envelope: envelope::<E>(aggregate_id, version, actor),
        payload,
    })
}

fn to_json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).expect("example events serialize")
}

fn admin() -> Actor {
    Actor {
        id: "front-desk-3".into(),
        role: Role::Admin,
    }
}

fn practitioner() -> Actor {
    Actor {
        id: "dr-hopper".into(),
        role: Role::Practitioner,
    }
}

fn ucum(value: f64, unit: &str) -> Quantity {
    Quantity {
        value,
        unit: unit.into(),
        system: UCUM.into(),
    }
}

fn coding(system: &str, code: &str, display: &str) -> Coding {
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
pub fn example_record(topic: &str, key: Uuid) -> Option<serde_json::Value> {
    let patient = EXAMPLE_PATIENT;
    Some(match topic {
        catalog::PATIENT_CREATED => record(
            key,
            1,
            admin(),
            PatientCreated {
                demographics: demographics(),
            },
        ),
        catalog::PATIENT_UPDATED => {
            let mut demographics = demographics();
            demographics.telecom.push(ContactPoint {
                system: "email".into(),
                value: "ada@example.org".into(),
            });
            record(
                key,
                2,
                admin(),
                PatientUpdated {
                    demographics,
                    changed_fields: vec!["telecom".into()],
                },
            )
        }
        catalog::APPOINTMENT_SCHEDULED => record(
            key,
            1,
            admin(),
            AppointmentScheduled {
                patient_id: patient,
                practitioner_id: "dr-hopper".into(),
                start: at(14, 0),
                end: at(14, 30),
                service_type: Some(coding("http://snomed.info/sct", "11429006", "Consultation")),
                description: Some("Follow-up on blood pressure".into()),
            },
        ),
        catalog::APPOINTMENT_CANCELLED => record(
            key,
            2,
            admin(),
            AppointmentCancelled {
                patient_id: patient,
                reason: "patient".into(),
            },
        ),
        catalog::ENCOUNTER_STARTED => record(
            key,
            1,
            practitioner(),
            EncounterStarted {
                patient_id: patient,
                practitioner_id: "dr-hopper".into(),
                appointment_id: Some(Uuid::from_u128(0x0190_a0e4_7000_7000_8000_0000_0000_0a01)),
                encounter_class: coding(ACT_CODE, "AMB", "ambulatory"),
                started_at: at(14, 2),
                reason: Some("Hypertension follow-up".into()),
            },
        ),
        catalog::ENCOUNTER_COMPLETED => record(
            key,
            2,
            practitioner(),
            EncounterCompleted {
                patient_id: patient,
                ended_at: at(14, 27),
                discharge_disposition: Some("home".into()),
            },
        ),
        catalog::OBSERVATION_CREATED => record(
            key,
            1,
            practitioner(),
            ObservationCreated {
                patient_id: patient,
                encounter_id: Some(Uuid::from_u128(0x0190_a0e4_7000_7000_8000_0000_0000_0e01)),
                status: "final".into(),
                category: "vital-signs".into(),
                code: coding(LOINC, "8867-4", "Heart rate"),
                value_quantity: Some(ucum(72.0, "/min")),
                value_coding: None,
                value_string: None,
                effective_at: at(14, 10),
                performer_id: "dr-hopper".into(),
            },
        ),
        catalog::MEDICATION_PRESCRIBED => record(
            key,
            1,
            practitioner(),
            MedicationPrescribed {
                patient_id: patient,
                encounter_id: Some(Uuid::from_u128(0x0190_a0e4_7000_7000_8000_0000_0000_0e01)),
                medication: coding(RXNORM, "314076", "lisinopril 10 MG Oral Tablet"),
                status: "active".into(),
                intent: "order".into(),
                dosage: Some(Dosage {
                    text: "10 mg once a day".into(),
                    dose: Some(ucum(10.0, "mg")),
                    frequency: Some(1),
                    period: Some(1.0),
                    period_unit: Some("d".into()),
                    route: Some(coding("http://snomed.info/sct", "26643006", "Oral route")),
                }),
                dispense_quantity: Some(ucum(30.0, "{tbl}")),
                refills: Some(2),
                authored_on: at(14, 20),
                requester_id: "dr-hopper".into(),
                note: None,
            },
        ),
        catalog::AUDIT_PHI_ACCESS => to_json(&PhiAccessed {
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
        }),
        _ => return None,
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

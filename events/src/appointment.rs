//! Appointment events (FHIR R4 Appointment in spirit).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DomainEvent;
use crate::catalog::{APPOINTMENT_CANCELLED, APPOINTMENT_SCHEDULED};
use crate::clinical::Coding;
use crate::{examples, registry};

/// An appointment was booked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppointmentScheduled {
    pub patient_id: Uuid,
    /// The practitioner the patient will see (user id).
    pub practitioner_id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// What kind of visit, e.g. SNOMED CT 11429006 "Consultation".
    pub service_type: Option<Coding>,
    pub description: Option<String>,
}

impl DomainEvent for AppointmentScheduled {
    const EVENT_TYPE: &'static str = "AppointmentScheduled";
    const TOPIC: &'static str = APPOINTMENT_SCHEDULED;
    const AGGREGATE: registry::Aggregate = registry::Aggregate::Appointment;
    fn example() -> registry::Example<Self> {
        registry::Example {
            version: 1,
            actor: examples::admin(),
            payload: AppointmentScheduled {
                patient_id: examples::EXAMPLE_PATIENT,
                practitioner_id: "dr-hopper".into(),
                start: examples::at(14, 0),
                end: examples::at(14, 30),
                service_type: Some(examples::coding(
                    "http://snomed.info/sct",
                    "11429006",
                    "Consultation",
                )),
                description: Some("Follow-up on blood pressure".into()),
            },
        }
    }
}

/// An appointment was cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppointmentCancelled {
    pub patient_id: Uuid,
    /// Why, e.g. `patient` or `provider` (FHIR appointment-cancellation-reason) or free text.
    pub reason: String,
}

impl DomainEvent for AppointmentCancelled {
    const EVENT_TYPE: &'static str = "AppointmentCancelled";
    const TOPIC: &'static str = APPOINTMENT_CANCELLED;
    const AGGREGATE: registry::Aggregate = registry::Aggregate::Appointment;
    fn example() -> registry::Example<Self> {
        registry::Example {
            version: 2,
            actor: examples::admin(),
            payload: AppointmentCancelled {
                patient_id: examples::EXAMPLE_PATIENT,
                reason: "patient".into(),
            },
        }
    }
}

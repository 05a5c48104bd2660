//! Observation events (FHIR R4 Observation in spirit): vital signs and laboratory results.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DomainEvent;
use crate::catalog::OBSERVATION_CREATED;
use crate::clinical::{Coding, LOINC, ObservationStatus, Quantity};
use crate::{examples, registry};

/// An observation was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservationCreated {
    pub patient_id: Uuid,
    pub encounter_id: Option<Uuid>,
    /// FHIR ObservationStatus: registered | preliminary | final | amended | corrected |
    /// cancelled | entered-in-error | unknown
    pub status: ObservationStatus,
    /// FHIR observation category, e.g. `vital-signs`, `laboratory`.
    pub category: String,
    /// What was observed: a LOINC code, e.g. 8867-4 "Heart rate".
    pub code: Coding,
    /// A measured value with its UCUM unit.
    pub value_quantity: Option<Quantity>,
    /// A coded value, e.g. SNOMED CT 260385009 "Negative".
    pub value_coding: Option<Coding>,
    /// A textual value.
    pub value_string: Option<String>,
    /// When the observation was made (clinically relevant time).
    pub effective_at: DateTime<Utc>,
    /// Who made it (user id).
    pub performer_id: String,
}

impl DomainEvent for ObservationCreated {
    const EVENT_TYPE: &'static str = "ObservationCreated";
    const TOPIC: &'static str = OBSERVATION_CREATED;
    const AGGREGATE: registry::Aggregate = registry::Aggregate::Observation;
    fn example() -> registry::Example<Self> {
        registry::Example {
            version: 1,
            actor: examples::practitioner(),
            payload: ObservationCreated {
                patient_id: examples::EXAMPLE_PATIENT,
                encounter_id: Some(Uuid::from_u128(0x0190_a0e4_7000_7000_8000_0000_0000_0e01)),
                status: ObservationStatus::Final,
                category: "vital-signs".into(),
                code: examples::coding(LOINC, "8867-4", "Heart rate"),
                value_quantity: Some(examples::ucum(72.0, "/min")),
                value_coding: None,
                value_string: None,
                effective_at: examples::at(14, 10),
                performer_id: "dr-hopper".into(),
            },
        }
    }
}

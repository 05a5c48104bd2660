//! Encounter events (FHIR R4 Encounter in spirit).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DomainEvent;
use crate::catalog::{ENCOUNTER_COMPLETED, ENCOUNTER_STARTED};
use crate::clinical::{ACT_CODE, Coding};
use crate::{examples, registry};

/// A patient's encounter with a practitioner began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncounterStarted {
    pub patient_id: Uuid,
    pub practitioner_id: String,
    /// The appointment this encounter fulfils, if any.
    pub appointment_id: Option<Uuid>,
    /// HL7 v3 ActCode: AMB (ambulatory), EMER, IMP (inpatient), VR (virtual), HH (home health).
    pub encounter_class: Coding,
    pub started_at: DateTime<Utc>,
    pub reason: Option<String>,
}

impl DomainEvent for EncounterStarted {
    const EVENT_TYPE: &'static str = "EncounterStarted";
    const TOPIC: &'static str = ENCOUNTER_STARTED;
    const AGGREGATE: registry::Aggregate = registry::Aggregate::Encounter;
    fn example() -> registry::Example<Self> {
        registry::Example {
            version: 1,
            actor: examples::practitioner(),
            payload: EncounterStarted {
                patient_id: examples::EXAMPLE_PATIENT,
                practitioner_id: "dr-hopper".into(),
                appointment_id: Some(Uuid::from_u128(0x0190_a0e4_7000_7000_8000_0000_0000_0a01)),
                encounter_class: examples::coding(ACT_CODE, "AMB", "ambulatory"),
                started_at: examples::at(14, 2),
                reason: Some("Hypertension follow-up".into()),
            },
        }
    }
}

/// An encounter ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncounterCompleted {
    pub patient_id: Uuid,
    pub ended_at: DateTime<Utc>,
    /// Where the patient went, e.g. `home`.
    pub discharge_disposition: Option<String>,
}

impl DomainEvent for EncounterCompleted {
    const EVENT_TYPE: &'static str = "EncounterCompleted";
    const TOPIC: &'static str = ENCOUNTER_COMPLETED;
    const AGGREGATE: registry::Aggregate = registry::Aggregate::Encounter;
    fn example() -> registry::Example<Self> {
        registry::Example {
            version: 2,
            actor: examples::practitioner(),
            payload: EncounterCompleted {
                patient_id: examples::EXAMPLE_PATIENT,
                ended_at: examples::at(14, 27),
                discharge_disposition: Some("home".into()),
            },
        }
    }
}

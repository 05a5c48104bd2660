//! Encounter events (FHIR R4 Encounter in spirit).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DomainEvent;
use crate::catalog::{ENCOUNTER_COMPLETED, ENCOUNTER_STARTED};
use crate::clinical::Coding;

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
}

//! The `pharmacy_service` read model: medication requests.

use chrono::{DateTime, Utc};
use events::clinical::Quantity;
use events::clinical::{MedicationRequestIntent, MedicationRequestStatus};
use events::medication::{Dosage, MedicationPrescribed};
use events::registry::{EventKind, kind};
use platform::db::Migration;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::{IncomingEvent, ModelProjection, SingleModel, StateModel};

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "medication requests",
    sql: "CREATE TABLE medication_requests (
            id UUID PRIMARY KEY,
            version BIGINT NOT NULL,
            patient_id UUID NOT NULL,
            encounter_id UUID,
            medication_system TEXT NOT NULL,
            medication_code TEXT NOT NULL,
            medication_display TEXT,
            status TEXT NOT NULL,
            intent TEXT NOT NULL,
            dosage JSONB,
            dispense_quantity JSONB,
            refills INTEGER,
            authored_on TIMESTAMPTZ NOT NULL,
            requester_id TEXT NOT NULL,
            note TEXT);
          CREATE INDEX medication_requests_patient ON medication_requests (patient_id, authored_on);",
}];

/// A medication request row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MedicationRequestRow {
    pub patient_id: Uuid,
    pub encounter_id: Option<Uuid>,
    pub medication_system: String,
    pub medication_code: String,
    pub medication_display: Option<String>,
    pub status: MedicationRequestStatus,
    pub intent: MedicationRequestIntent,
    pub dosage: Option<Dosage>,
    pub dispense_quantity: Option<Quantity>,
    pub refills: Option<i32>,
    pub authored_on: DateTime<Utc>,
    pub requester_id: String,
    pub note: Option<String>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct MedicationRequests;

impl StateModel for MedicationRequests {
    type Row = MedicationRequestRow;
    const TABLE: &'static str = "medication_requests";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "version",
        "patient_id",
        "encounter_id",
        "medication_system",
        "medication_code",
        "medication_display",
        "status",
        "intent",
        "dosage",
        "dispense_quantity",
        "refills",
        "authored_on",
        "requester_id",
        "note",
    ];

    const EVENTS: &'static [EventKind] = &[kind::<MedicationPrescribed>()];

    fn fold(
        &self,
        _row: Option<MedicationRequestRow>,
        event: &IncomingEvent,
    ) -> Result<MedicationRequestRow, String> {
        let e: MedicationPrescribed = event.payload()?;
        Ok(MedicationRequestRow {
            patient_id: e.patient_id,
            encounter_id: e.encounter_id,
            medication_system: e.medication.system,
            medication_code: e.medication.code,
            medication_display: e.medication.display,
            status: e.status,
            intent: e.intent,
            dosage: e.dosage,
            dispense_quantity: e.dispense_quantity,
            refills: e.refills,
            authored_on: e.authored_on,
            requester_id: e.requester_id,
            note: e.note,
        })
    }
}

impl SingleModel for MedicationRequests {
    const PROJECTION: &'static str = "pharmacy";
    const DATABASE: &'static str = "pharmacy_service";
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
}

/// The pharmacy projection (`pharmacy_service`).
pub type PharmacyProjection = ModelProjection<MedicationRequests>;

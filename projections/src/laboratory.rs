//! The `laboratory_service` read model: observations (vital signs and laboratory results),
//! queryable by patient, code and time.

use chrono::{DateTime, Utc};
use events::clinical::Coding;
use events::clinical::ObservationStatus;
use events::observation::ObservationCreated;
use events::registry::{EventKind, kind};
use platform::db::Migration;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::{IncomingEvent, ModelProjection, SingleModel, StateModel};

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "observations",
    sql: "CREATE TABLE observations (
            id UUID PRIMARY KEY,
            version BIGINT NOT NULL,
            patient_id UUID NOT NULL,
            encounter_id UUID,
            status TEXT NOT NULL,
            category TEXT NOT NULL,
            code_system TEXT NOT NULL,
            code TEXT NOT NULL,
            code_display TEXT,
            value_quantity DOUBLE PRECISION,
            value_unit TEXT,
            value_coding JSONB,
            value_string TEXT,
            effective_at TIMESTAMPTZ NOT NULL,
            performer_id TEXT NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL);
          CREATE INDEX observations_patient_code ON observations (patient_id, code, effective_at);
          CREATE INDEX observations_patient_time ON observations (patient_id, effective_at);",
}];

/// An observation row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservationRow {
    pub patient_id: Uuid,
    pub encounter_id: Option<Uuid>,
    pub status: ObservationStatus,
    pub category: String,
    pub code_system: String,
    pub code: String,
    pub code_display: Option<String>,
    pub value_quantity: Option<f64>,
    pub value_unit: Option<String>,
    pub value_coding: Option<Coding>,
    pub value_string: Option<String>,
    pub effective_at: DateTime<Utc>,
    pub performer_id: String,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Observations;

impl StateModel for Observations {
    type Row = ObservationRow;
    const TABLE: &'static str = "observations";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "version",
        "patient_id",
        "encounter_id",
        "status",
        "category",
        "code_system",
        "code",
        "code_display",
        "value_quantity",
        "value_unit",
        "value_coding",
        "value_string",
        "effective_at",
        "performer_id",
        "recorded_at",
    ];

    const EVENTS: &'static [EventKind] = &[kind::<ObservationCreated>()];

    fn fold(
        &self,
        _row: Option<ObservationRow>,
        event: &IncomingEvent,
    ) -> Result<ObservationRow, String> {
        let e: ObservationCreated = event.payload()?;
        Ok(ObservationRow {
            patient_id: e.patient_id,
            encounter_id: e.encounter_id,
            status: e.status,
            category: e.category,
            code_system: e.code.system,
            code: e.code.code,
            code_display: e.code.display,
            value_quantity: e.value_quantity.as_ref().map(|q| q.value),
            value_unit: e.value_quantity.map(|q| q.unit),
            value_coding: e.value_coding,
            value_string: e.value_string,
            effective_at: e.effective_at,
            performer_id: e.performer_id,
            recorded_at: event.envelope.occurred_at,
        })
    }
}

impl SingleModel for Observations {
    const PROJECTION: &'static str = "laboratory";
    const DATABASE: &'static str = "laboratory_service";
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
}

/// The laboratory projection (`laboratory_service`).
pub type LaboratoryProjection = ModelProjection<Observations>;

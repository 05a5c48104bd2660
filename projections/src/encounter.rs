//! The `encounter_service` read model: encounters and their status.

use chrono::{DateTime, Utc};
use events::DomainEvent;
use events::clinical::EncounterStatus;
use events::encounter::{EncounterCompleted, EncounterStarted};
use events::registry::{EventKind, kind};
use platform::db::Migration;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::{IncomingEvent, ModelProjection, SingleModel, StateModel};

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "encounters",
    sql: "CREATE TABLE encounters (
            id UUID PRIMARY KEY,
            version BIGINT NOT NULL,
            patient_id UUID NOT NULL,
            practitioner_id TEXT NOT NULL,
            appointment_id UUID,
            class_code TEXT NOT NULL,
            class_display TEXT,
            status TEXT NOT NULL,
            started_at TIMESTAMPTZ NOT NULL,
            ended_at TIMESTAMPTZ,
            reason TEXT,
            discharge_disposition TEXT,
            updated_at TIMESTAMPTZ NOT NULL);
          CREATE INDEX encounters_patient ON encounters (patient_id, started_at);
          CREATE INDEX encounters_appointment ON encounters (appointment_id);",
}];

/// An encounter row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncounterRow {
    pub patient_id: Uuid,
    pub practitioner_id: String,
    pub appointment_id: Option<Uuid>,
    pub class_code: String,
    pub class_display: Option<String>,
    /// in-progress | finished
    pub status: EncounterStatus,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub discharge_disposition: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Encounters;

impl StateModel for Encounters {
    type Row = EncounterRow;
    const TABLE: &'static str = "encounters";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "version",
        "patient_id",
        "practitioner_id",
        "appointment_id",
        "class_code",
        "class_display",
        "status",
        "started_at",
        "ended_at",
        "reason",
        "discharge_disposition",
        "updated_at",
    ];

    const EVENTS: &'static [EventKind] =
        &[kind::<EncounterStarted>(), kind::<EncounterCompleted>()];

    fn fold(
        &self,
        row: Option<EncounterRow>,
        event: &IncomingEvent,
    ) -> Result<EncounterRow, String> {
        let at = event.envelope.occurred_at;
        match (event.envelope.event_type.as_str(), row) {
            (EncounterStarted::EVENT_TYPE, _) => {
                let e: EncounterStarted = event.payload()?;
                Ok(EncounterRow {
                    patient_id: e.patient_id,
                    practitioner_id: e.practitioner_id,
                    appointment_id: e.appointment_id,
                    class_code: e.encounter_class.code,
                    class_display: e.encounter_class.display,
                    status: EncounterStatus::InProgress,
                    started_at: e.started_at,
                    ended_at: None,
                    reason: e.reason,
                    discharge_disposition: None,
                    updated_at: at,
                })
            }
            (EncounterCompleted::EVENT_TYPE, Some(row)) => {
                let e: EncounterCompleted = event.payload()?;
                Ok(EncounterRow {
                    status: EncounterStatus::Finished,
                    ended_at: Some(e.ended_at),
                    discharge_disposition: e.discharge_disposition,
                    updated_at: at,
                    ..row
                })
            }
            (other, _) => Err(format!("{other} cannot apply to this encounter")),
        }
    }
}

impl SingleModel for Encounters {
    const PROJECTION: &'static str = "encounter";
    const DATABASE: &'static str = "encounter_service";
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
}

/// The encounter projection (`encounter_service`).
pub type EncounterProjection = ModelProjection<Encounters>;

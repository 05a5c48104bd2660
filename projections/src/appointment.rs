//! The `appointment_service` read model: appointments with the patient's display name
//! denormalized (kept current when the patient's name changes, whichever arrives first), and
//! their status carried forward by the encounter started from them: `arrived` while it is in
//! progress, `fulfilled` once it is finished (whichever of the three topics arrives first).

use chrono::{DateTime, Utc};
use events::DomainEvent;
use events::appointment::{AppointmentCancelled, AppointmentScheduled};
use events::clinical::AppointmentStatus;
use events::clinical::Coding;
use events::encounter::{EncounterCompleted, EncounterStarted};
use events::patient::{PatientCreated, PatientUpdated};
use events::registry::{EventKind, kind};
use platform::db::Migration;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::runner::{Outcome, Projection, Record};
use crate::state::{IncomingEvent, StateModel, apply_state};

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "appointments",
    sql: "CREATE TABLE appointments (
            id UUID PRIMARY KEY,
            version BIGINT NOT NULL,
            patient_id UUID NOT NULL,
            patient_display TEXT,
            practitioner_id TEXT NOT NULL,
            start_at TIMESTAMPTZ NOT NULL,
            end_at TIMESTAMPTZ NOT NULL,
            status TEXT NOT NULL,
            service_type JSONB,
            description TEXT,
            cancel_reason TEXT,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL);
          CREATE INDEX appointments_patient ON appointments (patient_id, start_at);
          CREATE INDEX appointments_practitioner ON appointments (practitioner_id, start_at);
          CREATE TABLE patient_names (
            id UUID PRIMARY KEY,
            version BIGINT NOT NULL,
            display_name TEXT NOT NULL);",
},
Migration {
    version: 2,
    name: "appointment encounters",
    sql: "CREATE TABLE appointment_encounters (
            id UUID PRIMARY KEY,
            version BIGINT NOT NULL,
            appointment_id UUID,
            started_at TIMESTAMPTZ NOT NULL,
            finished_at TIMESTAMPTZ);
          CREATE INDEX appointment_encounters_appointment ON appointment_encounters (appointment_id);",
}];

/// Moves the booked (or arrived) appointments among `appointments` that an encounter was
/// started from to `arrived`, or `fulfilled` once it is finished. Order-independent: run after
/// either side is saved.
const CARRY_FORWARD: &str = "UPDATE appointments a
     SET status = CASE WHEN e.finished_at IS NULL THEN 'arrived' ELSE 'fulfilled' END,
         updated_at = GREATEST(a.updated_at, COALESCE(e.finished_at, e.started_at))
     FROM appointment_encounters e
     WHERE e.appointment_id = a.id AND a.status IN ('booked', 'arrived')
       AND a.status <> CASE WHEN e.finished_at IS NULL THEN 'arrived' ELSE 'fulfilled' END";

async fn carry_forward(
    conn: &mut PgConnection,
    column: &str,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("{CARRY_FORWARD} AND {column} = ANY($1)"))
        .bind(ids)
        .execute(conn)
        .await
        .map(|_| ())
}

/// An appointment row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppointmentRow {
    pub patient_id: Uuid,
    /// Filled from `patient_names` in SQL, not by the fold.
    pub patient_display: Option<String>,
    pub practitioner_id: String,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    /// booked | arrived | fulfilled | cancelled
    pub status: AppointmentStatus,
    pub service_type: Option<Coding>,
    pub description: Option<String>,
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The appointments table.
#[derive(Debug, Default, Clone, Copy)]
pub struct Appointments;

impl StateModel for Appointments {
    type Row = AppointmentRow;
    const TABLE: &'static str = "appointments";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "version",
        "patient_id",
        "patient_display",
        "practitioner_id",
        "start_at",
        "end_at",
        "status",
        "service_type",
        "description",
        "cancel_reason",
        "created_at",
        "updated_at",
    ];

    const EVENTS: &'static [EventKind] = &[
        kind::<AppointmentScheduled>(),
        kind::<AppointmentCancelled>(),
    ];

    fn fold(
        &self,
        row: Option<AppointmentRow>,
        event: &IncomingEvent,
    ) -> Result<AppointmentRow, String> {
        let at = event.envelope.occurred_at;
        match (event.envelope.event_type.as_str(), row) {
            (AppointmentScheduled::EVENT_TYPE, _) => {
                let e: AppointmentScheduled = event.payload()?;
                Ok(AppointmentRow {
                    patient_id: e.patient_id,
                    patient_display: None,
                    practitioner_id: e.practitioner_id,
                    start_at: e.start,
                    end_at: e.end,
                    status: AppointmentStatus::Booked,
                    service_type: e.service_type,
                    description: e.description,
                    cancel_reason: None,
                    created_at: at,
                    updated_at: at,
                })
            }
            (AppointmentCancelled::EVENT_TYPE, Some(row)) => {
                let e: AppointmentCancelled = event.payload()?;
                Ok(AppointmentRow {
                    status: AppointmentStatus::Cancelled,
                    cancel_reason: Some(e.reason),
                    updated_at: at,
                    ..row
                })
            }
            (other, _) => Err(format!("{other} cannot apply to this appointment")),
        }
    }

    async fn after_save(&self, conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE appointments a SET patient_display = n.display_name FROM patient_names n
             WHERE a.patient_id = n.id AND a.id = ANY($1)",
        )
        .bind(ids)
        .execute(&mut *conn)
        .await?;
        carry_forward(conn, "a.id", ids).await
    }
}

/// An encounter as far as its appointment cares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppointmentEncounterRow {
    pub appointment_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The encounters, for the status of the appointments they were started from.
#[derive(Debug, Default, Clone, Copy)]
pub struct AppointmentEncounters;

impl StateModel for AppointmentEncounters {
    type Row = AppointmentEncounterRow;
    const TABLE: &'static str = "appointment_encounters";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "version",
        "appointment_id",
        "started_at",
        "finished_at",
    ];

    const EVENTS: &'static [EventKind] =
        &[kind::<EncounterStarted>(), kind::<EncounterCompleted>()];

    fn fold(
        &self,
        row: Option<AppointmentEncounterRow>,
        event: &IncomingEvent,
    ) -> Result<AppointmentEncounterRow, String> {
        match (event.envelope.event_type.as_str(), row) {
            (EncounterStarted::EVENT_TYPE, _) => {
                let e: EncounterStarted = event.payload()?;
                Ok(AppointmentEncounterRow {
                    appointment_id: e.appointment_id,
                    started_at: e.started_at,
                    finished_at: None,
                })
            }
            (EncounterCompleted::EVENT_TYPE, Some(row)) => {
                let e: EncounterCompleted = event.payload()?;
                Ok(AppointmentEncounterRow {
                    finished_at: Some(e.ended_at),
                    ..row
                })
            }
            (other, _) => Err(format!("{other} cannot apply to this encounter")),
        }
    }

    async fn after_save(&self, conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
        carry_forward(conn, "e.id", ids).await
    }
}

/// The patients' display names, for the denormalized column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientNameRow {
    pub display_name: String,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PatientNames;

impl StateModel for PatientNames {
    type Row = PatientNameRow;
    const TABLE: &'static str = "patient_names";
    const COLUMNS: &'static [&'static str] = &["id", "version", "display_name"];

    const EVENTS: &'static [EventKind] = &[kind::<PatientCreated>(), kind::<PatientUpdated>()];

    fn fold(
        &self,
        _row: Option<PatientNameRow>,
        event: &IncomingEvent,
    ) -> Result<PatientNameRow, String> {
        let name = match event.envelope.event_type.as_str() {
            PatientCreated::EVENT_TYPE => event.payload::<PatientCreated>()?.demographics.name,
            PatientUpdated::EVENT_TYPE => event.payload::<PatientUpdated>()?.demographics.name,
            other => return Err(format!("unexpected event type {other}")),
        };
        Ok(PatientNameRow {
            display_name: name.display(),
        })
    }

    async fn after_save(&self, conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE appointments a SET patient_display = n.display_name FROM patient_names n
             WHERE a.patient_id = n.id AND n.id = ANY($1) AND a.patient_display IS DISTINCT FROM n.display_name",
        )
        .bind(ids)
        .execute(conn)
        .await
        .map(|_| ())
    }
}

/// The appointment projection (`appointment_service`).
#[derive(Debug, Default, Clone, Copy)]
pub struct AppointmentProjection;

impl Projection for AppointmentProjection {
    fn name(&self) -> &'static str {
        "appointment"
    }

    fn database(&self) -> &'static str {
        "appointment_service"
    }

    fn topics(&self) -> Vec<&'static str> {
        Appointments::EVENTS
            .iter()
            .chain(PatientNames::EVENTS)
            .chain(AppointmentEncounters::EVENTS)
            .map(|k| k.topic)
            .collect()
    }

    fn migrations(&self) -> &'static [Migration] {
        MIGRATIONS
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        records: &[Record],
    ) -> Result<Outcome, sqlx::Error> {
        let mut outcome = apply_state(&PatientNames, self.name(), conn, records).await?;
        outcome.merge(apply_state(&Appointments, self.name(), conn, records).await?);
        outcome.merge(apply_state(&AppointmentEncounters, self.name(), conn, records).await?);
        Ok(outcome)
    }
}

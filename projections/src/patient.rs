//! The `patient_service` read model: one row per patient with its current demographics, an
//! identifier index for lookups by MRN or national id, and each patient's care team — the
//! practitioners with an appointment or encounter with them, or who authored an observation
//! or a prescription for them — which decides whose records a practitioner reads without
//! breaking the glass.

use chrono::{DateTime, NaiveDate, Utc};
use events::DomainEvent;
use events::appointment::{AppointmentCancelled, AppointmentScheduled};
use events::encounter::EncounterStarted;
use events::medication::MedicationPrescribed;
use events::observation::ObservationCreated;
use events::patient::{
    Address, ContactPoint, Demographics, Identifier, PatientCreated, PatientUpdated,
};
use events::registry::{EventKind, kind};
use platform::db::Migration;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::runner::{Outcome, Projection, Record};
use crate::state::{IncomingEvent, StateModel, apply_state};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "patients",
        sql: "CREATE TABLE patients (
            id UUID PRIMARY KEY,
            version BIGINT NOT NULL,
            identifiers JSONB NOT NULL,
            given_names JSONB NOT NULL,
            family_name TEXT NOT NULL,
            gender TEXT NOT NULL,
            birth_date DATE NOT NULL,
            telecom JSONB NOT NULL,
            address JSONB,
            preferred_language TEXT,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL);
          CREATE INDEX patients_family_name ON patients (lower(family_name), id);
          CREATE INDEX patients_birth_date ON patients (birth_date);
          CREATE TABLE patient_identifiers (
            system TEXT NOT NULL,
            value TEXT NOT NULL,
            patient_id UUID NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
            PRIMARY KEY (system, value, patient_id));
          CREATE INDEX patient_identifiers_value ON patient_identifiers (value);",
    },
    Migration {
        version: 2,
        name: "care team",
        sql: "CREATE TABLE care_team (
            id UUID PRIMARY KEY,
            version BIGINT NOT NULL,
            patient_id UUID NOT NULL,
            practitioner_id TEXT NOT NULL,
            resource_type TEXT NOT NULL,
            since TIMESTAMPTZ NOT NULL);
          CREATE INDEX care_team_practitioner ON care_team (practitioner_id, patient_id);
          CREATE INDEX care_team_patient ON care_team (patient_id);",
    },
    Migration {
        version: 3,
        name: "care team: cancelled appointments",
        sql: "ALTER TABLE care_team ADD COLUMN active BOOLEAN NOT NULL DEFAULT true;",
    },
    Migration {
        version: 4,
        name: "identifiers found by patient",
        // Every batch replaces its patients' identifiers: without this index each batch
        // scanned the whole table, so the projector slowed as the model grew.
        sql: "CREATE INDEX patient_identifiers_patient ON patient_identifiers (patient_id);",
    },
];

/// A patient row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientRow {
    pub identifiers: Vec<Identifier>,
    pub given_names: Vec<String>,
    pub family_name: String,
    pub gender: String,
    pub birth_date: NaiveDate,
    pub telecom: Vec<ContactPoint>,
    pub address: Option<Address>,
    pub preferred_language: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The patients table.
#[derive(Debug, Default, Clone, Copy)]
pub struct Patients;

impl StateModel for Patients {
    type Row = PatientRow;
    const TABLE: &'static str = "patients";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "version",
        "identifiers",
        "given_names",
        "family_name",
        "gender",
        "birth_date",
        "telecom",
        "address",
        "preferred_language",
        "created_at",
        "updated_at",
    ];

    const EVENTS: &'static [EventKind] = &[kind::<PatientCreated>(), kind::<PatientUpdated>()];

    fn fold(&self, row: Option<PatientRow>, event: &IncomingEvent) -> Result<PatientRow, String> {
        let demographics: Demographics = match event.envelope.event_type.as_str() {
            PatientCreated::EVENT_TYPE => event.payload::<PatientCreated>()?.demographics,
            PatientUpdated::EVENT_TYPE => event.payload::<PatientUpdated>()?.demographics,
            other => return Err(format!("unexpected event type {other} on {}", event.topic)),
        };
        let at = event.envelope.occurred_at;
        Ok(PatientRow {
            identifiers: demographics.identifiers,
            given_names: demographics.name.given,
            family_name: demographics.name.family,
            gender: demographics.gender.as_str().to_string(),
            birth_date: demographics.birth_date,
            telecom: demographics.telecom,
            address: demographics.address,
            preferred_language: demographics.preferred_language,
            created_at: row.map_or(at, |r| r.created_at),
            updated_at: at,
        })
    }

    /// Refreshes the identifier index of the saved patients.
    async fn after_save(&self, conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
        // Joins with the ids rather than `= ANY($1)`, which the planner may evaluate against
        // every row of a table it believes small.
        sqlx::query(
            "DELETE FROM patient_identifiers p USING UNNEST($1::UUID[]) AS s (id) WHERE p.patient_id = s.id",
        )
        .bind(ids)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO patient_identifiers (system, value, patient_id)
             SELECT i->>'system', i->>'value', p.id
             FROM UNNEST($1::UUID[]) AS s (id) JOIN patients p ON p.id = s.id, jsonb_array_elements(p.identifiers) i
             ON CONFLICT DO NOTHING",
        )
        .bind(ids)
        .execute(conn)
        .await
        .map(|_| ())
    }
}

/// What puts a practitioner on a patient's care team: the resource (its id is the row's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CareTeamRow {
    pub patient_id: Uuid,
    pub practitioner_id: String,
    /// Appointment | Encounter | Observation | MedicationRequest
    pub resource_type: String,
    pub since: DateTime<Utc>,
    /// False once the appointment was cancelled: a booking that did not happen ties no one.
    pub active: bool,
}

/// The care team: one row per appointment, encounter, observation and medication request,
/// from the event that created it (the practitioner on a resource never changes); a
/// cancelled appointment's row stays, inactive.
#[derive(Debug, Default, Clone, Copy)]
pub struct CareTeam;

impl StateModel for CareTeam {
    type Row = CareTeamRow;
    const TABLE: &'static str = "care_team";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "version",
        "patient_id",
        "practitioner_id",
        "resource_type",
        "since",
        "active",
    ];

    const EVENTS: &'static [EventKind] = &[
        kind::<AppointmentScheduled>(),
        kind::<AppointmentCancelled>(),
        kind::<EncounterStarted>(),
        kind::<ObservationCreated>(),
        kind::<MedicationPrescribed>(),
    ];

    fn fold(&self, row: Option<CareTeamRow>, event: &IncomingEvent) -> Result<CareTeamRow, String> {
        let since = event.envelope.occurred_at;
        if event.envelope.event_type == AppointmentCancelled::EVENT_TYPE {
            let row = row.ok_or("a cancellation before its appointment")?;
            return Ok(CareTeamRow {
                active: false,
                ..row
            });
        }
        let (patient_id, practitioner_id, resource_type) = match event.envelope.event_type.as_str()
        {
            AppointmentScheduled::EVENT_TYPE => {
                let e: AppointmentScheduled = event.payload()?;
                (e.patient_id, e.practitioner_id, "Appointment")
            }
            EncounterStarted::EVENT_TYPE => {
                let e: EncounterStarted = event.payload()?;
                (e.patient_id, e.practitioner_id, "Encounter")
            }
            ObservationCreated::EVENT_TYPE => {
                let e: ObservationCreated = event.payload()?;
                (e.patient_id, e.performer_id, "Observation")
            }
            MedicationPrescribed::EVENT_TYPE => {
                let e: MedicationPrescribed = event.payload()?;
                (e.patient_id, e.requester_id, "MedicationRequest")
            }
            other => return Err(format!("unexpected event type {other} on {}", event.topic)),
        };
        Ok(CareTeamRow {
            patient_id,
            practitioner_id,
            resource_type: resource_type.to_string(),
            since: row.map_or(since, |r| r.since),
            active: true,
        })
    }
}

/// The patient projection (`patient_service`).
#[derive(Debug, Default, Clone, Copy)]
pub struct PatientProjection;

impl Projection for PatientProjection {
    fn name(&self) -> &'static str {
        "patient"
    }

    fn database(&self) -> &'static str {
        "patient_service"
    }

    fn topics(&self) -> Vec<&'static str> {
        Patients::EVENTS
            .iter()
            .chain(CareTeam::EVENTS)
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
        let mut outcome = apply_state(&Patients, self.name(), conn, records).await?;
        outcome.merge(apply_state(&CareTeam, self.name(), conn, records).await?);
        Ok(outcome)
    }
}

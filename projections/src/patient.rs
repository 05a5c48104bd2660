//! The `patient_service` read model: one row per patient with its current demographics, and
//! an identifier index for lookups by MRN or national id.

use chrono::{DateTime, NaiveDate, Utc};
use events::DomainEvent;
use events::patient::{
    Address, ContactPoint, Demographics, Identifier, PatientCreated, PatientUpdated,
};
use events::registry::{EventKind, kind};
use platform::db::Migration;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::state::{IncomingEvent, ModelProjection, SingleModel, StateModel};

pub const MIGRATIONS: &[Migration] = &[Migration {
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
}];

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
        sqlx::query("DELETE FROM patient_identifiers WHERE patient_id = ANY($1)")
            .bind(ids)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO patient_identifiers (system, value, patient_id)
             SELECT i->>'system', i->>'value', p.id FROM patients p, jsonb_array_elements(p.identifiers) i
             WHERE p.id = ANY($1) ON CONFLICT DO NOTHING",
        )
        .bind(ids)
        .execute(conn)
        .await
        .map(|_| ())
    }
}

impl SingleModel for Patients {
    const PROJECTION: &'static str = "patient";
    const DATABASE: &'static str = "patient_service";
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
}

/// The patient projection (`patient_service`).
pub type PatientProjection = ModelProjection<Patients>;

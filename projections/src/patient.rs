//! The `patient_service` read model: one row per patient with its current demographics, and
//! an identifier index for lookups by MRN or national id.

use events::DomainEvent;
use events::catalog::{PATIENT_CREATED, PATIENT_UPDATED};
use events::patient::{Demographics, PatientCreated, PatientUpdated};
use platform::db::Migration;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::runner::{ApplyError, IncomingEvent, Projection};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "patients",
        sql: "CREATE TABLE patients (
            id UUID PRIMARY KEY,
            version BIGINT NOT NULL,
            identifiers JSONB NOT NULL,
            given_names TEXT[] NOT NULL,
            family_name TEXT NOT NULL,
            gender TEXT NOT NULL,
            birth_date DATE NOT NULL,
            telecom JSONB NOT NULL,
            address JSONB,
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
        name: "preferred language",
        sql: "ALTER TABLE patients ADD COLUMN preferred_language TEXT;",
    },
];

/// The patient projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct PatientProjection;

impl PatientProjection {
    async fn write(
        tx: &mut Transaction<'static, Postgres>,
        event: &IncomingEvent,
        d: &Demographics,
    ) -> Result<(), ApplyError> {
        let e = &event.envelope;
        sqlx::query(
            "INSERT INTO patients (id, version, identifiers, given_names, family_name, gender, birth_date,
                                   telecom, address, preferred_language, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $11, $10, $10)
             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, identifiers = EXCLUDED.identifiers,
               given_names = EXCLUDED.given_names, family_name = EXCLUDED.family_name, gender = EXCLUDED.gender,
               birth_date = EXCLUDED.birth_date, telecom = EXCLUDED.telecom, address = EXCLUDED.address,
               preferred_language = EXCLUDED.preferred_language, updated_at = EXCLUDED.updated_at",
        )
        .bind(e.aggregate_id)
        .bind(e.aggregate_version)
        .bind(json(&d.identifiers))
        .bind(&d.name.given)
        .bind(&d.name.family)
        .bind(d.gender.as_str())
        .bind(d.birth_date)
        .bind(json(&d.telecom))
        .bind(d.address.as_ref().map(json))
        .bind(e.occurred_at)
        .bind(&d.preferred_language)
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM patient_identifiers WHERE patient_id = $1")
            .bind(e.aggregate_id)
            .execute(&mut **tx)
            .await?;
        let systems: Vec<&str> = d.identifiers.iter().map(|i| i.system.as_str()).collect();
        let values: Vec<&str> = d.identifiers.iter().map(|i| i.value.as_str()).collect();
        sqlx::query(
            "INSERT INTO patient_identifiers (system, value, patient_id)
             SELECT s, v, $3 FROM UNNEST($1::TEXT[], $2::TEXT[]) AS t (s, v) ON CONFLICT DO NOTHING",
        )
        .bind(&systems)
        .bind(&values)
        .bind(e.aggregate_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// A read-model column value as JSONB.
fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

impl Projection for PatientProjection {
    fn name(&self) -> &'static str {
        "patient"
    }

    fn topics(&self) -> &'static [&'static str] {
        &[PATIENT_CREATED, PATIENT_UPDATED]
    }

    fn migrations(&self) -> &'static [Migration] {
        MIGRATIONS
    }

    async fn version(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        aggregate_id: Uuid,
    ) -> Result<i64, sqlx::Error> {
        Ok(
            sqlx::query_scalar("SELECT version FROM patients WHERE id = $1")
                .bind(aggregate_id)
                .fetch_optional(&mut **tx)
                .await?
                .unwrap_or(0),
        )
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &IncomingEvent,
    ) -> Result<(), ApplyError> {
        let demographics = match event.envelope.event_type.as_str() {
            PatientCreated::EVENT_TYPE => event.payload::<PatientCreated>().map(|e| e.demographics),
            PatientUpdated::EVENT_TYPE => event.payload::<PatientUpdated>().map(|e| e.demographics),
            other => Err(format!("unexpected event type {other} on {}", event.topic)),
        }
        .map_err(ApplyError::Poison)?;
        Self::write(tx, event, &demographics).await
    }
}

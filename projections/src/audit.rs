//! The `audit_service` read model: an index of PHI accesses by patient, actor and time, for
//! the auditors' queries. Append-only: each access is one row, deduplicated on `event_id`.

use chrono::{DateTime, Utc};
use events::audit::PhiAccessed;
use events::catalog::AUDIT_PHI_ACCESS;
use platform::db::Migration;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::runner::{Outcome, Projection, Record};

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "phi accesses",
    sql: "CREATE TABLE phi_accesses (
            event_id UUID PRIMARY KEY,
            occurred_at TIMESTAMPTZ NOT NULL,
            patient_id UUID NOT NULL,
            actor_id TEXT NOT NULL,
            actor_role TEXT NOT NULL,
            action TEXT NOT NULL,
            resource_type TEXT NOT NULL,
            resource_ids JSONB NOT NULL,
            purpose_of_use TEXT NOT NULL,
            outcome TEXT NOT NULL,
            client_ip TEXT,
            user_agent TEXT,
            request_id TEXT NOT NULL,
            service TEXT NOT NULL,
            detail TEXT);
          CREATE INDEX phi_accesses_patient ON phi_accesses (patient_id, occurred_at);
          CREATE INDEX phi_accesses_actor ON phi_accesses (actor_id, occurred_at);
          CREATE INDEX phi_accesses_time ON phi_accesses (occurred_at);",
}];

#[derive(Debug, Serialize)]
struct AccessRow {
    event_id: Uuid,
    occurred_at: DateTime<Utc>,
    patient_id: Uuid,
    actor_id: String,
    actor_role: String,
    action: String,
    resource_type: String,
    resource_ids: Vec<String>,
    purpose_of_use: String,
    outcome: String,
    client_ip: Option<String>,
    user_agent: Option<String>,
    request_id: String,
    service: String,
    detail: Option<String>,
}

fn text<T: Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The audit projection (`audit_service`).
#[derive(Debug, Default, Clone, Copy)]
pub struct AuditProjection;

impl Projection for AuditProjection {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn database(&self) -> &'static str {
        "audit_service"
    }

    fn topics(&self) -> Vec<&'static str> {
        vec![AUDIT_PHI_ACCESS]
    }

    fn migrations(&self) -> &'static [Migration] {
        MIGRATIONS
    }

    fn rebuilds_from_event_store(&self) -> bool {
        false
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        records: &[Record],
    ) -> Result<Outcome, sqlx::Error> {
        let mut outcome = Outcome::default();
        let mut rows = Vec::new();
        for (index, record) in records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.topic == AUDIT_PHI_ACCESS)
        {
            match events::typed::from_value::<PhiAccessed>(&record.json) {
                Ok(a) => rows.push(AccessRow {
                    event_id: a.event_id,
                    occurred_at: a.occurred_at,
                    patient_id: a.patient_id,
                    actor_id: a.actor.id,
                    actor_role: a.actor.role.to_string(),
                    action: text(a.action),
                    resource_type: a.resource_type,
                    resource_ids: a.resource_ids,
                    purpose_of_use: a.purpose_of_use,
                    outcome: text(a.outcome),
                    client_ip: a.client_ip,
                    user_agent: a.user_agent,
                    request_id: a.request_id,
                    service: a.service,
                    detail: a.detail,
                }),
                Err(e) => outcome.poison.push((index, format!("PhiAccessed: {e}"))),
            }
        }
        if rows.is_empty() {
            return Ok(outcome);
        }
        let inserted = sqlx::query(
            "INSERT INTO phi_accesses SELECT * FROM jsonb_populate_recordset(NULL::phi_accesses, $1)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(serde_json::to_value(&rows).unwrap_or_default())
        .execute(conn)
        .await?
        .rows_affected();
        outcome.applied = inserted;
        outcome.duplicates = rows.len() as u64 - inserted;
        Ok(outcome)
    }
}

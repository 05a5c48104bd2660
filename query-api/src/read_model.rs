//! Queries over the `patient_service` read model.

use chrono::{DateTime, NaiveDate, Utc};
use events::patient::{Address, ContactPoint, Identifier};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// One patient as the read model holds it.
#[derive(Debug, Clone)]
pub struct PatientRow {
    pub id: Uuid,
    pub version: i64,
    pub identifiers: Vec<Identifier>,
    pub given_names: Vec<String>,
    pub family_name: String,
    pub gender: String,
    pub birth_date: NaiveDate,
    pub telecom: Vec<ContactPoint>,
    pub address: Option<Address>,
    pub preferred_language: Option<String>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, version, identifiers, given_names, family_name, gender, birth_date, telecom, address, preferred_language, updated_at";

fn patient(row: PgRow) -> Result<PatientRow, sqlx::Error> {
    let json = |name: &str| -> Result<serde_json::Value, sqlx::Error> { row.try_get(name) };
    let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
    Ok(PatientRow {
        id: row.try_get("id")?,
        version: row.try_get("version")?,
        identifiers: serde_json::from_value(json("identifiers")?).map_err(decode)?,
        given_names: serde_json::from_value(json("given_names")?).map_err(decode)?,
        family_name: row.try_get("family_name")?,
        gender: row.try_get("gender")?,
        birth_date: row.try_get("birth_date")?,
        telecom: serde_json::from_value(json("telecom")?).map_err(decode)?,
        address: row
            .try_get::<Option<serde_json::Value>, _>("address")?
            .map(serde_json::from_value)
            .transpose()
            .map_err(decode)?,
        preferred_language: row.try_get("preferred_language")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Search criteria; all given ones must match.
#[derive(Debug, Clone, Default)]
pub struct PatientSearch {
    /// Only this patient (the `patient` role sees only themselves).
    pub only: Option<Uuid>,
    /// Case-insensitive prefix of the family name.
    pub family: Option<String>,
    /// Case-insensitive prefix of any given name.
    pub given: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub gender: Option<String>,
    pub identifier_system: Option<String>,
    pub identifier_value: Option<String>,
}

/// The patient read model.
#[derive(Debug, Clone)]
pub struct Patients {
    pool: PgPool,
}

impl Patients {
    pub fn new(pool: PgPool) -> Self {
        Patients { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<PatientRow>, sqlx::Error> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM patients WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(patient)
            .transpose()
    }

    /// The version the read model holds for `id` (0 if absent).
    pub async fn version(&self, id: Uuid) -> Result<i64, sqlx::Error> {
        Ok(
            sqlx::query_scalar("SELECT version FROM patients WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(0),
        )
    }

    /// Up to `limit` patients matching `search` with ids after `after`, in id order
    /// (ids are time-ordered UUIDv7, so this is registration order).
    pub async fn search(
        &self,
        search: &PatientSearch,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<PatientRow>, sqlx::Error> {
        let prefix = |s: &Option<String>| {
            s.as_ref().map(|s| {
                format!(
                    "{}%",
                    s.to_lowercase()
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                )
            })
        };
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM patients p
             WHERE ($1::UUID IS NULL OR p.id = $1)
               AND ($2::TEXT IS NULL OR lower(p.family_name) LIKE $2)
               AND ($3::TEXT IS NULL OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(p.given_names) g WHERE lower(g) LIKE $3))
               AND ($4::DATE IS NULL OR p.birth_date = $4)
               AND ($5::TEXT IS NULL OR p.gender = $5)
               AND ($7::TEXT IS NULL OR EXISTS (SELECT 1 FROM patient_identifiers i
                     WHERE i.patient_id = p.id AND i.value = $7 AND ($6::TEXT IS NULL OR i.system = $6)))
               AND ($8::UUID IS NULL OR p.id > $8)
             ORDER BY p.id
             LIMIT $9"
        ))
        .bind(search.only)
        .bind(prefix(&search.family))
        .bind(prefix(&search.given))
        .bind(search.birth_date)
        .bind(&search.gender)
        .bind(&search.identifier_system)
        .bind(&search.identifier_value)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(patient)
        .collect()
    }
}

/// One PHI access as the audit index holds it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AccessRow {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub patient_id: Uuid,
    pub actor_id: String,
    pub actor_role: String,
    pub action: String,
    pub resource_type: String,
    pub resource_ids: Vec<String>,
    pub purpose_of_use: String,
    pub outcome: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: String,
    pub service: String,
    pub detail: Option<String>,
}

/// What an auditor searches the access log for; all given criteria must match.
#[derive(Debug, Clone, Default)]
pub struct AccessSearch {
    pub patient_id: Option<Uuid>,
    pub actor_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub purpose_of_use: Option<String>,
}

/// The PHI access index (`audit_service`).
#[derive(Debug, Clone)]
pub struct AccessLog {
    pool: PgPool,
}

impl AccessLog {
    pub fn new(pool: PgPool) -> Self {
        AccessLog { pool }
    }

    /// Up to `limit` accesses matching `search` after `after` (time, event id), oldest first.
    pub async fn search(
        &self,
        search: &AccessSearch,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<AccessRow>, sqlx::Error> {
        let query = sqlx::query_scalar(
            "SELECT to_jsonb(a) FROM phi_accesses a
             WHERE ($1::UUID IS NULL OR a.patient_id = $1)
               AND ($2::TEXT IS NULL OR a.actor_id = $2)
               AND ($3::TIMESTAMPTZ IS NULL OR a.occurred_at >= $3)
               AND ($4::TIMESTAMPTZ IS NULL OR a.occurred_at < $4)
               AND ($5::TEXT IS NULL OR a.action = $5)
               AND ($6::TEXT IS NULL OR a.outcome = $6)
               AND ($7::TEXT IS NULL OR a.purpose_of_use = $7)
               AND ($8::TIMESTAMPTZ IS NULL OR (a.occurred_at, a.event_id) > ($8, $9::UUID))
             ORDER BY a.occurred_at, a.event_id
             LIMIT $10",
        )
        .bind(search.patient_id)
        .bind(&search.actor_id)
        .bind(search.from)
        .bind(search.to)
        .bind(&search.action)
        .bind(&search.outcome)
        .bind(&search.purpose_of_use);
        keyset_page(query, after, limit, &self.pool).await
    }
}

/// One appointment as the appointment read model holds it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AppointmentRow {
    pub id: Uuid,
    pub version: i64,
    pub patient_id: Uuid,
    pub practitioner_id: String,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub status: String,
    pub service_type: Option<events::clinical::Coding>,
    pub description: Option<String>,
    pub cancel_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Which appointments or encounters; all given criteria must match. `from` is inclusive,
/// `to` exclusive (on the start).
#[derive(Debug, Clone, Default)]
pub struct TimelineSearch {
    pub patient_id: Option<Uuid>,
    pub practitioner_id: Option<String>,
    pub status: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Rows of `table` (with `patient_id`, `practitioner_id`, `status`, `id` and the start
/// column `start`) matching `search`, after `after` (start, id), by start. `table` and
/// `start` are this module's constants, never input.
async fn timeline<T: serde::de::DeserializeOwned>(
    pool: &PgPool,
    (table, start): (&'static str, &'static str),
    search: &TimelineSearch,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<T>, sqlx::Error> {
    let sql = format!(
        "SELECT to_jsonb(r) FROM {table} r
         WHERE ($1::UUID IS NULL OR r.patient_id = $1)
           AND ($2::TEXT IS NULL OR r.practitioner_id = $2)
           AND ($3::TEXT IS NULL OR r.status = $3)
           AND ($4::TIMESTAMPTZ IS NULL OR r.{start} >= $4)
           AND ($5::TIMESTAMPTZ IS NULL OR r.{start} < $5)
           AND ($6::TIMESTAMPTZ IS NULL OR (r.{start}, r.id) > ($6, $7::UUID))
         ORDER BY r.{start}, r.id
         LIMIT $8"
    );
    let query = sqlx::query_scalar(&sql)
        .bind(search.patient_id)
        .bind(&search.practitioner_id)
        .bind(&search.status)
        .bind(search.from)
        .bind(search.to);
    keyset_page(query, after, limit, pool).await
}

/// One row of `table` by id.
async fn by_id<T: serde::de::DeserializeOwned>(
    pool: &PgPool,
    table: &'static str,
    id: Uuid,
) -> Result<Option<T>, sqlx::Error> {
    let row: Option<serde_json::Value> = sqlx::query_scalar(&format!(
        "SELECT to_jsonb(r) FROM {table} r WHERE r.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(decode_rows(row.into_iter().collect())?.pop())
}

/// The appointment read model (`appointment_service`).
#[derive(Debug, Clone)]
pub struct Appointments {
    pool: PgPool,
}

impl Appointments {
    pub fn new(pool: PgPool) -> Self {
        Appointments { pool }
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<AppointmentRow>, sqlx::Error> {
        by_id(&self.pool, "appointments", id).await
    }

    /// Up to `limit` appointments matching `search` after `after` (start, id), by start.
    pub async fn search(
        &self,
        search: &TimelineSearch,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<AppointmentRow>, sqlx::Error> {
        timeline(
            &self.pool,
            ("appointments", "start_at"),
            search,
            after,
            limit,
        )
        .await
    }
}

/// One encounter as the encounter read model holds it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct EncounterRow {
    pub id: Uuid,
    pub version: i64,
    pub patient_id: Uuid,
    pub practitioner_id: String,
    pub appointment_id: Option<Uuid>,
    pub class_code: String,
    pub class_display: Option<String>,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub discharge_disposition: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The encounter read model (`encounter_service`).
#[derive(Debug, Clone)]
pub struct Encounters {
    pool: PgPool,
}

impl Encounters {
    pub fn new(pool: PgPool) -> Self {
        Encounters { pool }
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<EncounterRow>, sqlx::Error> {
        by_id(&self.pool, "encounters", id).await
    }

    /// Up to `limit` encounters matching `search` after `after` (start, id), by start.
    pub async fn search(
        &self,
        search: &TimelineSearch,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<EncounterRow>, sqlx::Error> {
        timeline(
            &self.pool,
            ("encounters", "started_at"),
            search,
            after,
            limit,
        )
        .await
    }
}

/// A keyset page: `query` with its last three parameters bound to the `(time, id)` to start
/// after and the row limit, its rows read as their Rust type.
async fn keyset_page<'q, T: serde::de::DeserializeOwned>(
    query: sqlx::query::QueryScalar<
        'q,
        sqlx::Postgres,
        serde_json::Value,
        sqlx::postgres::PgArguments,
    >,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
    pool: &PgPool,
) -> Result<Vec<T>, sqlx::Error> {
    let rows = query
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    decode_rows(rows)
}

/// Rows read as `to_jsonb(row)`, as their Rust type (unknown columns are ignored).
fn decode_rows<T: serde::de::DeserializeOwned>(
    rows: Vec<serde_json::Value>,
) -> Result<Vec<T>, sqlx::Error> {
    rows.into_iter()
        .map(|row| serde_json::from_value(row).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .collect()
}

/// One observation as the laboratory read model holds it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ObservationRow {
    pub id: Uuid,
    pub version: i64,
    pub patient_id: Uuid,
    pub encounter_id: Option<Uuid>,
    pub status: String,
    pub category: String,
    pub code_system: String,
    pub code: String,
    pub code_display: Option<String>,
    pub value_quantity: Option<f64>,
    pub value_unit: Option<String>,
    pub value_coding: Option<events::clinical::Coding>,
    pub value_string: Option<String>,
    pub effective_at: DateTime<Utc>,
    pub performer_id: String,
}

/// One patient's observations; all given criteria must match (`from` inclusive, `to`
/// exclusive, on the effective time).
#[derive(Debug, Clone)]
pub struct ObservationSearch {
    pub patient_id: Uuid,
    pub code: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub performer_id: Option<String>,
}

/// The laboratory read model (`laboratory_service`).
#[derive(Debug, Clone)]
pub struct Observations {
    pool: PgPool,
}

impl Observations {
    pub fn new(pool: PgPool) -> Self {
        Observations { pool }
    }

    /// Up to `limit` observations matching `search` after `after` (effective time, id), oldest
    /// first.
    pub async fn search(
        &self,
        search: &ObservationSearch,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<ObservationRow>, sqlx::Error> {
        let query = sqlx::query_scalar(
            "SELECT to_jsonb(o) FROM observations o
             WHERE o.patient_id = $1
               AND ($2::TEXT IS NULL OR o.code = $2)
               AND ($3::TIMESTAMPTZ IS NULL OR o.effective_at >= $3)
               AND ($4::TIMESTAMPTZ IS NULL OR o.effective_at < $4)
               AND ($5::TEXT IS NULL OR o.performer_id = $5)
               AND ($6::TIMESTAMPTZ IS NULL OR (o.effective_at, o.id) > ($6, $7::UUID))
             ORDER BY o.effective_at, o.id
             LIMIT $8",
        )
        .bind(search.patient_id)
        .bind(&search.code)
        .bind(search.from)
        .bind(search.to)
        .bind(&search.performer_id);
        keyset_page(query, after, limit, &self.pool).await
    }
}

/// One medication request as the pharmacy read model holds it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct MedicationRequestRow {
    pub id: Uuid,
    pub version: i64,
    pub patient_id: Uuid,
    pub encounter_id: Option<Uuid>,
    pub medication_system: String,
    pub medication_code: String,
    pub medication_display: Option<String>,
    pub status: String,
    pub intent: String,
    pub dosage: Option<events::medication::Dosage>,
    pub dispense_quantity: Option<events::clinical::Quantity>,
    pub refills: Option<i32>,
    pub authored_on: DateTime<Utc>,
    pub requester_id: String,
    pub note: Option<String>,
}

/// The pharmacy read model (`pharmacy_service`).
#[derive(Debug, Clone)]
pub struct MedicationRequests {
    pool: PgPool,
}

impl MedicationRequests {
    pub fn new(pool: PgPool) -> Self {
        MedicationRequests { pool }
    }

    /// Up to `limit` of `patient`'s requests (optionally one `status`, one `requester`) after
    /// `after` (authored time, id), oldest first.
    pub async fn search(
        &self,
        patient: Uuid,
        status: Option<&str>,
        requester: Option<&str>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<MedicationRequestRow>, sqlx::Error> {
        let query = sqlx::query_scalar(
            "SELECT to_jsonb(m) FROM medication_requests m
             WHERE m.patient_id = $1
               AND ($2::TEXT IS NULL OR m.status = $2)
               AND ($3::TEXT IS NULL OR m.requester_id = $3)
               AND ($4::TIMESTAMPTZ IS NULL OR (m.authored_on, m.id) > ($4, $5::UUID))
             ORDER BY m.authored_on, m.id
             LIMIT $6",
        )
        .bind(patient)
        .bind(status)
        .bind(requester);
        keyset_page(query, after, limit, &self.pool).await
    }
}

/// Where the version of each aggregate's read-model row is, for consistency waits.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    tables: Vec<(events::registry::Aggregate, PgPool, &'static str)>,
}

impl Versions {
    /// `tables`: each aggregate with its read model's pool and table (this module's names).
    pub fn new(tables: Vec<(events::registry::Aggregate, PgPool, &'static str)>) -> Self {
        Versions { tables }
    }

    /// The version the read model holds for `id` (0 if absent); `None` if this API serves
    /// no read model of `aggregate`.
    pub async fn version(
        &self,
        aggregate: events::registry::Aggregate,
        id: Uuid,
    ) -> Option<Result<i64, sqlx::Error>> {
        let (_, pool, table) = self.tables.iter().find(|(a, _, _)| *a == aggregate)?;
        Some(
            sqlx::query_scalar::<_, i64>(&format!("SELECT version FROM {table} WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
                .map(|v| v.unwrap_or(0)),
        )
    }
}

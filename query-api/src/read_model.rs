//! Queries over the read models the API serves. Every statement goes through a
//! [`ReadPool`], which counts it (`healthplane_read_model_statements_total{database}`), so
//! an operator — and the no-N+1 test — sees how many statements requests cost.
//!
//! The per-patient reads (`*_of`) take many patients at once: one statement with a
//! `LATERAL` page per patient, which is what the nested connections' DataLoaders call.

use std::collections::HashMap;
use std::marker::PhantomData;

use chrono::{DateTime, NaiveDate, Utc};
use events::patient::{Address, ContactPoint, Identifier};
use platform::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// A place in a time-ordered list: (time, id).
pub type Position = (DateTime<Utc>, Uuid);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabel {
    database: String,
}

/// The statements issued to each read model, by database.
#[derive(Debug, Clone, Default)]
pub struct StatementCounter(Family<DatabaseLabel, Counter>);

impl StatementCounter {
    pub fn register(metrics: &Metrics) -> Self {
        StatementCounter(metrics.register(
            "read_model_statements",
            "SQL statements the query API issued to each read model",
            Family::default(),
        ))
    }
}

/// A read model's pool; each use is one statement, counted.
#[derive(Debug, Clone)]
pub struct ReadPool {
    pool: PgPool,
    statements: Counter,
}

impl ReadPool {
    /// `database` names the read model in the statement counter.
    pub fn new(pool: PgPool, database: &str, counter: &StatementCounter) -> Self {
        let statements = counter
            .0
            .get_or_create(&DatabaseLabel {
                database: database.to_string(),
            })
            .clone();
        ReadPool { pool, statements }
    }

    /// The pool, for one statement.
    pub fn statement(&self) -> &PgPool {
        self.statements.inc();
        &self.pool
    }

    /// The pool without counting (health checks).
    pub fn uncounted(&self) -> &PgPool {
        &self.pool
    }
}

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
    /// Only the patients in this practitioner's care.
    pub care_of: Option<String>,
    /// Case-insensitive prefix of the family name.
    pub family: Option<String>,
    /// Case-insensitive prefix of any given name.
    pub given: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub gender: Option<String>,
    pub identifier_system: Option<String>,
    pub identifier_value: Option<String>,
}

/// The patient read model, with the care team.
#[derive(Debug, Clone)]
pub struct Patients {
    db: ReadPool,
}

impl Patients {
    pub fn new(db: ReadPool) -> Self {
        Patients { db }
    }

    pub fn db(&self) -> &ReadPool {
        &self.db
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<PatientRow>, sqlx::Error> {
        Ok(self.get_many(&[id]).await?.pop())
    }

    /// The patients of `ids` there are, in one statement.
    pub async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<PatientRow>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM patients WHERE id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(self.db.statement())
        .await?
        .into_iter()
        .map(patient)
        .collect()
    }

    /// Which of `patients` are in `practitioner`'s care, in one statement.
    pub async fn in_care(
        &self,
        practitioner: &str,
        patients: &[Uuid],
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT patient_id FROM care_team
             WHERE practitioner_id = $1 AND patient_id = ANY($2) AND active",
        )
        .bind(practitioner)
        .bind(patients)
        .fetch_all(self.db.statement())
        .await
    }

    /// Up to `limit` of the patients in `practitioner`'s care.
    pub async fn care_of(&self, practitioner: &str, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT patient_id FROM care_team WHERE practitioner_id = $1 AND active LIMIT $2",
        )
        .bind(practitioner)
        .bind(limit)
        .fetch_all(self.db.statement())
        .await
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
               AND ($10::TEXT IS NULL OR EXISTS (SELECT 1 FROM care_team c
                     WHERE c.practitioner_id = $10 AND c.patient_id = p.id AND c.active))
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
        .bind(&search.care_of)
        .fetch_all(self.db.statement())
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
    db: ReadPool,
}

impl AccessLog {
    pub fn new(db: ReadPool) -> Self {
        AccessLog { db }
    }

    /// Up to `limit` accesses matching `search` after `after` (time, event id), oldest first.
    pub async fn search(
        &self,
        search: &AccessSearch,
        after: Option<Position>,
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
        keyset_page(query, after, limit, &self.db).await
    }
}

/// A row of one patient's.
pub trait OfPatient {
    fn patient_id(&self) -> Uuid;
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
    /// Only these patients (a patient's own, a practitioner's care team).
    pub patient_ids: Option<Vec<Uuid>>,
    pub practitioner_id: Option<String>,
    pub filter: TimelineFilter,
}

/// What a patient's appointments or encounters are narrowed to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TimelineFilter {
    pub status: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// A read-model table of patients' resources ordered in time: the table, its time column
/// (this module's constants, never input).
type Timeline = (&'static str, &'static str);

/// Rows of `table` (with `patient_id`, `practitioner_id`, `status`, `id` and the start
/// column `start`) matching `search`, after `after` (start, id), by start. `table` and
/// `start` are this module's constants, never input.
async fn timeline<T: serde::de::DeserializeOwned>(
    db: &ReadPool,
    (table, start): Timeline,
    search: &TimelineSearch,
    after: Option<Position>,
    limit: i64,
) -> Result<Vec<T>, sqlx::Error> {
    let sql = format!(
        "SELECT to_jsonb(r) FROM {table} r
         WHERE ($1::UUID[] IS NULL OR r.patient_id = ANY($1))
           AND ($2::TEXT IS NULL OR r.practitioner_id = $2)
           AND ($3::TEXT IS NULL OR r.status = $3)
           AND ($4::TIMESTAMPTZ IS NULL OR r.{start} >= $4)
           AND ($5::TIMESTAMPTZ IS NULL OR r.{start} < $5)
           AND ($6::TIMESTAMPTZ IS NULL OR (r.{start}, r.id) > ($6, $7::UUID))
         ORDER BY r.{start}, r.id
         LIMIT $8"
    );
    let query = sqlx::query_scalar(&sql)
        .bind(&search.patient_ids)
        .bind(&search.practitioner_id)
        .bind(&search.filter.status)
        .bind(search.filter.from)
        .bind(search.filter.to);
    keyset_page(query, after, limit, db).await
}

type JsonQuery<'q> =
    sqlx::query::QueryScalar<'q, sqlx::Postgres, serde_json::Value, sqlx::postgres::PgArguments>;

/// What to read of each patient's rows: a page, or how many there are.
#[derive(Debug, Clone, Copy)]
pub enum Window {
    /// Up to `limit` rows after `after`.
    Page { after: Option<Position>, limit: i64 },
    /// The count of the rows (as [`PatientCount`]s; patients with none are left out).
    Count,
}

/// How many rows one patient has.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PatientCount {
    pub patient_id: Uuid,
    pub count: i64,
}

/// A page (or the count) of each of `patients`' rows of `table`, ordered by (`time`, id), in
/// one statement: `conditions` narrow them (parameters from `$5`, bound by `bind`); `$1` are
/// the patients, `$2`/`$3` the (time, id) to start after, `$4` the rows per patient (all
/// three unset for a count).
async fn pages_of(
    db: &ReadPool,
    (table, time): Timeline,
    conditions: &'static str,
    patients: &[Uuid],
    window: Window,
    bind: impl for<'q> FnOnce(JsonQuery<'q>) -> JsonQuery<'q>,
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    let sql = match window {
        Window::Page { .. } => format!(
            "SELECT to_jsonb(r) FROM unnest($1::UUID[]) AS p (id)
             CROSS JOIN LATERAL (
               SELECT * FROM {table} t
               WHERE t.patient_id = p.id {conditions}
                 AND ($2::TIMESTAMPTZ IS NULL OR (t.{time}, t.id) > ($2, $3::UUID))
               ORDER BY t.{time}, t.id
               LIMIT $4) r
             ORDER BY r.patient_id, r.{time}, r.id"
        ),
        Window::Count => format!(
            "SELECT jsonb_build_object('patient_id', t.patient_id, 'count', count(*))
             FROM {table} t
             WHERE t.patient_id = ANY($1) {conditions}
               AND ($2::TIMESTAMPTZ IS NULL OR (t.{time}, t.id) > ($2, $3::UUID))
               AND $4::BIGINT IS NULL
             GROUP BY t.patient_id"
        ),
    };
    let (after, limit) = match window {
        Window::Page { after, limit } => (after, Some(limit)),
        Window::Count => (None, None),
    };
    let query = sqlx::query_scalar(&sql)
        .bind(patients)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit);
    bind(query).fetch_all(db.statement()).await
}

/// The rows of `table` with the given ids, in one statement.
async fn by_ids<T: serde::de::DeserializeOwned>(
    db: &ReadPool,
    table: &'static str,
    ids: &[Uuid],
) -> Result<Vec<T>, sqlx::Error> {
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(&format!(
        "SELECT to_jsonb(r) FROM {table} r WHERE r.id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(db.statement())
    .await?;
    decode_rows(rows)
}

/// A read model of appointments or encounters (`appointment_service`, `encounter_service`):
/// one table of patients' records ordered by their start, filtered alike.
#[derive(Debug, Clone)]
pub struct TimelineModel<R> {
    db: ReadPool,
    /// The table and its start column.
    table: Timeline,
    /// `TimelineFilter` as SQL on that table (parameters `$5`–`$7`).
    conditions: &'static str,
    row: PhantomData<fn() -> R>,
}

/// The appointment read model.
pub type Appointments = TimelineModel<AppointmentRow>;
/// The encounter read model.
pub type Encounters = TimelineModel<EncounterRow>;

impl Appointments {
    pub fn new(db: ReadPool) -> Self {
        TimelineModel::on(
            db,
            ("appointments", "start_at"),
            "AND ($5::TEXT IS NULL OR t.status = $5)
             AND ($6::TIMESTAMPTZ IS NULL OR t.start_at >= $6)
             AND ($7::TIMESTAMPTZ IS NULL OR t.start_at < $7)",
        )
    }
}

impl Encounters {
    pub fn new(db: ReadPool) -> Self {
        TimelineModel::on(
            db,
            ("encounters", "started_at"),
            "AND ($5::TEXT IS NULL OR t.status = $5)
             AND ($6::TIMESTAMPTZ IS NULL OR t.started_at >= $6)
             AND ($7::TIMESTAMPTZ IS NULL OR t.started_at < $7)",
        )
    }
}

impl<R: serde::de::DeserializeOwned> TimelineModel<R> {
    fn on(db: ReadPool, table: Timeline, conditions: &'static str) -> Self {
        TimelineModel {
            db,
            table,
            conditions,
            row: PhantomData,
        }
    }

    pub async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<R>, sqlx::Error> {
        by_ids(&self.db, self.table.0, ids).await
    }

    /// Up to `limit` records matching `search` after `after` (start, id), by start.
    pub async fn search(
        &self,
        search: &TimelineSearch,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<R>, sqlx::Error> {
        timeline(&self.db, self.table, search, after, limit).await
    }

    /// A page (or the count) of the records of each of `patients` matching `filter`, by start.
    pub async fn of(
        &self,
        patients: &[Uuid],
        filter: &TimelineFilter,
        window: Window,
    ) -> Result<Vec<serde_json::Value>, sqlx::Error> {
        let (status, from, to) = (filter.status.clone(), filter.from, filter.to);
        pages_of(
            &self.db,
            self.table,
            self.conditions,
            patients,
            window,
            |q| q.bind(status).bind(from).bind(to),
        )
        .await
    }
}

impl OfPatient for AppointmentRow {
    fn patient_id(&self) -> Uuid {
        self.patient_id
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

impl OfPatient for EncounterRow {
    fn patient_id(&self) -> Uuid {
        self.patient_id
    }
}

/// A keyset page: `query` with its last three parameters bound to the `(time, id)` to start
/// after and the row limit, its rows read as their Rust type.
async fn keyset_page<T: serde::de::DeserializeOwned>(
    query: JsonQuery<'_>,
    after: Option<Position>,
    limit: i64,
    db: &ReadPool,
) -> Result<Vec<T>, sqlx::Error> {
    let rows = query
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit)
        .fetch_all(db.statement())
        .await?;
    decode_rows(rows)
}

/// Rows read as `to_jsonb(row)`, as their Rust type (unknown columns are ignored).
pub fn decode_rows<T: serde::de::DeserializeOwned>(
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

impl OfPatient for ObservationRow {
    fn patient_id(&self) -> Uuid {
        self.patient_id
    }
}

/// What a patient's observations are narrowed to (`from` inclusive, `to` exclusive, on the
/// effective time).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ObservationFilter {
    /// The LOINC code.
    pub code: Option<String>,
    /// e.g. vital-signs, laboratory.
    pub category: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// The laboratory read model (`laboratory_service`).
#[derive(Debug, Clone)]
pub struct Observations {
    db: ReadPool,
}

impl Observations {
    pub fn new(db: ReadPool) -> Self {
        Observations { db }
    }

    /// A page (or the count) of the observations of each of `patients` matching `filter`,
    /// by effective time, oldest first.
    pub async fn of(
        &self,
        patients: &[Uuid],
        filter: &ObservationFilter,
        window: Window,
    ) -> Result<Vec<serde_json::Value>, sqlx::Error> {
        let f = filter.clone();
        pages_of(
            &self.db,
            ("observations", "effective_at"),
            "AND ($5::TEXT IS NULL OR t.code = $5)
             AND ($6::TEXT IS NULL OR t.category = $6)
             AND ($7::TIMESTAMPTZ IS NULL OR t.effective_at >= $7)
             AND ($8::TIMESTAMPTZ IS NULL OR t.effective_at < $8)",
            patients,
            window,
            |q| q.bind(f.code).bind(f.category).bind(f.from).bind(f.to),
        )
        .await
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

impl OfPatient for MedicationRequestRow {
    fn patient_id(&self) -> Uuid {
        self.patient_id
    }
}

/// What a patient's medication requests are narrowed to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MedicationRequestFilter {
    pub status: Option<String>,
    /// The RxNorm code.
    pub code: Option<String>,
}

/// The pharmacy read model (`pharmacy_service`).
#[derive(Debug, Clone)]
pub struct MedicationRequests {
    db: ReadPool,
}

impl MedicationRequests {
    pub fn new(db: ReadPool) -> Self {
        MedicationRequests { db }
    }

    /// A page (or the count) of the requests of each of `patients` matching `filter`, by
    /// authoring time, oldest first.
    pub async fn of(
        &self,
        patients: &[Uuid],
        filter: &MedicationRequestFilter,
        window: Window,
    ) -> Result<Vec<serde_json::Value>, sqlx::Error> {
        let f = filter.clone();
        pages_of(
            &self.db,
            ("medication_requests", "authored_on"),
            "AND ($5::TEXT IS NULL OR t.status = $5)
             AND ($6::TEXT IS NULL OR t.medication_code = $6)",
            patients,
            window,
            |q| q.bind(f.status).bind(f.code),
        )
        .await
    }
}

/// Rows grouped by their patient, in the order given.
pub fn by_patient<R: OfPatient>(rows: Vec<R>) -> HashMap<Uuid, Vec<R>> {
    let mut grouped: HashMap<Uuid, Vec<R>> = HashMap::new();
    for row in rows {
        grouped.entry(row.patient_id()).or_default().push(row);
    }
    grouped
}

/// Where the version of each aggregate's read-model row is, for consistency waits.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    tables: Vec<(events::registry::Aggregate, ReadPool, &'static str)>,
    care_team: Option<ReadPool>,
}

impl Versions {
    /// `tables`: each aggregate with its read model's pool and table (this module's names);
    /// `care_team`: the patient read model, whose care team a clinical record must also be
    /// on before a practitioner's read of the patient can see it.
    pub fn new(
        tables: Vec<(events::registry::Aggregate, ReadPool, &'static str)>,
        care_team: Option<ReadPool>,
    ) -> Self {
        Versions { tables, care_team }
    }

    /// The version the read model holds for `id` (0 if absent, or while a clinical record
    /// is not yet on the care team); `None` if this API serves no read model of `aggregate`.
    pub async fn version(
        &self,
        aggregate: events::registry::Aggregate,
        id: Uuid,
    ) -> Option<Result<i64, sqlx::Error>> {
        let (_, db, table) = self.tables.iter().find(|(a, _, _)| *a == aggregate)?;
        let version = async {
            if let (Some(care), true) = (
                &self.care_team,
                aggregate != events::registry::Aggregate::Patient,
            ) {
                let on_team: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM care_team WHERE id = $1)")
                        .bind(id)
                        .fetch_one(care.statement())
                        .await?;
                if !on_team {
                    return Ok(0);
                }
            }
            sqlx::query_scalar::<_, i64>(&format!("SELECT version FROM {table} WHERE id = $1"))
                .bind(id)
                .fetch_optional(db.statement())
                .await
                .map(|v| v.unwrap_or(0))
        };
        Some(version.await)
    }
}

impl OfPatient for AccessRow {
    fn patient_id(&self) -> Uuid {
        self.patient_id
    }
}

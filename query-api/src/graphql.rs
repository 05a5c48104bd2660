//! The GraphQL schema the portals query, and its root resolvers. Each resolver asks
//! [`crate::access`] whether the caller may read the patient, reads the read model (through
//! the request's DataLoaders), and notes what it returns in the request's audit trail, which
//! is written and acknowledged before the answer leaves (see `http.rs`).

use std::sync::Arc;

use async_graphql::{
    Context, EmptyMutation, EmptySubscription, ErrorExtensions, ID, Object, Schema,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, Utc};
use events::audit::{AccessAction, AccessOutcome};
use platform::auth::Caller;
use uuid::Uuid;

use crate::access::{self, Scope};
use crate::audit::RequestAudit;
use crate::loaders::{ById, CountOf, Fetch, PageOf, RequestLoader, Resource};
use crate::read_model::{
    AccessLog, AccessSearch, AppointmentRow, Appointments, EncounterRow, Encounters,
    MedicationRequestRow, MedicationRequests, ObservationFilter, ObservationRow, Observations,
    OfPatient, PatientSearch, Patients, Position, TimelineFilter, TimelineSearch,
};
use crate::types::{
    Appointment, AppointmentConnection, AppointmentFilter, Encounter, EncounterConnection,
    EncounterFilter, MedicationRequestConnection, ObservationConnection, PageInfo, Patient,
    PatientConnection, PatientEdge, PatientFilter, PhiAccessConnection, PhiAccessFilter,
    appointment_filter, encounter_filter, medication_request_filter,
};

/// The schema served on `/graphql`.
pub type PortalSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// Deepest query accepted (query bombs are refused before any read).
pub const MAX_DEPTH: usize = 10;
/// Most complex query accepted: every field selected costs 1, and a connection's selection
/// costs once per item of the page it asks for (`first`), so 15 aliases of
/// `patients(first: 100)` cannot return 1,500 patients.
pub const MAX_COMPLEXITY: usize = 10_000;
/// Largest page.
pub const MAX_PAGE: i32 = 100;
/// Most patients a practitioner's list across their care (appointments, encounters without
/// a patient) covers.
pub const MAX_CARE_LIST: usize = 10_000;
/// The page size when `first` is not given.
pub const DEFAULT_PAGE: i32 = 20;

/// Per-request data: the caller, what they may read, the request's loaders and audit trail.
pub struct RequestData {
    pub caller: Caller,
    /// The one role the request acts in (and is audited as).
    pub role: events::Role,
    /// Whose records the caller may read, or why none.
    pub scope: Result<Scope, &'static str>,
    pub models: Arc<ReadModels>,
    pub loader: RequestLoader,
    pub audit: Arc<RequestAudit>,
}

/// The read models the schema serves.
#[derive(Clone)]
pub struct ReadModels {
    pub patients: Patients,
    pub appointments: Appointments,
    pub encounters: Encounters,
    pub observations: Observations,
    pub medication_requests: MedicationRequests,
    pub access_log: AccessLog,
}

pub fn build_schema() -> PortalSchema {
    Schema::build(Query, EmptyMutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

fn coded(message: impl Into<String>, code: &'static str) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

/// A read model that failed: `UNAVAILABLE` (the cause is logged, never answered), or
/// `BAD_USER_INPUT` for an argument PostgreSQL cannot use (SQLSTATE class 22, e.g. a NUL byte).
pub fn unavailable(e: &sqlx::Error) -> async_graphql::Error {
    if let sqlx::Error::Database(db) = e
        && db.code().is_some_and(|c| c.starts_with("22"))
    {
        return coded(
            format!("an argument cannot be used: {}", db.message()),
            "BAD_USER_INPUT",
        );
    }
    tracing::error!(error = %platform::db::loggable(e), "read model unavailable");
    coded("the read model is unavailable; retry later", "UNAVAILABLE")
}

fn cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("patient:{id}"))
}

fn parse_cursor(cursor: &str) -> async_graphql::Result<Uuid> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("patient:").and_then(|id| id.parse().ok()))
        .ok_or_else(|| coded("`after` is not a cursor from this API", "BAD_USER_INPUT"))
}

/// `first` checked: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when absent.
fn page_size(first: Option<i32>) -> async_graphql::Result<usize> {
    let first = first.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(coded(
            format!("`first` must be between 1 and {MAX_PAGE}"),
            "BAD_USER_INPUT",
        ));
    }
    Ok(first as usize)
}

/// The cost of a connection field: its selection once per item of the page.
pub fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let items = first.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize;
    items.saturating_mul(child_complexity).saturating_add(1)
}

/// An edge of a Relay connection.
pub trait Edge {
    fn cursor(&self) -> &str;
}

/// A row listed in a connection, ordered by (time, id).
pub trait Listed: OfPatient + Sized {
    /// The connection's name, which tags its cursors.
    const TAG: &'static str;
    /// The FHIR resource type, as audited.
    const RESOURCE_TYPE: &'static str;
    type Edge: Edge;
    /// Its place in the order: (time, id).
    fn key(&self) -> (DateTime<Utc>, Uuid);
    fn edge(self, cursor: String) -> Self::Edge;
}

/// A cursor over `(time, id)` ordered rows, tagged with its connection's name.
fn time_cursor(tag: &str, (at, id): (DateTime<Utc>, Uuid)) -> String {
    URL_SAFE_NO_PAD.encode(format!("{tag}:{}:{id}", at.timestamp_micros()))
}

fn parse_time_cursor(tag: &str, cursor: &str) -> async_graphql::Result<(DateTime<Utc>, Uuid)> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (micros, id) = s.strip_prefix(tag)?.strip_prefix(':')?.split_once(':')?;
            Some((
                DateTime::from_timestamp_micros(micros.parse().ok()?)?,
                id.parse().ok()?,
            ))
        })
        .ok_or_else(|| {
            coded(
                format!("`after` is not a cursor from {tag}"),
                "BAD_USER_INPUT",
            )
        })
}

/// The `(first, after)` of a connection of `R`, checked.
fn paging<R: Listed>(
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<(usize, Option<Position>)> {
    let first = page_size(first)?;
    let after = after
        .as_deref()
        .map(|c| parse_time_cursor(R::TAG, c))
        .transpose()?;
    Ok((first, after))
}

/// A page of `rows` (read with one more than `first`, to learn whether more follow) as
/// edges and page info, each returned resource noted in the audit trail as a search of its
/// patient's.
fn page<R, E: Edge>(
    request: &RequestData,
    resource_type: &str,
    mut rows: Vec<R>,
    first: usize,
    after_given: bool,
    audited: impl Fn(&R) -> (Uuid, String),
    edge: impl Fn(R) -> E,
) -> (Vec<E>, PageInfo) {
    let has_next_page = rows.len() > first;
    rows.truncate(first);
    for row in &rows {
        let (patient, id) = audited(row);
        request.audit.note(
            patient,
            AccessAction::Search,
            resource_type,
            [id],
            AccessOutcome::Success,
            None,
        );
    }
    let edges: Vec<E> = rows.into_iter().map(edge).collect();
    let page_info = PageInfo {
        has_next_page,
        has_previous_page: after_given,
        start_cursor: edges.first().map(|e| e.cursor().to_string()),
        end_cursor: edges.last().map(|e| e.cursor().to_string()),
    };
    (edges, page_info)
}

/// [`page`] for rows of a [`Listed`] kind.
fn listed_page<R: Listed>(
    request: &RequestData,
    rows: Vec<R>,
    first: usize,
    after_given: bool,
) -> (Vec<R::Edge>, PageInfo) {
    page(
        request,
        R::RESOURCE_TYPE,
        rows,
        first,
        after_given,
        |row| (row.patient_id(), row.key().1.to_string()),
        |row| {
            let cursor = time_cursor(R::TAG, row.key());
            row.edge(cursor)
        },
    )
}

/// One patient's records of kind `R` as a connection (a nested field, or a top-level field
/// that names the patient): authorized, loaded with every other patient's page of the request
/// in one statement, audited.
pub async fn patient_connection<R: Resource + Listed>(
    ctx: &Context<'_>,
    patient: Uuid,
    filter: R::Filter,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<(Vec<R::Edge>, PageInfo, CountOf<R>)> {
    let request = ctx.data::<RequestData>()?;
    let (first, after) = paging::<R>(first, after)?;
    access::authorize(
        request,
        patient,
        AccessAction::Search,
        R::RESOURCE_TYPE,
        &[],
    )
    .await?;
    let count = CountOf::new(patient, filter.clone());
    let rows = request
        .loader
        .load_one(PageOf::<R>::new(patient, filter, after, first as i64 + 1))
        .await
        .map_err(|e| unavailable(&e))?
        .unwrap_or_default();
    note_empty_search::<R>(request, Some(patient), &rows);
    let (edges, page_info) = listed_page(request, rows, first, after.is_some());
    Ok((edges, page_info, count))
}

/// A search of a named patient's records that found none is still a look at their record:
/// noted with no ids.
fn note_empty_search<R: Listed>(request: &RequestData, patient: Option<Uuid>, rows: &[R]) {
    if let (Some(patient), true) = (patient, rows.is_empty()) {
        request.audit.note(
            patient,
            AccessAction::Search,
            R::RESOURCE_TYPE,
            [],
            AccessOutcome::Success,
            None,
        );
    }
}

/// How many records a connection of one (already authorized) patient's records counts.
pub async fn total<R: Resource>(ctx: &Context<'_>, key: CountOf<R>) -> async_graphql::Result<i64> {
    let request = ctx.data::<RequestData>()?;
    Ok(request
        .loader
        .load_one(key)
        .await
        .map_err(|e| unavailable(&e))?
        .unwrap_or(0))
}

/// A record of `patient`'s linked from another (`id`, when the link is set), through the
/// request's loader; noted as a read.
pub async fn linked<R: Fetch, T: From<R>>(
    ctx: &Context<'_>,
    patient: Uuid,
    id: Option<Uuid>,
    resource_type: &str,
) -> async_graphql::Result<Option<T>> {
    let Some(id) = id else {
        return Ok(None);
    };
    let request = ctx.data::<RequestData>()?;
    access::authorize(request, patient, AccessAction::Read, resource_type, &[id]).await?;
    read_by_id::<R, T>(request, patient, resource_type, id).await
}

/// `id`, of `patient`'s (already authorized), noted as read.
async fn read_by_id<R: Fetch, T: From<R>>(
    request: &RequestData,
    patient: Uuid,
    resource_type: &str,
    id: Uuid,
) -> async_graphql::Result<Option<T>> {
    let row = request
        .loader
        .load_one(ById::<R>::new(id))
        .await
        .map_err(|e| unavailable(&e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    // A link leads to the same patient's record; one that does not is not followed.
    if let Some(other) = row.patient().filter(|other| *other != patient) {
        return Err(access::refuse(
            request,
            other,
            AccessAction::Read,
            resource_type,
            &[id],
            "the linked record is another patient's",
        ));
    }
    request.audit.note(
        patient,
        AccessAction::Read,
        resource_type,
        [id.to_string()],
        AccessOutcome::Success,
        None,
    );
    Ok(Some(row.into()))
}

fn parse_id(id: &ID, what: &str) -> async_graphql::Result<Uuid> {
    id.parse().map_err(|_| {
        coded(
            format!("`{what}` is not an id from this API"),
            "BAD_USER_INPUT",
        )
    })
}

/// One clinical record by id: `None` if there is none, `FORBIDDEN` (noted as denied) if it
/// is a patient's the caller may not read, else the record, noted as read.
async fn read_one<R: Fetch + OfPatient, T: From<R>>(
    request: &RequestData,
    resource_type: &str,
    id: &ID,
) -> async_graphql::Result<Option<T>> {
    let id = parse_id(id, "id")?;
    if let Err(reason) = &request.scope {
        return Err(access::refuse(
            request,
            Uuid::nil(),
            AccessAction::Read,
            resource_type,
            &[id],
            reason,
        ));
    }
    let Some(row) = request
        .loader
        .load_one(ById::<R>::new(id))
        .await
        .map_err(|e| unavailable(&e))?
    else {
        return Ok(None);
    };
    let patient = row.patient_id();
    access::authorize(request, patient, AccessAction::Read, resource_type, &[id]).await?;
    // From the request's cache: no second statement.
    read_by_id::<R, T>(request, patient, resource_type, id).await
}

/// The appointments or encounters a filter asks for, narrowed to what the caller may read:
/// asking for another patient's is refused (and noted), never silently narrowed. `None`: the
/// caller's scope holds no patient (a practitioner with no one in their care).
async fn scoped_timeline(
    request: &RequestData,
    resource_type: &str,
    patient_id: Option<ID>,
    practitioner_id: Option<String>,
    filter: TimelineFilter,
) -> async_graphql::Result<Option<TimelineSearch>> {
    let patient = patient_id
        .map(|id| parse_id(&id, "filter.patientId"))
        .transpose()?;
    let patient_ids = match (patient, &request.scope) {
        (Some(patient), _) => {
            access::authorize(request, patient, AccessAction::Search, resource_type, &[]).await?;
            Some(vec![patient])
        }
        (None, Err(reason)) => {
            return Err(access::refuse(
                request,
                Uuid::nil(),
                AccessAction::Search,
                resource_type,
                &[],
                reason,
            ));
        }
        (None, Ok(Scope::All)) => None,
        (None, Ok(Scope::Patient(own))) => Some(vec![*own]),
        (None, Ok(Scope::Practitioner(me))) => {
            // Lists across a practitioner's patients name them all to the read model: at
            // most MAX_CARE_LIST; past that the caller names a patient.
            let care = request
                .models
                .patients
                .care_of(me, MAX_CARE_LIST as i64 + 1)
                .await
                .map_err(|e| unavailable(&e))?;
            if care.is_empty() {
                return Ok(None);
            }
            if care.len() > MAX_CARE_LIST {
                return Err(coded(
                    format!(
                        "more than {MAX_CARE_LIST} patients are in your care: name one with `filter.patientId`"
                    ),
                    "BAD_USER_INPUT",
                ));
            }
            Some(care)
        }
    };
    Ok(Some(TimelineSearch {
        patient_ids,
        practitioner_id,
        filter,
    }))
}

/// Appointments or encounters: listed across patients, by a filter.
trait Timeline: Listed {
    fn search(
        models: &ReadModels,
        search: &TimelineSearch,
        after: Option<Position>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Self>, sqlx::Error>> + Send;
}

impl Timeline for AppointmentRow {
    async fn search(
        models: &ReadModels,
        search: &TimelineSearch,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<Self>, sqlx::Error> {
        models.appointments.search(search, after, limit).await
    }
}

impl Timeline for EncounterRow {
    async fn search(
        models: &ReadModels,
        search: &TimelineSearch,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<Self>, sqlx::Error> {
        models.encounters.search(search, after, limit).await
    }
}

/// The connection of the `R`s a filter (patient, practitioner, the rest) asks for, within the
/// caller's scope (see [`scoped_timeline`]).
async fn timeline_connection<R: Timeline + Resource<Filter = TimelineFilter>>(
    ctx: &Context<'_>,
    (patient_id, practitioner_id, filter): (Option<ID>, Option<String>, TimelineFilter),
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<(Vec<R::Edge>, PageInfo, Option<CountOf<R>>)> {
    let request = ctx.data::<RequestData>()?;
    let (first, after) = paging::<R>(first, after)?;
    let patient_named = patient_id.is_some();
    let by_practitioner = practitioner_id.is_some();
    let counted = filter.clone();
    let search = scoped_timeline(
        request,
        R::RESOURCE_TYPE,
        patient_id,
        practitioner_id,
        filter,
    )
    .await?;
    let rows = match &search {
        Some(search) => R::search(&request.models, search, after, first as i64 + 1)
            .await
            .map_err(|e| unavailable(&e))?,
        None => Vec::new(),
    };
    // A filter naming one patient is a look at that patient's records, counted like a
    // nested connection (unless narrowed to one practitioner's).
    let named = search
        .as_ref()
        .and_then(|s| s.patient_ids.as_deref())
        .and_then(|ids| <[Uuid; 1]>::try_from(ids).ok())
        .filter(|_| patient_named)
        .map(|[id]| id);
    note_empty_search::<R>(request, named, &rows);
    let total = named
        .filter(|_| !by_practitioner)
        .map(|patient| CountOf::new(patient, counted));
    let (edges, page_info) = listed_page(request, rows, first, after.is_some());
    Ok((edges, page_info, total))
}

pub struct Query;

#[Object]
impl Query {
    /// One patient by id; null if there is none.
    async fn patient(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Patient>> {
        let request = ctx.data::<RequestData>()?;
        let id = parse_id(&id, "id")?;
        // Asked before the read, so a refusal says nothing of whether the patient exists.
        access::authorize(request, id, AccessAction::Read, "Patient", &[id]).await?;
        read_by_id::<crate::read_model::PatientRow, Patient>(request, id, "Patient", id).await
    }

    /// Patients matching `filter`, in registration order, `first` (default 20, at most 100)
    /// at a time. Patients find themselves; practitioners the patients in their care (all
    /// with break-the-glass); admins all.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn patients(
        &self,
        ctx: &Context<'_>,
        filter: Option<PatientFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PatientConnection> {
        let request = ctx.data::<RequestData>()?;
        let first = page_size(first)?;
        let after = after.as_deref().map(parse_cursor).transpose()?;
        let filter = filter.unwrap_or_default();
        let birth_date = filter
            .birth_date
            .as_deref()
            .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d"))
            .transpose()
            .map_err(|_| coded("`filter.birthDate` must be YYYY-MM-DD", "BAD_USER_INPUT"))?;
        let (only, care_of) = match &request.scope {
            Ok(Scope::All) => (None, None),
            Ok(Scope::Patient(own)) => (Some(*own), None),
            Ok(Scope::Practitioner(me)) => (None, Some(me.clone())),
            // No patient was touched: the denial is noted against the nil patient id.
            Err(reason) => {
                return Err(access::refuse(
                    request,
                    Uuid::nil(),
                    AccessAction::Search,
                    "Patient",
                    &[],
                    reason,
                ));
            }
        };
        let search = PatientSearch {
            only,
            care_of,
            family: filter.family,
            given: filter.given,
            birth_date,
            gender: filter.gender,
            identifier_system: filter.identifier.as_ref().and_then(|i| i.system.clone()),
            identifier_value: filter.identifier.map(|i| i.value),
        };
        let rows = request
            .models
            .patients
            .search(&search, after, first as i64 + 1)
            .await
            .map_err(|e| unavailable(&e))?;
        let (edges, page_info) = page(
            request,
            "Patient",
            rows,
            first,
            after.is_some(),
            |row| (row.id, row.id.to_string()),
            |row| PatientEdge {
                cursor: cursor(row.id),
                node: row.into(),
            },
        );
        Ok(PatientConnection { edges, page_info })
    }

    /// One appointment by id; null if there is none.
    async fn appointment(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Appointment>> {
        let request = ctx.data::<RequestData>()?;
        read_one::<AppointmentRow, _>(request, "Appointment", &id).await
    }

    /// Appointments matching `filter`, by start, `first` (default 20, at most 100) at a time.
    /// Patients see their own; practitioners those of the patients in their care (all with
    /// break-the-glass); admins all.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn appointments(
        &self,
        ctx: &Context<'_>,
        filter: Option<AppointmentFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<AppointmentConnection> {
        let f = filter.unwrap_or_default();
        let narrowed = appointment_filter(f.status, f.from, f.to)?;
        let (edges, page_info, total) = timeline_connection::<AppointmentRow>(
            ctx,
            (f.patient_id, f.practitioner_id, narrowed),
            first,
            after,
        )
        .await?;
        Ok(AppointmentConnection {
            edges,
            page_info,
            total,
        })
    }

    /// One encounter by id; null if there is none.
    async fn encounter(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Encounter>> {
        let request = ctx.data::<RequestData>()?;
        read_one::<EncounterRow, _>(request, "Encounter", &id).await
    }

    /// Encounters matching `filter`, by start, `first` (default 20, at most 100) at a time.
    /// Patients see their own; practitioners those of the patients in their care (all with
    /// break-the-glass); admins all.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn encounters(
        &self,
        ctx: &Context<'_>,
        filter: Option<EncounterFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<EncounterConnection> {
        let f = filter.unwrap_or_default();
        let narrowed = encounter_filter(f.status, f.from, f.to)?;
        let (edges, page_info, total) = timeline_connection::<EncounterRow>(
            ctx,
            (f.patient_id, f.practitioner_id, narrowed),
            first,
            after,
        )
        .await?;
        Ok(EncounterConnection {
            edges,
            page_info,
            total,
        })
    }

    /// One patient's observations, oldest first, optionally one LOINC `code`, a `category`
    /// and a time range (`from` inclusive, `to` exclusive), `first` (default 20, at most 100)
    /// at a time. The same as `Patient.observations`.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn observations(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        code: Option<String>,
        category: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<ObservationConnection> {
        let patient = parse_id(&patient_id, "patientId")?;
        let filter = ObservationFilter {
            code,
            category,
            from,
            to,
        };
        let (edges, page_info, total) =
            patient_connection::<ObservationRow>(ctx, patient, filter, first, after).await?;
        Ok(ObservationConnection {
            edges,
            page_info,
            total: Some(total),
        })
    }

    /// One patient's medication requests, oldest first, optionally one `status` and one
    /// RxNorm `code`, `first` (default 20, at most 100) at a time. The same as
    /// `Patient.medicationRequests`.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn medication_requests(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        status: Option<String>,
        code: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<MedicationRequestConnection> {
        let patient = parse_id(&patient_id, "patientId")?;
        let filter = medication_request_filter(status, code)?;
        let (edges, page_info, total) =
            patient_connection::<MedicationRequestRow>(ctx, patient, filter, first, after).await?;
        Ok(MedicationRequestConnection {
            edges,
            page_info,
            total: Some(total),
        })
    }

    /// PHI accesses matching `filter`, oldest first, `first` (default 20, at most 100) at a
    /// time. Auditors only; reading the log is itself audited (resource type `AuditEvent`,
    /// one record per patient whose accesses are returned).
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn phi_access_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<PhiAccessFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PhiAccessConnection> {
        let request = ctx.data::<RequestData>()?;
        if request.role != events::Role::Auditor {
            let reason = "only auditors may read the PHI access log";
            return Err(access::refuse(
                request,
                Uuid::nil(),
                AccessAction::Search,
                "AuditEvent",
                &[],
                reason,
            ));
        }
        let (first, after) = paging::<crate::read_model::AccessRow>(first, after)?;
        let filter = filter.unwrap_or_default();
        let search = AccessSearch {
            patient_id: filter
                .patient_id
                .map(|id| parse_id(&id, "filter.patientId"))
                .transpose()?,
            actor_id: filter.actor_id,
            from: filter.from,
            to: filter.to,
            action: filter.action,
            outcome: filter.outcome,
            purpose_of_use: filter.purpose_of_use,
        };
        let rows = request
            .models
            .access_log
            .search(&search, after, first as i64 + 1)
            .await
            .map_err(|e| unavailable(&e))?;
        // The accesses returned are about these patients: each gets a record of this read; a
        // search of one patient's accesses that finds none is a look at them all the same.
        note_empty_search(request, search.patient_id, &rows);
        let (edges, page_info) = listed_page(request, rows, first, after.is_some());
        Ok(PhiAccessConnection { edges, page_info })
    }
}

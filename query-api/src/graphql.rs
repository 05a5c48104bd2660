//! The GraphQL schema the portals query, and its resolvers. Each resolver checks who may see
//! what, reads the read model, and audits the access before returning PHI.

use async_graphql::{
    Context, EmptyMutation, EmptySubscription, ErrorExtensions, ID, InputObject, Object, Schema,
    SimpleObject,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, Utc};
use events::audit::{AccessAction, AccessOutcome};
use platform::access;
use platform::auth::Caller;
use uuid::Uuid;

use crate::audit::RequestAudit;
use crate::read_model::{
    AccessLog, AccessRow, AccessSearch, AppointmentRow, Appointments, EncounterRow, Encounters,
    MedicationRequestRow, MedicationRequests, ObservationRow, ObservationSearch, Observations,
    PatientRow, PatientSearch, Patients, TimelineSearch,
};

/// The schema served on `/graphql`.
pub type PortalSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// Deepest query accepted (query bombs are refused before any read).
pub const MAX_DEPTH: usize = 10;
/// Most complex query accepted: every field selected costs 1, and a connection's selection
/// costs once per item of the page it asks for (`first`), so 15 aliases of
/// `patients(first: 100)` cannot return 1,500 patients.
pub const MAX_COMPLEXITY: usize = 5000;
/// Largest page.
pub const MAX_PAGE: i32 = 100;
/// The page size when `first` is not given.
pub const DEFAULT_PAGE: i32 = 20;

/// Per-request data: the caller and the request's audit trail.
pub struct RequestData {
    pub caller: Caller,
    pub audit: RequestAudit,
}

/// The read models the schema serves.
pub struct ReadModels {
    pub patients: Patients,
    pub appointments: Appointments,
    pub encounters: Encounters,
    pub observations: Observations,
    pub medication_requests: MedicationRequests,
    pub access_log: AccessLog,
}

pub fn build_schema(models: ReadModels) -> PortalSchema {
    let ReadModels {
        patients,
        appointments,
        encounters,
        observations,
        medication_requests,
        access_log,
    } = models;
    Schema::build(Query, EmptyMutation, EmptySubscription)
        .data(patients)
        .data(appointments)
        .data(encounters)
        .data(observations)
        .data(medication_requests)
        .data(access_log)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

fn coded(message: impl Into<String>, code: &'static str) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

fn unavailable(e: sqlx::Error) -> async_graphql::Error {
    // SQLSTATE class 22 (data exception): an argument PostgreSQL cannot use, e.g. a NUL byte.
    if let sqlx::Error::Database(db) = &e
        && db.code().is_some_and(|c| c.starts_with("22"))
    {
        return coded(
            format!("an argument cannot be used: {}", db.message()),
            "BAD_USER_INPUT",
        );
    }
    tracing::error!(error = %platform::db::loggable(&e), "read model unavailable");
    coded("the read model is unavailable; retry later", "UNAVAILABLE")
}

/// The reason (a broker or registry error) is in the audit writer's log, not in the answer.
fn audit_failed(_reason: String) -> async_graphql::Error {
    coded(
        "the access could not be audited, so no patient data is returned; retry later",
        "AUDIT_UNAVAILABLE",
    )
}

/// A business identifier.
#[derive(SimpleObject)]
pub struct Identifier {
    pub system: String,
    pub value: String,
}

/// A person's name.
#[derive(SimpleObject)]
pub struct HumanName {
    pub given: Vec<String>,
    pub family: String,
    /// The full name for display, e.g. "Ada Lovelace".
    pub text: String,
}

/// A phone number, email address, ...
#[derive(SimpleObject)]
pub struct ContactPoint {
    pub system: String,
    pub value: String,
}

/// A postal address.
#[derive(SimpleObject)]
pub struct Address {
    pub line: Vec<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

/// A patient (FHIR R4 Patient in spirit).
#[derive(SimpleObject)]
pub struct Patient {
    pub id: ID,
    /// The version of the patient's record; send it as `If-Match` to update.
    pub version: i64,
    pub identifiers: Vec<Identifier>,
    pub name: HumanName,
    /// male | female | other | unknown
    pub gender: String,
    /// YYYY-MM-DD
    pub birth_date: String,
    pub telecom: Vec<ContactPoint>,
    pub address: Option<Address>,
    /// BCP 47 language tag, e.g. en-GB.
    pub preferred_language: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<PatientRow> for Patient {
    fn from(row: PatientRow) -> Self {
        let mut text = row.given_names.clone();
        text.push(row.family_name.clone());
        Patient {
            id: ID(row.id.to_string()),
            version: row.version,
            identifiers: row
                .identifiers
                .into_iter()
                .map(|i| Identifier {
                    system: i.system,
                    value: i.value,
                })
                .collect(),
            name: HumanName {
                given: row.given_names,
                family: row.family_name,
                text: text.join(" "),
            },
            gender: row.gender,
            birth_date: row.birth_date.format("%Y-%m-%d").to_string(),
            telecom: row
                .telecom
                .into_iter()
                .map(|t| ContactPoint {
                    system: t.system,
                    value: t.value,
                })
                .collect(),
            address: row.address.map(|a| Address {
                line: a.line,
                city: a.city,
                postal_code: a.postal_code,
                country: a.country,
            }),
            preferred_language: row.preferred_language,
            updated_at: row.updated_at,
        }
    }
}

/// Relay page information.
#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

#[derive(SimpleObject)]
pub struct PatientEdge {
    pub cursor: String,
    pub node: Patient,
}

#[derive(SimpleObject)]
pub struct PatientConnection {
    pub edges: Vec<PatientEdge>,
    pub page_info: PageInfo,
}

/// Matches an identifier; `system` is optional.
#[derive(InputObject)]
pub struct IdentifierFilter {
    pub system: Option<String>,
    pub value: String,
}

/// Patient search criteria; all given ones must match.
#[derive(InputObject, Default)]
pub struct PatientFilter {
    /// Case-insensitive prefix of the family name.
    pub family: Option<String>,
    /// Case-insensitive prefix of a given name.
    pub given: Option<String>,
    /// YYYY-MM-DD
    pub birth_date: Option<String>,
    pub gender: Option<String>,
    pub identifier: Option<IdentifierFilter>,
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

/// Audits a refused access (best effort: the refusal stands either way) and returns the
/// `FORBIDDEN` error.
async fn denied(
    request: &RequestData,
    patient: Uuid,
    action: AccessAction,
    resource_ids: Vec<String>,
    reason: &'static str,
) -> async_graphql::Error {
    let _ = request
        .audit
        .record(
            patient,
            action,
            "Patient",
            resource_ids,
            AccessOutcome::Denied,
            Some(reason.into()),
        )
        .await;
    coded(reason, "FORBIDDEN")
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

/// A page of `rows` (fetched with one more than `first` to learn whether more follow) after
/// its search was audited — one success record per patient, naming the returned resources —
/// as edges with their cursors, and its page info. Nothing is returned if the audit fails.
async fn audited_page<R, E: Edge>(
    request: &RequestData,
    resource_type: &str,
    mut rows: Vec<R>,
    first: usize,
    after_given: bool,
    resource: impl Fn(&R) -> (Uuid, String),
    edge: impl Fn(R) -> E,
) -> async_graphql::Result<(Vec<E>, PageInfo)> {
    let has_next_page = rows.len() > first;
    rows.truncate(first);
    let mut by_patient: std::collections::BTreeMap<Uuid, Vec<String>> = Default::default();
    for row in &rows {
        let (patient, id) = resource(row);
        by_patient.entry(patient).or_default().push(id);
    }
    futures::future::try_join_all(by_patient.into_iter().map(|(patient, ids)| {
        request.audit.record(
            patient,
            AccessAction::Search,
            resource_type,
            ids,
            AccessOutcome::Success,
            None,
        )
    }))
    .await
    .map_err(audit_failed)?;
    let edges: Vec<E> = rows.into_iter().map(edge).collect();
    let page_info = PageInfo {
        has_next_page,
        has_previous_page: after_given,
        start_cursor: edges.first().map(|e| e.cursor().to_string()),
        end_cursor: edges.last().map(|e| e.cursor().to_string()),
    };
    Ok((edges, page_info))
}

/// Records a successful read of one resource of `patient`'s; nothing is returned unless it
/// is acknowledged.
async fn audited_read(
    request: &RequestData,
    patient: Uuid,
    resource_type: &str,
    id: Uuid,
) -> async_graphql::Result<()> {
    request
        .audit
        .record(
            patient,
            AccessAction::Read,
            resource_type,
            vec![id.to_string()],
            AccessOutcome::Success,
            None,
        )
        .await
        .map_err(audit_failed)
}

/// An edge of a Relay connection.
trait Edge {
    fn cursor(&self) -> &str;
}

impl Edge for PatientEdge {
    fn cursor(&self) -> &str {
        &self.cursor
    }
}

impl Edge for MedicationRequestEdge {
    fn cursor(&self) -> &str {
        &self.cursor
    }
}

impl Edge for EncounterEdge {
    fn cursor(&self) -> &str {
        &self.cursor
    }
}

impl Edge for ObservationEdge {
    fn cursor(&self) -> &str {
        &self.cursor
    }
}

impl Edge for AppointmentEdge {
    fn cursor(&self) -> &str {
        &self.cursor
    }
}

impl Edge for PhiAccessEdge {
    fn cursor(&self) -> &str {
        &self.cursor
    }
}

/// The cost of a connection field: its selection once per item of the page.
fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let items = first.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize;
    items.saturating_mul(child_complexity).saturating_add(1)
}

/// A code from a code system (FHIR Coding).
#[derive(SimpleObject)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

/// An appointment (FHIR R4 Appointment in spirit).
#[derive(SimpleObject)]
pub struct Appointment {
    pub id: ID,
    /// The version of the appointment; send it as `If-Match` to cancel.
    pub version: i64,
    pub patient_id: ID,
    pub practitioner_id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// booked | cancelled
    pub status: String,
    pub service_type: Option<Coding>,
    pub description: Option<String>,
    pub cancel_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<AppointmentRow> for Appointment {
    fn from(a: AppointmentRow) -> Self {
        Appointment {
            id: ID(a.id.to_string()),
            version: a.version,
            patient_id: ID(a.patient_id.to_string()),
            practitioner_id: a.practitioner_id,
            start: a.start_at,
            end: a.end_at,
            status: a.status,
            service_type: a.service_type.map(coding),
            description: a.description,
            cancel_reason: a.cancel_reason,
            updated_at: a.updated_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct AppointmentEdge {
    pub cursor: String,
    pub node: Appointment,
}

#[derive(SimpleObject)]
pub struct AppointmentConnection {
    pub edges: Vec<AppointmentEdge>,
    pub page_info: PageInfo,
}

/// Appointment criteria; all given ones must match. `from` is inclusive and `to` exclusive,
/// on the start.
#[derive(InputObject, Default)]
pub struct AppointmentFilter {
    pub patient_id: Option<ID>,
    pub practitioner_id: Option<String>,
    /// booked | cancelled
    pub status: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// A measured amount with its UCUM unit.
#[derive(SimpleObject)]
pub struct Quantity {
    pub value: f64,
    pub unit: Option<String>,
}

/// An observation (FHIR R4 Observation in spirit): a vital sign or a lab result.
#[derive(SimpleObject)]
pub struct Observation {
    pub id: ID,
    pub version: i64,
    pub patient_id: ID,
    pub encounter_id: Option<ID>,
    /// FHIR ObservationStatus, e.g. final.
    pub status: String,
    /// e.g. vital-signs, laboratory.
    pub category: String,
    /// The LOINC code.
    pub code: Coding,
    pub value_quantity: Option<Quantity>,
    pub value_coding: Option<Coding>,
    pub value_string: Option<String>,
    pub effective_at: DateTime<Utc>,
    pub performer_id: String,
}

impl From<ObservationRow> for Observation {
    fn from(o: ObservationRow) -> Self {
        Observation {
            id: ID(o.id.to_string()),
            version: o.version,
            patient_id: ID(o.patient_id.to_string()),
            encounter_id: o.encounter_id.map(|e| ID(e.to_string())),
            status: o.status,
            category: o.category,
            code: Coding {
                system: o.code_system,
                code: o.code,
                display: o.code_display,
            },
            value_quantity: o.value_quantity.map(|value| Quantity {
                value,
                unit: o.value_unit,
            }),
            value_coding: o.value_coding.map(coding),
            value_string: o.value_string,
            effective_at: o.effective_at,
            performer_id: o.performer_id,
        }
    }
}

#[derive(SimpleObject)]
pub struct ObservationEdge {
    pub cursor: String,
    pub node: Observation,
}

#[derive(SimpleObject)]
pub struct ObservationConnection {
    pub edges: Vec<ObservationEdge>,
    pub page_info: PageInfo,
}

/// How a medication is to be taken.
#[derive(SimpleObject)]
pub struct Dosage {
    /// Free-text instructions, e.g. "10 mg once a day".
    pub text: String,
    pub dose: Option<Quantity>,
    /// Administrations per period.
    pub frequency: Option<i32>,
    pub period: Option<f64>,
    /// UCUM unit of time: s | min | h | d | wk | mo | a
    pub period_unit: Option<String>,
    pub route: Option<Coding>,
}

/// A medication request (FHIR R4 MedicationRequest in spirit): a prescription.
#[derive(SimpleObject)]
pub struct MedicationRequest {
    pub id: ID,
    pub version: i64,
    pub patient_id: ID,
    pub encounter_id: Option<ID>,
    /// The RxNorm code.
    pub medication: Coding,
    /// FHIR medicationrequest-status, e.g. active.
    pub status: String,
    /// FHIR medicationrequest-intent, e.g. order.
    pub intent: String,
    pub dosage: Option<Dosage>,
    pub dispense_quantity: Option<Quantity>,
    pub refills: Option<i32>,
    pub authored_on: DateTime<Utc>,
    pub requester_id: String,
    pub note: Option<String>,
}

fn coding(c: events::clinical::Coding) -> Coding {
    Coding {
        system: c.system,
        code: c.code,
        display: c.display,
    }
}

fn quantity(q: events::clinical::Quantity) -> Quantity {
    Quantity {
        value: q.value,
        unit: Some(q.unit),
    }
}

impl From<MedicationRequestRow> for MedicationRequest {
    fn from(m: MedicationRequestRow) -> Self {
        MedicationRequest {
            id: ID(m.id.to_string()),
            version: m.version,
            patient_id: ID(m.patient_id.to_string()),
            encounter_id: m.encounter_id.map(|e| ID(e.to_string())),
            medication: Coding {
                system: m.medication_system,
                code: m.medication_code,
                display: m.medication_display,
            },
            status: m.status,
            intent: m.intent,
            dosage: m.dosage.map(|d| Dosage {
                text: d.text,
                dose: d.dose.map(quantity),
                frequency: d.frequency,
                period: d.period,
                period_unit: d.period_unit,
                route: d.route.map(coding),
            }),
            dispense_quantity: m.dispense_quantity.map(quantity),
            refills: m.refills,
            authored_on: m.authored_on,
            requester_id: m.requester_id,
            note: m.note,
        }
    }
}

#[derive(SimpleObject)]
pub struct MedicationRequestEdge {
    pub cursor: String,
    pub node: MedicationRequest,
}

#[derive(SimpleObject)]
pub struct MedicationRequestConnection {
    pub edges: Vec<MedicationRequestEdge>,
    pub page_info: PageInfo,
}

/// Whose records the caller may read of `patient`: `Ok(Some(practitioner))` narrows to the
/// ones that practitioner is on; `Err` names why none.
fn patient_records_scope(
    request: &RequestData,
    patient: Uuid,
) -> Result<Option<String>, &'static str> {
    match clinical_scope(request)? {
        Scope::All => Ok(None),
        Scope::Patient(own) if own == patient => Ok(None),
        Scope::Patient(_) => Err("patients may read only their own records"),
        Scope::Practitioner(me) => Ok(Some(me)),
    }
}

/// A cursor over `(time, id)` ordered rows, tagged with its field's name.
fn time_cursor(tag: &str, at: DateTime<Utc>, id: Uuid) -> String {
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

/// Encounter criteria; all given ones must match. `from` is inclusive and `to` exclusive, on
/// the start.
#[derive(InputObject, Default)]
pub struct EncounterFilter {
    pub patient_id: Option<ID>,
    pub practitioner_id: Option<String>,
    /// in-progress | finished
    pub status: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl From<EncounterFilter> for AppointmentFilter {
    /// The same criteria (the two names are api.md's).
    fn from(f: EncounterFilter) -> Self {
        AppointmentFilter {
            patient_id: f.patient_id,
            practitioner_id: f.practitioner_id,
            status: f.status,
            from: f.from,
            to: f.to,
        }
    }
}

/// An encounter (FHIR R4 Encounter in spirit).
#[derive(SimpleObject)]
pub struct Encounter {
    pub id: ID,
    pub version: i64,
    pub patient_id: ID,
    pub practitioner_id: String,
    /// The appointment it fulfilled, if any.
    pub appointment_id: Option<ID>,
    /// HL7 v3 ActCode, e.g. AMB.
    pub class_code: String,
    pub class_display: Option<String>,
    /// in-progress | finished
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub discharge_disposition: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<EncounterRow> for Encounter {
    fn from(e: EncounterRow) -> Self {
        Encounter {
            id: ID(e.id.to_string()),
            version: e.version,
            patient_id: ID(e.patient_id.to_string()),
            practitioner_id: e.practitioner_id,
            appointment_id: e.appointment_id.map(|a| ID(a.to_string())),
            class_code: e.class_code,
            class_display: e.class_display,
            status: e.status,
            started_at: e.started_at,
            ended_at: e.ended_at,
            reason: e.reason,
            discharge_disposition: e.discharge_disposition,
            updated_at: e.updated_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct EncounterEdge {
    pub cursor: String,
    pub node: Encounter,
}

#[derive(SimpleObject)]
pub struct EncounterConnection {
    pub edges: Vec<EncounterEdge>,
    pub page_info: PageInfo,
}

/// The search a filter asks for, narrowed to what the caller may read; asking outside it is
/// refused (with the patient asked about), not silently narrowed.
async fn scoped_timeline(
    request: &RequestData,
    filter: AppointmentFilter,
) -> async_graphql::Result<TimelineSearch> {
    let patient_id = filter
        .patient_id
        .map(|id| id.parse::<Uuid>())
        .transpose()
        .map_err(|_| coded("`filter.patientId` is not a patient id", "BAD_USER_INPUT"))?;
    let mut search = TimelineSearch {
        patient_id,
        practitioner_id: filter.practitioner_id,
        status: filter.status,
        from: filter.from,
        to: filter.to,
    };
    let outside = match clinical_scope(request) {
        Err(reason) => Some(reason),
        Ok(Scope::All) => None,
        Ok(Scope::Patient(own)) => {
            let other = search.patient_id.is_some_and(|p| p != own);
            search.patient_id = Some(own);
            other.then_some("patients may read only their own records")
        }
        Ok(Scope::Practitioner(me)) => {
            let other = search.practitioner_id.as_ref().is_some_and(|p| *p != me);
            search.practitioner_id = Some(me);
            other.then_some(
                "another practitioner's records: break the glass (X-Purpose-Of-Use: ETREAT) to read them",
            )
        }
    };
    match outside {
        Some(reason) => {
            let patient = patient_id.unwrap_or(Uuid::nil());
            Err(denied(request, patient, AccessAction::Search, vec![], reason).await)
        }
        None => Ok(search),
    }
}

/// A resource a practitioner is on for a patient (an appointment, an encounter).
trait WithPractitioner {
    fn patient_id(&self) -> Uuid;
    fn practitioner_id(&self) -> &str;
}

impl WithPractitioner for AppointmentRow {
    fn patient_id(&self) -> Uuid {
        self.patient_id
    }
    fn practitioner_id(&self) -> &str {
        &self.practitioner_id
    }
}

impl WithPractitioner for EncounterRow {
    fn patient_id(&self) -> Uuid {
        self.patient_id
    }
    fn practitioner_id(&self) -> &str {
        &self.practitioner_id
    }
}

/// One resource by id for the caller: `None` if there is none, `FORBIDDEN` (audited as
/// denied) outside their scope, else the resource once its read is audited.
async fn read_one<R: WithPractitioner>(
    request: &RequestData,
    resource_type: &str,
    id: &ID,
    fetch: impl AsyncFnOnce(Uuid) -> Result<Option<R>, sqlx::Error>,
) -> async_graphql::Result<Option<R>> {
    let id: Uuid = id.parse().map_err(|_| {
        coded(
            format!("`id` is not an {resource_type} id"),
            "BAD_USER_INPUT",
        )
    })?;
    let scope = match clinical_scope(request) {
        Ok(scope) => scope,
        Err(reason) => {
            return Err(denied(request, Uuid::nil(), AccessAction::Read, vec![], reason).await);
        }
    };
    let Some(row) = fetch(id).await.map_err(unavailable)? else {
        return Ok(None);
    };
    if let Some(reason) = scope_denial(&scope, row.patient_id(), row.practitioner_id()) {
        let ids = vec![id.to_string()];
        return Err(denied(request, row.patient_id(), AccessAction::Read, ids, reason).await);
    }
    audited_read(request, row.patient_id(), resource_type, id).await?;
    Ok(Some(row))
}

/// Whose clinical resources the caller may read: `Err` names why not.
enum Scope {
    All,
    Patient(Uuid),
    /// The resources a practitioner is on (as the appointment's practitioner, the
    /// observation's performer, ...): the patients in their care.
    Practitioner(String),
}

fn clinical_scope(request: &RequestData) -> Result<Scope, &'static str> {
    let caller = &request.caller;
    if caller.has(events::Role::Admin) {
        return Ok(Scope::All);
    }
    if caller.has(events::Role::Practitioner) {
        // Break-the-glass opens every patient's resources, with the reason on record.
        return Ok(if request.audit.context.break_glass_reason.is_some() {
            Scope::All
        } else {
            Scope::Practitioner(caller.claims.sub.clone())
        });
    }
    match access::compartment(caller)? {
        access::Compartment::Only(own) => Ok(Scope::Patient(own)),
        access::Compartment::All => Ok(Scope::All),
    }
}

/// Why the caller may not read a resource of `patient` that `practitioner` is on.
fn scope_denial(scope: &Scope, patient: Uuid, practitioner: &str) -> Option<&'static str> {
    match scope {
        Scope::All => None,
        Scope::Patient(own) => {
            (patient != *own).then_some("patients may read only their own records")
        }
        Scope::Practitioner(me) => (practitioner != me).then_some(
            "the patient is not in this practitioner's care: break the glass (X-Purpose-Of-Use: ETREAT) to read it",
        ),
    }
}

/// One access to a patient's data, from the PHI access audit log.
#[derive(SimpleObject)]
pub struct PhiAccess {
    /// The audit event's id.
    pub id: ID,
    pub occurred_at: DateTime<Utc>,
    pub patient_id: ID,
    pub actor_id: String,
    pub actor_role: String,
    /// read | search | export
    pub action: String,
    pub resource_type: String,
    pub resource_ids: Vec<String>,
    /// HL7 PurposeOfUse, e.g. TREAT, ETREAT (break-the-glass), HOPERAT.
    pub purpose_of_use: String,
    /// success | denied | error
    pub outcome: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: String,
    pub service: String,
    /// Why access was denied, or the break-the-glass reason.
    pub detail: Option<String>,
}

impl From<AccessRow> for PhiAccess {
    fn from(a: AccessRow) -> Self {
        PhiAccess {
            id: ID(a.event_id.to_string()),
            occurred_at: a.occurred_at,
            patient_id: ID(a.patient_id.to_string()),
            actor_id: a.actor_id,
            actor_role: a.actor_role,
            action: a.action,
            resource_type: a.resource_type,
            resource_ids: a.resource_ids,
            purpose_of_use: a.purpose_of_use,
            outcome: a.outcome,
            client_ip: a.client_ip,
            user_agent: a.user_agent,
            request_id: a.request_id,
            service: a.service,
            detail: a.detail,
        }
    }
}

#[derive(SimpleObject)]
pub struct PhiAccessEdge {
    pub cursor: String,
    pub node: PhiAccess,
}

#[derive(SimpleObject)]
pub struct PhiAccessConnection {
    pub edges: Vec<PhiAccessEdge>,
    pub page_info: PageInfo,
}

/// Access log criteria; all given ones must match. `from` is inclusive, `to` exclusive.
#[derive(InputObject, Default)]
pub struct PhiAccessFilter {
    pub patient_id: Option<ID>,
    pub actor_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub purpose_of_use: Option<String>,
}

pub struct Query;

#[Object]
impl Query {
    /// One encounter by id; null if there is none.
    async fn encounter(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Encounter>> {
        let request = ctx.data::<RequestData>()?;
        let encounters = ctx.data::<Encounters>()?;
        let row = read_one(request, "Encounter", &id, async |id| {
            encounters.get(id).await
        })
        .await?;
        Ok(row.map(Into::into))
    }

    /// Encounters matching `filter`, by start, `first` (default 20, at most 100) at a time.
    /// Patients see their own; practitioners theirs (all with break-the-glass); admins all.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn encounters(
        &self,
        ctx: &Context<'_>,
        filter: Option<EncounterFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<EncounterConnection> {
        let request = ctx.data::<RequestData>()?;
        let first = page_size(first)?;
        let after = after
            .as_deref()
            .map(|c| parse_time_cursor("encounters", c))
            .transpose()?;
        let filter = filter.unwrap_or_default().into();
        let search = scoped_timeline(request, filter).await?;
        let rows = ctx
            .data::<Encounters>()?
            .search(&search, after, first as i64 + 1)
            .await
            .map_err(unavailable)?;
        let (edges, page_info) = audited_page(
            request,
            "Encounter",
            rows,
            first,
            after.is_some(),
            |row| (row.patient_id, row.id.to_string()),
            |row| EncounterEdge {
                cursor: time_cursor("encounters", row.started_at, row.id),
                node: row.into(),
            },
        )
        .await?;
        Ok(EncounterConnection { edges, page_info })
    }

    /// One patient's medication requests, oldest first, optionally one `status`, `first`
    /// (default 20, at most 100) at a time. Patients read their own; practitioners those they
    /// prescribed (all with break-the-glass); admins all.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn medication_requests(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        status: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<MedicationRequestConnection> {
        let request = ctx.data::<RequestData>()?;
        let first = page_size(first)?;
        let after = after
            .as_deref()
            .map(|c| parse_time_cursor("medicationRequests", c))
            .transpose()?;
        let patient_id: Uuid = patient_id
            .parse()
            .map_err(|_| coded("`patientId` is not a patient id", "BAD_USER_INPUT"))?;
        let requester = match patient_records_scope(request, patient_id) {
            Ok(requester) => requester,
            Err(reason) => {
                return Err(
                    denied(request, patient_id, AccessAction::Search, vec![], reason).await,
                );
            }
        };
        let rows = ctx
            .data::<MedicationRequests>()?
            .search(
                patient_id,
                status.as_deref(),
                requester.as_deref(),
                after,
                first as i64 + 1,
            )
            .await
            .map_err(unavailable)?;
        let (edges, page_info) = audited_page(
            request,
            "MedicationRequest",
            rows,
            first,
            after.is_some(),
            |row| (row.patient_id, row.id.to_string()),
            |row| MedicationRequestEdge {
                cursor: time_cursor("medicationRequests", row.authored_on, row.id),
                node: row.into(),
            },
        )
        .await?;
        Ok(MedicationRequestConnection { edges, page_info })
    }

    /// One patient's observations, oldest first, optionally one LOINC `code` and a time range
    /// (`from` inclusive, `to` exclusive), `first` (default 20, at most 100) at a time.
    /// Patients read their own; practitioners those they performed (all with
    /// break-the-glass); admins all.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn observations(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        code: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<ObservationConnection> {
        let request = ctx.data::<RequestData>()?;
        let first = page_size(first)?;
        let after = after
            .as_deref()
            .map(|c| parse_time_cursor("observations", c))
            .transpose()?;
        let patient_id: Uuid = patient_id
            .parse()
            .map_err(|_| coded("`patientId` is not a patient id", "BAD_USER_INPUT"))?;
        let performer_id = match patient_records_scope(request, patient_id) {
            Ok(performer) => performer,
            Err(reason) => {
                return Err(
                    denied(request, patient_id, AccessAction::Search, vec![], reason).await,
                );
            }
        };
        let search = ObservationSearch {
            patient_id,
            code,
            from,
            to,
            performer_id,
        };
        let rows = ctx
            .data::<Observations>()?
            .search(&search, after, first as i64 + 1)
            .await
            .map_err(unavailable)?;
        let (edges, page_info) = audited_page(
            request,
            "Observation",
            rows,
            first,
            after.is_some(),
            |row| (row.patient_id, row.id.to_string()),
            |row| ObservationEdge {
                cursor: time_cursor("observations", row.effective_at, row.id),
                node: row.into(),
            },
        )
        .await?;
        Ok(ObservationConnection { edges, page_info })
    }

    /// One appointment by id; null if there is none.
    async fn appointment(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Appointment>> {
        let request = ctx.data::<RequestData>()?;
        let appointments = ctx.data::<Appointments>()?;
        let row = read_one(request, "Appointment", &id, async |id| {
            appointments.get(id).await
        })
        .await?;
        Ok(row.map(Into::into))
    }

    /// Appointments matching `filter`, by start, `first` (default 20, at most 100) at a time.
    /// Patients see their own; practitioners those with them (all with break-the-glass);
    /// admins all.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn appointments(
        &self,
        ctx: &Context<'_>,
        filter: Option<AppointmentFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<AppointmentConnection> {
        let request = ctx.data::<RequestData>()?;
        let first = page_size(first)?;
        let after = after
            .as_deref()
            .map(|c| parse_time_cursor("appointments", c))
            .transpose()?;
        let search = scoped_timeline(request, filter.unwrap_or_default()).await?;
        let rows = ctx
            .data::<Appointments>()?
            .search(&search, after, first as i64 + 1)
            .await
            .map_err(unavailable)?;
        let (edges, page_info) = audited_page(
            request,
            "Appointment",
            rows,
            first,
            after.is_some(),
            |row| (row.patient_id, row.id.to_string()),
            |row| AppointmentEdge {
                cursor: time_cursor("appointments", row.start_at, row.id),
                node: row.into(),
            },
        )
        .await?;
        Ok(AppointmentConnection { edges, page_info })
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
        if !request.caller.has(events::Role::Auditor) {
            let reason = "only auditors may read the PHI access log";
            return Err(denied(request, Uuid::nil(), AccessAction::Search, vec![], reason).await);
        }
        let first = page_size(first)?;
        let after = after
            .as_deref()
            .map(|c| parse_time_cursor("phiAccessLog", c))
            .transpose()?;
        let filter = filter.unwrap_or_default();
        let search = AccessSearch {
            patient_id: filter
                .patient_id
                .map(|id| id.parse::<Uuid>())
                .transpose()
                .map_err(|_| coded("`filter.patientId` is not a patient id", "BAD_USER_INPUT"))?,
            actor_id: filter.actor_id,
            from: filter.from,
            to: filter.to,
            action: filter.action,
            outcome: filter.outcome,
            purpose_of_use: filter.purpose_of_use,
        };
        let rows = ctx
            .data::<AccessLog>()?
            .search(&search, after, first as i64 + 1)
            .await
            .map_err(unavailable)?;
        // The accesses returned are about these patients: each gets a record of this read.
        let (edges, page_info) = audited_page(
            request,
            "AuditEvent",
            rows,
            first,
            after.is_some(),
            |row| (row.patient_id, row.event_id.to_string()),
            |row| PhiAccessEdge {
                cursor: time_cursor("phiAccessLog", row.occurred_at, row.event_id),
                node: row.into(),
            },
        )
        .await?;
        Ok(PhiAccessConnection { edges, page_info })
    }

    /// One patient by id; null if there is none.
    async fn patient(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Patient>> {
        let request = ctx.data::<RequestData>()?;
        let id: Uuid = id
            .parse()
            .map_err(|_| coded("`id` is not a patient id", "BAD_USER_INPUT"))?;
        if let Some(reason) = access::read_denial(&request.caller, id) {
            return Err(denied(
                request,
                id,
                AccessAction::Read,
                vec![id.to_string()],
                reason,
            )
            .await);
        }
        let Some(row) = ctx.data::<Patients>()?.get(id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        audited_read(request, id, "Patient", id).await?;
        Ok(Some(row.into()))
    }

    /// Patients matching `filter`, in registration order, `first` (default 20, at most 100) at a time.
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
        let caller = &request.caller;
        let only = match access::compartment(caller) {
            Ok(access::Compartment::All) => None,
            Ok(access::Compartment::Only(own)) => Some(own),
            // No patient was touched: the denial is recorded against the nil patient id.
            Err(reason) => {
                return Err(
                    denied(request, Uuid::nil(), AccessAction::Search, vec![], reason).await,
                );
            }
        };
        let search = PatientSearch {
            only,
            family: filter.family,
            given: filter.given,
            birth_date,
            gender: filter.gender,
            identifier_system: filter.identifier.as_ref().and_then(|i| i.system.clone()),
            identifier_value: filter.identifier.map(|i| i.value),
        };
        let rows = ctx
            .data::<Patients>()?
            .search(&search, after, first as i64 + 1)
            .await
            .map_err(unavailable)?;
        let (edges, page_info) = audited_page(
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
        )
        .await?;
        Ok(PatientConnection { edges, page_info })
    }
}

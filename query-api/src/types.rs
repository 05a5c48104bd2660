//! The GraphQL object types: every field the events carry, the links between resources
//! (`Appointment.patient`, `Encounter.appointment`, `Observation.encounter`,
//! `MedicationRequest.encounter`) and each patient's nested connections (`appointments`,
//! `encounters`, `observations`, `medicationRequests`). Nested fields and links load through
//! the request's DataLoaders and ask [`crate::access`] like every top-level field.

use async_graphql::{ComplexObject, Context, ID, InputObject, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::graphql::{Edge, Listed, linked, page_cost, patient_connection, total};
use crate::loaders::CountOf;
use crate::read_model::{
    AccessRow, AppointmentRow, EncounterRow, MedicationRequestFilter, MedicationRequestRow,
    ObservationFilter, ObservationRow, PatientRow, TimelineFilter,
};

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

/// A patient (FHIR R4 Patient in spirit), with their records as nested connections.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Patient {
    #[graphql(skip)]
    pub uuid: Uuid,
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
            uuid: row.id,
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

/// The nested connections: a page of the patient's records each, by time, oldest first,
/// `first` (default 20, at most 100) at a time, loaded for every patient of the request at
/// once.
#[ComplexObject]
impl Patient {
    /// The patient's appointments by start; `from` inclusive, `to` exclusive.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn appointments(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "booked | arrived | fulfilled | cancelled")] status: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<AppointmentConnection> {
        let filter = appointment_filter(status, from, to)?;
        let (edges, page_info, total) =
            patient_connection::<AppointmentRow>(ctx, self.uuid, filter, first, after).await?;
        Ok(AppointmentConnection {
            edges,
            page_info,
            total: Some(total),
        })
    }

    /// The patient's encounters by start; `from` inclusive, `to` exclusive.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn encounters(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "in-progress | finished")] status: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<EncounterConnection> {
        let filter = encounter_filter(status, from, to)?;
        let (edges, page_info, total) =
            patient_connection::<EncounterRow>(ctx, self.uuid, filter, first, after).await?;
        Ok(EncounterConnection {
            edges,
            page_info,
            total: Some(total),
        })
    }

    /// The patient's observations by effective time; `from` inclusive, `to` exclusive.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn observations(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "LOINC code, e.g. 8867-4")] code: Option<String>,
        #[graphql(desc = "e.g. vital-signs, laboratory")] category: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<ObservationConnection> {
        let filter = ObservationFilter {
            code,
            category,
            from,
            to,
        };
        let (edges, page_info, total) =
            patient_connection::<ObservationRow>(ctx, self.uuid, filter, first, after).await?;
        Ok(ObservationConnection {
            edges,
            page_info,
            total: Some(total),
        })
    }

    /// The patient's medication requests by authoring time.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn medication_requests(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "e.g. active, completed")] status: Option<String>,
        #[graphql(desc = "RxNorm code")] code: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<MedicationRequestConnection> {
        let filter = medication_request_filter(status, code)?;
        let (edges, page_info, total) =
            patient_connection::<MedicationRequestRow>(ctx, self.uuid, filter, first, after)
                .await?;
        Ok(MedicationRequestConnection {
            edges,
            page_info,
            total: Some(total),
        })
    }
}

fn bad_input(message: String) -> async_graphql::Error {
    use async_graphql::ErrorExtensions;
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", "BAD_USER_INPUT"))
}

/// A status argument: one of the code set's codes.
fn code<T: std::str::FromStr<Err = String>>(
    name: &str,
    value: Option<String>,
) -> async_graphql::Result<Option<String>> {
    match value {
        Some(v) => v
            .parse::<T>()
            .map(|_| Some(v))
            .map_err(|reason| bad_input(format!("`{name}`: {reason}"))),
        None => Ok(None),
    }
}

pub(crate) fn appointment_filter(
    status: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> async_graphql::Result<TimelineFilter> {
    Ok(TimelineFilter {
        status: code::<events::clinical::AppointmentStatus>("status", status)?,
        from,
        to,
    })
}

pub(crate) fn encounter_filter(
    status: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> async_graphql::Result<TimelineFilter> {
    Ok(TimelineFilter {
        status: code::<events::clinical::EncounterStatus>("status", status)?,
        from,
        to,
    })
}

pub(crate) fn medication_request_filter(
    status: Option<String>,
    code_: Option<String>,
) -> async_graphql::Result<MedicationRequestFilter> {
    Ok(MedicationRequestFilter {
        status: code::<events::clinical::MedicationRequestStatus>("status", status)?,
        code: code_,
    })
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

/// A code from a code system (FHIR Coding).
#[derive(SimpleObject)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

/// An appointment (FHIR R4 Appointment in spirit).
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Appointment {
    #[graphql(skip)]
    pub patient: Uuid,
    pub id: ID,
    /// The version of the appointment; send it as `If-Match` to cancel.
    pub version: i64,
    pub patient_id: ID,
    pub practitioner_id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// booked | arrived (its encounter is in progress) | fulfilled (its encounter finished) |
    /// cancelled
    pub status: String,
    pub service_type: Option<Coding>,
    pub description: Option<String>,
    pub cancel_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<AppointmentRow> for Appointment {
    fn from(a: AppointmentRow) -> Self {
        Appointment {
            patient: a.patient_id,
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

#[ComplexObject]
impl Appointment {
    /// The patient the appointment is for.
    async fn patient(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Patient>> {
        linked::<PatientRow, _>(ctx, self.patient, Some(self.patient), "Patient").await
    }
}

#[derive(SimpleObject)]
pub struct AppointmentEdge {
    pub cursor: String,
    pub node: Appointment,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct AppointmentConnection {
    pub edges: Vec<AppointmentEdge>,
    pub page_info: PageInfo,
    /// What `totalCount` counts: one patient's records under the same filter.
    #[graphql(skip)]
    pub total: Option<CountOf<AppointmentRow>>,
}

/// Appointment criteria; all given ones must match. `from` is inclusive and `to` exclusive,
/// on the start.
#[derive(InputObject, Default)]
pub struct AppointmentFilter {
    pub patient_id: Option<ID>,
    pub practitioner_id: Option<String>,
    /// booked | arrived | fulfilled | cancelled
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
#[graphql(complex)]
pub struct Observation {
    #[graphql(skip)]
    pub patient: Uuid,
    #[graphql(skip)]
    pub encounter: Option<Uuid>,
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
            patient: o.patient_id,
            encounter: o.encounter_id,
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

#[ComplexObject]
impl Observation {
    /// The encounter it was recorded in, if any.
    async fn encounter(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Encounter>> {
        linked::<EncounterRow, _>(ctx, self.patient, self.encounter, "Encounter").await
    }
}

#[derive(SimpleObject)]
pub struct ObservationEdge {
    pub cursor: String,
    pub node: Observation,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct ObservationConnection {
    pub edges: Vec<ObservationEdge>,
    pub page_info: PageInfo,
    /// What `totalCount` counts: one patient's records under the same filter.
    #[graphql(skip)]
    pub total: Option<CountOf<ObservationRow>>,
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
#[graphql(complex)]
pub struct MedicationRequest {
    #[graphql(skip)]
    pub patient: Uuid,
    #[graphql(skip)]
    pub encounter: Option<Uuid>,
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
            patient: m.patient_id,
            encounter: m.encounter_id,
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

#[ComplexObject]
impl MedicationRequest {
    /// The encounter it was prescribed in, if any.
    async fn encounter(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Encounter>> {
        linked::<EncounterRow, _>(ctx, self.patient, self.encounter, "Encounter").await
    }
}

#[derive(SimpleObject)]
pub struct MedicationRequestEdge {
    pub cursor: String,
    pub node: MedicationRequest,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct MedicationRequestConnection {
    pub edges: Vec<MedicationRequestEdge>,
    pub page_info: PageInfo,
    /// What `totalCount` counts: one patient's records under the same filter.
    #[graphql(skip)]
    pub total: Option<CountOf<MedicationRequestRow>>,
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

/// An encounter (FHIR R4 Encounter in spirit).
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Encounter {
    #[graphql(skip)]
    pub patient: Uuid,
    #[graphql(skip)]
    pub appointment: Option<Uuid>,
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
            patient: e.patient_id,
            appointment: e.appointment_id,
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

#[ComplexObject]
impl Encounter {
    /// The appointment it was started from, if any.
    async fn appointment(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Appointment>> {
        linked::<AppointmentRow, _>(ctx, self.patient, self.appointment, "Appointment").await
    }
}

#[derive(SimpleObject)]
pub struct EncounterEdge {
    pub cursor: String,
    pub node: Encounter,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct EncounterConnection {
    pub edges: Vec<EncounterEdge>,
    pub page_info: PageInfo,
    /// What `totalCount` counts: one patient's records under the same filter.
    #[graphql(skip)]
    pub total: Option<CountOf<EncounterRow>>,
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

macro_rules! edges {
    ($($edge:ty),+) => {
        $(impl Edge for $edge {
            fn cursor(&self) -> &str {
                &self.cursor
            }
        })+
    };
}

edges!(
    PatientEdge,
    AppointmentEdge,
    EncounterEdge,
    ObservationEdge,
    MedicationRequestEdge,
    PhiAccessEdge
);

/// `Listed` for a row: its connection's tag, its FHIR type, its edge, its time and id fields.
macro_rules! listed {
    ($($row:ty: $tag:literal, $type:literal, $edge:ident, ($time:ident, $id:ident);)+) => {
        $(impl Listed for $row {
            const TAG: &'static str = $tag;
            const RESOURCE_TYPE: &'static str = $type;
            type Edge = $edge;
            fn key(&self) -> (DateTime<Utc>, Uuid) {
                (self.$time, self.$id)
            }
            fn edge(self, cursor: String) -> $edge {
                $edge {
                    cursor,
                    node: self.into(),
                }
            }
        })+
    };
}

listed! {
    AppointmentRow: "appointments", "Appointment", AppointmentEdge, (start_at, id);
    EncounterRow: "encounters", "Encounter", EncounterEdge, (started_at, id);
    ObservationRow: "observations", "Observation", ObservationEdge, (effective_at, id);
    MedicationRequestRow: "medicationRequests", "MedicationRequest", MedicationRequestEdge, (authored_on, id);
    AccessRow: "phiAccessLog", "AuditEvent", PhiAccessEdge, (occurred_at, event_id);
}

/// `totalCount` on a connection of one patient's records.
macro_rules! total_count {
    ($($connection:ty),+) => {
        $(#[ComplexObject]
        impl $connection {
            /// How many records match, over all pages: given for one patient's records (a
            /// nested connection, or a filter naming the patient), null for lists across
            /// patients, whose count would cost as much as reading them.
            async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i64>> {
                match &self.total {
                    Some(key) => total(ctx, key.clone()).await.map(Some),
                    None => Ok(None),
                }
            }
        })+
    };
}

total_count!(
    AppointmentConnection,
    EncounterConnection,
    ObservationConnection,
    MedicationRequestConnection
);

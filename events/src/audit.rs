//! The PHI access audit event (IHE BALP in spirit): one per patient per request.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Actor;

/// `event_type` of a PHI access record.
pub const PHI_ACCESSED: &str = "PhiAccessed";

/// What was done with the patient's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessAction {
    Read,
    Search,
    Export,
}

/// Whether the access was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessOutcome {
    Success,
    Denied,
    Error,
}

/// One access to one patient's PHI, written to `healthcare.audit.phi_access` (key: patient id)
/// before the data is returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhiAccessed {
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: Actor,
    pub patient_id: Uuid,
    pub action: AccessAction,
    /// FHIR resource type read, e.g. `Patient`.
    pub resource_type: String,
    pub resource_ids: Vec<String>,
    /// HL7 v3 PurposeOfUse: `TREAT`, `ETREAT` (break-the-glass), `HPAYMT`, `HOPERAT`, ...
    pub purpose_of_use: String,
    pub outcome: AccessOutcome,
    /// The TCP peer, or the client a configured trusted proxy saw.
    pub client_ip: Option<String>,
    /// `X-Forwarded-For` as received, when present (schema v2): recorded, never believed.
    #[serde(default)]
    pub forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: String,
    /// The component that served the data, e.g. `query-api`.
    pub service: String,
    /// Why access was denied or failed; on a break-the-glass access (`ETREAT`), the reason the
    /// user gave; absent otherwise.
    pub detail: Option<String>,
}

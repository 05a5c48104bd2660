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

/// `event_type` of an audit checkpoint.
pub const AUDIT_CHECKPOINT_SEALED: &str = "AuditCheckpointSealed";

/// A signed checkpoint over one partition of the audit log, written by the audit sealer to
/// `healthcare.audit.phi_access.checkpoints` (key: the partition number).
///
/// The sealer numbers the records of each partition itself (1, 2, ...: Kafka offsets may have
/// gaps) and folds each into a SHA-256 hash chain; a checkpoint covers the records read since
/// the previous one (`start_offset` up to, not including, `end_offset`) and names the chain's
/// head after the last of them, the hash of the previous checkpoint's value bytes, and how
/// many records the partition's chain holds. A checkpoint with no new records still proves the
/// sealer was running and saw nothing more (see `replay-tool audit verify`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    pub event_id: Uuid,
    pub event_type: String,
    pub sealed_at: DateTime<Utc>,
    /// The sealed topic (`healthcare.audit.phi_access`).
    pub topic: String,
    pub partition: i32,
    /// This checkpoint's number within the partition, from 1.
    pub sequence: i64,
    /// The first offset covered: the previous checkpoint's `end_offset` (0 for the first).
    pub start_offset: i64,
    /// One past the last offset covered.
    pub end_offset: i64,
    /// Records covered by this checkpoint.
    pub record_count: i64,
    /// Records in the partition's chain through `end_offset`.
    pub chain_length: i64,
    /// The chain's head after the last covered record (hex SHA-256).
    pub chain_hash: String,
    /// SHA-256 (hex) of the previous checkpoint's value bytes; absent on the first.
    pub previous_checkpoint: Option<String>,
    /// The sealer instance that wrote it (host name and process id).
    pub sealer: String,
}

//! The PHI access audit trail: writes one `PhiAccessed` record per patient per request to
//! `healthcare.audit.phi_access` and waits for the broker's acknowledgement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use events::Actor;
use events::audit::{AccessAction, AccessOutcome, PHI_ACCESSED, PhiAccessed};
use events::catalog::AUDIT_PHI_ACCESS;
use platform::kafka::RenewingProducer;
use platform::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use schemas::EventCodec;
use tokio::sync::{Mutex, OnceCell};
use uuid::Uuid;

/// The audit topic writer shared by all requests.
pub struct AuditLog {
    producer: RenewingProducer,
    codec: Arc<EventCodec>,
    service: String,
    written: Counter,
    failures: Counter,
}

impl AuditLog {
    pub fn new(producer: RenewingProducer, codec: Arc<EventCodec>, metrics: &Metrics) -> Self {
        AuditLog {
            producer,
            codec,
            service: "query-api".to_string(),
            written: metrics.register(
                "audit_events_written",
                "PHI access audit events acknowledged by the broker",
                Counter::default(),
            ),
            failures: metrics.register(
                "audit_write_failures",
                "PHI access audit events that could not be written (the read was refused)",
                Counter::default(),
            ),
        }
    }

    /// Writes `access` and waits until the broker acknowledged it.
    pub async fn write(&self, access: &PhiAccessed) -> Result<(), String> {
        let result = self.try_write(access).await;
        match &result {
            Ok(()) => {
                self.written.inc();
            }
            Err(error) => {
                self.failures.inc();
                tracing::error!(patient_id = %access.patient_id, request_id = %access.request_id, %error, "PHI access audit write failed");
            }
        }
        result
    }

    async fn try_write(&self, access: &PhiAccessed) -> Result<(), String> {
        let bytes = self
            .codec
            .encode(AUDIT_PHI_ACCESS, access)
            .await
            .map_err(|e| e.to_string())?;
        let key = access.patient_id.to_string();
        let event_id = access.event_id.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "event_type",
                value: Some(PHI_ACCESSED),
            })
            .insert(Header {
                key: "event_id",
                value: Some(event_id.as_str()),
            })
            .insert(Header {
                key: "correlation_id",
                value: Some(access.request_id.as_str()),
            });
        let record = FutureRecord::to(AUDIT_PHI_ACCESS)
            .key(&key)
            .payload(&bytes)
            .headers(headers);
        self.producer
            .get()
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(e, _)| {
                self.producer.suspect();
                format!("broker did not acknowledge: {e}")
            })
    }
}

/// Who is reading, from where and why: the parts of an audit record known per request.
#[derive(Debug, Clone)]
pub struct AccessContext {
    pub actor: Actor,
    pub purpose_of_use: String,
    /// Why the caller broke the glass (`ETREAT`), recorded with each access it allowed.
    pub break_glass_reason: Option<String>,
    /// The TCP peer, or the client a trusted proxy saw.
    pub client_ip: Option<String>,
    /// `X-Forwarded-For` as received, when present (recorded, never believed on its own).
    pub forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: String,
}

/// The outcome of writing one audit record, shared by every resolver that needs it.
type AuditWrite = Arc<OnceCell<Result<(), String>>>;

/// The audit state of one request: each patient is audited once, however many resolvers touch it.
pub struct RequestAudit {
    log: Arc<AuditLog>,
    pub context: AccessContext,
    done: Mutex<HashMap<(Uuid, AccessOutcome), AuditWrite>>,
}

impl RequestAudit {
    pub fn new(log: Arc<AuditLog>, context: AccessContext) -> Self {
        RequestAudit {
            log,
            context,
            done: Mutex::new(HashMap::new()),
        }
    }

    /// Records one access to `patient_id` (once per request and outcome); `Err` means the
    /// record could not be written and the data must not be returned.
    pub async fn record(
        &self,
        patient_id: Uuid,
        action: AccessAction,
        resource_type: &str,
        resource_ids: Vec<String>,
        outcome: AccessOutcome,
        detail: Option<String>,
    ) -> Result<(), String> {
        let cell = self
            .done
            .lock()
            .await
            .entry((patient_id, outcome))
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let c = &self.context;
            let access = PhiAccessed {
                event_id: Uuid::now_v7(),
                event_type: PHI_ACCESSED.to_string(),
                occurred_at: Utc::now(),
                actor: c.actor.clone(),
                patient_id,
                action,
                resource_type: resource_type.to_string(),
                resource_ids,
                purpose_of_use: c.purpose_of_use.clone(),
                outcome,
                client_ip: c.client_ip.clone(),
                forwarded_for: c.forwarded_for.clone(),
                user_agent: c.user_agent.clone(),
                request_id: c.request_id.clone(),
                service: self.log.service.clone(),
                detail: detail.or_else(|| {
                    c.break_glass_reason
                        .as_ref()
                        .map(|reason| format!("break-the-glass: {reason}"))
                }),
            };
            self.log.write(&access).await
        })
        .await
        .clone()
    }
}

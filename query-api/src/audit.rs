//! The PHI access audit trail: writes one `PhiAccessed` record per patient per request to
//! `healthcare.audit.phi_access` and waits for the broker's acknowledgement.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use events::Actor;
use events::audit::{AccessAction, AccessOutcome, PHI_ACCESSED, PhiAccessed};
use events::catalog::AUDIT_PHI_ACCESS;
use platform::kafka::RenewingProducer;
use platform::metrics::Metrics;
use platform::signing::RecordSigner;
use prometheus_client::metrics::counter::Counter;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer};
use schemas::EventCodec;
use uuid::Uuid;

/// The audit topic writer shared by all requests.
pub struct AuditLog {
    producer: RenewingProducer,
    codec: Arc<EventCodec>,
    signer: RecordSigner,
    service: String,
    written: Counter,
    failures: Counter,
    /// When the last write was acknowledged, and when the last one failed (ms since the epoch).
    last_success_ms: AtomicI64,
    last_failure_ms: AtomicI64,
}

impl AuditLog {
    /// `signer` signs every record (see `platform::signing`).
    pub fn new(
        producer: RenewingProducer,
        codec: Arc<EventCodec>,
        signer: RecordSigner,
        metrics: &Metrics,
    ) -> Self {
        AuditLog {
            producer,
            codec,
            signer,
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
            last_success_ms: AtomicI64::new(0),
            last_failure_ms: AtomicI64::new(0),
        }
    }

    /// Whether PHI can be served: not while audit writes fail and the broker does not
    /// answer (reads would all be refused with `AUDIT_UNAVAILABLE`). Once the broker answers
    /// again the API is ready, and the next write shows whether writes work.
    pub async fn readiness(&self) -> Result<serde_json::Value, String> {
        let success = self.last_success_ms.load(Ordering::Acquire);
        let failure = self.last_failure_ms.load(Ordering::Acquire);
        if failure <= success {
            return Ok(serde_json::json!({"audit": "ok"}));
        }
        let producer = self.producer.get();
        let answers = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(AUDIT_PHI_ACCESS), Duration::from_secs(2))
                .is_ok()
        })
        .await
        .unwrap_or(false);
        let since = chrono::DateTime::from_timestamp_millis(failure)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        if answers {
            Ok(
                serde_json::json!({"audit": format!("recovering: the last write failed at {since}; the broker answers again")}),
            )
        } else {
            tracing::warn!(since = %since, "readiness: audit writes fail and the broker does not answer");
            Err(format!(
                "audit writes are failing (since {since}) and the broker does not answer: no patient data can be served"
            ))
        }
    }

    /// Writes `access` and waits until the broker acknowledged it.
    pub async fn write(&self, access: &PhiAccessed) -> Result<(), String> {
        let result = self.try_write(access).await;
        match &result {
            Ok(()) => {
                self.written.inc();
                self.last_success_ms
                    .store(Utc::now().timestamp_millis(), Ordering::Release);
            }
            Err(error) => {
                self.failures.inc();
                self.last_failure_ms
                    .store(Utc::now().timestamp_millis(), Ordering::Release);
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
        let headers = self
            .signer
            .signed_headers(headers, AUDIT_PHI_ACCESS, key.as_bytes(), &bytes);
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

/// What one request did to one patient's records, with one outcome.
#[derive(Debug)]
struct Accesses {
    /// Read when every access was a read by id, else Search.
    action: AccessAction,
    /// Each resource type, with the ids of that type, in the order first touched.
    resources: Vec<(String, Vec<String>)>,
    detail: Option<String>,
}

/// The audit trail of one request (one operation of a batch): resolvers note what they
/// return or refuse, and [`RequestAudit::flush`] writes one record per patient and outcome
/// — waiting for the broker's acknowledgements — before the answer leaves.
pub struct RequestAudit {
    log: Arc<AuditLog>,
    pub context: AccessContext,
    noted: Mutex<Vec<((Uuid, AccessOutcome), Accesses)>>,
}

impl RequestAudit {
    pub fn new(log: Arc<AuditLog>, context: AccessContext) -> Self {
        RequestAudit {
            log,
            context,
            noted: Mutex::new(Vec::new()),
        }
    }

    /// Notes an access to `patient_id`'s `resource_type` resources `resource_ids` (written by
    /// [`RequestAudit::flush`]); `detail` is the reason of a refusal.
    pub fn note(
        &self,
        patient_id: Uuid,
        action: AccessAction,
        resource_type: &str,
        resource_ids: impl IntoIterator<Item = String>,
        outcome: AccessOutcome,
        detail: Option<&str>,
    ) {
        let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        let key = (patient_id, outcome);
        let index = match noted.iter().position(|(k, _)| *k == key) {
            Some(index) => index,
            None => {
                noted.push((
                    key,
                    Accesses {
                        action,
                        resources: Vec::new(),
                        detail: detail.map(str::to_string),
                    },
                ));
                noted.len() - 1
            }
        };
        let accesses = &mut noted[index].1;
        if action != AccessAction::Read {
            accesses.action = action;
        }
        let ids = match accesses
            .resources
            .iter_mut()
            .position(|(t, _)| t == resource_type)
        {
            Some(i) => &mut accesses.resources[i].1,
            None => {
                accesses
                    .resources
                    .push((resource_type.to_string(), Vec::new()));
                &mut accesses.resources.last_mut().expect("just pushed").1
            }
        };
        for id in resource_ids {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }

    /// Whether anything was noted.
    pub fn is_empty(&self) -> bool {
        self.noted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Writes one record per patient and outcome noted — all at once, sharing the broker's
    /// round trips — and waits until the broker acknowledged every one. `Err` means the answer
    /// must not carry the data: some record could not be written.
    pub async fn flush(&self) -> Result<(), String> {
        let noted = std::mem::take(&mut *self.noted.lock().unwrap_or_else(|e| e.into_inner()));
        let records: Vec<PhiAccessed> = noted
            .into_iter()
            .map(|((patient_id, outcome), accesses)| self.record(patient_id, outcome, accesses))
            .collect();
        futures::future::try_join_all(records.iter().map(|r| self.log.write(r)))
            .await
            .map(|_| ())
    }

    /// The record of `accesses`: one resource type with its ids, or, when the request touched
    /// several, the types comma-separated and the ids as FHIR references (`Observation/<id>`).
    fn record(&self, patient_id: Uuid, outcome: AccessOutcome, accesses: Accesses) -> PhiAccessed {
        let c = &self.context;
        let (resource_type, resource_ids) = match <[_; 1]>::try_from(accesses.resources) {
            Ok([(resource_type, ids)]) => (resource_type, ids),
            Err(several) => {
                let types: Vec<&str> = several.iter().map(|(t, _)| t.as_str()).collect();
                let ids = several
                    .iter()
                    .flat_map(|(t, ids)| ids.iter().map(move |id| format!("{t}/{id}")))
                    .collect();
                (types.join(","), ids)
            }
        };
        PhiAccessed {
            event_id: Uuid::now_v7(),
            event_type: PHI_ACCESSED.to_string(),
            occurred_at: Utc::now(),
            actor: c.actor.clone(),
            patient_id,
            action: accesses.action,
            resource_type,
            resource_ids,
            purpose_of_use: c.purpose_of_use.clone(),
            outcome,
            client_ip: c.client_ip.clone(),
            forwarded_for: c.forwarded_for.clone(),
            user_agent: c.user_agent.clone(),
            request_id: c.request_id.clone(),
            service: self.log.service.clone(),
            detail: accesses.detail.or_else(|| {
                c.break_glass_reason
                    .as_ref()
                    .map(|reason| format!("break-the-glass: {reason}"))
            }),
        }
    }
}

//! End-to-end tests: one per user journey, against the real broker, registry and PostgreSQL.

mod attacks;
mod audit_integrity;
mod bad_input;
mod clinicians;
mod commands;
mod concurrency;
mod contract;
mod encryption;
mod fuzz;
mod group_commit;
mod keycloak;
mod log_reset;
mod outage;
mod portals;
mod projections;
mod registry_auth;
mod relay_backlog;
mod restart;
mod security;
mod walking_skeleton;

use std::time::{Duration, Instant};

use events::Role;
use tests::{Stack, token};

/// The patient query the portal journeys use.
pub const PATIENT_QUERY: &str = "query($id: ID!) { patient(id: $id) {
    id version gender birthDate updatedAt
    name { given family text }
    identifiers { system value }
    telecom { system value }
    address { line city postalCode country } } }";

/// Queries `patient(id)` as an admin until it appears (bounded); returns the request id
/// of the answering request and the patient.
/// Reads patient `id` as admin `sub` (who may read every patient) until the read model has it.
pub async fn read_until_visible(stack: &Stack, id: &str, sub: &str) -> (String, serde_json::Value) {
    let practitioner = token(Role::Admin, sub, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (status, _, body) = stack
            .graphql(
                &practitioner,
                &[("X-Request-Id", &request_id)],
                PATIENT_QUERY,
                serde_json::json!({"id": id}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "{body}");
        if !body["data"]["patient"].is_null() {
            return (request_id, body["data"]["patient"].clone());
        }
        assert!(
            Instant::now() < deadline,
            "patient {id} never appeared in the read model"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

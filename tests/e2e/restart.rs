//! Journey: an operator kills the whole local stack (SIGKILL) and starts it again; registered
//! patients, schemas and schema ids, and the audit log survive, and the stack keeps working.

use events::catalog::AUDIT_PHI_ACCESS;
use rdkafka::message::Message;
use tests::{Databases, OwnCluster, Stack, ada, read_topic};

use crate::read_until_visible;

#[tokio::test]
async fn killing_and_restarting_the_stack_keeps_patients_schemas_ids_and_the_audit_log() {
    let schema_lines = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with("schema"))
            .cloned()
            .collect()
    };
    let (mut own, first_bootstrap) = OwnCluster::start().await;
    let cluster = own.cluster.clone();
    let ids_before = schema_lines(&first_bootstrap);
    assert_eq!(
        ids_before.len(),
        schemas::catalog::SCHEMAS.len(),
        "{first_bootstrap:?}"
    );
    let databases = Databases::fresh();

    let mut stack = Stack::start_with(cluster.clone(), databases.clone()).await;
    let first = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (request_id, _) = read_until_visible(&stack, &first, "dr-restart").await;

    // Crash everything.
    stack.kill();
    own.kill_registry();
    own.kill_broker();

    own.start_broker().await;
    own.start_registry().await;
    let second_bootstrap = own.bootstrap();
    assert_eq!(
        ids_before,
        schema_lines(&second_bootstrap),
        "schema ids changed across a restart"
    );
    assert!(
        second_bootstrap
            .iter()
            .filter(|l| l.starts_with("topic"))
            .all(|l| l.contains("exists")),
        "topics were not kept: {second_bootstrap:?}"
    );

    let stack = Stack::start_with(cluster.clone(), databases).await;
    let (_, patient) = read_until_visible(&stack, &first, "dr-restart").await;
    assert_eq!(patient["name"]["family"], "Lovelace");

    // The broker kept the audit log, and the platform still carries new work end to end.
    let audit = read_topic(&cluster.brokers, AUDIT_PHI_ACCESS);
    assert!(
        audit.iter().any(|m| m.key() == Some(first.as_bytes())),
        "the audit log lost the first read"
    );
    let log = stack.replay_tool(&["audit", "--patient", &first, "--format", "jsonl"]);
    assert!(log.contains(&request_id), "{log}");
    let second = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = read_until_visible(&stack, &second, "dr-restart").await;
}

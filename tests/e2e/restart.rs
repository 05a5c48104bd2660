//! Journey: an operator kills the whole local stack (SIGKILL) and starts it again; registered
//! patients, schemas and schema ids, and the audit log survive, and the stack keeps working.

use std::path::Path;
use std::time::Duration;

use events::catalog::AUDIT_PHI_ACCESS;
use rdkafka::message::Message;
use tests::{
    Cluster, Databases, Process, Stack, ada, bin_dir, free_port, postgres_server, read_topic,
    replay_tool, wait_ready,
};

use crate::read_until_visible;

struct Infra {
    broker: Process,
    registry: Process,
}

/// Starts the broker (SQLite storage in `dir`) and the registry, waits for both, and runs
/// `replay-tool bootstrap`; returns them with the lines bootstrap printed.
async fn start_infra(dir: &Path, cluster: &Cluster, registry_db: &str) -> (Infra, Vec<String>) {
    let tansu = std::env::var("HEALTHPLANE_TANSU_BIN")
        .expect("HEALTHPLANE_TANSU_BIN: run ./deploy/test.sh");
    let listener = format!("tcp://{}", cluster.brokers);
    let broker = Process::spawn_in(
        dir,
        "tansu",
        Path::new(&tansu),
        &[
            "broker",
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &listener,
            "--storage-engine",
            "sqlite://tansu.db",
        ],
        &[],
        dir,
    );
    let registry_listen = cluster.registry_url.trim_start_matches("http://");
    let mut registry = Process::spawn(
        "schema-registry",
        &bin_dir().join("schema-registry"),
        &["--listen", registry_listen, "--database-url", registry_db],
        &[],
        dir,
    );
    wait_broker(&cluster.brokers).await;
    wait_ready(
        &mut registry,
        &format!("{}/health/ready", cluster.registry_url),
        Duration::from_secs(60),
    )
    .await;
    let bootstrap = replay_tool(cluster, &["bootstrap"]);
    assert!(
        bootstrap.lines().filter(|l| l.starts_with("topic")).count() >= 9,
        "{bootstrap}"
    );
    (
        Infra { broker, registry },
        bootstrap.lines().map(str::to_string).collect(),
    )
}

async fn wait_broker(address: &str) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("broker on {address} did not start");
}

#[tokio::test]
async fn killing_and_restarting_the_stack_keeps_patients_schemas_ids_and_the_audit_log() {
    let dir = std::env::temp_dir().join(format!(
        "healthplane-restart-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let registry_db = format!(
        "{}/hp_test_{}_registry",
        postgres_server(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let cluster = Cluster {
        brokers: format!("127.0.0.1:{}", free_port()),
        registry_url: format!("http://127.0.0.1:{}", free_port()),
    };
    let databases = Databases::fresh();

    let schema_lines = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with("schema"))
            .cloned()
            .collect()
    };
    let (mut infra, first_bootstrap) = start_infra(&dir, &cluster, &registry_db).await;
    let ids_before = schema_lines(&first_bootstrap);
    assert_eq!(
        ids_before.len(),
        schemas::catalog::SCHEMAS.len(),
        "{first_bootstrap:?}"
    );

    let mut stack = Stack::start_with(cluster.clone(), databases.clone()).await;
    let first = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (request_id, _) = read_until_visible(&stack, &first, "dr-restart").await;

    // Crash everything.
    stack.kill();
    infra.registry.kill();
    infra.broker.kill();

    let (infra, second_bootstrap) = start_infra(&dir, &cluster, &registry_db).await;
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
    drop(infra);
    let _ = std::fs::remove_dir_all(&dir);
}

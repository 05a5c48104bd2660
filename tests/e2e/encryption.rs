//! Journey: a platform team turns on encryption in transit (HIPAA 164.312(e)(1)). With the
//! database servers' CA configured, every PostgreSQL connection is TLS and verifies the
//! server's certificate and host name; with the brokers' CA, Kafka clients speak TLS to the
//! brokers and refuse one whose certificate they cannot verify, changing nothing; and no
//! `--help` prints a database password.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::Connection;
use tests::tls::{TestCa, tls_proxy};
use tests::{Cluster, Process, bin_dir, free_port, postgres_server};
use uuid::Uuid;

/// The DNS name in a certificate (its subjectAltName, else its CN).
fn certificate_name(cert_pem: &str) -> String {
    let dir = std::env::temp_dir().join(format!("healthplane-cert-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("c.pem"), cert_pem).expect("write");
    let out = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-in",
        ])
        .arg(dir.join("c.pem"))
        .output()
        .expect("openssl runs");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|part| part.strip_prefix("DNS:"))
        .or_else(|| {
            text.split("CN = ")
                .nth(1)
                .map(|cn| cn.lines().next().unwrap_or(cn))
        })
        .expect("a name in the server certificate")
        .trim()
        .to_string()
}

/// Starts the schema registry (a PostgreSQL client like every service) on `database_url`.
fn registry_on(database_url: &str, ca_pem: &str, log_dir: &std::path::Path) -> (Process, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let process = Process::spawn(
        &format!("schema-registry-{}", Uuid::new_v4().simple()),
        &bin_dir().join("schema-registry"),
        &["--listen", &listen, "--database-url", database_url],
        &[
            ("HEALTHPLANE_POSTGRES_CA_PEM", ca_pem.to_string()),
            (
                "HEALTHPLANE_SCHEMA_REGISTRY_USERS",
                "tls-test:tls-test-password-of-24b".into(),
            ),
        ],
        log_dir,
    );
    (process, format!("http://{listen}/health/ready"))
}

#[tokio::test]
async fn postgres_connections_are_encrypted_and_verify_the_server_name() {
    // Given the test server, which speaks TLS with its own certificate (Debian's default).
    let server = postgres_server();
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("admin connection");
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut admin)
        .await
        .expect("SHOW ssl");
    assert_eq!(ssl, "on", "the test PostgreSQL must have TLS on (ssl = on)");
    let server_cert: String =
        sqlx::query_scalar("SELECT pg_read_file(current_setting('ssl_cert_file'))")
            .fetch_one(&mut admin)
            .await
            .expect("the server's certificate");
    let name = certificate_name(&server_cert);
    let url = reqwest::Url::parse(&server).expect("server URL");
    let port = url.port().unwrap_or(5432);
    let credentials = format!("{}:{}", url.username(), url.password().unwrap_or_default());
    let database = format!("hp_tls_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let by_name = format!("postgres://{credentials}@{name}:{port}/{database}");
    let logs = std::env::temp_dir().join(format!("healthplane-tls-{database}"));

    // When a service is started with the server's CA: it connects, over TLS.
    let (mut registry, ready) = registry_on(&by_name, &server_cert, &logs);
    tests::wait_ready(&mut registry, &ready, Duration::from_secs(60)).await;
    let encrypted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
          WHERE datname = $1 AND ssl",
    )
    .bind(&database)
    .fetch_one(&mut admin)
    .await
    .expect("pg_stat_ssl");
    let clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
          WHERE datname = $1 AND NOT ssl",
    )
    .bind(&database)
    .fetch_one(&mut admin)
    .await
    .expect("pg_stat_ssl");
    assert!(encrypted > 0, "the service's connections are not TLS");
    assert_eq!(clear, 0, "a connection of the service is in clear");
    drop(registry);

    // Then the right server asked by an address its certificate does not name is refused
    // (verify-full checks the host name, not only the chain). The configured CA is trusted in
    // addition to the system's, as in any TLS client: on this machine Debian's snakeoil
    // certificate is itself in the system store, so "another CA" cannot be shown refused here.
    let by_address = format!("postgres://{credentials}@127.0.0.1:{port}/{database}");
    let (mut mismatched, _) = registry_on(&by_address, &server_cert, &logs);
    let status = mismatched.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| !s.success()),
        "a certificate for {name} was taken for 127.0.0.1"
    );
    let log = std::fs::read_to_string(&mismatched.log).unwrap_or_default();
    assert!(log.to_lowercase().contains("certificate"), "{log}");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .ok();
}

/// Runs `replay-tool bootstrap` with `envs`; returns (exit code, stdout, stderr).
fn bootstrap(envs: &[(&str, &str)]) -> (i32, String, String) {
    let cluster = Cluster::shared();
    let output = std::process::Command::new(bin_dir().join("replay-tool"))
        .arg("bootstrap")
        .env("HEALTHPLANE_SCHEMA_REGISTRY_URL", &cluster.registry_url)
        .env(
            "HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO",
            std::env::var("HEALTHPLANE_TEST_SCHEMA_REGISTRY_USER_INFO")
                .expect("run the suite with ./deploy/test.sh"),
        )
        .envs(envs.iter().copied())
        .output()
        .expect("replay-tool runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// Several threads: the TLS front keeps serving while the test waits for `replay-tool`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_speak_tls_and_refuse_a_broker_they_cannot_verify() {
    // Given a broker reachable only through TLS, with a certificate for `localhost` from the
    // cluster's own CA.
    let ca = TestCa::new("healthplane test cluster CA");
    let (cert, key) = ca.issue("localhost");
    let front = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let tls_port = front.local_addr().expect("address").port();
    let plain = format!("127.0.0.1:{}", free_port());
    let dir = std::env::temp_dir().join(format!("healthplane-tls-kafka-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let tansu = std::env::var("HEALTHPLANE_TANSU_BIN").expect("run ./deploy/test.sh");
    let mut broker = Process::spawn(
        "tansu",
        std::path::Path::new(&tansu),
        &[
            "broker",
            "--listener-url",
            &format!("tcp://{plain}"),
            "--advertised-listener-url",
            &format!("tcp://localhost:{tls_port}"),
            "--storage-engine",
            "memory://tansu/",
        ],
        &[],
        &dir,
    );
    let mut up = false;
    for _ in 0..100 {
        broker.assert_running();
        if tokio::net::TcpStream::connect(&plain).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the broker did not start");
    tls_proxy(front, &cert, &key, plain.clone());
    let brokers = format!("localhost:{tls_port}");

    // When a client that does not trust the cluster's CA bootstraps: refused, nothing created.
    let stranger = TestCa::new("another CA");
    let (code, _, stderr) = bootstrap(&[
        ("HEALTHPLANE_KAFKA_BROKERS", &brokers),
        ("HEALTHPLANE_KAFKA_SECURITY_PROTOCOL", "ssl"),
        ("HEALTHPLANE_KAFKA_CA_PEM", &stranger.cert_pem),
    ]);
    assert_ne!(code, 0, "a broker with an unknown CA was trusted");
    assert!(stderr.contains("no Kafka broker at"), "{stderr}");
    // Nor one that asks the broker by an address its certificate does not name.
    let by_address = format!("127.0.0.1:{tls_port}");
    let (code, _, stderr) = bootstrap(&[
        ("HEALTHPLANE_KAFKA_BROKERS", &by_address),
        ("HEALTHPLANE_KAFKA_SECURITY_PROTOCOL", "ssl"),
        ("HEALTHPLANE_KAFKA_CA_PEM", &ca.cert_pem),
    ]);
    assert_ne!(
        code, 0,
        "a certificate for localhost was taken for 127.0.0.1"
    );
    assert!(stderr.contains("no Kafka broker at"), "{stderr}");
    // Settings that do not add up stop the tool before it connects.
    let (code, _, stderr) = bootstrap(&[
        ("HEALTHPLANE_KAFKA_BROKERS", &brokers),
        ("HEALTHPLANE_KAFKA_SECURITY_PROTOCOL", "plaintext"),
        ("HEALTHPLANE_KAFKA_SASL_USERNAME", "relay"),
        ("HEALTHPLANE_KAFKA_SASL_PASSWORD", "relay-secret-password"),
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("sasl_ssl"), "{stderr}");
    assert!(!stderr.contains("relay-secret-password"), "{stderr}");

    // Then with the cluster's CA every topic is created, through TLS only: none existed before.
    let (code, stdout, stderr) = bootstrap(&[
        ("HEALTHPLANE_KAFKA_BROKERS", &brokers),
        ("HEALTHPLANE_KAFKA_SECURITY_PROTOCOL", "ssl"),
        ("HEALTHPLANE_KAFKA_CA_PEM", &ca.cert_pem),
    ]);
    assert_eq!(code, 0, "bootstrap over TLS failed: {stderr}");
    let created = stdout.lines().filter(|l| l.contains("created")).count();
    assert!(
        created >= events::catalog::CATALOG.len(),
        "not every topic was new:\n{stdout}"
    );
    assert!(!stdout.contains("exists"), "{stdout}");
    // And a consumer with the same settings sees them through the TLS front.
    let security = platform::transport::KafkaSecurity::from_vars(|name| match name {
        "HEALTHPLANE_KAFKA_SECURITY_PROTOCOL" => Some("ssl".into()),
        "HEALTHPLANE_KAFKA_CA_PEM" => Some(ca.cert_pem.clone()),
        _ => None,
    })
    .expect("settings");
    let mut config = platform::kafka::client_config(&brokers);
    security.apply(&mut config);
    config.set("group.id", "healthplane-tls-test");
    let consumer: BaseConsumer = config.create().expect("consumer");
    let metadata = tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(
                Some(events::catalog::AUDIT_PHI_ACCESS),
                Duration::from_secs(15),
            )
            .map(|m| m.topics()[0].partitions().len())
    })
    .await
    .expect("join")
    .expect("metadata through TLS");
    assert_eq!(metadata, 12);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_never_prints_a_database_password() {
    // Given database URLs with passwords in the environment, as in a container.
    let secret = "pw-that-must-not-print-7f3a";
    let url = format!("postgres://healthplane_query:{secret}@db:5432");
    for (binary, args) in [
        ("command-api", vec!["--help"]),
        ("query-api", vec!["--help"]),
        ("projector", vec!["--help"]),
        ("audit-sealer", vec!["--help"]),
        ("schema-registry", vec!["--help"]),
        ("replay-tool", vec!["provision-postgres", "--help"]),
        ("replay-tool", vec!["audit", "reconcile", "--help"]),
    ] {
        // When an operator asks a binary for its options.
        let output = std::process::Command::new(bin_dir().join(binary))
            .args(&args)
            .env("HEALTHPLANE_POSTGRES_URL", &url)
            .env("HEALTHPLANE_EVENT_STORE_DATABASE_URL", format!("{url}/es"))
            .env("HEALTHPLANE_PROJECTION_DATABASE_URL", format!("{url}/pm"))
            .env("HEALTHPLANE_AUDIT_DATABASE_URL", format!("{url}/audit"))
            .env("HEALTHPLANE_POSTGRES_ADMIN_URL", format!("{url}/postgres"))
            .output()
            .expect("runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // Then the options are listed, and the password is not.
        assert!(text.contains("--"), "{binary} {args:?}: {text}");
        assert!(
            !text.contains(secret),
            "{binary} {args:?} printed it:\n{text}"
        );
    }
}

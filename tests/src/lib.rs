//! The end-to-end harness: starts the real Healthplane binaries (command API, projector,
//! query API, and when asked a broker and registry of their own) as child processes on free
//! ports, each stack with fresh databases, and offers typed helpers to drive them.
//!
//! The shared broker and registry come from `deploy/test.sh` through
//! `HEALTHPLANE_TEST_KAFKA_BROKERS` and `HEALTHPLANE_TEST_SCHEMA_REGISTRY_URL`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use events::Role;
use uuid::Uuid;

pub mod bench;
pub mod tls;

/// The JWT secret the test stacks are started with.
pub const TEST_JWT_SECRET: &str = "healthplane-e2e-secret-of-at-least-32-bytes";
/// The key the test stacks seal consistency tokens with.
pub const TEST_CONSISTENCY_KEY: &str = "healthplane-e2e-consistency-key-of-32-bytes";

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is unset: run the suite with ./deploy/test.sh"))
}

/// The PostgreSQL server the tests use (no database name).
pub fn postgres_server() -> String {
    std::env::var("HEALTHPLANE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| platform::config::DEFAULT_POSTGRES_URL.into())
}

/// The directory holding the workspace's binaries (next to the test executable), checked
/// once to hold binaries built from the current source: a test of a stale build tests old
/// code, so it fails at once and says how to build.
pub fn bin_dir() -> PathBuf {
    static CHECKED: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            let mut dir = exe.parent().expect("deps dir").to_path_buf();
            if dir.ends_with("deps") {
                dir.pop();
            }
            check_fresh(&dir).map(|()| dir)
        })
        .clone()
        .unwrap_or_else(|stale| panic!("{stale}"))
}

/// Each binary and the workspace crates it is built from.
const BINARIES: [(&str, &[&str]); 7] = [
    (
        "command-api",
        &["events", "platform", "schemas", "event-store", "commands"],
    ),
    (
        "projector",
        &[
            "events",
            "platform",
            "schemas",
            "event-store",
            "projections",
        ],
    ),
    ("query-api", &["events", "platform", "schemas", "query-api"]),
    (
        "schema-registry",
        &["events", "platform", "schemas", "schema-registry"],
    ),
    (
        "replay-tool",
        &[
            "events",
            "platform",
            "schemas",
            "event-store",
            "projections",
            "replay-tool",
        ],
    ),
    (
        "audit-sealer",
        &["events", "platform", "schemas", "audit-sealer"],
    ),
    ("mint-token", &["events", "platform"]),
];

/// `Err` naming the first binary older than the newest source file it is built from.
fn check_fresh(bin_dir: &Path) -> Result<(), String> {
    fn newest(path: &Path, best: &mut Option<(std::time::SystemTime, PathBuf)>) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                newest(&entry.path(), best);
            }
        } else if let Ok(modified) = meta.modified()
            && best.as_ref().is_none_or(|(t, _)| modified > *t)
        {
            *best = Some((modified, path.to_path_buf()));
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (binary, crates) in BINARIES {
        let mut source = None;
        for dir in crates {
            newest(&root.join(dir).join("src"), &mut source);
            newest(&root.join(dir).join("Cargo.toml"), &mut source);
        }
        if crates.contains(&"schemas") {
            newest(&root.join("schemas/avro"), &mut source);
        }
        let Some((source_time, source_file)) = source else {
            continue;
        };
        let path = bin_dir.join(binary);
        let built = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(|_| {
                format!(
                    "{} is missing: run ./deploy/test.sh (or `cargo build --workspace --bins`)",
                    path.display()
                )
            })?;
        if built < source_time {
            return Err(format!(
                "{} is older than {}: the tests would run a stale build; run ./deploy/test.sh \
                 (or `cargo build --workspace --bins`) first",
                path.display(),
                source_file.display()
            ));
        }
    }
    Ok(())
}

/// An HTTP client for the services. It lets an idle pooled connection go after 2 s: the
/// services close idle keep-alive connections after their header read timeout (5 s), and a
/// client that reuses one just as it closes gets an incomplete message.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client without TLS builds")
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The audit signing key every query API of this test binary signs with, and the keyring
/// that trusts it (made once per binary).
pub fn audit_keys() -> &'static (PathBuf, PathBuf) {
    static KEYS: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir()
            .join("healthplane-tests")
            .join(format!("keys-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("key dir");
        let (private, line) = platform::signing::RecordSigner::generate().expect("a key");
        let (key, keyring) = (dir.join("audit-signing.key"), dir.join("audit-keyring"));
        std::fs::write(&key, private).expect("key file");
        std::fs::write(&keyring, format!("{line}\n")).expect("keyring file");
        (key, keyring)
    })
}

/// A token for `role`, signed with the test secret.
/// A fresh 2048-bit RSA key made by `openssl` (no key is kept in the repository), as an
/// identity provider's signing key: the key to sign with and its JWK modulus (`n`, base64url).
pub fn rsa_signing_key() -> (jsonwebtoken::EncodingKey, String) {
    use base64::Engine;
    let openssl = |args: &[&str], input: Option<&[u8]>| {
        use std::io::Write;
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("openssl runs");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(input) = input {
            stdin.write_all(input).expect("openssl reads");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("openssl ends");
        assert!(out.status.success(), "openssl {args:?} failed");
        out.stdout
    };
    let private = openssl(&["genrsa", "2048"], None);
    let modulus =
        String::from_utf8(openssl(&["rsa", "-noout", "-modulus"], Some(&private))).expect("text");
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    (
        jsonwebtoken::EncodingKey::from_rsa_pem(&private).expect("RSA key"),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    )
}

pub fn token(role: Role, sub: &str, patient_id: Option<Uuid>) -> String {
    platform::auth::mint_hs256(
        TEST_JWT_SECRET,
        sub,
        &[role],
        patient_id,
        chrono::Duration::minutes(10),
    )
}

/// A child process killed (SIGKILL) when dropped; its output goes to a log file.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        envs: &[(&str, String)],
        log_dir: &Path,
    ) -> Process {
        Process::spawn_in(log_dir, name, program, args, envs, log_dir)
    }

    /// Like `spawn`, with `cwd` as the working directory.
    pub fn spawn_in(
        cwd: &Path,
        name: &str,
        program: &Path,
        args: &[&str],
        envs: &[(&str, String)],
        log_dir: &Path,
    ) -> Process {
        std::fs::create_dir_all(log_dir).expect("log dir");
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(program)
            .current_dir(cwd)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .env("HEALTHPLANE_JWT_SECRET", TEST_JWT_SECRET)
            .env("HEALTHPLANE_CONSISTENCY_KEY", TEST_CONSISTENCY_KEY)
            .env("HEALTHPLANE_AUDIT_SIGNING_KEY_FILE", &audit_keys().0)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Process {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The operating system's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB (`VmRSS`), read from `/proc`.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits at most `timeout` for the process to exit; its status, or `None` if it runs on.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Fails loudly if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("{} exited with {status}; its log:\n{log}", self.name);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `url` answers 200, or panics after `timeout` with the process's log.
pub async fn wait_ready(process: &mut Process, url: &str, timeout: Duration) {
    let client = http_client();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        process.assert_running();
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&process.log).unwrap_or_default();
    panic!(
        "{} not ready at {url} after {timeout:?}; its log:\n{log}",
        process.name
    );
}

/// Where a stack's broker and registry are.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub brokers: String,
    pub registry_url: String,
}

impl Cluster {
    /// The shared broker and registry started by `deploy/test.sh`.
    pub fn shared() -> Cluster {
        Cluster {
            brokers: env("HEALTHPLANE_TEST_KAFKA_BROKERS"),
            registry_url: env("HEALTHPLANE_TEST_SCHEMA_REGISTRY_URL"),
        }
    }
}

/// The databases of one stack.
#[derive(Debug, Clone)]
pub struct Databases {
    pub event_store: String,
    pub patient: String,
    /// The appointment read model and the PHI access index: provisioned, each served by its
    /// projector only where a test starts one (`Projector::start_on`).
    pub appointment: String,
    pub encounter: String,
    pub laboratory: String,
    pub pharmacy: String,
    pub audit: String,
}

/// The password of the test stacks' service roles (`hp_test_command`, ...).
pub const TEST_ROLE_PASSWORD: &str = "hptestrolepassword0123456789";

impl Databases {
    fn name(url: &str) -> String {
        url.rsplit('/').next().unwrap_or_default().to_string()
    }

    /// Creates (or re-grants) the databases with their owners and the service roles, as the
    /// local stack does: each service then connects as its own least-privileged role.
    pub async fn provision(&self) {
        let plan = platform::provision::Plan {
            prefix: "hp_test".into(),
            event_store: Databases::name(&self.event_store),
            read_models: vec![
                Databases::name(&self.patient),
                Databases::name(&self.appointment),
                Databases::name(&self.encounter),
                Databases::name(&self.laboratory),
                Databases::name(&self.pharmacy),
                Databases::name(&self.audit),
            ],
            registry: None,
        };
        platform::provision::provision(&postgres_server(), &plan, |_| {
            TEST_ROLE_PASSWORD.to_string()
        })
        .await
        .expect("the test databases and roles are provisioned");
    }

    /// `url` with the credentials of `service`'s role.
    pub fn as_role(url: &str, service: platform::provision::Service) -> String {
        let plan = platform::provision::Plan {
            prefix: "hp_test".into(),
            event_store: String::new(),
            read_models: vec![],
            registry: None,
        };
        platform::provision::url_for(url, &plan.role(service), TEST_ROLE_PASSWORD)
    }

    /// Fresh, uniquely named databases (created by the services on start).
    pub fn fresh() -> Databases {
        let id = Uuid::new_v4().simple().to_string();
        let server = postgres_server();
        Databases {
            event_store: format!("{server}/hp_test_{}_events", &id[..12]),
            patient: format!("{server}/hp_test_{}_patient", &id[..12]),
            appointment: format!("{server}/hp_test_{}_appointment", &id[..12]),
            encounter: format!("{server}/hp_test_{}_encounter", &id[..12]),
            laboratory: format!("{server}/hp_test_{}_laboratory", &id[..12]),
            pharmacy: format!("{server}/hp_test_{}_pharmacy", &id[..12]),
            audit: format!("{server}/hp_test_{}_audit", &id[..12]),
        }
    }
}

/// The command API, the patient projector and the query API, running.
pub struct Stack {
    pub cluster: Cluster,
    pub databases: Databases,
    pub command_url: String,
    pub graphql_url: String,
    /// The patient projector's `/health/*` and `/metrics` (e.g. `http://127.0.0.1:port`).
    pub projector_url: String,
    pub log_dir: PathBuf,
    pub processes: Vec<Process>,
    pub http: reqwest::Client,
}

impl Stack {
    /// Starts a stack with fresh databases on the shared cluster.
    pub async fn start() -> Stack {
        Stack::start_with(Cluster::shared(), Databases::fresh()).await
    }

    pub async fn start_with(cluster: Cluster, databases: Databases) -> Stack {
        Stack::start_with_env(cluster, databases, &[]).await
    }

    /// Like `start_with`, with extra environment for every process.
    pub async fn start_with_env(
        cluster: Cluster,
        databases: Databases,
        extra: &[(&str, String)],
    ) -> Stack {
        let log_dir = std::env::temp_dir()
            .join("healthplane-tests")
            .join(Uuid::new_v4().simple().to_string());
        let bins = bin_dir();
        let mut kafka = vec![
            ("HEALTHPLANE_KAFKA_BROKERS", cluster.brokers.clone()),
            (
                "HEALTHPLANE_SCHEMA_REGISTRY_URL",
                cluster.registry_url.clone(),
            ),
        ];
        kafka.extend(extra.iter().cloned());
        databases.provision().await;
        use platform::provision::Service;
        let role = Databases::as_role;
        let (command_port, projector_port, query_port) = (free_port(), free_port(), free_port());
        let mut command = Process::spawn(
            "command-api",
            &bins.join("command-api"),
            &[
                "--listen",
                &format!("127.0.0.1:{command_port}"),
                "--database-url",
                &role(&databases.event_store, Service::Command),
            ],
            &kafka,
            &log_dir,
        );
        let mut projector = Process::spawn(
            "projector",
            &bins.join("projector"),
            &[
                "--projection",
                "patient",
                "--listen",
                &format!("127.0.0.1:{projector_port}"),
                "--database-url",
                &role(&databases.patient, Service::Projector),
                "--event-store-url",
                &role(&databases.event_store, Service::Projector),
            ],
            &kafka,
            &log_dir,
        );
        let command_url = format!("http://127.0.0.1:{command_port}");
        wait_ready(
            &mut command,
            &format!("{command_url}/health/ready"),
            Duration::from_secs(60),
        )
        .await;
        wait_ready(
            &mut projector,
            &format!("http://127.0.0.1:{projector_port}/health/ready"),
            Duration::from_secs(60),
        )
        .await;
        let mut query = Process::spawn(
            "query-api",
            &bins.join("query-api"),
            &[
                "--listen",
                &format!("127.0.0.1:{query_port}"),
                "--patient-database-url",
                &role(&databases.patient, Service::Query),
                "--appointment-database-url",
                &role(&databases.appointment, Service::Query),
                "--encounter-database-url",
                &role(&databases.encounter, Service::Query),
                "--laboratory-database-url",
                &role(&databases.laboratory, Service::Query),
                "--pharmacy-database-url",
                &role(&databases.pharmacy, Service::Query),
                "--audit-database-url",
                &role(&databases.audit, Service::Query),
            ],
            &kafka,
            &log_dir,
        );
        let query_url = format!("http://127.0.0.1:{query_port}");
        wait_ready(
            &mut query,
            &format!("{query_url}/health/ready"),
            Duration::from_secs(60),
        )
        .await;
        Stack {
            cluster,
            databases,
            command_url,
            graphql_url: format!("{query_url}/graphql"),
            projector_url: format!("http://127.0.0.1:{projector_port}"),
            log_dir,
            processes: vec![command, projector, query],
            http: http_client(),
        }
    }

    /// SIGKILLs every process of the stack.
    pub fn kill(&mut self) {
        self.processes.iter_mut().for_each(Process::kill);
    }

    /// POST/PATCH a command with a token; returns status, headers and JSON body.
    pub async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.command_url))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("command API answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, headers, json)
    }

    /// Registers a patient as an admin; returns the command response body.
    pub async fn register(&self, body: &serde_json::Value) -> serde_json::Value {
        let admin = token(Role::Admin, "admin-e2e", None);
        let (status, _, json) = self
            .command(
                reqwest::Method::POST,
                "/v1/patients",
                Some(&admin),
                &[],
                body.to_string().into_bytes(),
            )
            .await;
        assert_eq!(status, 201, "registration failed: {json}");
        json
    }

    /// Runs a GraphQL query; returns status, headers and the JSON body.
    pub async fn graphql(
        &self,
        token: &str,
        headers: &[(&str, &str)],
        query: &str,
        variables: serde_json::Value,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let mut request = self
            .http
            .post(&self.graphql_url)
            .bearer_auth(token)
            .json(&serde_json::json!({"query": query, "variables": variables}));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("query API answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap_or_default())
    }

    /// Starts the appointment, encounter, laboratory and pharmacy projectors on this stack's
    /// databases, as the projector role (the patient projector runs already).
    pub async fn start_clinical_projectors(&self) -> Vec<Projector> {
        let mut projectors = Vec::new();
        for (projection, database) in [
            ("appointment", &self.databases.appointment),
            ("encounter", &self.databases.encounter),
            ("laboratory", &self.databases.laboratory),
            ("pharmacy", &self.databases.pharmacy),
        ] {
            let database = Databases::as_role(database, platform::provision::Service::Projector);
            projectors.push(
                Projector::start_on(projection, &self.cluster, &self.log_dir, &database, None)
                    .await,
            );
        }
        projectors
    }

    /// Runs the `replay-tool` binary against this stack's cluster; returns its stdout.
    pub fn replay_tool(&self, args: &[&str]) -> String {
        replay_tool(&self.cluster, args)
    }
}

/// Runs the `replay-tool` binary against `cluster`; returns its stdout.
pub fn replay_tool(cluster: &Cluster, args: &[&str]) -> String {
    let (status, stdout, stderr) = replay_tool_status(cluster, args);
    assert!(status == 0, "replay-tool {args:?} failed: {stderr}");
    stdout
}

/// Runs the `replay-tool` binary (trusting this binary's audit keyring); returns its exit
/// status, stdout and stderr.
pub fn replay_tool_status(cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(bin_dir().join("replay-tool"))
        .args(args)
        .env("HEALTHPLANE_KAFKA_BROKERS", &cluster.brokers)
        .env("HEALTHPLANE_SCHEMA_REGISTRY_URL", &cluster.registry_url)
        .env("HEALTHPLANE_AUDIT_KEYRING", &audit_keys().1)
        .output()
        .expect("replay-tool runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).expect("utf-8 output"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The api.md example patient, with a unique identifier value.
pub fn ada() -> serde_json::Value {
    serde_json::json!({
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": Uuid::new_v4().to_string()}],
        "name": {"given": ["Ada"], "family": "Lovelace"},
        "gender": "female", "birthDate": "1815-12-10",
        "telecom": [{"system": "phone", "value": "+44 20 7946 0000"}],
        "address": {"line": ["12 St James's Square"], "city": "London", "postalCode": "SW1Y 4JH", "country": "GB"}
    })
}

/// Reads `topic` until `done` holds for its records (bounded: 30 s), then returns them.
/// The broker's high watermark can trail an acknowledgement by a moment, so a test that reads
/// right after publication waits for what it expects, then checks it exactly.
pub async fn read_topic_until(
    brokers: &str,
    topic: &str,
    done: impl Fn(&[rdkafka::message::OwnedMessage]) -> bool,
) -> Vec<rdkafka::message::OwnedMessage> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = read_topic(brokers, topic);
        if done(&records) || Instant::now() >= deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads every record of `topic`: all partitions at once, each until the broker says it is at
/// the end (partition EOF after an empty fetch). The high watermark only tells which partitions
/// are empty: the embedded broker reports it low by the size of the last batch.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_read_topic(brokers, topic) {
            Ok(records) => return records,
            // A broker that has just restarted may refuse a request or two.
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying a read of {topic}: {e}");
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => panic!("cannot read {topic}: {e}"),
        }
    }

    fn try_read_topic(
        brokers: &str,
        topic: &str,
    ) -> Result<Vec<rdkafka::message::OwnedMessage>, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = platform::kafka::client_config(brokers)
            .set("group.id", format!("e2e-reader-{}", Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = metadata.topics()[0].partitions().len() as i32;
        let mut assignment = rdkafka::TopicPartitionList::new();
        let mut unfinished = std::collections::HashSet::new();
        for partition in 0..partitions {
            let (low, high) =
                consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
            if high > low {
                assignment.add_partition_offset(topic, partition, rdkafka::Offset::Offset(low))?;
                unfinished.insert(partition);
            }
        }
        let mut out = Vec::new();
        if unfinished.is_empty() {
            return Ok(out);
        }
        consumer.assign(&assignment)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !unfinished.is_empty() {
            assert!(
                Instant::now() < deadline,
                "could not read {topic} to its end: partitions {unfinished:?} unfinished"
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => out.push(message.detach()),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    unfinished.remove(&partition);
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        Ok(out)
    }
}

/// Runs the data-team example (`deploy/examples/python/consume.py`, standard confluent-kafka
/// clients) for the first record of `topic` with `key`; returns its JSON line.
pub fn python_consume(cluster: &Cluster, topic: &str, key: &str) -> serde_json::Value {
    let python =
        std::env::var("HEALTHPLANE_PYTHON").expect("HEALTHPLANE_PYTHON: run ./deploy/test.sh");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/python/consume.py");
    let output = Command::new(python)
        .arg(script)
        .args([
            "--brokers",
            &cluster.brokers,
            "--registry",
            &cluster.registry_url,
        ])
        .args(["--topic", topic, "--key", key, "--max-wait", "60"])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{topic}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().next().expect("one record")).expect("JSON line")
}

/// The Prometheus text a service serves on `<base_url>/metrics`.
pub async fn metrics_text(http: &reqwest::Client, base_url: &str) -> String {
    http.get(format!("{base_url}/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text")
}

/// GETs a JSON document.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON body")
}

/// A broker (tansu with SQLite storage) and a schema registry of a test's own, for tests that
/// stop and restart them. Data lives in a temporary directory and a fresh database.
pub struct OwnCluster {
    pub cluster: Cluster,
    pub dir: PathBuf,
    /// The broker's `--storage-engine`.
    storage: &'static str,
    registry_db: String,
    broker: Option<Process>,
    registry: Option<Process>,
}

impl OwnCluster {
    /// The registry's only user (`HEALTHPLANE_SCHEMA_REGISTRY_USERS`), who bootstraps.
    pub const REGISTRY_USER: &'static str = "healthplane-test";
    /// Its password.
    pub const REGISTRY_PASSWORD: &'static str = "own-cluster-registry-password";

    /// `user:password`, as `HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO` takes it.
    pub fn registry_user_info() -> String {
        format!("{}:{}", Self::REGISTRY_USER, Self::REGISTRY_PASSWORD)
    }

    /// Starts both and bootstraps topics and schemas; returns the lines bootstrap printed.
    pub async fn start() -> (OwnCluster, Vec<String>) {
        OwnCluster::start_on("sqlite://tansu.db").await
    }

    /// Like `start`, with the broker's data in memory: for a test that floods topics other
    /// tests read from the beginning, and keeps no data across a broker restart.
    pub async fn start_in_memory() -> (OwnCluster, Vec<String>) {
        OwnCluster::start_on("memory://tansu/").await
    }

    async fn start_on(storage: &'static str) -> (OwnCluster, Vec<String>) {
        let id = Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("healthplane-cluster-{id}"));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut own = OwnCluster {
            cluster: Cluster {
                brokers: format!("127.0.0.1:{}", free_port()),
                registry_url: format!("http://127.0.0.1:{}", free_port()),
            },
            registry_db: format!("{}/hp_test_{}_registry", postgres_server(), &id[..12]),
            dir,
            storage,
            broker: None,
            registry: None,
        };
        own.start_broker().await;
        own.start_registry().await;
        let bootstrap = own.bootstrap();
        (own, bootstrap)
    }

    /// Starts (or restarts, on the same data) the broker and waits until it accepts connections.
    pub async fn start_broker(&mut self) {
        let tansu = std::env::var("HEALTHPLANE_TANSU_BIN")
            .expect("HEALTHPLANE_TANSU_BIN: run ./deploy/test.sh");
        let listener = format!("tcp://{}", self.cluster.brokers);
        self.broker = Some(Process::spawn_in(
            &self.dir,
            "tansu",
            Path::new(&tansu),
            &[
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
                "--storage-engine",
                self.storage,
            ],
            &[],
            &self.dir,
        ));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&self.cluster.brokers)
                .await
                .is_ok()
            {
                if self.storage.starts_with("sqlite://") {
                    self.index_sqlite_storage();
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("broker on {} did not start", self.cluster.brokers);
    }

    /// Adds the index the embedded broker's SQLite storage lacks, as the local stack does
    /// (`deploy/local/tansu-sqlite-index.py`).
    fn index_sqlite_storage(&self) {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/tansu-sqlite-index.py");
        let output = Command::new("python3")
            .arg(script)
            .arg(self.dir.join("tansu.db"))
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Kills the broker and deletes its data, as a broker whose storage was lost or reset.
    pub fn reset_broker(&mut self) {
        self.kill_broker();
        for entry in std::fs::read_dir(&self.dir).expect("cluster dir").flatten() {
            if entry.file_name().to_string_lossy().starts_with("tansu.db") {
                std::fs::remove_file(entry.path()).expect("remove the broker's data");
            }
        }
    }

    /// Kills the broker at once (SIGKILL).
    pub fn kill_broker(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            broker.kill();
        }
    }

    /// Starts (or restarts, on the same database) the registry and waits until it is ready.
    pub async fn start_registry(&mut self) {
        let listen = self
            .cluster
            .registry_url
            .trim_start_matches("http://")
            .to_string();
        let mut registry = Process::spawn(
            "schema-registry",
            &bin_dir().join("schema-registry"),
            &["--listen", &listen, "--database-url", &self.registry_db],
            &[(
                "HEALTHPLANE_SCHEMA_REGISTRY_USERS",
                Self::registry_user_info(),
            )],
            &self.dir,
        );
        wait_ready(
            &mut registry,
            &format!("{}/health/ready", self.cluster.registry_url),
            Duration::from_secs(60),
        )
        .await;
        self.registry = Some(registry);
    }

    /// Kills the registry at once (SIGKILL).
    pub fn kill_registry(&mut self) {
        if let Some(mut registry) = self.registry.take() {
            registry.kill();
        }
    }

    /// Runs `replay-tool bootstrap` as the registry's user; returns the lines it printed.
    pub fn bootstrap(&self) -> Vec<String> {
        let output = Command::new(bin_dir().join("replay-tool"))
            .arg("bootstrap")
            .env("HEALTHPLANE_KAFKA_BROKERS", &self.cluster.brokers)
            .env(
                "HEALTHPLANE_SCHEMA_REGISTRY_URL",
                &self.cluster.registry_url,
            )
            .env(
                "HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO",
                Self::registry_user_info(),
            )
            .output()
            .expect("replay-tool runs");
        assert!(
            output.status.success(),
            "replay-tool bootstrap failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let out = String::from_utf8(output.stdout).expect("utf-8 output");
        assert!(
            out.lines().filter(|l| l.starts_with("topic")).count() >= 9,
            "{out}"
        );
        out.lines().map(str::to_string).collect()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.kill_broker();
        self.kill_registry();
        if std::thread::panicking() {
            eprintln!(
                "kept the broker's and registry's data and logs in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A command API of a test's own on the event store `database` (a URL with the role it runs
/// as), with `args` added (e.g. `--no-relay`), once ready; and its URL.
pub async fn start_command_api(
    name: &str,
    cluster: &Cluster,
    database: &str,
    args: &[&str],
    log_dir: &Path,
) -> (Process, String) {
    let envs = [
        ("HEALTHPLANE_KAFKA_BROKERS", cluster.brokers.clone()),
        (
            "HEALTHPLANE_SCHEMA_REGISTRY_URL",
            cluster.registry_url.clone(),
        ),
    ];
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut all = vec![
        "--listen",
        url.trim_start_matches("http://"),
        "--database-url",
        database,
    ];
    all.extend_from_slice(args);
    let mut process = Process::spawn(name, &bin_dir().join("command-api"), &all, &envs, log_dir);
    wait_ready(
        &mut process,
        &format!("{url}/health/ready"),
        Duration::from_secs(60),
    )
    .await;
    (process, url)
}

/// An audit sealer process of a test's own, holding the sealer lock of `lock_database`.
pub struct Sealer {
    process: Option<Process>,
    pub health_url: String,
    pub metrics_url: String,
    args: Vec<String>,
    envs: Vec<(&'static str, String)>,
    log_dir: PathBuf,
    name: String,
}

impl Sealer {
    /// Starts a sealer writing a checkpoint per partition every `interval_ms` or every
    /// `max_records` records, and waits until it is ready (sealing, or standing by).
    pub async fn start(
        name: &str,
        cluster: &Cluster,
        lock_database: &str,
        log_dir: &Path,
        interval_ms: u64,
        max_records: i64,
    ) -> Sealer {
        let port = free_port();
        let args = vec![
            "--lock-database-url".to_string(),
            lock_database.to_string(),
            "--interval-ms".to_string(),
            interval_ms.to_string(),
            "--max-records".to_string(),
            max_records.to_string(),
            "--listen".to_string(),
            format!("127.0.0.1:{port}"),
        ];
        let envs = vec![
            ("HEALTHPLANE_KAFKA_BROKERS", cluster.brokers.clone()),
            (
                "HEALTHPLANE_SCHEMA_REGISTRY_URL",
                cluster.registry_url.clone(),
            ),
        ];
        let mut sealer = Sealer {
            process: None,
            health_url: format!("http://127.0.0.1:{port}/health/ready"),
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            args,
            envs,
            log_dir: log_dir.to_path_buf(),
            name: name.to_string(),
        };
        sealer.restart().await;
        sealer
    }

    /// Kills it at once (SIGKILL, `kill -9`), mid-whatever it was doing.
    pub fn kill9(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again and waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill9();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut process = Process::spawn(
            &self.name,
            &bin_dir().join("audit-sealer"),
            &args,
            &self.envs,
            &self.log_dir,
        );
        wait_ready(&mut process, &self.health_url, Duration::from_secs(60)).await;
        self.process = Some(process);
    }

    /// A metric's value (`healthplane_<name>`, without labels), if exposed.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = http_client()
            .get(&self.metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let prefix = format!("healthplane_{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
    }
}

/// A projector process of a test's own, on its own database.
pub struct Projector {
    process: Option<Process>,
    pub database: String,
    pub health_url: String,
    args: Vec<String>,
    envs: Vec<(&'static str, String)>,
    log_dir: PathBuf,
}

impl Projector {
    /// Starts `projection` (e.g. `patient`) on a fresh database and waits until it is ready.
    pub async fn start(projection: &str, cluster: &Cluster, log_dir: &Path) -> Projector {
        Projector::start_with(projection, cluster, log_dir, None).await
    }

    /// Like `start`, rebuilding from `event_store` when its offsets turn out to be outside
    /// the log.
    pub async fn start_with(
        projection: &str,
        cluster: &Cluster,
        log_dir: &Path,
        event_store: Option<&str>,
    ) -> Projector {
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("{}/hp_test_{}_{projection}", postgres_server(), &id[..12]);
        Projector::start_on(projection, cluster, log_dir, &database, event_store).await
    }

    /// Starts `projection` on `database` (a URL with the credentials it runs with).
    pub async fn start_on(
        projection: &str,
        cluster: &Cluster,
        log_dir: &Path,
        database: &str,
        event_store: Option<&str>,
    ) -> Projector {
        let database = database.to_string();
        let port = free_port();
        let mut args = vec![
            "--projection".to_string(),
            projection.to_string(),
            "--database-url".to_string(),
            database.clone(),
            "--listen".to_string(),
            format!("127.0.0.1:{port}"),
        ];
        if let Some(event_store) = event_store {
            args.extend(["--event-store-url".to_string(), event_store.to_string()]);
        }
        let envs = vec![
            ("HEALTHPLANE_KAFKA_BROKERS", cluster.brokers.clone()),
            (
                "HEALTHPLANE_SCHEMA_REGISTRY_URL",
                cluster.registry_url.clone(),
            ),
        ];
        let mut projector = Projector {
            process: None,
            database,
            health_url: format!("http://127.0.0.1:{port}/health/ready"),
            args,
            envs,
            log_dir: log_dir.to_path_buf(),
        };
        projector.restart().await;
        projector
    }

    /// Kills the projector at once (SIGKILL), as a crash would.
    pub fn crash(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again (after a crash) and waits until it is ready.
    pub async fn restart(&mut self) {
        self.crash();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let name = format!("projector-{}", self.args[1]);
        let mut process = Process::spawn(
            &name,
            &bin_dir().join("projector"),
            &args,
            &self.envs,
            &self.log_dir,
        );
        wait_ready(&mut process, &self.health_url, Duration::from_secs(60)).await;
        self.process = Some(process);
    }

    /// A pool on its read model (the `read_model` schema first on the search path).
    pub async fn read_model(&self) -> sqlx::PgPool {
        platform::db::connect_schema(&self.database, platform::db::READ_MODEL_SCHEMA, 2)
            .await
            .expect("read model database")
    }
}

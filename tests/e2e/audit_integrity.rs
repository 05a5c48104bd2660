//! Journey: an auditor checks that the PHI access log is complete and unaltered. After reads
//! through GraphQL, sealed by the audit sealer, `replay-tool audit verify` is clean; a record
//! produced straight to the topic, or signed with a key the keyring does not trust, a record
//! changed or deleted in the broker's storage, and a checkpoint lost from the checkpoints topic
//! are each named with their partition and offset, and the check exits non-zero. A sealer
//! killed with `kill -9` mid-run hands over to a standby and the chain still verifies.

use std::time::Duration;

use events::Role;
use events::audit::AuditCheckpoint;
use events::audit::{AccessAction, AccessOutcome, PHI_ACCESSED, PhiAccessed};
use events::catalog::{AUDIT_CHECKPOINTS, AUDIT_PHI_ACCESS};
use platform::signing::RecordSigner;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::EventCodec;
use serde_json::Value;
use tests::{Databases, OwnCluster, Sealer, Stack, ada, token};

use crate::{PATIENT_QUERY, read_until_visible};

fn verify(stack: &Stack) -> (i32, Vec<Value>) {
    verify_on(&stack.cluster)
}

fn verify_on(cluster: &tests::Cluster) -> (i32, Vec<Value>) {
    let (status, stdout, stderr) =
        tests::replay_tool_status(cluster, &["audit", "verify", "--format", "jsonl"]);
    // Reaching the end of a partition is how the check knows it is done, not an error.
    assert!(
        !stderr.contains("PartitionEOF"),
        "librdkafka noise: {stderr}"
    );
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("{l}\n{stderr}")))
        .collect();
    (status, lines)
}

/// Waits until every record of the audit log is covered by a trusted checkpoint; returns the
/// last verify's status and lines.
async fn sealed(cluster: &tests::Cluster) -> (i32, Vec<Value>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, lines) = verify_on(cluster);
        let unsealed: u64 = lines
            .iter()
            .filter_map(|l| l.get("partition_report"))
            .map(|r| r["unsealed"].as_u64().unwrap())
            .sum();
        if unsealed == 0 {
            return (status, lines);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never sealed: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Changes the broker's own storage (tansu's SQLite file) as someone with access to the disk
/// could: `alter` replaces `from` with `to` (same length) in a record's value, `delete`
/// removes a record and its headers.
fn tamper(
    own: &OwnCluster,
    op: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    from: &str,
    to: &str,
) {
    const SCRIPT: &str = r#"
import sqlite3, sys
path, op, topic, partition, offset, old, new = sys.argv[1:8]
db = sqlite3.connect(path, timeout=30)
(topition,) = db.execute(
    "SELECT tp.id FROM topition tp JOIN topic t ON tp.topic = t.id WHERE t.name = ? AND tp.partition = ?",
    (topic, int(partition))).fetchone()
key = (topition, int(offset))
if op == "alter":
    (value,) = db.execute("SELECT v FROM record WHERE topition = ? AND offset_id = ?", key).fetchone()
    changed = bytes(value).replace(old.encode(), new.encode(), 1)
    assert changed != bytes(value), "nothing to change"
    db.execute("UPDATE record SET v = ? WHERE topition = ? AND offset_id = ?", (changed,) + key)
else:
    assert db.execute("DELETE FROM record WHERE topition = ? AND offset_id = ?", key).rowcount == 1
    db.execute("DELETE FROM header WHERE topition = ? AND offset_id = ?", key)
db.commit()
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(own.dir.join("tansu.db"))
        .args([
            op,
            topic,
            &partition.to_string(),
            &offset.to_string(),
            from,
            to,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "tamper {op}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn findings(lines: &[Value]) -> Vec<(i64, i64, String)> {
    lines
        .iter()
        .filter_map(|l| l.get("finding"))
        .map(|f| {
            (
                f["partition"].as_i64().unwrap(),
                f["offset"].as_i64().unwrap(),
                f["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A well-formed access record, as a forger would write it.
fn forged(patient: uuid::Uuid) -> PhiAccessed {
    PhiAccessed {
        event_id: uuid::Uuid::now_v7(),
        event_type: PHI_ACCESSED.to_string(),
        occurred_at: chrono::Utc::now(),
        actor: events::Actor {
            id: "nobody".into(),
            role: Role::Admin,
        },
        patient_id: patient,
        action: AccessAction::Read,
        resource_type: "Patient".into(),
        resource_ids: vec![patient.to_string()],
        purpose_of_use: "HOPERAT".into(),
        outcome: AccessOutcome::Success,
        client_ip: None,
        forwarded_for: None,
        user_agent: None,
        request_id: "forged".into(),
        service: "query-api".into(),
        detail: None,
    }
}

/// Produces `record` to the audit topic with `headers`; returns its partition and offset.
async fn produce(stack: &Stack, record: &PhiAccessed, headers: OwnedHeaders) -> (i64, i64) {
    produce_on(&stack.cluster, record, headers).await
}

async fn produce_on(
    cluster: &tests::Cluster,
    record: &PhiAccessed,
    headers: OwnedHeaders,
) -> (i64, i64) {
    let producer: FutureProducer =
        platform::kafka::producer_config(&cluster.brokers, Duration::from_secs(30))
            .create()
            .expect("producer");
    let bytes = EventCodec::new(&cluster.registry_url)
        .encode(AUDIT_PHI_ACCESS, record)
        .await
        .expect("encodes");
    let key = record.patient_id.to_string();
    let delivery = producer
        .send(
            FutureRecord::to(AUDIT_PHI_ACCESS)
                .key(&key)
                .payload(&bytes)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .expect("the broker takes it");
    (i64::from(delivery.partition), delivery.offset)
}

#[tokio::test]
async fn verify_is_clean_after_reads_and_names_each_unsigned_foreign_altered_or_deleted_record() {
    let (mut own, _) = OwnCluster::start().await;
    let stack = Stack::start_with(own.cluster.clone(), Databases::fresh()).await;
    let mut sealer = Sealer::start(
        "audit-sealer",
        &stack.cluster,
        &stack.databases.audit,
        &own.dir,
        1000,
        1000,
    )
    .await;
    let id = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = read_until_visible(&stack, &id, "auditor-check").await;
    let reader = token(Role::Admin, "front-desk", None);
    for _ in 0..5 {
        let (status, _, body) = stack
            .graphql(&reader, &[], PATIENT_QUERY, serde_json::json!({"id": id}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, lines) = sealed(&stack.cluster).await;
    assert_eq!(status, 0, "{lines:?}");
    assert!(findings(&lines).is_empty(), "{lines:?}");
    let summary = lines.iter().find_map(|l| l.get("summary")).unwrap();
    assert!(summary["records"].as_u64().unwrap() >= 6, "{summary}");
    // Retention is read from the broker, not assumed: six years, deletion only.
    let retention = lines.iter().find_map(|l| l.get("retention")).unwrap();
    assert_eq!(retention["retention_ms"], "189216000000", "{retention}");
    assert_eq!(retention["cleanup_policy"], "delete", "{retention}");
    assert_eq!(retention["problems"], serde_json::json!([]), "{retention}");

    // The index the auditors search holds exactly what the topic holds, once its projector
    // caught up; a row deleted from it is named.
    let _audit = crate::portals::projector(&stack, "audit", &stack.databases.audit).await;
    let index_url = Databases::as_role(&stack.databases.audit, platform::provision::Service::Query);
    let reconcile = || {
        tests::replay_tool_status(
            &stack.cluster,
            &[
                "audit",
                "reconcile",
                "--jsonl",
                "--database-url",
                &index_url,
            ],
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, stdout, stderr) = reconcile();
        if status == 0 {
            break;
        }
        assert_eq!(status, 2, "{stderr}");
        assert!(
            std::time::Instant::now() < deadline,
            "never reconciled: {stdout}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let index = sqlx::PgPool::connect(&stack.databases.audit).await.unwrap();
    let deleted: uuid::Uuid = sqlx::query_scalar(
        "DELETE FROM read_model.phi_accesses WHERE event_id =
           (SELECT event_id FROM read_model.phi_accesses ORDER BY occurred_at DESC LIMIT 1)
         RETURNING event_id",
    )
    .fetch_one(&index)
    .await
    .unwrap();
    let (status, stdout, _) = reconcile();
    assert_eq!(status, 2, "{stdout}");
    let missing: Vec<Value> = stdout
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()?
                .get("missing_from_index")
                .cloned()
        })
        .collect();
    assert_eq!(missing.len(), 1, "{stdout}");
    assert_eq!(missing[0]["event_id"], deleted.to_string());

    // Rebuilt from the topic (its history), the index holds every access again, while the
    // projector keeps running; the rebuild is swapped in and serves the query role.
    let projector_url = Databases::as_role(
        &stack.databases.audit,
        platform::provision::Service::Projector,
    );
    let rebuilt = stack.replay_tool(&[
        "rebuild",
        "--projection",
        "audit",
        "--database-url",
        &projector_url,
    ]);
    assert!(rebuilt.contains("swapped in"), "{rebuilt}");
    let (status, stdout, stderr) = reconcile();
    assert_eq!(status, 0, "{stdout}\n{stderr}");

    // Written straight to the topic: no signature.
    let patient: uuid::Uuid = id.parse().unwrap();
    let unsigned = produce(&stack, &forged(patient), OwnedHeaders::new()).await;
    // Signed, but by a key no one trusts (it claims a trusted writer's id too, to no avail).
    let (private, _) = RecordSigner::generate().unwrap();
    let stranger = RecordSigner::from_base64(&private).unwrap();
    let record = forged(patient);
    let bytes = EventCodec::new(&stack.cluster.registry_url)
        .encode(AUDIT_PHI_ACCESS, &record)
        .await
        .unwrap();
    let foreign = produce(
        &stack,
        &record,
        stranger.signed_headers(OwnedHeaders::new(), AUDIT_PHI_ACCESS, id.as_bytes(), &bytes),
    )
    .await;

    // Sealed as they are: the chain holds, the signatures do not.
    let (status, lines) = sealed(&stack.cluster).await;
    assert_eq!(status, 2, "{lines:?}");
    assert_eq!(
        findings(&lines),
        vec![
            (unsigned.0, unsigned.1, "unsigned".to_string()),
            (foreign.0, foreign.1, "unknown-key".to_string()),
        ]
    );

    // Someone with the broker's disk changes one sealed record and deletes another, and
    // deletes a checkpoint that is not the newest.
    let partition = i32::try_from(unsigned.0).unwrap();
    let ours: Vec<i64> = tests::read_topic(&stack.cluster.brokers, AUDIT_PHI_ACCESS)
        .into_iter()
        .filter(|m| {
            rdkafka::Message::partition(m) == partition
                && rdkafka::Message::payload(m)
                    .is_some_and(|v| v.windows(10).any(|w| w == b"front-desk"))
        })
        .map(|m| rdkafka::Message::offset(&m))
        .collect();
    assert!(ours.len() >= 5, "{ours:?}");
    let (altered, deleted) = (ours[1], ours[3]);
    // Stopped first, so the checkpoints topic holds still while it is read and changed.
    sealer.kill9();
    let codec = EventCodec::new(&stack.cluster.registry_url);
    let mut lost = None;
    for message in tests::read_topic(&stack.cluster.brokers, AUDIT_CHECKPOINTS) {
        let checkpoint: AuditCheckpoint = codec
            .decode(rdkafka::Message::payload(&message))
            .await
            .unwrap();
        if checkpoint.partition != partition && checkpoint.sequence == 2 {
            lost = Some((checkpoint, rdkafka::Message::offset(&message)));
            break;
        }
    }
    let (lost, lost_offset) = lost.expect("a second checkpoint of another partition");
    own.kill_broker();
    tamper(
        &own,
        "alter",
        AUDIT_PHI_ACCESS,
        partition,
        altered,
        "front-desk",
        "front-dusk",
    );
    tamper(&own, "delete", AUDIT_PHI_ACCESS, partition, deleted, "", "");
    tamper(&own, "delete", AUDIT_CHECKPOINTS, 0, lost_offset, "", "");
    own.start_broker().await;

    let (status, lines) = verify(&stack);
    assert_eq!(status, 2, "{lines:?}");
    let mut expected = vec![
        (unsigned.0, unsigned.1, "unsigned".to_string()),
        (foreign.0, foreign.1, "unknown-key".to_string()),
        (unsigned.0, altered, "altered-record".to_string()),
        (unsigned.0, deleted, "missing-record".to_string()),
        (
            i64::from(lost.partition),
            lost.start_offset,
            "missing-checkpoint".to_string(),
        ),
    ];
    let mut found = findings(&lines);
    expected.sort();
    found.sort();
    assert_eq!(found, expected, "{lines:?}");
}

/// The request ids of `replay-tool audit --patient <id> <filters>`.
fn replayed(stack: &Stack, id: &str, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["audit", "--patient", id, "--format", "jsonl"];
    args.extend_from_slice(filters);
    stack
        .replay_tool(&args)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn every_replay_filter_picks_exactly_its_accesses() {
    let stack = Stack::start().await;
    let id = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = read_until_visible(&stack, &id, "front-desk").await;
    let read = |who: String, headers: Vec<(&'static str, &'static str)>, request: &'static str| {
        let (stack, id) = (&stack, &id);
        async move {
            let mut headers = headers;
            headers.push(("X-Request-Id", request));
            stack
                .graphql(&who, &headers, PATIENT_QUERY, serde_json::json!({"id": id}))
                .await
        }
    };
    let admin = token(Role::Admin, "filter-admin", None);
    let doctor = token(Role::Practitioner, "filter-doctor", None);
    let patient = token(Role::Patient, "filter-patient", Some(id.parse().unwrap()));
    read(admin.clone(), vec![], "r1-admin").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = chrono::Utc::now().to_rfc3339();
    tokio::time::sleep(Duration::from_millis(50)).await;
    read(doctor.clone(), vec![], "r2-denied").await;
    read(
        doctor,
        vec![
            ("X-Purpose-Of-Use", "ETREAT"),
            ("X-Break-Glass-Reason", "arrest"),
        ],
        "r3-glass",
    )
    .await;
    read(patient, vec![], "r4-own").await;

    let ours = |mut ids: Vec<String>| {
        ids.retain(|r| r.starts_with('r'));
        ids
    };
    assert_eq!(
        ours(replayed(&stack, &id, &["--actor", "filter-admin"])),
        ["r1-admin"]
    );
    assert_eq!(
        ours(replayed(&stack, &id, &["--actor", "filter-doctor"])),
        ["r2-denied", "r3-glass"]
    );
    assert_eq!(
        ours(replayed(&stack, &id, &["--purpose", "ETREAT"])),
        ["r3-glass"]
    );
    assert_eq!(
        ours(replayed(&stack, &id, &["--purpose", "PATRQT"])),
        ["r4-own"]
    );
    assert_eq!(
        ours(replayed(&stack, &id, &["--outcome", "denied"])),
        ["r2-denied"]
    );
    assert_eq!(
        ours(replayed(
            &stack,
            &id,
            &["--outcome", "success", "--from", &between]
        )),
        ["r3-glass", "r4-own"]
    );
    assert_eq!(
        ours(replayed(
            &stack,
            &id,
            &["--to", &between, "--action", "read"]
        )),
        ["r1-admin"]
    );
    assert!(ours(replayed(&stack, &id, &["--action", "export"])).is_empty());

    // Without --patient every partition is read: what did this user look at, every
    // break-the-glass read of a period.
    let everywhere = |filters: &[&str]| -> Vec<String> {
        let mut args = vec!["audit", "--format", "jsonl"];
        args.extend_from_slice(filters);
        let (status, stdout, stderr) = tests::replay_tool_status(&stack.cluster, &args);
        assert_eq!(status, 0, "{stderr}");
        assert!(stderr.contains("12 partitions scanned"), "{stderr}");
        stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["request_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        everywhere(&["--actor", "filter-doctor"]),
        ["r2-denied", "r3-glass"]
    );
    assert_eq!(
        everywhere(&[
            "--actor",
            "filter-doctor",
            "--purpose",
            "ETREAT",
            "--from",
            &between
        ]),
        ["r3-glass"]
    );

    // `--from` seeks: the partition is read from where it reaches that time (tansu answers
    // offsets-for-times with 0, so the tool searches), and the answer is the same.
    let scanned = |filters: &[&str]| -> u64 {
        let mut args = vec!["audit", "--patient", &id, "--format", "jsonl"];
        args.extend_from_slice(filters);
        let (status, _, stderr) = tests::replay_tool_status(&stack.cluster, &args);
        assert_eq!(status, 0, "{stderr}");
        // No progress line in a pipe (it is drawn only on a terminal).
        assert!(!stderr.contains('\r'), "{stderr:?}");
        let summary = stderr
            .lines()
            .find(|l| l.contains("scanned"))
            .unwrap_or_default();
        summary
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no summary: {stderr}"))
    };
    let whole = scanned(&[]);
    let seeked = scanned(&["--from", &between, "--clock-skew", "0"]);
    assert!(
        seeked + 2 <= whole,
        "read {seeked} records from --from, {whole} in all"
    );
    assert_eq!(
        ours(replayed(
            &stack,
            &id,
            &["--from", &between, "--clock-skew", "0"]
        )),
        ["r2-denied", "r3-glass", "r4-own"]
    );
}

#[tokio::test]
async fn a_patients_access_report_lists_exactly_the_reads_of_their_record_by_each_user() {
    let stack = Stack::start().await;
    let id = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = read_until_visible(&stack, &id, "report-setup").await;
    let _ = read_until_visible(&stack, &other, "report-setup").await;
    let query = |who: String, patient: String, headers: Vec<(&'static str, &'static str)>| {
        let stack = &stack;
        async move {
            let (status, _, body) = stack
                .graphql(
                    &who,
                    &headers,
                    PATIENT_QUERY,
                    serde_json::json!({"id": patient}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    let glass = vec![
        ("X-Purpose-Of-Use", "ETREAT"),
        ("X-Break-Glass-Reason", "found unconscious"),
        ("X-Request-Id", "report-glass"),
    ];
    query(
        token(Role::Admin, "report-clerk", None),
        id.clone(),
        vec![("X-Request-Id", "report-clerk")],
    )
    .await;
    query(
        token(Role::Practitioner, "report-doctor", None),
        id.clone(),
        glass,
    )
    .await;
    let own = token(Role::Patient, "report-self", Some(id.parse().unwrap()));
    query(own, id.clone(), vec![("X-Request-Id", "report-self")]).await;
    // Someone else's record: not in this patient's report.
    query(
        token(Role::Admin, "report-clerk", None),
        other,
        vec![("X-Request-Id", "report-other")],
    )
    .await;

    let out = stack.replay_tool(&["audit", "report", "--patient", &id, "--format", "jsonl"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let accesses: Vec<&Value> = lines
        .iter()
        .filter_map(|l| l.get("access"))
        .filter(|a| a["request_id"].as_str().unwrap().starts_with("report-"))
        .collect();
    let seen: Vec<(&str, &str, &str, bool)> = accesses
        .iter()
        .map(|a| {
            (
                a["request_id"].as_str().unwrap(),
                a["who"].as_str().unwrap(),
                a["purpose"].as_str().unwrap(),
                a["break_glass"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("report-clerk", "report-clerk", "HOPERAT", false),
            ("report-glass", "report-doctor", "ETREAT", true),
            ("report-self", "report-self", "PATRQT", false),
        ]
    );
    assert_eq!(accesses[1]["detail"], "break-the-glass: found unconscious");
    let doctor = lines
        .iter()
        .filter_map(|l| l.get("actor_summary"))
        .find(|s| s["who"] == "report-doctor")
        .expect("a summary for the doctor");
    assert_eq!(
        (doctor["accesses"].as_u64(), doctor["break_glass"].as_u64()),
        (Some(1), Some(1))
    );

    // The table marks the break-the-glass read; the CSV carries the same lines.
    let table = stack.replay_tool(&["audit", "report", "--patient", &id]);
    let marked = table.lines().find(|l| l.contains("report-glass")).unwrap();
    assert!(marked.starts_with('!'), "{table}");
    let csv = stack.replay_tool(&["audit", "report", "--patient", &id, "--format", "csv"]);
    assert!(
        csv.lines().next().unwrap().starts_with("when,who,role"),
        "{csv}"
    );
    assert!(
        csv.contains("report-glass") && !csv.contains("report-other"),
        "{csv}"
    );
}

/// Writes `n` access records signed with the audit writers' key, as the query API would.
async fn write_signed(cluster: &tests::Cluster, n: usize) {
    let signer = RecordSigner::from_file(&tests::audit_keys().0).unwrap();
    let codec = EventCodec::new(&cluster.registry_url);
    let producer: FutureProducer =
        platform::kafka::producer_config(&cluster.brokers, Duration::from_secs(30))
            .create()
            .expect("producer");
    let sends = (0..n).map(|_| {
        let (signer, codec, producer) = (&signer, &codec, &producer);
        async move {
            let record = forged(uuid::Uuid::new_v4());
            let bytes = codec.encode(AUDIT_PHI_ACCESS, &record).await.unwrap();
            let key = record.patient_id.to_string();
            let headers = signer.signed_headers(
                OwnedHeaders::new(),
                AUDIT_PHI_ACCESS,
                key.as_bytes(),
                &bytes,
            );
            producer
                .send(
                    FutureRecord::to(AUDIT_PHI_ACCESS)
                        .key(&key)
                        .payload(&bytes)
                        .headers(headers),
                    Duration::from_secs(30),
                )
                .await
                .expect("the broker takes it");
        }
    });
    futures::future::join_all(sends).await;
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_sealer_killed_mid_run_hands_over_to_its_standby_and_the_chain_still_verifies() {
    // SQLite storage, as the local stack: tansu 0.6.0's memory storage answers a fetch from
    // an offset inside a batch with the next batch, so a consumer resuming mid-batch (as a
    // restarted sealer does) would skip records there.
    let (own, _) = OwnCluster::start().await;
    let lock = format!(
        "{}/hp_test_{}_sealer",
        tests::postgres_server(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    platform::db::connect(&lock, 1)
        .await
        .expect("lock database");
    let cluster = &own.cluster;
    // Small checkpoints, so that the kill lands between many of them.
    let mut first = Sealer::start("sealer-a", cluster, &lock, &own.dir, 1000, 5).await;
    let mut second = Sealer::start("sealer-b", cluster, &lock, &own.dir, 1000, 5).await;
    assert_eq!(first.metric("audit_sealer_active").await, Some(1.0));
    assert_eq!(second.metric("audit_sealer_active").await, Some(0.0));

    write_signed(cluster, 150).await;
    wait_for("the first sealer seals", async || {
        first
            .metric("audit_checkpoints_published_total")
            .await
            .unwrap_or(0.0)
            > 40.0
    })
    .await;
    let writing = write_signed(cluster, 150);
    tokio::pin!(writing);
    // Mid-run: records arriving, checkpoints being written.
    tokio::select! {
        _ = &mut writing => panic!("the writes finished before the kill"),
        _ = tokio::time::sleep(Duration::from_millis(30)) => first.kill9(),
    }
    writing.await;
    wait_for("the standby takes over", async || {
        second.metric("audit_sealer_active").await == Some(1.0)
    })
    .await;
    let (status, lines) = sealed(cluster).await;
    assert_eq!(status, 0, "{lines:?}");

    // Killed again, and someone slips a forged checkpoint in (no signature) that claims
    // partition 0 is sealed far beyond its end. The other sealer, restarted, passes it over
    // and resumes from the newest checkpoints it trusts: only the forgery is a finding.
    second.kill9();
    let forged_checkpoint = events::audit::AuditCheckpoint {
        event_id: uuid::Uuid::now_v7(),
        event_type: events::audit::AUDIT_CHECKPOINT_SEALED.into(),
        sealed_at: chrono::Utc::now(),
        topic: AUDIT_PHI_ACCESS.into(),
        partition: 0,
        sequence: 1_000_000,
        start_offset: 0,
        end_offset: 1_000_000,
        record_count: 1_000_000,
        chain_length: 1_000_000,
        chain_hash: "0".repeat(64),
        previous_checkpoint: None,
        sealer: "forger".into(),
    };
    let bytes = EventCodec::new(&cluster.registry_url)
        .encode(AUDIT_CHECKPOINTS, &forged_checkpoint)
        .await
        .unwrap();
    let producer: FutureProducer =
        platform::kafka::producer_config(&cluster.brokers, Duration::from_secs(30))
            .create()
            .unwrap();
    producer
        .send(
            FutureRecord::to(AUDIT_CHECKPOINTS).key("0").payload(&bytes),
            Duration::from_secs(30),
        )
        .await
        .expect("the broker takes it");
    first.restart().await;
    write_signed(cluster, 50).await;
    let (status, lines) = sealed(cluster).await;
    assert_eq!(status, 2, "{lines:?}");
    assert_eq!(
        findings(&lines),
        vec![(0, 0, "broken-checkpoint".to_string())],
        "{lines:?}"
    );
    let reports: Vec<&Value> = lines
        .iter()
        .filter_map(|l| l.get("partition_report"))
        .collect();
    let records: u64 = reports.iter().map(|r| r["records"].as_u64().unwrap()).sum();
    let checkpoints: u64 = reports
        .iter()
        .map(|r| r["checkpoints"].as_u64().unwrap())
        .sum();
    assert_eq!(records, 350);
    assert!(checkpoints > 350 / 5, "{checkpoints} checkpoints");
}

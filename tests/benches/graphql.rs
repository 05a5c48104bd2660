//! GraphQL read latency at fixed request rates, with each read's synchronous audit write:
//! `patient(id)` (a patient reading their record) and a patient with its four nested
//! connections (`first: 10`, read by a practitioner whose patient it is), next to
//! `{ __typename }` on the same server at the same rate (the web stack without a read or an
//! audit write). The load is open-loop: requests are sent on a fixed schedule whatever the
//! answers do, and latency is counted from the scheduled send, so a server that falls behind
//! shows it. Also reports the query API's RSS and the machine's load during each run.
//! Run with `./deploy/bench.sh` (release build, a throwaway broker and registry);
//! `HEALTHPLANE_BENCH_SECONDS` sets each run's length (default 20).

use std::sync::Arc;
use std::time::{Duration, Instant};

use events::Role;
use reqwest::Method;
use serde_json::{Value, json};
use tests::bench::{Measure, report};
use tests::{Stack, ada, token};
use tokio::sync::Mutex;

const PATIENTS: usize = 100;
const PRACTITIONERS: usize = 20;

const PATIENT_QUERY: &str = "query($id: ID!) { patient(id: $id) {
    id version gender birthDate name { text } identifiers { system value }
    telecom { system value } address { line city postalCode country } } }";

const NESTED_QUERY: &str = "query($id: ID!) { patient(id: $id) { id name { text }
    appointments(first: 10) { edges { node { id start status } } }
    encounters(first: 10) { edges { node { id status startedAt } } }
    observations(first: 10) { edges { node { id code { code } valueQuantity { value unit } effectiveAt } } }
    medicationRequests(first: 10) { edges { node { id medication { code display } dosage { text } } } } } }";

fn practitioner(i: usize) -> String {
    format!("dr-bench-{}", i % PRACTITIONERS)
}

async fn send(
    stack: &Stack,
    path: &str,
    who: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> Value {
    let (status, _, json) = stack
        .command(
            Method::POST,
            path,
            Some(who),
            headers,
            body.to_string().into_bytes(),
        )
        .await;
    assert!((200..300).contains(&status), "{path}: {status} {json}");
    json
}

fn at_hours(hours: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339()
}

/// One patient with 3 appointments (each fulfilled by a finished encounter), 10 observations
/// and 3 prescriptions, by their practitioner.
async fn seed_patient(stack: &Stack, i: usize) -> String {
    let admin = token(Role::Admin, "front-desk", None);
    let doctor = token(Role::Practitioner, &practitioner(i), None);
    let patient = stack.register(&ada()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for visit in 0..3 {
        let schedule = json!({"patientId": patient, "practitionerId": practitioner(i),
            "start": at_hours(1 + visit), "end": at_hours(2 + visit)});
        let appointment = send(stack, "/v1/appointments", &admin, &[], schedule).await;
        let start = json!({"patientId": patient, "appointmentId": appointment["id"],
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}});
        let encounter = send(stack, "/v1/encounters", &doctor, &[], start).await;
        let prescription = json!({"patientId": patient, "encounterId": encounter["id"], "status": "active", "intent": "order",
            "medication": {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "314076", "display": "lisinopril 10 MG Oral Tablet"},
            "dosage": {"text": "10 mg once a day", "dose": {"value": 10, "unit": "mg"}, "frequency": 1, "period": 1, "periodUnit": "d"}});
        send(stack, "/v1/medication-requests", &doctor, &[], prescription).await;
        let complete = format!(
            "/v1/encounters/{}/complete",
            encounter["id"].as_str().unwrap()
        );
        send(
            stack,
            &complete,
            &doctor,
            &[("If-Match", "\"1\"")],
            json!({}),
        )
        .await;
    }
    for beat in 0..10 {
        let vital = json!({"patientId": patient, "status": "final", "code": {"system": "http://loinc.org", "code": "8867-4"},
            "valueQuantity": {"value": 60 + beat, "unit": "/min", "system": "http://unitsofmeasure.org"}});
        send(stack, "/v1/observations", &doctor, &[], vital).await;
    }
    patient
}

/// CPU time of the whole machine (busy, total) in clock ticks, from `/proc/stat`.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

struct Run {
    name: &'static str,
    rate: u32,
    sent: usize,
    ok: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    achieved: f64,
    cpu_busy: f64,
    load: String,
}

/// Sends `rate` requests per second for `seconds`, request `i` built by `request(i)`.
async fn run(
    name: &'static str,
    url: &str,
    rate: u32,
    seconds: u64,
    request: impl Fn(usize) -> (String, Value),
) -> Run {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let total = (rate as u64 * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let (busy0, all0) = cpu_ticks();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let (bearer, body) = request(i);
        let (client, url, latencies) = (client.clone(), url.to_string(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let answer = client
                .post(&url)
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await;
            let ok = match answer {
                Ok(response) if response.status().is_success() => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v.get("errors").is_none() && !v["data"].is_null()),
                _ => false,
            };
            latencies.lock().await.push((scheduled.elapsed(), ok));
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let (busy1, all1) = cpu_ticks();
    let mut latencies = latencies.lock().await.clone();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].0;
    Run {
        name,
        rate,
        sent: latencies.len(),
        ok: latencies.iter().filter(|(_, ok)| *ok).count(),
        p50: at(0.50),
        p99: at(0.99),
        max: latencies.last().map(|l| l.0).unwrap_or_default(),
        achieved: latencies.len() as f64 / elapsed.as_secs_f64(),
        cpu_busy: (busy1 - busy0) as f64 / (all1 - all0).max(1) as f64 * 100.0,
        load: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// An HTTP hello-world on the query API's web stack (axum served by `platform::http::serve`
/// with the default limits), on a runtime of two worker threads of its own, as a service has on
/// this machine; answers every `POST /` with a fixed GraphQL-shaped body. Returns its URL.
fn hello_world_server() -> String {
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = platform::http::bind("127.0.0.1:0".parse().expect("address"))
                .await
                .expect("listen");
            let address = listener.local_addr().expect("address");
            url_tx.send(format!("http://{address}/")).expect("url");
            let router = axum::Router::new().route(
                "/",
                axum::routing::post(|| async { axum::Json(json!({"data": {"hello": "world"}})) }),
            );
            platform::http::serve(
                listener,
                router,
                platform::http::HttpLimits::default(),
                &platform::metrics::Metrics::default(),
                std::future::pending(),
            )
            .await
            .expect("serve");
        });
    });
    url_rx.recv().expect("the hello-world server started")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs bench binaries without `--bench`: nothing to do then.
    if !tests::bench::requested() {
        return Ok(());
    }
    let seconds: u64 = tests::bench::env_number("HEALTHPLANE_BENCH_SECONDS", 20);
    let stack = Stack::start().await;
    let _projectors = stack.start_clinical_projectors().await;
    eprintln!("seeding {PATIENTS} patients with 19 records each");
    let mut patients = Vec::new();
    for chunk in (0..PATIENTS).collect::<Vec<_>>().chunks(10) {
        let seeded = chunk.iter().map(|i| seed_patient(&stack, *i));
        patients.extend(futures::future::join_all(seeded).await);
    }
    // Every projection has every record once the last patient shows them all.
    let last = PATIENTS - 1;
    let doctor = token(Role::Practitioner, &practitioner(last), None);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, _, body) = stack
            .graphql(&doctor, &[], NESTED_QUERY, json!({"id": patients[last]}))
            .await;
        let count = |field: &str| {
            body["data"]["patient"][field]["edges"]
                .as_array()
                .map_or(0, Vec::len)
        };
        if count("appointments") == 3
            && count("encounters") == 3
            && count("observations") == 10
            && count("medicationRequests") == 3
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the read models never caught up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let patient_tokens: Vec<String> = patients
        .iter()
        .map(|id| {
            token(
                Role::Patient,
                &format!("bench-patient-{id}"),
                Some(id.parse().unwrap()),
            )
        })
        .collect();
    let doctor_tokens: Vec<String> = (0..PRACTITIONERS)
        .map(|i| token(Role::Practitioner, &practitioner(i), None))
        .collect();
    let url = stack.graphql_url.clone();
    let query = &stack.processes[2];
    eprintln!("warming up");
    run("warm-up", &url, 200, 3, |i| {
        (
            patient_tokens[i % PATIENTS].clone(),
            json!({"query": PATIENT_QUERY, "variables": {"id": patients[i % PATIENTS]}}),
        )
    })
    .await;

    let mut runs = Vec::new();
    let mut rss = Vec::new();
    let hello_url = hello_world_server();
    eprintln!("HTTP hello-world at 1000 req/s for {seconds} s");
    runs.push(
        run(
            "HTTP hello-world (the same web stack: axum on platform::http::serve, 2 threads)",
            &hello_url,
            1000,
            seconds,
            |i| {
                (
                    patient_tokens[i % PATIENTS].clone(),
                    json!({"query": "hello"}),
                )
            },
        )
        .await,
    );
    eprintln!("{{ __typename }} at 1000 req/s for {seconds} s");
    runs.push(
        run(
            "`{ __typename }` (same server, no read, no audit)",
            &url,
            1000,
            seconds,
            |i| {
                (
                    patient_tokens[i % PATIENTS].clone(),
                    json!({"query": "{ __typename }"}),
                )
            },
        )
        .await,
    );
    eprintln!("patient(id) at 1000 req/s for {seconds} s");
    runs.push(
        run("`patient(id)` + audit write", &url, 1000, seconds, |i| {
            (
                patient_tokens[i % PATIENTS].clone(),
                json!({"query": PATIENT_QUERY, "variables": {"id": patients[i % PATIENTS]}}),
            )
        })
        .await,
    );
    rss.push(query.rss_kib());
    eprintln!("nested at 300 req/s for {seconds} s");
    runs.push(
        run(
            "patient + 4 nested connections (`first: 10`) + audit write",
            &url,
            300,
            seconds,
            |i| {
                // Patient i is in the care of practitioner i % PRACTITIONERS.
                let p = i % PATIENTS;
                (
                    doctor_tokens[p % PRACTITIONERS].clone(),
                    json!({"query": NESTED_QUERY, "variables": {"id": patients[p]}}),
                )
            },
        )
        .await,
    );
    rss.push(query.rss_kib());

    println!(
        "\n| request | rate | sent | answered with data | achieved | p50 | p99 | max | machine CPU busy | load (1 min) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} req/s | {} | {} | {:.0} req/s | {} | {} | {} | {:.0}% | {} |",
            r.name,
            r.rate,
            r.sent,
            r.ok,
            r.achieved,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.cpu_busy,
            r.load
        );
    }
    println!(
        "\nquery-api RSS after the runs: {} MiB (after patient(id): {} MiB)",
        rss.iter().max().unwrap_or(&0) / 1024,
        rss.first().unwrap_or(&0) / 1024
    );
    println!(
        "machine: {} CPUs; everything (broker, registry, PostgreSQL, command API, 5 projectors, query API, this load generator) on it",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // The one table: the GraphQL server without a read next to a hello-world on the same web
    // stack; each read next to `{ __typename }` on the same server at the same rate.
    let (hello, typename) = (&runs[0], &runs[1]);
    let targets = ["—", "—", "p99 < 15 ms", "p99 < 40 ms"];
    let mut rows: Vec<Measure> = runs
        .iter()
        .zip(targets)
        .skip(1)
        .map(|(r, target)| {
            let (limit, limit_name) = if std::ptr::eq(r, typename) {
                (hello, "HTTP hello-world, same web stack")
            } else {
                (typename, "`{ __typename }`, same server")
            };
            Measure::text(
                &format!("GraphQL {} at {} req/s (p50 / p99)", r.name, r.rate),
                format!("{} / {}", ms(r.p50), ms(r.p99)),
                format!(
                    "{} / {} ({limit_name}, {} req/s)",
                    ms(limit.p50),
                    ms(limit.p99),
                    limit.rate
                ),
                format!(
                    "{:.1}x p99",
                    r.p99.as_secs_f64() / limit.p99.as_secs_f64().max(1e-6)
                ),
                target,
            )
        })
        .collect();
    rows.push(Measure::text(
        "query API RSS under the load",
        format!("{} MiB", rss.iter().max().unwrap_or(&0) / 1024),
        "—".into(),
        "—".into(),
        "< 256 MiB",
    ));
    report("graphql", &rows)
}

//! Property: whatever bytes or mutated JSON arrive at any command endpoint, the API never
//! answers 5xx, every error is problem+json, and only a 2xx answer ever writes an event.
//! Deterministic: a seeded generator, so a failure reproduces (`HEALTHPLANE_FUZZ_SEED`,
//! `HEALTHPLANE_FUZZ_CASES` per endpoint).

use reqwest::Method;
use serde_json::{Value, json};
use tests::{Stack, ada};

use crate::commands::{
    Clinic, clinic, encounter_body, prescription_body, schedule_body, vital_body,
};

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn ascii(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| (b' ' + self.below(95) as u8) as char)
            .collect()
    }
}

/// JSON paths (as key lists) of every object member in `v`.
fn members(v: &Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            let mut path = at.clone();
            path.push(k.clone());
            out.push(path.clone());
            members(child, path, out);
        }
    }
}

fn parent_mut<'a>(
    v: &'a mut Value,
    path: &[String],
) -> Option<&'a mut serde_json::Map<String, Value>> {
    let mut at = v;
    for k in &path[..path.len() - 1] {
        at = at.get_mut(k)?;
    }
    at.as_object_mut()
}

fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(0),
        2 => json!(-1.7e308),
        3 => json!(true),
        4 => json!(""),
        5 => json!("x".repeat(5000)),
        6 => json!([]),
        7 => json!({}),
        8 => json!("\u{0}\u{202e}💥"),
        9 => json!(u64::MAX),
        10 => json!([[{"a": [1, "2", null]}]]),
        _ => json!(rng.ascii(12)),
    }
}

/// A mutation of `template` as request bytes.
fn mutate(rng: &mut Rng, template: &Value) -> Vec<u8> {
    let mut v = template.clone();
    let mut paths = Vec::new();
    members(&v, vec![], &mut paths);
    let pick = |rng: &mut Rng, paths: &Vec<Vec<String>>| paths[rng.below(paths.len())].clone();
    match rng.below(11) {
        0 if !paths.is_empty() => {
            let path = pick(rng, &paths);
            if let Some(parent) = parent_mut(&mut v, &path) {
                parent.remove(path.last().unwrap());
            }
            v.to_string().into_bytes()
        }
        1 | 2 if !paths.is_empty() => {
            let path = pick(rng, &paths);
            let odd = odd_value(rng);
            if let Some(parent) = parent_mut(&mut v, &path) {
                parent.insert(path.last().unwrap().clone(), odd);
            }
            v.to_string().into_bytes()
        }
        3 => {
            let key = format!("unexpected{}", rng.below(100));
            v.as_object_mut().unwrap().insert(key, json!(1));
            v.to_string().into_bytes()
        }
        4 => {
            let text = v.to_string().into_bytes();
            text[..rng.below(text.len())].to_vec()
        }
        5 => {
            let mut text = v.to_string().into_bytes();
            let i = rng.below(text.len());
            text[i] = rng.next() as u8;
            text
        }
        6 => (0..rng.below(600)).map(|_| rng.next() as u8).collect(),
        7 => "[".repeat(5000).into_bytes(),
        8 => [json!([]), json!(7), json!("s"), Value::Null, json!(false)][rng.below(5)]
            .to_string()
            .into_bytes(),
        9 => {
            let mut text = v.to_string().into_bytes();
            text.insert(1, 0xff);
            text
        }
        _ => format!("{{\"patientId\": 1, {}", &v.to_string()[1..]).into_bytes(),
    }
}

#[tokio::test]
async fn arbitrary_and_mutated_bodies_never_500_and_never_write() {
    let seed: u64 = std::env::var("HEALTHPLANE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de);
    let cases: usize = std::env::var("HEALTHPLANE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(250);
    let stack = Stack::start().await;
    let Clinic {
        admin,
        doc,
        patient,
        appointment,
        encounter,
    } = clinic(&stack).await;
    let endpoints: Vec<(Method, String, &str, Value)> = vec![
        (Method::POST, "/v1/patients".into(), &admin, ada()),
        (
            Method::PATCH,
            format!("/v1/patients/{patient}"),
            &admin,
            json!({"gender": "other", "telecom": [{"system": "email", "value": "a@b.c"}]}),
        ),
        (
            Method::POST,
            "/v1/appointments".into(),
            &admin,
            schedule_body(&patient, 24, 25),
        ),
        (
            Method::POST,
            format!("/v1/appointments/{appointment}/cancel"),
            &admin,
            json!({"reason": "patient"}),
        ),
        (
            Method::POST,
            "/v1/encounters".into(),
            &doc,
            encounter_body(&patient, None),
        ),
        (
            Method::POST,
            format!("/v1/encounters/{encounter}/complete"),
            &doc,
            json!({"dischargeDisposition": "home"}),
        ),
        (
            Method::POST,
            "/v1/observations".into(),
            &doc,
            vital_body(&patient, Some(&encounter), "8867-4", 72.0, "/min"),
        ),
        (
            Method::POST,
            "/v1/medication-requests".into(),
            &doc,
            prescription_body(&patient, None),
        ),
    ];
    let pool = sqlx::PgPool::connect(&stack.databases.event_store)
        .await
        .unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let mut rng = Rng(seed);
    let (mut accepted, mut total) = (0, 0);
    for (method, path, who, template) in &endpoints {
        for case in 0..cases {
            let body = mutate(&mut rng, template);
            // The target's current version, so that most requests get past If-Match to the body.
            let target = path
                .split('/')
                .nth(3)
                .and_then(|id| id.parse::<uuid::Uuid>().ok());
            let version: i64 = sqlx::query_scalar(
                "SELECT COALESCE(max(aggregate_version), 0) FROM events WHERE aggregate_id = $1",
            )
            .bind(target)
            .fetch_one(&pool)
            .await
            .unwrap();
            let mut headers: Vec<(&str, String)> = vec![("If-Match", version.to_string())];
            match rng.below(6) {
                0 => {
                    let len = rng.below(40);
                    headers[0].1 = rng.ascii(len);
                }
                1 => {
                    let len = rng.below(300);
                    headers.push(("Idempotency-Key", rng.ascii(len)));
                }
                _ => {}
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let before = count().await;
            let (status, answer_headers, answer) = stack
                .command(method.clone(), path, Some(who), &headers, body.clone())
                .await;
            let after = count().await;
            let context = format!(
                "seed {seed:#x} {method} {path} case {case}: {status} {answer} for {:?}",
                String::from_utf8_lossy(&body)
            );
            assert!(status < 500, "{context}");
            total += 1;
            if (200..300).contains(&status) {
                accepted += 1;
            } else {
                assert_eq!(after, before, "a refused request wrote: {context}");
                assert_eq!(
                    answer_headers["content-type"], "application/problem+json",
                    "{context}"
                );
                assert_eq!(answer["status"], status, "{context}");
            }
        }
    }
    // The generator must mostly produce bad input, or the property says little.
    assert!(
        accepted * 4 < total,
        "{accepted} of {total} mutated requests were accepted"
    );
}

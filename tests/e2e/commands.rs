//! Journey: clinicians and front desks write every clinical command; each lands its event on
//! the right topic, each rule refuses bad commands with 422 and the field, and nothing refused
//! is written.

use std::time::{Duration, Instant};

use chrono::Utc;
use events::Role;
use events::catalog::{
    APPOINTMENT_CANCELLED, APPOINTMENT_SCHEDULED, ENCOUNTER_COMPLETED, ENCOUNTER_STARTED,
    MEDICATION_PRESCRIBED, OBSERVATION_CREATED,
};
use rdkafka::message::{Headers, Message};
use reqwest::Method;
use schemas::EventCodec;
use serde_json::{Value, json};
use tests::{Stack, ada, read_topic, token};

pub fn at_hours(hours: i64) -> String {
    (Utc::now() + chrono::Duration::minutes(hours * 60)).to_rfc3339()
}

pub fn schedule_body(patient: &str, start_hours: i64, end_hours: i64) -> Value {
    json!({"patientId": patient, "practitionerId": "dr-hopper", "start": at_hours(start_hours), "end": at_hours(end_hours),
           "serviceType": {"system": "http://snomed.info/sct", "code": "11429006", "display": "Consultation"}})
}

pub fn encounter_body(patient: &str, appointment: Option<&str>) -> Value {
    let mut body = json!({"patientId": patient, "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}});
    if let Some(a) = appointment {
        body["appointmentId"] = a.into();
    }
    body
}

pub fn vital_body(
    patient: &str,
    encounter: Option<&str>,
    code: &str,
    value: f64,
    unit: &str,
) -> Value {
    let mut body = json!({"patientId": patient, "status": "final", "code": {"system": "http://loinc.org", "code": code},
                          "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org"}});
    if let Some(e) = encounter {
        body["encounterId"] = e.into();
    }
    body
}

pub fn prescription_body(patient: &str, encounter: Option<&str>) -> Value {
    let mut body = json!({"patientId": patient, "status": "active", "intent": "order",
        "medication": {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "314076", "display": "lisinopril 10 MG Oral Tablet"},
        "dosage": {"text": "10 mg once a day", "dose": {"value": 10, "unit": "mg"}, "frequency": 1, "period": 1, "periodUnit": "d"},
        "dispenseQuantity": {"value": 30, "unit": "{tbl}"}, "refills": 2});
    if let Some(e) = encounter {
        body["encounterId"] = e.into();
    }
    body
}

pub async fn send(
    stack: &Stack,
    method: Method,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value) {
    let (status, _, json) = stack
        .command(
            method,
            path,
            Some(token),
            headers,
            body.to_string().into_bytes(),
        )
        .await;
    (status, json)
}

pub async fn event_count(stack: &Stack) -> i64 {
    let pool = sqlx::PgPool::connect(&stack.databases.event_store)
        .await
        .expect("event store");
    let count = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .expect("count");
    pool.close().await;
    count
}

fn id(body: &Value) -> String {
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {body}"))
        .to_string()
}

/// Waits (bounded) for the record with `key` on `topic`; returns its headers and decoded value.
async fn on_topic(
    stack: &Stack,
    topic: &str,
    key: &str,
) -> (std::collections::HashMap<String, String>, Value) {
    let codec = EventCodec::new(&stack.cluster.registry_url);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found: Vec<_> = read_topic(&stack.cluster.brokers, topic)
            .into_iter()
            .filter(|m| m.key() == Some(key.as_bytes()))
            .collect();
        if let [message] = found.as_slice() {
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            return (
                headers,
                codec.decode_json(message.payload()).await.expect("decodes"),
            );
        }
        assert!(
            found.len() <= 1,
            "{topic} holds {} records for {key}",
            found.len()
        );
        assert!(Instant::now() < deadline, "no record for {key} on {topic}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A patient with a booked appointment and an encounter in progress, and the tokens of the
/// front desk and a practitioner.
pub struct Clinic {
    pub admin: String,
    pub doc: String,
    pub patient: String,
    pub appointment: String,
    pub encounter: String,
}

pub async fn clinic(stack: &Stack) -> Clinic {
    let admin = token(Role::Admin, "front-desk", None);
    let doc = token(Role::Practitioner, "dr-hopper", None);
    let patient = id(&stack.register(&ada()).await);
    let (s, appointment) = send(
        stack,
        Method::POST,
        "/v1/appointments",
        &admin,
        &[],
        &schedule_body(&patient, 24, 25),
    )
    .await;
    assert_eq!(s, 201, "{appointment}");
    let (s, encounter) = send(
        stack,
        Method::POST,
        "/v1/encounters",
        &doc,
        &[],
        &encounter_body(&patient, None),
    )
    .await;
    assert_eq!(s, 201, "{encounter}");
    Clinic {
        appointment: id(&appointment),
        encounter: id(&encounter),
        admin,
        doc,
        patient,
    }
}

#[tokio::test]
async fn every_command_lands_its_event_on_its_topic_with_key_and_envelope() {
    let stack = Stack::start().await;
    let admin = token(Role::Admin, "front-desk", None);
    let doc = token(Role::Practitioner, "dr-hopper", None);
    let patient = id(&stack.register(&ada()).await);

    let (s, appointment) = send(
        &stack,
        Method::POST,
        "/v1/appointments",
        &admin,
        &[],
        &schedule_body(&patient, 24, 25),
    )
    .await;
    assert_eq!(s, 201, "{appointment}");
    let (s, encounter) = send(
        &stack,
        Method::POST,
        "/v1/encounters",
        &doc,
        &[],
        &encounter_body(&patient, Some(&id(&appointment))),
    )
    .await;
    assert_eq!(s, 201, "{encounter}");
    let (s, observation) = send(
        &stack,
        Method::POST,
        "/v1/observations",
        &doc,
        &[],
        &vital_body(&patient, Some(&id(&encounter)), "8867-4", 72.0, "/min"),
    )
    .await;
    assert_eq!(s, 201, "{observation}");
    let (s, prescription) = send(
        &stack,
        Method::POST,
        "/v1/medication-requests",
        &doc,
        &[],
        &prescription_body(&patient, Some(&id(&encounter))),
    )
    .await;
    assert_eq!(s, 201, "{prescription}");
    let complete = format!("/v1/encounters/{}/complete", id(&encounter));
    let (s, completed) = send(
        &stack,
        Method::POST,
        &complete,
        &doc,
        &[("If-Match", "\"1\"")],
        &json!({"dischargeDisposition": "home"}),
    )
    .await;
    assert_eq!(
        (s, completed["version"].clone()),
        (200, json!(2)),
        "{completed}"
    );
    let (_, other) = send(
        &stack,
        Method::POST,
        "/v1/appointments",
        &admin,
        &[],
        &schedule_body(&patient, 48, 49),
    )
    .await;
    let cancel = format!("/v1/appointments/{}/cancel", id(&other));
    let (s, cancelled) = send(
        &stack,
        Method::POST,
        &cancel,
        &admin,
        &[("If-Match", "1")],
        &json!({"reason": "patient"}),
    )
    .await;
    assert_eq!(
        (s, cancelled["version"].clone()),
        (200, json!(2)),
        "{cancelled}"
    );

    // The first appointment was fulfilled by the encounter: it cannot be cancelled any more.
    let fulfilled = format!("/v1/appointments/{}/cancel", id(&appointment));
    let (s, refused) = send(
        &stack,
        Method::POST,
        &fulfilled,
        &admin,
        &[("If-Match", "2")],
        &json!({"reason": "patient"}),
    )
    .await;
    assert_eq!(
        (s, refused["errors"][0]["field"].clone()),
        (422, json!("$")),
        "{refused}"
    );

    let expected = [
        (
            APPOINTMENT_SCHEDULED,
            &appointment,
            1,
            "AppointmentScheduled",
            "admin",
        ),
        (
            ENCOUNTER_STARTED,
            &encounter,
            1,
            "EncounterStarted",
            "practitioner",
        ),
        (
            OBSERVATION_CREATED,
            &observation,
            1,
            "ObservationCreated",
            "practitioner",
        ),
        (
            MEDICATION_PRESCRIBED,
            &prescription,
            1,
            "MedicationPrescribed",
            "practitioner",
        ),
        (
            ENCOUNTER_COMPLETED,
            &completed,
            2,
            "EncounterCompleted",
            "practitioner",
        ),
        (
            APPOINTMENT_CANCELLED,
            &cancelled,
            2,
            "AppointmentCancelled",
            "admin",
        ),
    ];
    for (topic, response, version, event_type, role) in expected {
        let key = id(response);
        let event_id = response["eventIds"][0].as_str().unwrap();
        let (headers, record) = on_topic(&stack, topic, &key).await;
        assert_eq!(headers["event_type"], event_type, "{topic}");
        assert_eq!(headers["event_id"], event_id, "{topic}");
        assert_eq!(record["event_id"], event_id, "{topic}");
        assert_eq!(record["aggregate_id"], key.as_str(), "{topic}");
        assert_eq!(record["aggregate_version"], version, "{topic}");
        assert_eq!(record["actor"]["role"], role, "{topic}");
        assert_eq!(record["patient_id"], patient.as_str(), "{topic}");
    }
    let (_, started) = on_topic(&stack, ENCOUNTER_STARTED, &id(&encounter)).await;
    assert_eq!(
        (
            started["encounter_class"]["code"].clone(),
            started["appointment_id"].clone()
        ),
        (json!("AMB"), json!(id(&appointment)))
    );
    assert_eq!(started["practitioner_id"], "dr-hopper");
    let (_, vital) = on_topic(&stack, OBSERVATION_CREATED, &id(&observation)).await;
    assert_eq!(
        (
            vital["value_quantity"]["unit"].clone(),
            vital["category"].clone()
        ),
        (json!("/min"), json!("vital-signs"))
    );
    let (_, rx) = on_topic(&stack, MEDICATION_PRESCRIBED, &id(&prescription)).await;
    assert_eq!(
        (
            rx["medication"]["code"].clone(),
            rx["dosage"]["period_unit"].clone()
        ),
        (json!("314076"), json!("d"))
    );
    // The fulfilment stays in the event store: no topic carries it.
    let scheduled_topic = read_topic(&stack.cluster.brokers, APPOINTMENT_CANCELLED);
    assert!(
        !scheduled_topic
            .iter()
            .any(|m| m.key() == Some(id(&appointment).as_bytes()))
    );
}

/// One command rule: given the clinic of [`clinic`], when `by` POSTs `body` to `post`, then
/// the answer is `status` naming the failing member `field`.
struct Rule<'a> {
    rule: &'static str,
    post: &'static str,
    by: &'a str,
    body: Value,
    status: u16,
    field: &'static str,
}

#[tokio::test]
async fn every_rule_refuses_with_422_and_the_failing_field_and_writes_nothing() {
    let stack = Stack::start().await;
    let Clinic {
        admin,
        doc,
        patient,
        appointment,
        encounter,
    } = clinic(&stack).await;
    let other_patient = id(&stack.register(&ada()).await);
    let nobody = uuid::Uuid::now_v7().to_string();
    let before = event_count(&stack).await;

    let with = |mut body: Value, path: &str, value: Value| {
        let mut at = &mut body;
        let parts: Vec<&str> = path.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            at = &mut at[*p];
        }
        at[parts[parts.len() - 1]] = value;
        body
    };
    let without = |mut body: Value, key: &str| {
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let schedule = schedule_body(&patient, 24, 25);
    let start = encounter_body(&patient, None);
    let vital = vital_body(&patient, None, "8867-4", 72.0, "/min");
    let rx = prescription_body(&patient, None);
    let cases: Vec<Rule> = vec![
        // Appointments: start < end, both present, not in the past, at most 24 h, a real patient.
        Rule {
            rule: "an appointment must end after it starts",
            post: "/v1/appointments",
            by: &admin,
            body: schedule_body(&patient, 25, 24),
            status: 422,
            field: "$.end",
        },
        Rule {
            rule: "an appointment cannot start in the past",
            post: "/v1/appointments",
            by: &admin,
            body: schedule_body(&patient, -2, -1),
            status: 422,
            field: "$.start",
        },
        Rule {
            rule: "an appointment lasts at most 24 hours",
            post: "/v1/appointments",
            by: &admin,
            body: schedule_body(&patient, 24, 49),
            status: 422,
            field: "$.end",
        },
        Rule {
            rule: "an appointment needs an end",
            post: "/v1/appointments",
            by: &admin,
            body: without(schedule.clone(), "end"),
            status: 422,
            field: "$.end",
        },
        Rule {
            rule: "an appointment's start is an instant",
            post: "/v1/appointments",
            by: &admin,
            body: with(schedule.clone(), "start", json!("next tuesday")),
            status: 422,
            field: "$.start",
        },
        Rule {
            rule: "an appointment is for a registered patient",
            post: "/v1/appointments",
            by: &admin,
            body: with(schedule.clone(), "patientId", json!(nobody)),
            status: 404,
            field: "$.patientId",
        },
        // Encounters: an ActCode class, not in the future, the patient's own appointment.
        Rule {
            rule: "an encounter's class is an ActCode",
            post: "/v1/encounters",
            by: &doc,
            body: with(start.clone(), "class.code", json!("WALKIN")),
            status: 422,
            field: "$.class.code",
        },
        Rule {
            rule: "an encounter's class uses the ActCode system",
            post: "/v1/encounters",
            by: &doc,
            body: with(start.clone(), "class.system", json!("urn:x")),
            status: 422,
            field: "$.class.system",
        },
        Rule {
            rule: "an encounter cannot start in the future",
            post: "/v1/encounters",
            by: &doc,
            body: with(start.clone(), "startedAt", json!(at_hours(3))),
            status: 422,
            field: "$.startedAt",
        },
        Rule {
            rule: "an encounter's appointment is the same patient's",
            post: "/v1/encounters",
            by: &doc,
            body: encounter_body(&other_patient, Some(&appointment)),
            status: 422,
            field: "$.appointmentId",
        },
        Rule {
            rule: "an encounter's appointment exists",
            post: "/v1/encounters",
            by: &doc,
            body: encounter_body(&patient, Some(&nobody)),
            status: 404,
            field: "$.appointmentId",
        },
        Rule {
            rule: "an encounter is for a registered patient",
            post: "/v1/encounters",
            by: &doc,
            body: encounter_body(&nobody, None),
            status: 404,
            field: "$.patientId",
        },
        // Observations: LOINC, vital signs in their UCUM unit and plausible.
        Rule {
            rule: "a heart rate is in /min",
            post: "/v1/observations",
            by: &doc,
            body: vital_body(&patient, None, "8867-4", 72.0, "bpm"),
            status: 422,
            field: "$.valueQuantity.unit",
        },
        Rule {
            rule: "a heart rate is plausible",
            post: "/v1/observations",
            by: &doc,
            body: vital_body(&patient, None, "8867-4", 400.0, "/min"),
            status: 422,
            field: "$.valueQuantity.value",
        },
        Rule {
            rule: "a body temperature is in Cel",
            post: "/v1/observations",
            by: &doc,
            body: vital_body(&patient, None, "8310-5", 98.6, "[degF]"),
            status: 422,
            field: "$.valueQuantity.unit",
        },
        Rule {
            rule: "a body temperature is plausible",
            post: "/v1/observations",
            by: &doc,
            body: vital_body(&patient, None, "8310-5", 60.0, "Cel"),
            status: 422,
            field: "$.valueQuantity.value",
        },
        Rule {
            rule: "a body weight is in kg",
            post: "/v1/observations",
            by: &doc,
            body: vital_body(&patient, None, "29463-7", 154.0, "[lb_av]"),
            status: 422,
            field: "$.valueQuantity.unit",
        },
        Rule {
            rule: "an observation's code is LOINC",
            post: "/v1/observations",
            by: &doc,
            body: with(
                vital.clone(),
                "code.system",
                json!("http://snomed.info/sct"),
            ),
            status: 422,
            field: "$.code.system",
        },
        Rule {
            rule: "a LOINC code has a valid check digit",
            post: "/v1/observations",
            by: &doc,
            body: with(vital.clone(), "code.code", json!("8867-5")),
            status: 422,
            field: "$.code.code",
        },
        Rule {
            rule: "a vital sign has a value",
            post: "/v1/observations",
            by: &doc,
            body: without(vital.clone(), "valueQuantity"),
            status: 422,
            field: "$.valueQuantity",
        },
        Rule {
            rule: "an observation's encounter is the same patient's",
            post: "/v1/observations",
            by: &doc,
            body: vital_body(&other_patient, Some(&encounter), "8867-4", 72.0, "/min"),
            status: 422,
            field: "$.encounterId",
        },
        Rule {
            rule: "an observation's encounter exists",
            post: "/v1/observations",
            by: &doc,
            body: vital_body(&patient, Some(&nobody), "8867-4", 72.0, "/min"),
            status: 404,
            field: "$.encounterId",
        },
        // Prescriptions: RxNorm, FHIR status and intent.
        Rule {
            rule: "a medication is coded in RxNorm",
            post: "/v1/medication-requests",
            by: &doc,
            body: with(
                rx.clone(),
                "medication.system",
                json!("http://snomed.info/sct"),
            ),
            status: 422,
            field: "$.medication.system",
        },
        Rule {
            rule: "an RxNorm code is numeric",
            post: "/v1/medication-requests",
            by: &doc,
            body: with(rx.clone(), "medication.code", json!("lisinopril")),
            status: 422,
            field: "$.medication.code",
        },
        Rule {
            rule: "a prescription's status is a FHIR status",
            post: "/v1/medication-requests",
            by: &doc,
            body: with(rx.clone(), "status", json!("ongoing")),
            status: 422,
            field: "$.status",
        },
        Rule {
            rule: "a prescription's intent is a FHIR intent",
            post: "/v1/medication-requests",
            by: &doc,
            body: with(rx.clone(), "intent", json!("wish")),
            status: 422,
            field: "$.intent",
        },
        Rule {
            rule: "refills are not negative",
            post: "/v1/medication-requests",
            by: &doc,
            body: with(rx.clone(), "refills", json!(-1)),
            status: 422,
            field: "$.refills",
        },
        Rule {
            rule: "a prescription is for a registered patient",
            post: "/v1/medication-requests",
            by: &doc,
            body: with(rx.clone(), "patientId", json!(nobody)),
            status: 404,
            field: "$.patientId",
        },
        // Patients.
        Rule {
            rule: "gender is a FHIR administrative gender",
            post: "/v1/patients",
            by: &admin,
            body: with(ada(), "gender", json!("f")),
            status: 422,
            field: "$.gender",
        },
        Rule {
            rule: "a birth date is not in the future",
            post: "/v1/patients",
            by: &admin,
            body: with(ada(), "birthDate", json!("2999-01-01")),
            status: 422,
            field: "$.birthDate",
        },
        Rule {
            rule: "an identifier system is a URI",
            post: "/v1/patients",
            by: &admin,
            body: with(
                ada(),
                "identifier",
                json!([{"system": "ssn", "value": "1"}]),
            ),
            status: 422,
            field: "$.identifier[0].system",
        },
        Rule {
            rule: "a patient has at least one identifier",
            post: "/v1/patients",
            by: &admin,
            body: with(ada(), "identifier", json!([])),
            status: 422,
            field: "$.identifier",
        },
        Rule {
            rule: "a preferred language is a BCP 47 tag",
            post: "/v1/patients",
            by: &admin,
            body: with(ada(), "preferredLanguage", json!("english")),
            status: 422,
            field: "$.preferredLanguage",
        },
    ];
    for Rule {
        rule,
        post,
        by,
        body,
        status,
        field,
    } in cases
    {
        let (s, answer) = send(&stack, Method::POST, post, by, &[], &body).await;
        let fields: Vec<&str> = answer["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(
            s == status && fields.contains(&field),
            "rule \"{rule}\": POST {post} should be {status} naming {field}; got {s}: {answer}"
        );
    }

    // Roles: who may write what.
    let patient_token = token(Role::Patient, "ada", Some(patient.parse().unwrap()));
    let auditor = token(Role::Auditor, "auditor", None);
    for (path, who, body) in [
        ("/v1/appointments", &patient_token, &schedule),
        ("/v1/encounters", &admin, &start),
        ("/v1/observations", &admin, &vital),
        ("/v1/medication-requests", &auditor, &rx),
        ("/v1/patients", &doc, &ada()),
        ("/v1/patients", &auditor, &ada()),
    ] {
        assert_eq!(
            send(&stack, Method::POST, path, who, &[], body).await.0,
            403,
            "{path}"
        );
    }

    // Unknown aggregates, missing and stale versions.
    let cancel = |id: &str| format!("/v1/appointments/{id}/cancel");
    let complete = |id: &str| format!("/v1/encounters/{id}/complete");
    let reason = json!({"reason": "patient"});
    assert_eq!(
        send(
            &stack,
            Method::POST,
            &cancel(&nobody),
            &admin,
            &[("If-Match", "1")],
            &reason
        )
        .await
        .0,
        404
    );
    assert_eq!(
        send(
            &stack,
            Method::POST,
            &cancel("not-an-id"),
            &admin,
            &[("If-Match", "1")],
            &reason
        )
        .await
        .0,
        404
    );
    assert_eq!(
        send(
            &stack,
            Method::POST,
            &cancel(&patient),
            &admin,
            &[("If-Match", "1")],
            &reason
        )
        .await
        .0,
        404,
        "a patient is no appointment"
    );
    assert_eq!(
        send(
            &stack,
            Method::POST,
            &complete(&nobody),
            &doc,
            &[("If-Match", "1")],
            &json!({})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        send(
            &stack,
            Method::PATCH,
            &format!("/v1/patients/{nobody}"),
            &admin,
            &[("If-Match", "1")],
            &json!({"gender": "other"})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        send(
            &stack,
            Method::POST,
            &cancel(&appointment),
            &admin,
            &[],
            &reason
        )
        .await
        .0,
        412
    );
    let (s, stale) = send(
        &stack,
        Method::POST,
        &cancel(&appointment),
        &admin,
        &[("If-Match", "\"5\"")],
        &reason,
    )
    .await;
    assert_eq!((s, stale["currentVersion"].clone()), (409, json!(1)));
    let (s, stale) = send(
        &stack,
        Method::POST,
        &complete(&encounter),
        &doc,
        &[("If-Match", "3")],
        &json!({}),
    )
    .await;
    assert_eq!((s, stale["currentVersion"].clone()), (409, json!(1)));
    let (s, early) = send(
        &stack,
        Method::POST,
        &complete(&encounter),
        &doc,
        &[("If-Match", "1")],
        &json!({"endedAt": "2001-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(
        (s, early["errors"][0]["field"].clone()),
        (422, json!("$.endedAt"))
    );

    assert_eq!(
        event_count(&stack).await,
        before,
        "a refused command wrote an event"
    );

    // And the state rules: cancel once, complete once.
    assert_eq!(
        send(
            &stack,
            Method::POST,
            &cancel(&appointment),
            &admin,
            &[("If-Match", "1")],
            &reason
        )
        .await
        .0,
        200
    );
    let (s, twice) = send(
        &stack,
        Method::POST,
        &cancel(&appointment),
        &admin,
        &[("If-Match", "2")],
        &reason,
    )
    .await;
    assert_eq!(
        (s, twice["errors"][0]["field"].clone()),
        (422, json!("$")),
        "{twice}"
    );
    assert_eq!(
        send(
            &stack,
            Method::POST,
            &complete(&encounter),
            &doc,
            &[("If-Match", "1")],
            &json!({})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send(
            &stack,
            Method::POST,
            &complete(&encounter),
            &doc,
            &[("If-Match", "2")],
            &json!({})
        )
        .await
        .0,
        422
    );
    assert_eq!(event_count(&stack).await, before + 2);
}

/// Rule: a version conflict names the aggregate that moved, whichever command hit it.
#[tokio::test]
async fn a_version_conflict_names_the_aggregate_that_moved() {
    let stack = Stack::start().await;
    let admin = token(Role::Admin, "front-desk", None);
    let doc = token(Role::Practitioner, "dr-hopper", None);
    let patient = id(&stack.register(&ada()).await);
    let stale = [("If-Match", "\"7\"")];

    let (s, body) = send(
        &stack,
        Method::PATCH,
        &format!("/v1/patients/{patient}"),
        &admin,
        &stale,
        &json!({"gender": "other"}),
    )
    .await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("the patient is at version 1"),
        "{body}"
    );

    let (_, appointment) = send(
        &stack,
        Method::POST,
        "/v1/appointments",
        &admin,
        &[],
        &schedule_body(&patient, 24, 25),
    )
    .await;
    let cancel = format!("/v1/appointments/{}/cancel", id(&appointment));
    let (s, body) = send(
        &stack,
        Method::POST,
        &cancel,
        &admin,
        &stale,
        &json!({"reason": "patient"}),
    )
    .await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("the appointment is at version 1"),
        "{body}"
    );

    let (_, encounter) = send(
        &stack,
        Method::POST,
        "/v1/encounters",
        &doc,
        &[],
        &encounter_body(&patient, None),
    )
    .await;
    let complete = format!("/v1/encounters/{}/complete", id(&encounter));
    let (s, body) = send(
        &stack,
        Method::POST,
        &complete,
        &doc,
        &stale,
        &json!({"dischargeDisposition": "home"}),
    )
    .await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("the encounter is at version 1"),
        "{body}"
    );

    // Encounters started from one appointment race for it: the new encounter streams never
    // conflict, the appointment's does, and the answer says so.
    let appointment = id(&appointment);
    let racing = (0..12).map(|_| {
        let (stack, doc, appointment, patient) = (&stack, &doc, &appointment, &patient);
        async move {
            send(
                stack,
                Method::POST,
                "/v1/encounters",
                doc,
                &[],
                &encounter_body(patient, Some(appointment)),
            )
            .await
        }
    });
    let answers = futures::future::join_all(racing).await;
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 201).count(),
        1,
        "{answers:?}"
    );
    for (s, body) in &answers {
        if *s == 409 {
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("the appointment is at version"),
                "{body}"
            );
        }
    }
}

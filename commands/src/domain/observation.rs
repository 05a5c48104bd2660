//! The Observation aggregate: RecordObservation, with LOINC codes and, for vital signs, their
//! UCUM unit and a physiologically plausible range.

use crate::domain::FieldError;
use chrono::{DateTime, Utc};
use events::clinical::{Coding, LOINC, ObservationStatus, Quantity};
use events::observation::ObservationCreated;
use serde::Deserialize;
use uuid::Uuid;

use super::validate::{Checker, CodingBody, QuantityBody, is_loinc};
use super::{Aggregate, Rejection, published_events};

/// A vital sign: its LOINC code, name, UCUM unit and plausible range (inclusive).
#[derive(Debug, Clone, Copy)]
pub struct VitalSign {
    pub code: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    pub min: f64,
    pub max: f64,
}

/// The vital signs of the FHIR vital-signs profile that Healthplane checks.
pub const VITAL_SIGNS: [VitalSign; 10] = [
    VitalSign {
        code: "8867-4",
        name: "heart rate",
        unit: "/min",
        min: 20.0,
        max: 300.0,
    },
    VitalSign {
        code: "9279-1",
        name: "respiratory rate",
        unit: "/min",
        min: 3.0,
        max: 80.0,
    },
    VitalSign {
        code: "8310-5",
        name: "body temperature",
        unit: "Cel",
        min: 25.0,
        max: 45.0,
    },
    VitalSign {
        code: "29463-7",
        name: "body weight",
        unit: "kg",
        min: 0.2,
        max: 700.0,
    },
    VitalSign {
        code: "8302-2",
        name: "body height",
        unit: "cm",
        min: 20.0,
        max: 280.0,
    },
    VitalSign {
        code: "8480-6",
        name: "systolic blood pressure",
        unit: "mm[Hg]",
        min: 40.0,
        max: 300.0,
    },
    VitalSign {
        code: "8462-4",
        name: "diastolic blood pressure",
        unit: "mm[Hg]",
        min: 20.0,
        max: 200.0,
    },
    VitalSign {
        code: "2708-6",
        name: "oxygen saturation",
        unit: "%",
        min: 50.0,
        max: 100.0,
    },
    VitalSign {
        code: "59408-5",
        name: "oxygen saturation (pulse oximetry)",
        unit: "%",
        min: 50.0,
        max: 100.0,
    },
    VitalSign {
        code: "39156-5",
        name: "body mass index",
        unit: "kg/m2",
        min: 8.0,
        max: 100.0,
    },
];

/// The statuses an observation may be recorded with (the others come with later changes).
pub const RECORDABLE: [ObservationStatus; 4] = [
    ObservationStatus::Registered,
    ObservationStatus::Preliminary,
    ObservationStatus::Final,
    ObservationStatus::Amended,
];
pub const CATEGORIES: [&str; 9] = [
    "vital-signs",
    "laboratory",
    "exam",
    "survey",
    "social-history",
    "imaging",
    "procedure",
    "therapy",
    "activity",
];

/// The body of RecordObservation (FHIR Observation in spirit).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RecordBody {
    pub patient_id: Option<String>,
    pub encounter_id: Option<String>,
    pub status: Option<String>,
    pub category: Option<String>,
    pub code: Option<CodingBody>,
    pub value_quantity: Option<QuantityBody>,
    pub value_codeable_concept: Option<CodingBody>,
    pub value_string: Option<String>,
    pub effective_date_time: Option<String>,
}

/// A valid observation.
#[derive(Debug, Clone, PartialEq)]
pub struct NewObservation {
    pub patient_id: Uuid,
    pub encounter_id: Option<Uuid>,
    pub status: ObservationStatus,
    pub category: String,
    pub code: Coding,
    pub value: ObservationValue,
    pub effective_at: DateTime<Utc>,
}

/// Exactly one value.
#[derive(Debug, Clone, PartialEq)]
pub enum ObservationValue {
    Quantity(Quantity),
    Coding(Coding),
    Text(String),
}

pub fn parse_record(
    body: &RecordBody,
    now: DateTime<Utc>,
) -> Result<NewObservation, Vec<FieldError>> {
    let mut c = Checker::default();
    let patient_id = c.uuid("$.patientId", body.patient_id.as_ref());
    let encounter_id = c.optional_uuid("$.encounterId", body.encounter_id.as_ref());
    let status = c
        .code("$.status", body.status.as_ref(), ObservationStatus::Final)
        .filter(|status| {
            let recordable = RECORDABLE.contains(status);
            if !recordable {
                c.fail(
                    "$.status",
                    format!(
                        "`{status}` is not one of {}",
                        RECORDABLE.map(ObservationStatus::as_str).join(", ")
                    ),
                );
            }
            recordable
        });
    let code = c.coding("$.code", body.code.as_ref(), Some(LOINC));
    if let Some(bad) = code.as_ref().filter(|k| !is_loinc(&k.code)) {
        c.fail(
            "$.code.code",
            format!(
                "`{}` is not a LOINC code (e.g. 8867-4, with its check digit)",
                bad.code
            ),
        );
    }
    let vital = code
        .as_ref()
        .and_then(|k| VITAL_SIGNS.iter().find(|v| v.code == k.code));
    let category = match &body.category {
        None => Some(
            if vital.is_some() {
                "vital-signs"
            } else {
                "laboratory"
            }
            .to_string(),
        ),
        s => c.one_of("$.category", s.as_ref(), &CATEGORIES),
    };
    let values = [
        body.value_quantity.as_ref().map(|q| {
            c.quantity("$.valueQuantity", q)
                .map(ObservationValue::Quantity)
        }),
        body.value_codeable_concept.as_ref().map(|k| {
            c.coding("$.valueCodeableConcept", Some(k), None)
                .map(ObservationValue::Coding)
        }),
        body.value_string
            .as_ref()
            .map(|s| c.text("$.valueString", Some(s)).map(ObservationValue::Text)),
    ];
    let given: Vec<Option<ObservationValue>> = values.into_iter().flatten().collect();
    let value = match given.as_slice() {
        [] => {
            c.fail(
                "$.valueQuantity",
                "one of valueQuantity, valueCodeableConcept or valueString is required",
            );
            None
        }
        [one] => one.clone(),
        _ => {
            c.fail(
                "$",
                "give only one of valueQuantity, valueCodeableConcept or valueString",
            );
            None
        }
    };
    if let Some(vital) = vital {
        check_vital(&mut c, vital, value.as_ref());
    }
    let effective_at = c.past_instant(
        "$.effectiveDateTime",
        body.effective_date_time.as_ref(),
        now,
    );
    let observation = (|| {
        Some(NewObservation {
            patient_id: patient_id?,
            encounter_id,
            status: status?,
            category: category?,
            code: code?,
            value: value?,
            effective_at: effective_at?,
        })
    })();
    c.finish(observation)
}

fn check_vital(c: &mut Checker, vital: &VitalSign, value: Option<&ObservationValue>) {
    match value {
        Some(ObservationValue::Quantity(q)) if q.unit != vital.unit => c.fail(
            "$.valueQuantity.unit",
            format!(
                "{} ({}) is recorded in {}, not {}",
                vital.name, vital.code, vital.unit, q.unit
            ),
        ),
        Some(ObservationValue::Quantity(q)) if !(vital.min..=vital.max).contains(&q.value) => c
            .fail(
                "$.valueQuantity.value",
                format!(
                    "{} {} {} is not physiologically plausible (expected {} to {} {})",
                    vital.name, q.value, q.unit, vital.min, vital.max, vital.unit
                ),
            ),
        Some(ObservationValue::Quantity(_)) | None => {}
        Some(_) => c.fail(
            "$.valueQuantity",
            format!(
                "{} ({}) needs a valueQuantity in {}",
                vital.name, vital.code, vital.unit
            ),
        ),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ObservationCommand {
    Record {
        observation: NewObservation,
        performer_id: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ObservationEvent {
    Created(ObservationCreated),
}

published_events!(ObservationEvent { Created(ObservationCreated) });

/// A recorded observation.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub patient_id: Uuid,
}

impl Aggregate for Observation {
    const KIND: events::registry::Aggregate = events::registry::Aggregate::Observation;
    type Event = ObservationEvent;
    type Command = ObservationCommand;

    fn apply(_state: Option<Self>, event: &ObservationEvent) -> Option<Self> {
        let ObservationEvent::Created(e) = event;
        Some(Observation {
            patient_id: e.patient_id,
        })
    }

    fn decide(
        state: Option<&Self>,
        command: ObservationCommand,
        _now: DateTime<Utc>,
    ) -> Result<Vec<ObservationEvent>, Rejection> {
        let ObservationCommand::Record {
            observation: o,
            performer_id,
        } = command;
        if state.is_some() {
            return Err(Rejection::AlreadyExists(
                "the observation already exists".into(),
            ));
        }
        let (value_quantity, value_coding, value_string) = match o.value {
            ObservationValue::Quantity(q) => (Some(q), None, None),
            ObservationValue::Coding(k) => (None, Some(k), None),
            ObservationValue::Text(t) => (None, None, Some(t)),
        };
        Ok(vec![ObservationEvent::Created(ObservationCreated {
            patient_id: o.patient_id,
            encounter_id: o.encounter_id,
            status: o.status,
            category: o.category,
            code: o.code,
            value_quantity,
            value_coding,
            value_string,
            effective_at: o.effective_at,
            performer_id,
        })])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-14T15:00:00Z".parse().unwrap()
    }

    fn vital(code: &str, value: f64, unit: &str) -> RecordBody {
        RecordBody {
            patient_id: Some(Uuid::nil().to_string()),
            code: Some(CodingBody {
                system: Some(LOINC.into()),
                code: Some(code.into()),
                display: None,
            }),
            value_quantity: Some(QuantityBody {
                value: Some(value),
                unit: Some(unit.into()),
                system: None,
            }),
            ..Default::default()
        }
    }

    fn fields(body: &RecordBody) -> Vec<String> {
        parse_record(body, now())
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn given_nothing_when_recorded_then_created_once() {
        let observation = parse_record(&vital("8867-4", 72.0, "/min"), now()).unwrap();
        assert_eq!(observation.category, "vital-signs");
        let command = ObservationCommand::Record {
            observation,
            performer_id: "dr-hopper".into(),
        };
        let events = Observation::decide(None, command.clone(), now()).unwrap();
        let ObservationEvent::Created(created) = &events[0];
        assert_eq!(
            created.value_quantity.as_ref().map(|q| q.unit.as_str()),
            Some("/min")
        );
        let state = Observation::replay(&events);
        assert!(matches!(
            Observation::decide(state.as_ref(), command, now()),
            Err(Rejection::AlreadyExists(_))
        ));
    }

    #[test]
    fn vital_signs_carry_their_ucum_unit() {
        assert_eq!(
            fields(&vital("8867-4", 72.0, "bpm")),
            vec!["$.valueQuantity.unit"]
        );
        assert_eq!(
            fields(&vital("8310-5", 98.6, "[degF]")),
            vec!["$.valueQuantity.unit"]
        );
        assert_eq!(
            fields(&vital("29463-7", 70.0, "[lb_av]")),
            vec!["$.valueQuantity.unit"]
        );
        assert!(parse_record(&vital("8310-5", 37.2, "Cel"), now()).is_ok());
        assert!(parse_record(&vital("29463-7", 70.5, "kg"), now()).is_ok());
    }

    #[test]
    fn vital_signs_are_physiologically_plausible() {
        assert_eq!(
            fields(&vital("8867-4", 400.0, "/min")),
            vec!["$.valueQuantity.value"]
        );
        assert_eq!(
            fields(&vital("8867-4", 0.0, "/min")),
            vec!["$.valueQuantity.value"]
        );
        assert_eq!(
            fields(&vital("8310-5", 60.0, "Cel")),
            vec!["$.valueQuantity.value"]
        );
        assert_eq!(
            fields(&vital("29463-7", 0.0, "kg")),
            vec!["$.valueQuantity.value"]
        );
        let mut text = vital("8867-4", 72.0, "/min");
        text.value_quantity = None;
        text.value_string = Some("fast".into());
        assert_eq!(fields(&text), vec!["$.valueQuantity"]);
    }

    #[test]
    fn codes_are_loinc() {
        let mut body = vital("8867-4", 72.0, "/min");
        body.code = Some(CodingBody {
            system: Some("http://snomed.info/sct".into()),
            code: Some("364075005".into()),
            display: None,
        });
        assert_eq!(fields(&body), vec!["$.code.system"]);
        assert_eq!(fields(&vital("8867-5", 72.0, "/min")), vec!["$.code.code"]);
    }

    #[test]
    fn exactly_one_value() {
        let mut body = vital("2345-7", 5.4, "mmol/L");
        assert_eq!(parse_record(&body, now()).unwrap().category, "laboratory");
        body.value_string = Some("high".into());
        assert_eq!(fields(&body), vec!["$"]);
        body.value_quantity = None;
        body.value_string = None;
        assert_eq!(fields(&body), vec!["$.valueQuantity"]);
    }

    #[test]
    fn status_and_category_come_from_the_fhir_value_sets() {
        let mut body = vital("8867-4", 72.0, "/min");
        body.status = Some("done".into());
        body.category = Some("vitals".into());
        assert_eq!(fields(&body), vec!["$.status", "$.category"]);
    }
}

//! The Encounter aggregate: StartEncounter and CompleteEncounter.

use crate::domain::FieldError;
use chrono::{DateTime, Utc};
use events::clinical::{ACT_CODE, Coding};
use events::encounter::{EncounterCompleted, EncounterStarted};
use serde::Deserialize;
use uuid::Uuid;

use super::validate::{Checker, CodingBody};
use super::{Aggregate, Rejection, published_events};

/// HL7 v3 ActCode encounter classes.
pub const CLASSES: [&str; 11] = [
    "AMB", "EMER", "FLD", "HH", "IMP", "ACUTE", "NONAC", "OBSENC", "PRENC", "SS", "VR",
];

/// The body of StartEncounter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StartBody {
    pub patient_id: Option<String>,
    pub appointment_id: Option<String>,
    pub class: Option<CodingBody>,
    pub started_at: Option<String>,
    pub reason: Option<String>,
}

/// The body of CompleteEncounter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CompleteBody {
    pub ended_at: Option<String>,
    pub discharge_disposition: Option<String>,
}

/// A valid encounter start: a known class, not in the future.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEncounter {
    pub patient_id: Uuid,
    pub appointment_id: Option<Uuid>,
    pub class: Coding,
    pub started_at: DateTime<Utc>,
    pub reason: Option<String>,
}

pub fn parse_start(body: &StartBody, now: DateTime<Utc>) -> Result<NewEncounter, Vec<FieldError>> {
    let mut c = Checker::default();
    let patient_id = c.uuid("$.patientId", body.patient_id.as_ref());
    let appointment_id = c.optional_uuid("$.appointmentId", body.appointment_id.as_ref());
    let class = c.coding("$.class", body.class.as_ref(), Some(ACT_CODE));
    if let Some(code) = class
        .as_ref()
        .map(|k| k.code.as_str())
        .filter(|k| !CLASSES.contains(k))
    {
        c.fail(
            "$.class.code",
            format!(
                "`{code}` is not an encounter class ({})",
                CLASSES.join(", ")
            ),
        );
    }
    let started_at = c.past_instant("$.startedAt", body.started_at.as_ref(), now);
    let reason = c.optional_text("$.reason", body.reason.as_ref());
    let encounter = (|| {
        Some(NewEncounter {
            patient_id: patient_id?,
            appointment_id,
            class: class?,
            started_at: started_at?,
            reason,
        })
    })();
    c.finish(encounter)
}

/// A valid completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub ended_at: DateTime<Utc>,
    pub discharge_disposition: Option<String>,
}

pub fn parse_complete(
    body: &CompleteBody,
    now: DateTime<Utc>,
) -> Result<Completion, Vec<FieldError>> {
    let mut c = Checker::default();
    let ended_at = c.past_instant("$.endedAt", body.ended_at.as_ref(), now);
    let discharge_disposition = c.optional_text(
        "$.dischargeDisposition",
        body.discharge_disposition.as_ref(),
    );
    let completion = ended_at.map(|ended_at| Completion {
        ended_at,
        discharge_disposition,
    });
    c.finish(completion)
}

#[derive(Debug, Clone, PartialEq)]
pub enum EncounterCommand {
    Start {
        encounter: NewEncounter,
        practitioner_id: String,
    },
    Complete(Completion),
}

#[derive(Debug, Clone, PartialEq)]
pub enum EncounterEvent {
    Started(EncounterStarted),
    Completed(EncounterCompleted),
}

published_events!(EncounterEvent {
    Started(EncounterStarted),
    Completed(EncounterCompleted),
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncounterStatus {
    InProgress,
    Completed,
}

/// An encounter.
#[derive(Debug, Clone, PartialEq)]
pub struct Encounter {
    pub patient_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub status: EncounterStatus,
}

impl Aggregate for Encounter {
    const KIND: events::registry::Aggregate = events::registry::Aggregate::Encounter;
    type Event = EncounterEvent;
    type Command = EncounterCommand;

    fn apply(state: Option<Self>, event: &EncounterEvent) -> Option<Self> {
        match (state, event) {
            (_, EncounterEvent::Started(e)) => Some(Encounter {
                patient_id: e.patient_id,
                started_at: e.started_at,
                status: EncounterStatus::InProgress,
            }),
            (Some(e), EncounterEvent::Completed(_)) => Some(Encounter {
                status: EncounterStatus::Completed,
                ..e
            }),
            (None, EncounterEvent::Completed(_)) => None,
        }
    }

    fn decide(
        state: Option<&Self>,
        command: EncounterCommand,
        _now: DateTime<Utc>,
    ) -> Result<Vec<EncounterEvent>, Rejection> {
        match (state, command) {
            (
                None,
                EncounterCommand::Start {
                    encounter,
                    practitioner_id,
                },
            ) => Ok(vec![EncounterEvent::Started(EncounterStarted {
                patient_id: encounter.patient_id,
                practitioner_id,
                appointment_id: encounter.appointment_id,
                encounter_class: encounter.class,
                started_at: encounter.started_at,
                reason: encounter.reason,
            })]),
            (Some(_), EncounterCommand::Start { .. }) => Err(Rejection::AlreadyExists(
                "the encounter already exists".into(),
            )),
            (None, EncounterCommand::Complete(_)) => {
                Err(Rejection::NotFound("no such encounter".into()))
            }
            (Some(e), EncounterCommand::Complete(_)) if e.status == EncounterStatus::Completed => {
                Err(Rejection::rule("$", "the encounter is already completed"))
            }
            (Some(e), EncounterCommand::Complete(c)) if c.ended_at < e.started_at => {
                Err(Rejection::rule(
                    "$.endedAt",
                    format!(
                        "must not be before the encounter started ({})",
                        e.started_at.to_rfc3339()
                    ),
                ))
            }
            (Some(e), EncounterCommand::Complete(c)) => {
                Ok(vec![EncounterEvent::Completed(EncounterCompleted {
                    patient_id: e.patient_id,
                    ended_at: c.ended_at,
                    discharge_disposition: c.discharge_disposition,
                })])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-14T15:00:00Z".parse().unwrap()
    }

    fn start_body() -> StartBody {
        StartBody {
            patient_id: Some(Uuid::nil().to_string()),
            class: Some(CodingBody {
                system: Some(ACT_CODE.into()),
                code: Some("AMB".into()),
                display: None,
            }),
            started_at: Some("2026-03-14T14:00:00Z".into()),
            ..Default::default()
        }
    }

    fn started() -> Vec<EncounterEvent> {
        let encounter = parse_start(&start_body(), now()).unwrap();
        let command = EncounterCommand::Start {
            encounter,
            practitioner_id: "dr-hopper".into(),
        };
        Encounter::decide(None, command, now()).unwrap()
    }

    fn when(
        given: &[EncounterEvent],
        command: EncounterCommand,
    ) -> Result<Vec<EncounterEvent>, Rejection> {
        Encounter::decide(Encounter::replay(given).as_ref(), command, now())
    }

    fn complete_at(t: &str) -> EncounterCommand {
        EncounterCommand::Complete(
            parse_complete(
                &CompleteBody {
                    ended_at: Some(t.into()),
                    ..Default::default()
                },
                now(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn given_nothing_when_started_then_started_by_the_practitioner() {
        let events = started();
        assert!(
            matches!(&events[..], [EncounterEvent::Started(s)] if s.practitioner_id == "dr-hopper" && s.encounter_class.code == "AMB")
        );
    }

    #[test]
    fn given_started_when_completed_then_completed_only_once() {
        let mut history = started();
        let completed = when(&history, complete_at("2026-03-14T14:30:00Z")).unwrap();
        assert!(matches!(&completed[..], [EncounterEvent::Completed(_)]));
        history.extend(completed);
        assert_eq!(
            when(&history, complete_at("2026-03-14T14:40:00Z")),
            Err(Rejection::rule("$", "the encounter is already completed"))
        );
    }

    #[test]
    fn an_encounter_completes_only_after_it_started() {
        let result = when(&started(), complete_at("2026-03-14T13:59:00Z"));
        assert!(matches!(result, Err(Rejection::Rule { field, .. }) if field == "$.endedAt"));
        assert!(matches!(
            when(&[], complete_at("2026-03-14T14:30:00Z")),
            Err(Rejection::NotFound(_))
        ));
    }

    #[test]
    fn the_class_is_an_act_code_and_times_are_not_in_the_future() {
        let mut body = start_body();
        body.class = Some(CodingBody {
            system: Some(ACT_CODE.into()),
            code: Some("WALKIN".into()),
            display: None,
        });
        let errors = parse_start(&body, now()).unwrap_err();
        assert_eq!(errors[0].field, "$.class.code");
        let mut body = start_body();
        body.started_at = Some("2026-03-15T15:00:00Z".into());
        assert_eq!(
            parse_start(&body, now()).unwrap_err()[0].field,
            "$.startedAt"
        );
        let late = CompleteBody {
            ended_at: Some("2026-03-15T15:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            parse_complete(&late, now()).unwrap_err()[0].field,
            "$.endedAt"
        );
    }
}

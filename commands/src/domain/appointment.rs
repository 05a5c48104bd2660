//! The Appointment aggregate: ScheduleAppointment, CancelAppointment, and fulfilment by the
//! encounter that starts from it.

use crate::domain::FieldError;
use chrono::{DateTime, Utc};
use events::DomainEvent;
use events::appointment::{AppointmentCancelled, AppointmentScheduled};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::validate::{Checker, CodingBody, SKEW};
use super::{Aggregate, AggregateEvent, Rejection, from_payload, to_payload};

/// Longest appointment.
pub const MAX_DURATION: chrono::Duration = chrono::Duration::hours(24);

/// The body of ScheduleAppointment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleBody {
    pub patient_id: Option<String>,
    pub practitioner_id: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub service_type: Option<CodingBody>,
    pub description: Option<String>,
}

/// The body of CancelAppointment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    pub reason: Option<String>,
}

/// A valid appointment request (start before end, not in the past, at most 24 hours) is the
/// event that schedules it.
pub type NewAppointment = AppointmentScheduled;

pub fn parse_schedule(
    body: &ScheduleBody,
    now: DateTime<Utc>,
) -> Result<NewAppointment, Vec<FieldError>> {
    let mut c = Checker::default();
    let patient_id = c.uuid("$.patientId", body.patient_id.as_ref());
    let practitioner_id = c.text("$.practitionerId", body.practitioner_id.as_ref());
    let start = c.instant("$.start", body.start.as_ref());
    let end = c.instant("$.end", body.end.as_ref());
    let service_type = body
        .service_type
        .as_ref()
        .and_then(|s| c.coding("$.serviceType", Some(s), None));
    let description = c.optional_text("$.description", body.description.as_ref());
    if let (Some(start), Some(end)) = (start, end) {
        if start < now - SKEW {
            c.fail("$.start", "must not be in the past");
        }
        if end <= start {
            c.fail("$.end", "must be after start");
        } else if end - start > MAX_DURATION {
            c.fail("$.end", "an appointment lasts at most 24 hours");
        }
    }
    let appointment = (|| {
        Some(NewAppointment {
            patient_id: patient_id?,
            practitioner_id: practitioner_id?,
            start: start?,
            end: end?,
            service_type,
            description,
        })
    })();
    c.finish(appointment)
}

pub fn parse_cancel(body: &CancelBody) -> Result<String, Vec<FieldError>> {
    let mut c = Checker::default();
    let reason = c.text("$.reason", body.reason.as_ref());
    c.finish(reason)
}

/// The appointment was fulfilled by an encounter. Kept in the event store only (no topic):
/// consumers learn it from `healthcare.encounter.started`, which names the appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentFulfilled {
    pub encounter_id: Uuid,
}

pub const APPOINTMENT_FULFILLED: &str = "AppointmentFulfilled";

#[derive(Debug, Clone, PartialEq)]
pub enum AppointmentCommand {
    Schedule(NewAppointment),
    Cancel { reason: String },
    Fulfil { encounter_id: Uuid },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AppointmentEvent {
    Scheduled(AppointmentScheduled),
    Cancelled(AppointmentCancelled),
    Fulfilled(AppointmentFulfilled),
}

impl AggregateEvent for AppointmentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AppointmentEvent::Scheduled(_) => AppointmentScheduled::EVENT_TYPE,
            AppointmentEvent::Cancelled(_) => AppointmentCancelled::EVENT_TYPE,
            AppointmentEvent::Fulfilled(_) => APPOINTMENT_FULFILLED,
        }
    }

    fn topic(&self) -> Option<&'static str> {
        match self {
            AppointmentEvent::Scheduled(_) => Some(AppointmentScheduled::TOPIC),
            AppointmentEvent::Cancelled(_) => Some(AppointmentCancelled::TOPIC),
            AppointmentEvent::Fulfilled(_) => None,
        }
    }

    fn payload(&self) -> serde_json::Value {
        match self {
            AppointmentEvent::Scheduled(e) => to_payload(e),
            AppointmentEvent::Cancelled(e) => to_payload(e),
            AppointmentEvent::Fulfilled(e) => to_payload(e),
        }
    }

    fn from_stored(event_type: &str, payload: serde_json::Value) -> Result<Self, String> {
        match event_type {
            AppointmentScheduled::EVENT_TYPE => {
                from_payload(payload).map(AppointmentEvent::Scheduled)
            }
            AppointmentCancelled::EVENT_TYPE => {
                from_payload(payload).map(AppointmentEvent::Cancelled)
            }
            APPOINTMENT_FULFILLED => from_payload(payload).map(AppointmentEvent::Fulfilled),
            other => Err(format!("unknown appointment event {other}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppointmentStatus {
    Booked,
    Cancelled,
    Fulfilled,
}

/// A scheduled appointment.
#[derive(Debug, Clone, PartialEq)]
pub struct Appointment {
    pub patient_id: Uuid,
    pub start: DateTime<Utc>,
    pub status: AppointmentStatus,
}

impl Aggregate for Appointment {
    const KIND: events::registry::Aggregate = events::registry::Aggregate::Appointment;
    type Event = AppointmentEvent;
    type Command = AppointmentCommand;

    fn apply(state: Option<Self>, event: &AppointmentEvent) -> Option<Self> {
        match (state, event) {
            (_, AppointmentEvent::Scheduled(e)) => Some(Appointment {
                patient_id: e.patient_id,
                start: e.start,
                status: AppointmentStatus::Booked,
            }),
            (Some(a), AppointmentEvent::Cancelled(_)) => Some(Appointment {
                status: AppointmentStatus::Cancelled,
                ..a
            }),
            (Some(a), AppointmentEvent::Fulfilled(_)) => Some(Appointment {
                status: AppointmentStatus::Fulfilled,
                ..a
            }),
            (None, _) => None,
        }
    }

    fn decide(
        state: Option<&Self>,
        command: AppointmentCommand,
        _now: DateTime<Utc>,
    ) -> Result<Vec<AppointmentEvent>, Rejection> {
        use AppointmentStatus::*;
        match (state, command) {
            (None, AppointmentCommand::Schedule(scheduled)) => {
                Ok(vec![AppointmentEvent::Scheduled(scheduled)])
            }
            (Some(_), AppointmentCommand::Schedule(_)) => Err(Rejection::AlreadyExists(
                "the appointment already exists".into(),
            )),
            (None, _) => Err(Rejection::NotFound("no such appointment".into())),
            (Some(a), AppointmentCommand::Cancel { reason }) => match a.status {
                Booked => Ok(vec![AppointmentEvent::Cancelled(AppointmentCancelled {
                    patient_id: a.patient_id,
                    reason,
                })]),
                Cancelled => Err(Rejection::rule("$", "the appointment is already cancelled")),
                Fulfilled => Err(Rejection::rule(
                    "$",
                    "the appointment is fulfilled: an encounter has started from it",
                )),
            },
            (Some(a), AppointmentCommand::Fulfil { encounter_id }) => match a.status {
                Booked => Ok(vec![AppointmentEvent::Fulfilled(AppointmentFulfilled {
                    encounter_id,
                })]),
                Cancelled => Err(Rejection::rule(
                    "$.appointmentId",
                    "the appointment was cancelled",
                )),
                Fulfilled => Err(Rejection::rule(
                    "$.appointmentId",
                    "the appointment is already fulfilled by another encounter",
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-14T09:00:00Z".parse().unwrap()
    }

    fn body(start: &str, end: &str) -> ScheduleBody {
        ScheduleBody {
            patient_id: Some(Uuid::nil().to_string()),
            practitioner_id: Some("dr-hopper".into()),
            start: Some(start.into()),
            end: Some(end.into()),
            ..Default::default()
        }
    }

    fn booked() -> Vec<AppointmentEvent> {
        let a =
            parse_schedule(&body("2026-03-14T14:00:00Z", "2026-03-14T14:30:00Z"), now()).unwrap();
        Appointment::decide(None, AppointmentCommand::Schedule(a), now()).unwrap()
    }

    fn when(
        given: &[AppointmentEvent],
        command: AppointmentCommand,
    ) -> Result<Vec<AppointmentEvent>, Rejection> {
        Appointment::decide(Appointment::replay(given).as_ref(), command, now())
    }

    fn fields(r: Result<NewAppointment, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn given_nothing_when_scheduled_then_scheduled() {
        let events = booked();
        assert!(
            matches!(&events[..], [AppointmentEvent::Scheduled(s)] if s.practitioner_id == "dr-hopper")
        );
        assert_eq!(
            Appointment::replay(&events).unwrap().status,
            AppointmentStatus::Booked
        );
    }

    #[test]
    fn start_must_precede_end_not_be_past_and_last_at_most_a_day() {
        assert_eq!(
            fields(parse_schedule(
                &body("2026-03-14T15:00:00Z", "2026-03-14T14:00:00Z"),
                now()
            )),
            vec!["$.end"]
        );
        assert_eq!(
            fields(parse_schedule(
                &body("2026-03-14T15:00:00Z", "2026-03-14T15:00:00Z"),
                now()
            )),
            vec!["$.end"]
        );
        assert_eq!(
            fields(parse_schedule(
                &body("2026-03-13T15:00:00Z", "2026-03-13T16:00:00Z"),
                now()
            )),
            vec!["$.start"]
        );
        assert_eq!(
            fields(parse_schedule(
                &body("2026-03-14T15:00:00Z", "2026-03-15T15:01:00Z"),
                now()
            )),
            vec!["$.end"]
        );
        assert!(
            parse_schedule(&body("2026-03-14T15:00:00Z", "2026-03-15T15:00:00Z"), now()).is_ok()
        );
        assert_eq!(
            fields(parse_schedule(
                &body("tomorrow", "2026-03-14T14:00:00Z"),
                now()
            )),
            vec!["$.start"]
        );
        assert_eq!(
            fields(parse_schedule(&ScheduleBody::default(), now())),
            vec!["$.patientId", "$.practitionerId", "$.start", "$.end"]
        );
    }

    #[test]
    fn given_booked_when_cancelled_then_cancelled_and_not_twice() {
        let mut history = booked();
        let cancel = || AppointmentCommand::Cancel {
            reason: "patient".into(),
        };
        let cancelled = when(&history, cancel()).unwrap();
        assert!(
            matches!(&cancelled[..], [AppointmentEvent::Cancelled(c)] if c.reason == "patient")
        );
        history.extend(cancelled);
        assert_eq!(
            when(&history, cancel()),
            Err(Rejection::rule("$", "the appointment is already cancelled"))
        );
    }

    #[test]
    fn given_fulfilled_when_cancelled_then_rejected() {
        let mut history = booked();
        history.extend(
            when(
                &history,
                AppointmentCommand::Fulfil {
                    encounter_id: Uuid::nil(),
                },
            )
            .unwrap(),
        );
        let result = when(
            &history,
            AppointmentCommand::Cancel {
                reason: "patient".into(),
            },
        );
        assert!(matches!(result, Err(Rejection::Rule { field, .. }) if field == "$"));
        let again = when(
            &history,
            AppointmentCommand::Fulfil {
                encounter_id: Uuid::nil(),
            },
        );
        assert!(matches!(again, Err(Rejection::Rule { field, .. }) if field == "$.appointmentId"));
    }

    #[test]
    fn given_nothing_when_cancelled_then_not_found() {
        let result = when(&[], AppointmentCommand::Cancel { reason: "x".into() });
        assert!(matches!(result, Err(Rejection::NotFound(_))));
    }

    #[test]
    fn the_fulfilment_is_not_published() {
        let event = AppointmentEvent::Fulfilled(AppointmentFulfilled {
            encounter_id: Uuid::nil(),
        });
        assert_eq!(event.topic(), None);
        let stored = AppointmentEvent::from_stored(event.event_type(), event.payload()).unwrap();
        assert_eq!(stored, event);
    }
}

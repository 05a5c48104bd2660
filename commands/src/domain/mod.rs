//! The aggregates: pure `decide` (all the rules) and `apply` (none), and the typed commands
//! the API parses request bodies into.

pub mod appointment;
pub mod encounter;
pub mod medication;
pub mod observation;
pub mod patient;
pub mod validate;

use chrono::{DateTime, Utc};

/// A member of a command that breaks a rule: its JSON path (e.g. `$.identifier[0].system`)
/// and why. The API turns these into the `errors` of a 422 problem; the domain knows nothing
/// of HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why a command was refused by an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// 404: the aggregate does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 409: the aggregate already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// 422: the command breaks a rule; `field` is the JSON path of the offending member.
    #[error("{field}: {message}")]
    Rule { field: String, message: String },
}

impl Rejection {
    pub fn rule(field: &str, message: impl Into<String>) -> Self {
        Rejection::Rule {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The field errors of a 422.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Rejection::Rule { field, message } => vec![FieldError::new(field, message)],
            _ => vec![],
        }
    }
}

/// An event of an aggregate, as stored and published.
pub trait AggregateEvent: Sized {
    fn event_type(&self) -> &'static str;
    /// The topic it is published on; `None` for an event kept only in the event store.
    fn topic(&self) -> Option<&'static str>;
    fn payload(&self) -> serde_json::Value;
    fn from_stored(event_type: &str, payload: serde_json::Value) -> Result<Self, String>;
}

/// An event-sourced aggregate.
pub trait Aggregate: Sized + Clone {
    /// Which aggregate this is (its name is the event store's `aggregate_type`).
    const KIND: events::registry::Aggregate;
    /// The aggregate's name, e.g. `appointment`.
    const TYPE: &'static str = Self::KIND.as_str();
    type Event: AggregateEvent;
    type Command;

    /// Evolves the state by one event; `None` before the first event. No rules here.
    fn apply(state: Option<Self>, event: &Self::Event) -> Option<Self>;

    /// All the rules: what `command` does to `state` at `now`.
    fn decide(
        state: Option<&Self>,
        command: Self::Command,
        now: DateTime<Utc>,
    ) -> Result<Vec<Self::Event>, Rejection>;

    /// The state after `events`.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Option<Self>
    where
        Self::Event: 'a,
    {
        events
            .into_iter()
            .fold(None, |state, e| Self::apply(state, e))
    }
}

/// Serializes a payload for the event store.
pub(crate) fn to_payload<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("event payloads serialize")
}

/// Deserializes a stored payload.
pub(crate) fn from_payload<T: serde::de::DeserializeOwned>(
    payload: serde_json::Value,
) -> Result<T, String> {
    events::typed::from_value(&payload)
}

/// Implements `AggregateEvent` for an enum whose variants wrap published payload types.
macro_rules! published_events {
    ($event:ident { $($variant:ident($payload:ty)),+ $(,)? }) => {
        impl $crate::domain::AggregateEvent for $event {
            fn event_type(&self) -> &'static str {
                match self { $($event::$variant(_) => <$payload as events::DomainEvent>::EVENT_TYPE),+ }
            }
            fn topic(&self) -> Option<&'static str> {
                match self { $($event::$variant(_) => Some(<$payload as events::DomainEvent>::TOPIC)),+ }
            }
            fn payload(&self) -> serde_json::Value {
                match self { $($event::$variant(e) => $crate::domain::to_payload(e)),+ }
            }
            fn from_stored(event_type: &str, payload: serde_json::Value) -> Result<Self, String> {
                $(
                    if event_type == <$payload as events::DomainEvent>::EVENT_TYPE {
                        return $crate::domain::from_payload(payload).map($event::$variant);
                    }
                )+
                Err(format!("unknown event type {event_type} for {}", stringify!($event)))
            }
        }
    };
}
pub(crate) use published_events;

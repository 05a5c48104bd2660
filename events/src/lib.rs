//! Healthplane domain events: the topic catalog, the event envelope and the event payloads.
//!
//! **Architecture Invariant:** this crate does no I/O. It only describes what is written to
//! the topics; how it is encoded (Avro, Confluent wire format) is the `schemas` crate's business.

pub mod appointment;
pub mod audit;
pub mod catalog;
pub mod clinical;
pub mod consistency;
pub mod encounter;
pub mod envelope;
pub mod examples;
pub mod medication;
pub mod observation;
pub mod patient;
pub mod registry;
pub mod typed;

pub use consistency::ConsistencyToken;
pub use envelope::{Actor, Envelope, EventRecord, Role};

/// A payload that is published as a domain event on one documented topic. Everything the
/// platform derives about an event type (commands' dispatch, projectors' topics, the schema
/// contract, the topic docs) comes from this impl and the one line in
/// [`registry::EVENTS`]; leaving a member out does not compile.
pub trait DomainEvent: serde::Serialize + serde::de::DeserializeOwned {
    /// The `event_type` written into the envelope and the `event_type` Kafka header.
    const EVENT_TYPE: &'static str;
    /// The documented topic the event is published on.
    const TOPIC: &'static str;
    /// The aggregate whose stream the event belongs to (its id is the record key).
    const AGGREGATE: registry::Aggregate;
    /// A realistic example (the docs, the schema contract and the tests use it).
    fn example() -> registry::Example<Self>;
}

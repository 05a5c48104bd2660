//! The write side: the command API validates clinical commands, decides events on the
//! aggregates, and appends them with their outbox rows in one Postgres transaction; the
//! relay publishes the outbox to Kafka.

pub mod api;
pub mod domain;
pub mod relay;
/// The event store, its outbox and idempotency keys live in the `event-store` crate.
pub use event_store as store;

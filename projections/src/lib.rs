//! Projector workers: each consumes the topics it needs and maintains one service's read
//! model in its own database.
//!
//! **Architecture Invariant:** projections never write to the event store; they only read
//! topics (and, for rebuilds, the event store's history) and write their own database.

pub mod patient;
pub mod runner;

pub use runner::{IncomingEvent, Projection};

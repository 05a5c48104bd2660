//! The Avro contract of the topics and everything that speaks the Confluent wire format.
//!
//! **Architecture Invariant:** this is the only crate that knows Avro and the schema registry
//! protocol. Other crates hand it serde values and get serde values back.

pub mod catalog;
pub mod client;
pub mod codec;
pub mod compatibility;
pub mod contract;
pub mod docs;
pub mod json_avro;

pub use codec::{CodecError, EventCodec};

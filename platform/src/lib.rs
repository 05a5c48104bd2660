//! The runtime every Healthplane service shares: authentication, problem+json errors,
//! configuration, Postgres and Kafka plumbing, telemetry, health and metrics endpoints.

pub mod access;
pub mod auth;
pub mod chain;
pub mod client_ip;
pub mod config;
pub mod consistency;
pub mod db;
pub mod http;
pub mod jwks;
pub mod kafka;
pub mod metrics;
pub mod problem;
pub mod provision;
pub mod signing;
pub mod telemetry;
pub mod transport;

//! The read side for the portals: GraphQL over the read models.
//!
//! **Architecture Invariant:** resolvers read only read models, and every response that carries
//! PHI first writes a `healthcare.audit.phi_access` event per patient, acknowledged by the
//! broker; if that fails, no PHI is returned. This crate never imports `commands`.

pub mod access;
pub mod audit;
pub mod graphql;
pub mod http;
pub mod limits;
pub mod loaders;
pub mod read_model;
pub mod types;

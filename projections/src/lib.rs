//! Projector workers: each consumes the topics it needs and maintains one service's read
//! model in its own database, in the `read_model` schema.
//!
//! **Architecture Invariant:** projections never write to the event store; they read topics
//! and, to rebuild, the event store's history, and write only their own database.

pub mod appointment;
pub mod audit;
pub mod encounter;
pub mod laboratory;
pub mod log_check;
pub mod patient;
pub mod pharmacy;
pub mod rebuild;
pub mod runner;
pub mod state;

pub use runner::{Projection, Record};

/// The projections, by name.
/// Which read model, and where it and the event store are (shared by the projector and the
/// replay tool's rebuild).
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectionArgs {
    /// The read model.
    #[arg(long, value_enum)]
    pub projection: Kind,
    /// The read model's database (default: the projection's service database).
    #[arg(
        long,
        env = "HEALTHPLANE_PROJECTION_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// The event store, read (never written) to rebuild the read model.
    #[arg(long, env = "HEALTHPLANE_EVENT_STORE_DATABASE_URL", default_value_t = platform::config::default_database_url("healthplane_event_store"), hide_default_value = true, hide_env_values = true)]
    pub event_store_url: String,
}

impl ProjectionArgs {
    /// The read model's database URL: the one given, else `projection`'s service database.
    pub fn database_url<P: Projection>(&self, projection: &P) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| platform::config::default_database_url(projection.database()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Patient,
    Appointment,
    Encounter,
    Laboratory,
    Pharmacy,
    Audit,
}

/// Runs `$body` with `$p` bound to the projection of `$kind` (each a different type).
#[macro_export]
macro_rules! with_projection {
    ($kind:expr, |$p:ident| $body:expr) => {
        match $kind {
            $crate::Kind::Patient => {
                let $p = $crate::patient::PatientProjection::default();
                $body
            }
            $crate::Kind::Appointment => {
                let $p = $crate::appointment::AppointmentProjection::default();
                $body
            }
            $crate::Kind::Encounter => {
                let $p = $crate::encounter::EncounterProjection::default();
                $body
            }
            $crate::Kind::Laboratory => {
                let $p = $crate::laboratory::LaboratoryProjection::default();
                $body
            }
            $crate::Kind::Pharmacy => {
                let $p = $crate::pharmacy::PharmacyProjection::default();
                $body
            }
            $crate::Kind::Audit => {
                let $p = $crate::audit::AuditProjection::default();
                $body
            }
        }
    };
}

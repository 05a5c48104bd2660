//! The audit sealer: makes the PHI access log tamper-evident. It reads
//! `healthcare.audit.phi_access`, extends a SHA-256 hash chain per partition over the records
//! (numbered by the chain, not by offset; see `platform::chain`), and publishes signed
//! checkpoints to `healthcare.audit.phi_access.checkpoints` every interval or every
//! `max_records` records, whichever comes first. `replay-tool audit verify` recomputes the
//! chains and checks the checkpoints.
//!
//! One sealer seals at a time (a PostgreSQL advisory lock; others stand by), and a restarted
//! one resumes from the newest checkpoints, so the chain continues exactly where the last
//! acknowledged checkpoint left it.

pub mod seal;
pub mod service;

pub use seal::{PartitionSeal, SealPolicy};
pub use service::{SealerConfig, SealerMetrics, run};

//! `replay-tool`: the auditors' and operators' CLI.
//!
//! - `replay-tool audit --patient <id>` prints who accessed a patient's record, oldest first;
//!   `audit verify` checks every audit record's signature, `audit keygen` makes a writer key.
//! - `replay-tool bootstrap` creates the documented topics and registers the Avro schemas.
//! - `replay-tool rebuild --projection <name>` rebuilds a read model from the event store.
//! - `replay-tool provision-postgres` creates the services' PostgreSQL roles and databases.

mod audit;
mod bootstrap;
mod provision;
mod rebuild;
mod reconcile;
mod report;
mod seals;
mod seek;
mod verify;

use clap::{Parser, Subcommand};
use platform::config::KafkaArgs;

#[derive(Debug, Parser)]
#[command(
    name = "replay-tool",
    version,
    about = "Healthplane auditors' and operators' CLI"
)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the PHI accesses to one patient's record from the audit log, oldest first;
    /// `audit verify` checks the log's signatures, `audit keygen` makes a writer's key.
    Audit(audit::AuditCommand),
    /// Create the documented topics (idempotent) and register the Avro schemas.
    Bootstrap(bootstrap::BootstrapArgs),
    /// Rebuild a read model from the event store (the PHI access index: from its topic) into
    /// a fresh schema and swap it in.
    Rebuild(rebuild::RebuildArgs),
    /// Create the services' least-privileged PostgreSQL roles and their databases.
    ProvisionPostgres(provision::ProvisionArgs),
}

#[tokio::main]
async fn main() {
    // Logs go to stderr so that the report on stdout stays clean for pipes.
    platform::telemetry::init_cli("replay-tool");
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    cli.kafka.check()?;
    match cli.command {
        Command::Audit(args) => audit::run(&cli.kafka, args).await,
        Command::Bootstrap(args) => bootstrap::run(&cli.kafka, args).await,
        Command::Rebuild(args) => rebuild::run(&cli.kafka, args).await,
        Command::ProvisionPostgres(args) => provision::run(args).await,
    }
}

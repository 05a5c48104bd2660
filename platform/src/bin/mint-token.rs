//! `mint-token`: prints a signed local JWT for a role, for trying the APIs by hand.

use clap::Parser;
use events::Role;
use uuid::Uuid;

/// Mint an HS256 token signed with `HEALTHPLANE_JWT_SECRET` (or, with `HEALTHPLANE_DEV_MODE=1`,
/// the public development secret the local stack uses).
#[derive(Debug, Parser)]
#[command(name = "mint-token", version)]
struct Args {
    /// Role(s) to grant: patient, practitioner, admin, auditor (repeat or comma-separate).
    #[arg(long, required = true, value_delimiter = ',')]
    role: Vec<Role>,
    /// The user id (`sub`).
    #[arg(long, default_value = "local-user")]
    sub: String,
    /// The patient the user is (required with the patient role).
    #[arg(long)]
    patient_id: Option<Uuid>,
    /// Lifetime in minutes.
    #[arg(long, default_value_t = 60)]
    ttl_minutes: i64,
    /// The HS256 secret the services verify with (at least 32 bytes).
    #[arg(long, env = "HEALTHPLANE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<platform::config::Secret<String>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.role.contains(&Role::Patient) && args.patient_id.is_none() {
        anyhow::bail!("--patient-id is required with the patient role");
    }
    let secret = platform::auth::hs256_secret(args.jwt_secret.as_ref())?;
    let token = platform::auth::mint_hs256(
        &secret,
        &args.sub,
        &args.role,
        args.patient_id,
        chrono::Duration::minutes(args.ttl_minutes),
    );
    println!("{token}");
    Ok(())
}

//! `replay-tool provision-postgres`: creates the services' least-privileged PostgreSQL roles
//! and databases (see `platform::provision`), with each role's password kept in a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ValueEnum;
use platform::provision::{Plan, Service, provision};
use projections::{Kind, Projection, with_projection};

#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// A PostgreSQL superuser's URL (any database), used only for this.
    #[arg(long, env = "HEALTHPLANE_POSTGRES_ADMIN_URL")]
    admin_url: String,
    /// Roles are named `<prefix>_command`, `<prefix>_projector`, `<prefix>_query`,
    /// `<prefix>_registry`.
    #[arg(long, default_value = "healthplane")]
    prefix: String,
    /// Directory with one file per role holding its password; a missing one is created with
    /// a random password (mode 600).
    #[arg(long, env = "HEALTHPLANE_POSTGRES_SECRETS_DIR")]
    secrets_dir: PathBuf,
}

fn password(dir: &Path, role: &str) -> anyhow::Result<String> {
    let path = dir.join(role);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_string());
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&path)
        .and_then(|mut file| file.write_all(secret.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret)
}

pub async fn run(args: ProvisionArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.secrets_dir)
        .with_context(|| format!("cannot create {}", args.secrets_dir.display()))?;
    let plan = Plan {
        prefix: args.prefix.clone(),
        event_store: "healthplane_event_store".into(),
        read_models: Kind::value_variants()
            .iter()
            .map(|kind| with_projection!(*kind, |p| p.database().to_string()))
            .collect(),
        registry: Some("schema_registry".into()),
    };
    let mut passwords = Vec::new();
    for service in Service::ALL {
        let role = plan.role(service);
        passwords.push((service, password(&args.secrets_dir, &role)?));
    }
    provision(&args.admin_url, &plan, |service| {
        passwords
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    })
    .await?;
    for service in Service::ALL {
        println!(
            "{}: passwords in {}",
            plan.role(service),
            args.secrets_dir.join(plan.role(service)).display()
        );
    }
    Ok(())
}

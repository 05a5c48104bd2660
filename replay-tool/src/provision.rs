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
    #[arg(long, env = "HEALTHPLANE_POSTGRES_ADMIN_URL", hide_env_values = true)]
    admin_url: String,
    /// Roles are named `<prefix>_command`, `<prefix>_projector`, `<prefix>_query`,
    /// `<prefix>_registry`.
    #[arg(long, default_value = "healthplane")]
    prefix: String,
    /// Directory with one file per role holding its password; a missing one is created with
    /// a random password (mode 600). Without it, each role's password is taken from
    /// `HEALTHPLANE_POSTGRES_PASSWORD_<COMMAND|PROJECTOR|QUERY|REGISTRY>` (as a Kubernetes
    /// Job or a compose service passes secrets), and all four must be set.
    #[arg(long, env = "HEALTHPLANE_POSTGRES_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
}

/// The environment variable holding `service`'s password when no secrets directory is used.
fn password_var(service: Service) -> String {
    format!(
        "HEALTHPLANE_POSTGRES_PASSWORD_{}",
        service.suffix().to_ascii_uppercase()
    )
}

/// `service`'s password from `var`: present and at least 16 bytes.
fn password_from(var: impl Fn(&str) -> Option<String>, service: Service) -> anyhow::Result<String> {
    let name = password_var(service);
    let value = var(&name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .with_context(|| format!("{name} is not set (or pass --secrets-dir)"))?;
    anyhow::ensure!(value.len() >= 16, "{name} must be at least 16 bytes long");
    Ok(value)
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
    if let Some(dir) = &args.secrets_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
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
        let secret = match &args.secrets_dir {
            Some(dir) => password(dir, &role)?,
            None => password_from(|name| std::env::var(name).ok(), service)?,
        };
        passwords.push((service, secret));
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
        match &args.secrets_dir {
            Some(dir) => println!(
                "{}: password in {}",
                plan.role(service),
                dir.join(plan.role(service)).display()
            ),
            None => println!(
                "{}: password from {}",
                plan.role(service),
                password_var(service)
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_from_the_environment_are_required_and_long_enough() {
        let vars = |name: &str| match name {
            "HEALTHPLANE_POSTGRES_PASSWORD_COMMAND" => Some("0123456789abcdef0123".to_string()),
            "HEALTHPLANE_POSTGRES_PASSWORD_QUERY" => Some("short".to_string()),
            _ => None,
        };
        assert_eq!(
            password_from(vars, Service::Command).unwrap(),
            "0123456789abcdef0123"
        );
        let e = password_from(vars, Service::Query).unwrap_err().to_string();
        assert!(e.contains("at least 16") && !e.contains("short"), "{e}");
        let e = password_from(vars, Service::Projector)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HEALTHPLANE_POSTGRES_PASSWORD_PROJECTOR is not set"),
            "{e}"
        );
    }
}

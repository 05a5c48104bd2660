//! Least-privilege PostgreSQL roles and databases, one role per kind of service, created by
//! an administrator's connection (the local stack and the tests do it; in production the
//! operator or the database operator does, with the same grants).
//!
//! | role          | owns                        | may also                                   |
//! |---------------|-----------------------------|--------------------------------------------|
//! | `<p>_command`   | the event store database    | —                                          |
//! | `<p>_projector` | every read-model database   | `SELECT` the event store (rebuilds)        |
//! | `<p>_query`     | nothing                     | `SELECT` the read models, nothing else     |
//! | `<p>_registry`  | the schema registry database| —                                          |
//!
//! No role is a superuser or may create databases or roles; `PUBLIC` may not connect.

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// The kinds of service, each with its own role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Command,
    Projector,
    Query,
    Registry,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::Command,
        Service::Projector,
        Service::Query,
        Service::Registry,
    ];

    /// The role name's suffix: `command`, `projector`, `query`, `registry`.
    pub fn suffix(self) -> &'static str {
        match self {
            Service::Command => "command",
            Service::Projector => "projector",
            Service::Query => "query",
            Service::Registry => "registry",
        }
    }
}

/// What to provision.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Role names are `<prefix>_command`, ...
    pub prefix: String,
    /// The event store database.
    pub event_store: String,
    /// Read-model databases (owned by the projector role, read by the query role).
    pub read_models: Vec<String>,
    /// The schema registry's database, if this server holds it.
    pub registry: Option<String>,
}

impl Plan {
    pub fn role(&self, service: Service) -> String {
        format!("{}_{}", self.prefix, service.suffix())
    }
}

fn identifier(name: &str) -> anyhow::Result<&str> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "`{name}` must be lowercase letters, digits and underscores"
    );
    Ok(name)
}

/// Creates or updates the roles (with `password(service)` as their passwords) and the
/// databases of `plan`, with the grants in the table above. Idempotent; concurrent callers
/// take turns. `admin_url` is a superuser's URL (any database).
pub async fn provision(
    admin_url: &str,
    plan: &Plan,
    password: impl Fn(Service) -> String,
) -> anyhow::Result<()> {
    let admin = crate::db::connect_options(admin_url)?;
    let mut conn = admin
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("cannot connect to PostgreSQL as its administrator")?;
    // Concurrent provisioning (parallel test stacks) would race on the catalogs.
    sqlx::query("SELECT pg_advisory_lock(8083)")
        .execute(&mut conn)
        .await?;
    let result = provision_locked(&admin, &mut conn, plan, password).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(8083)")
        .execute(&mut conn)
        .await;
    conn.close().await.ok();
    result
}

async fn provision_locked(
    admin: &PgConnectOptions,
    conn: &mut PgConnection,
    plan: &Plan,
    password: impl Fn(Service) -> String,
) -> anyhow::Result<()> {
    for service in Service::ALL {
        let role = plan.role(service);
        let role = identifier(&role)?;
        let secret = password(service);
        anyhow::ensure!(
            secret.len() >= 16 && secret.chars().all(|c| c.is_ascii_alphanumeric()),
            "the password of {role} must be at least 16 letters or digits"
        );
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(&mut *conn)
            .await?;
        let verb = if exists.is_some() { "ALTER" } else { "CREATE" };
        sqlx::raw_sql(&format!(
            "{verb} ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
             NOBYPASSRLS PASSWORD '{secret}'"
        ))
        .execute(&mut *conn)
        .await
        .with_context(|| format!("cannot create or update role {role}"))?;
    }
    let (command, projector, query, registry) = (
        plan.role(Service::Command),
        plan.role(Service::Projector),
        plan.role(Service::Query),
        plan.role(Service::Registry),
    );
    let mut databases = vec![(&plan.event_store, &command, vec![&projector])];
    for model in &plan.read_models {
        databases.push((model, &projector, vec![&query]));
    }
    if let Some(db) = &plan.registry {
        databases.push((db, &registry, vec![]));
    }
    for (database, owner, readers) in &databases {
        let database = identifier(database)?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(database)
                .fetch_optional(&mut *conn)
                .await?;
        let create = if exists.is_some() {
            format!("ALTER DATABASE {database} OWNER TO {owner}")
        } else {
            format!("CREATE DATABASE {database} OWNER {owner}")
        };
        sqlx::raw_sql(&create)
            .execute(&mut *conn)
            .await
            .with_context(|| format!("cannot create database {database}"))?;
        let mut grants = format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC;");
        for reader in readers {
            grants.push_str(&format!(
                "GRANT CONNECT ON DATABASE {database} TO {reader};"
            ));
        }
        sqlx::raw_sql(&grants).execute(&mut *conn).await?;

        // Inside the database: its objects belong to the owner; readers may SELECT what is
        // there now and what the owner creates later (a rebuilt read model included).
        let mut inside = admin
            .clone()
            .database(database)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {database}"))?;
        let mut sql = format!(
            "DO $$ DECLARE r record; BEGIN
               FOR r IN SELECT nspname FROM pg_namespace
                        WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public')
                          AND nspowner <> '{owner}'::regrole LOOP
                 EXECUTE format('ALTER SCHEMA %I OWNER TO {owner}', r.nspname);
               END LOOP;
               FOR r IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.relkind IN ('r', 'p', 'v', 'm') AND c.relowner <> '{owner}'::regrole
                          AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' LOOP
                 EXECUTE format('ALTER TABLE %I.%I OWNER TO {owner}', r.nspname, r.relname);
               END LOOP;
             END $$;
             REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
        );
        for reader in readers {
            sql.push_str(&format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT USAGE ON SCHEMAS TO {reader};
                 ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT SELECT ON TABLES TO {reader};
                 DO $$ DECLARE r record; BEGIN
                   FOR r IN SELECT nspname FROM pg_namespace
                            WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' LOOP
                     EXECUTE format('GRANT USAGE ON SCHEMA %I TO {reader}', r.nspname);
                     EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO {reader}', r.nspname);
                   END LOOP;
                 END $$;"
            ));
        }
        sqlx::raw_sql(&sql)
            .execute(&mut inside)
            .await
            .with_context(|| {
                format!("cannot grant the service roles their rights in {database}")
            })?;
        inside.close().await.ok();
    }
    Ok(())
}

/// `server_url` (`postgres://user:pw@host:port`) with `role`'s credentials instead.
pub fn url_for(server_url: &str, role: &str, password: &str) -> String {
    let rest = server_url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(server_url);
    let host = rest.rsplit_once('@').map(|(_, host)| host).unwrap_or(rest);
    format!("postgres://{role}:{password}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        let plan = Plan {
            prefix: "healthplane".into(),
            event_store: "healthplane_event_store".into(),
            read_models: vec![],
            registry: None,
        };
        assert_eq!(plan.role(Service::Query), "healthplane_query");
        assert!(identifier("x; DROP ROLE y").is_err());
        assert_eq!(
            url_for(
                "postgres://postgres:pw@127.0.0.1:5432",
                "hp_query",
                "secret"
            ),
            "postgres://hp_query:secret@127.0.0.1:5432"
        );
    }
}

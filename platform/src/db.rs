//! PostgreSQL plumbing: connect (creating the service's database on first start) and an
//! embedded, ordered, run-once migration runner.

use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::config::redact_url;

/// `error` for a log line. PostgreSQL quotes the offending value in a data exception
/// (SQLSTATE class 22, e.g. `invalid input syntax for type date: "..."`), which may be PHI:
/// those are logged by their code only.
pub fn loggable(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")) => format!(
            "data exception (SQLSTATE {}; the value is not logged)",
            db.code().unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

/// One schema change, applied once, in version order, in its own transaction.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Connects to `url`, creating its database first if the server lacks it.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("invalid database URL {}", redact_url(url)))?;
    create_database_if_missing(&options).await?;
    pool(options, max_connections, url).await
}

/// The schema that holds a service's read model. A rebuild fills a fresh schema and swaps it in
/// under this name, so readers always see a whole model.
pub const READ_MODEL_SCHEMA: &str = "read_model";

/// Connects to `url` with `schema` (created if missing) first on the search path, so that
/// unqualified table names resolve there.
pub async fn connect_schema(
    url: &str,
    schema: &str,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    anyhow::ensure!(
        !schema.is_empty()
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "schema name `{schema}` must be lowercase letters, digits and underscores"
    );
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("invalid database URL {}", redact_url(url)))?;
    create_database_if_missing(&options).await?;
    let mut conn = options
        .connect()
        .await
        .context("cannot connect to PostgreSQL")?;
    sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut conn)
        .await
        .or_else(ignore_concurrent_create)?;
    conn.close().await.ok();
    let options = options.options([("search_path", format!("{schema},public"))]);
    pool(options, max_connections, url).await
}

/// How long one statement may run (`HEALTHPLANE_DB_STATEMENT_TIMEOUT_MS`, default 30 s) and
/// a transaction may sit idle (60 s) before PostgreSQL cancels it: a stuck query or a
/// forgotten transaction fails and frees its connection instead of holding it for ever.
fn statement_timeout_ms() -> u64 {
    std::env::var("HEALTHPLANE_DB_STATEMENT_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|ms| *ms > 0)
        .unwrap_or(30_000)
}

/// Connects a reader to an existing database with `schema` first on the search path: it
/// creates nothing, and its sessions are read-only (with a role that may only `SELECT`, a
/// second line of defence).
pub async fn connect_reader(
    url: &str,
    schema: &str,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("invalid database URL {}", redact_url(url)))?
        .options([
            ("search_path", format!("{schema},public")),
            ("default_transaction_read_only", "on".to_string()),
        ]);
    pool(options, max_connections, url).await
}

async fn pool(
    options: PgConnectOptions,
    max_connections: u32,
    url: &str,
) -> anyhow::Result<PgPool> {
    let options = options.options([
        ("statement_timeout", statement_timeout_ms().to_string()),
        ("idle_in_transaction_session_timeout", "60000".to_string()),
    ]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to {}", redact_url(url)))
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_string) else {
        return Ok(());
    };
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database name `{name}` must be letters, digits and underscores"
    );
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("cannot connect to the PostgreSQL server")?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        match sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our create.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context(format!("cannot create database {name}")),
        }
    }
    admin.close().await.ok();
    Ok(())
}

/// Applies the `migrations` of `component` that this database has not seen yet.
/// Concurrent starters serialize on an advisory lock.
pub async fn migrate(
    pool: &PgPool,
    component: &str,
    migrations: &[Migration],
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS healthplane_migrations (
            component TEXT NOT NULL,
            version BIGINT NOT NULL,
            name TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (component, version))",
    )
    .execute(&mut *conn)
    .await
    .or_else(ignore_concurrent_create)?;
    sqlx::query("SELECT pg_advisory_lock(hashtext('healthplane_migrations'))")
        .execute(&mut *conn)
        .await?;
    let result = apply_pending(&mut conn, component, migrations).await;
    sqlx::query("SELECT pg_advisory_unlock(hashtext('healthplane_migrations'))")
        .execute(&mut *conn)
        .await?;
    result
}

fn ignore_concurrent_create(e: sqlx::Error) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    match &e {
        // unique_violation on pg_type when two processes create the table at once
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            Ok(Default::default())
        }
        _ => Err(e),
    }
}

async fn apply_pending(
    conn: &mut sqlx::PgConnection,
    component: &str,
    migrations: &[Migration],
) -> anyhow::Result<()> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM healthplane_migrations WHERE component = $1")
            .bind(component)
            .fetch_all(&mut *conn)
            .await?;
    for m in migrations.iter().filter(|m| !applied.contains(&m.version)) {
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("migration {component} {} {} failed", m.version, m.name))?;
        sqlx::query(
            "INSERT INTO healthplane_migrations (component, version, name) VALUES ($1, $2, $3)",
        )
        .bind(component)
        .bind(m.version)
        .bind(m.name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(
            component,
            version = m.version,
            name = m.name,
            "applied migration"
        );
    }
    Ok(())
}

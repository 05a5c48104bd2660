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
        // A decode error's message may quote the value it could not read (serde's
        // `invalid type: string "…"`): only the kind is logged.
        sqlx::Error::Decode(_) => "a value could not be decoded (the value is not logged)".into(),
        sqlx::Error::ColumnDecode { index, .. } => {
            format!("column {index} could not be decoded (the value is not logged)")
        }
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

/// The connection options of `url`, with the process's TLS settings: when
/// `HEALTHPLANE_POSTGRES_CA_PEM` is set the server must present a certificate of that CA for
/// the URL's host name (`verify-full`), whatever the URL says; else the URL's `sslmode` (and
/// `sslrootcert`) apply.
///
/// A server on this machine (loopback or a socket) is reached in clear unless the URL asks for
/// `sslmode`: TLS there protects no traffic, yet `prefer` would negotiate it on every connection
/// (measured: the query API's memory 28 -> 91 MiB and second-long p99 tails under load).
pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("invalid database URL {}", redact_url(url)))?;
    let ca = crate::transport::settings()
        .ok()
        .and_then(|t| t.postgres_ca_pem.as_ref());
    Ok(match ca {
        Some(pem) => with_ca(options, pem),
        None if is_local(&options) && !url.contains("sslmode=") => {
            options.ssl_mode(sqlx::postgres::PgSslMode::Disable)
        }
        None => options,
    })
}

/// Whether `options` reach a server on this machine.
fn is_local(options: &PgConnectOptions) -> bool {
    let host = options.get_host();
    host.starts_with('/')
        || host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `options` that trust `ca_pem` (besides the system's CAs, as the TLS library does) and
/// verify the server's host name.
fn with_ca(options: PgConnectOptions, ca_pem: &str) -> PgConnectOptions {
    options
        .ssl_root_cert_from_pem(ca_pem.as_bytes().to_vec())
        .ssl_mode(sqlx::postgres::PgSslMode::VerifyFull)
}

/// Connects to `url`, creating its database first if the server lacks it.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = connect_options(url)?;
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
    let options = connect_options(url)?;
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
    pool(reader_options(url, schema)?, max_connections, url).await
}

/// Like [`connect_reader`], connecting on first use: a read model that is not there yet makes
/// its queries fail (and the service says so), not the service's start.
pub fn connect_reader_lazy(
    url: &str,
    schema: &str,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    let options = reader_options(url, schema)?.options([
        ("statement_timeout", statement_timeout_ms().to_string()),
        ("idle_in_transaction_session_timeout", "60000".to_string()),
    ]);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_lazy_with(options))
}

fn reader_options(url: &str, schema: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(connect_options(url)?.options([
        ("search_path", format!("{schema},public")),
        ("default_transaction_read_only", "on".to_string()),
    ]))
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

/// A migration's fingerprint: the SHA-256 of its SQL, in hex.
fn checksum(sql: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn apply_pending(
    conn: &mut sqlx::PgConnection,
    component: &str,
    migrations: &[Migration],
) -> anyhow::Result<()> {
    // Databases migrated before checksums were kept gain the column; their rows adopt the
    // checksum of the SQL this build carries.
    sqlx::raw_sql("ALTER TABLE healthplane_migrations ADD COLUMN IF NOT EXISTS checksum TEXT")
        .execute(&mut *conn)
        .await?;
    let applied: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT version, checksum FROM healthplane_migrations WHERE component = $1")
            .bind(component)
            .fetch_all(&mut *conn)
            .await?;
    for (version, stored) in &applied {
        let Some(m) = migrations.iter().find(|m| m.version == *version) else {
            tracing::warn!(
                component,
                version,
                "the database has a migration this build does not know (a newer release migrated it)"
            );
            continue;
        };
        let expected = checksum(m.sql);
        match stored {
            Some(stored) if *stored != expected => anyhow::bail!(
                "migration {component} {} ({}) was changed after it was applied to this database \
                 (checksum {stored}, now {expected}): restore its SQL and put the change in a new migration",
                m.version,
                m.name
            ),
            Some(_) => {}
            None => {
                sqlx::query(
                    "UPDATE healthplane_migrations SET checksum = $3 WHERE component = $1 AND version = $2",
                )
                .bind(component)
                .bind(m.version)
                .bind(&expected)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    for m in migrations
        .iter()
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
    {
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("migration {component} {} {} failed", m.version, m.name))?;
        sqlx::query(
            "INSERT INTO healthplane_migrations (component, version, name, checksum) VALUES ($1, $2, $3, $4)",
        )
        .bind(component)
        .bind(m.version)
        .bind(m.name)
        .bind(checksum(m.sql))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_on_this_machine_is_reached_in_clear_unless_the_url_asks_for_tls() {
        use sqlx::postgres::PgSslMode;
        let mode = |url: &str| format!("{:?}", connect_options(url).unwrap().get_ssl_mode());
        let disable = format!("{:?}", PgSslMode::Disable);
        for local in [
            "postgres://u:p@127.0.0.1:5432/db",
            "postgres://u:p@localhost/db",
            "postgres://u:p@[::1]:5432/db",
        ] {
            assert_eq!(mode(local), disable, "{local}");
        }
        assert_eq!(
            mode("postgres://u:p@127.0.0.1/db?sslmode=require"),
            format!("{:?}", PgSslMode::Require)
        );
        // Elsewhere TLS is negotiated when the server offers it (the driver's default).
        assert_eq!(
            mode("postgres://u:p@db.hospital.example/db"),
            format!("{:?}", PgSslMode::Prefer)
        );
    }

    /// Needs the PostgreSQL server of the tests (`HEALTHPLANE_TEST_POSTGRES_URL`, else the
    /// local default).
    #[tokio::test]
    async fn a_migration_changed_after_it_was_applied_stops_the_service() {
        let server = std::env::var("HEALTHPLANE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| crate::config::DEFAULT_POSTGRES_URL.into());
        let id = uuid::Uuid::new_v4().simple().to_string();
        let pool = connect(&format!("{server}/hp_test_{}_migrations", &id[..12]), 2)
            .await
            .expect("PostgreSQL for the tests");
        let v1 = Migration {
            version: 1,
            name: "table",
            sql: "CREATE TABLE t (x INT)",
        };
        migrate(&pool, "test", &[v1]).await.unwrap();
        // Again, unchanged: nothing to do.
        migrate(&pool, "test", &[v1]).await.unwrap();
        let edited = Migration {
            sql: "CREATE TABLE t (x BIGINT)",
            ..v1
        };
        let error = migrate(&pool, "test", &[edited])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("migration test 1 (table) was changed after it was applied"),
            "{error}"
        );
        // A database migrated before checksums were kept adopts them.
        sqlx::query("UPDATE healthplane_migrations SET checksum = NULL")
            .execute(&pool)
            .await
            .unwrap();
        migrate(&pool, "test", &[v1]).await.unwrap();
        assert!(migrate(&pool, "test", &[edited]).await.is_err());
        pool.close().await;
    }
}

//! Typed configuration shared by the services: defaults, overridden by `HEALTHPLANE_*`
//! environment variables (or command-line flags). Secrets never print.

use std::fmt;

/// Default broker list of the local stack.
pub const DEFAULT_KAFKA_BROKERS: &str = "localhost:9092";
/// Default schema registry of the local stack.
pub const DEFAULT_SCHEMA_REGISTRY_URL: &str = "http://localhost:8081";
/// Default PostgreSQL server of the local stack (database name appended per service).
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432";

/// A value that must not appear in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret<String> {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Connection settings for the broker and the registry, shared by every Kafka client.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers: `host:port[,host:port...]`. Encryption and SASL come from
    /// `HEALTHPLANE_KAFKA_SECURITY_PROTOCOL` and friends (see `platform::transport`).
    #[arg(long, env = "HEALTHPLANE_KAFKA_BROKERS", default_value = DEFAULT_KAFKA_BROKERS)]
    pub kafka_brokers: String,
    /// Confluent-compatible schema registry (http or https, any path, e.g.
    /// `https://apicurio/apis/ccompat/v7`); its credential is
    /// `HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO`.
    #[arg(long, env = "HEALTHPLANE_SCHEMA_REGISTRY_URL", default_value = DEFAULT_SCHEMA_REGISTRY_URL)]
    pub schema_registry_url: String,
}

impl KafkaArgs {
    /// Checks these addresses and the process's encryption and credential settings
    /// (`crate::transport`): a service calls it at start and stops on an error.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.kafka_brokers
                .split(',')
                .all(|b| b.trim().rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok()
                })),
            "HEALTHPLANE_KAFKA_BROKERS must be a comma-separated list of host:port"
        );
        crate::transport::check_registry_url(&self.schema_registry_url)
            .map_err(anyhow::Error::msg)?;
        crate::transport::init()?;
        Ok(())
    }
}

/// The PostgreSQL server (no database): `HEALTHPLANE_POSTGRES_URL`, e.g.
/// `postgres://healthplane_query:<password>@db:5432`, else the local default.
pub fn postgres_server_url() -> String {
    std::env::var("HEALTHPLANE_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .map(|url| url.trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_string())
}

/// The default URL of one service's database on the configured PostgreSQL server: the
/// database goes before the server URL's parameters (`...:5432/db?sslmode=verify-full`).
pub fn default_database_url(database: &str) -> String {
    database_url(&postgres_server_url(), database)
}

/// `server` (`postgres://user:pw@host:port[?params]`) with `database` in it.
pub fn database_url(server: &str, database: &str) -> String {
    match server.split_once('?') {
        Some((base, params)) => format!("{}/{database}?{params}", base.trim_end_matches('/')),
        None => format!("{}/{database}", server.trim_end_matches('/')),
    }
}

/// `postgres://user:***@host:port/db` for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_passwords_never_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
        assert_eq!(
            redact_url("postgres://postgres:pw@127.0.0.1:5432/x"),
            "postgres://postgres:***@127.0.0.1:5432/x"
        );
        assert_eq!(
            database_url(
                "postgres://u:p@db:5432?sslmode=verify-full",
                "patient_service"
            ),
            "postgres://u:p@db:5432/patient_service?sslmode=verify-full"
        );
        assert_eq!(
            database_url("postgres://u:p@db:5432/", "x"),
            "postgres://u:p@db:5432/x"
        );
        assert_eq!(
            redact_url("postgres://127.0.0.1/x"),
            "postgres://127.0.0.1/x"
        );
    }
}

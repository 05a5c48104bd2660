//! Structured logging with `tracing` on stderr: human-readable by default, JSON with
//! `HEALTHPLANE_LOG_FORMAT=json`; levels from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber for a service (default level: info).
pub fn init(service: &str) {
    init_with(service, "info,sqlx=warn,rdkafka=warn");
}

/// Installs the global subscriber for a command-line tool, whose stdout is its report
/// (default level: warn).
pub fn init_cli(service: &str) {
    init_with(service, "warn");
}

fn init_with(service: &str, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("HEALTHPLANE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if result.is_ok() {
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    }
}

//! Prometheus metrics: one registry per process, rendered on `GET /metrics`.

use std::sync::Mutex;

use prometheus_client::registry::{Metric, Registry};

/// The process's metric registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            registry: Mutex::new(Registry::with_prefix("healthplane")),
        }
    }
}

impl Metrics {
    /// Registers `metric` as `healthplane_<name>` and returns it (metrics are cheap handles).
    pub fn register<M: Metric + Clone>(&self, name: &str, help: &str, metric: M) -> M {
        self.registry
            .lock()
            .expect("metrics registry poisoned")
            .register(name, help, metric.clone());
        metric
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry poisoned");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

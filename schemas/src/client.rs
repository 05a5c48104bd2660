//! Registry administration used at deploy time: register every released schema and set each
//! subject's compatibility level, through the standard Confluent REST API.

use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::catalog::{SCHEMAS, compatibility_for};

/// The outcome of registering one topic's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub subject: String,
    pub version: u32,
    pub id: u32,
}

/// Registers every released schema (oldest first) and sets the subjects' compatibility levels.
/// Idempotent: registering a schema again returns its existing id.
pub async fn register_all(registry_url: &str) -> anyhow::Result<Vec<Registered>> {
    let url = registry_url.trim_end_matches('/').to_string();
    let settings = SrSettings::new_builder(url.clone()).no_proxy().build()?;
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for schema in SCHEMAS {
        let subject = events::catalog::value_subject(schema.topic);
        let level = compatibility_for(schema.topic);
        let response = http
            .put(format!("{url}/config/{subject}"))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "compatibility": level }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "setting {level} on {subject}: {}",
            response.text().await.unwrap_or_default()
        );
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.avsc.to_string());
        let registered = post_schema(&settings, subject.clone(), supplied)
            .await
            .map_err(|e| anyhow::anyhow!("registering {subject} v{}: {e}", schema.version))?;
        out.push(Registered {
            subject,
            version: schema.version,
            id: registered.id,
        });
    }
    Ok(out)
}

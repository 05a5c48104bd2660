//! The Confluent wire format (magic byte 0, 4-byte schema id, Avro binary) for topic records.
//!
//! Writing uses the schema compiled into Healthplane (the newest version of the topic in
//! [`crate::catalog`]), whose id is found by content (`POST /subjects/<topic>-value`, the
//! Confluent lookup; it registers nothing): whatever else is registered under the subject,
//! what we write is what our code and its contract tests know. Reading resolves the writer's
//! schema by id through `schema_registry_converter`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::writer::datum::GenericDatumWriter;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::catalog::{self, TopicSchema};
use crate::json_avro::{avro_to_json, json_to_avro};

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry could not be reached or answered with a server error: retry later.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// The bytes are not a valid record of a registered schema: a poison message.
    #[error("undecodable record: {0}")]
    Undecodable(String),
    /// The value does not fit the topic's schema: a bug in the producer.
    #[error("record does not fit the schema: {0}")]
    DoesNotFitSchema(String),
}

impl CodecError {
    /// True when retrying the same record later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, CodecError::RegistryUnavailable(_))
    }
}

fn registry_error(e: SRCError, otherwise: fn(String) -> CodecError) -> CodecError {
    if e.retriable {
        CodecError::RegistryUnavailable(e.to_string())
    } else {
        otherwise(e.to_string())
    }
}

/// The schema a topic's records are written with: the compiled one, and its registry id.
#[derive(Debug)]
struct WriterSchema {
    id: u32,
    schema: Schema,
}

/// Encodes and decodes topic record values. Cheap to share; caches schemas.
pub struct EventCodec {
    registry_url: String,
    http: reqwest::Client,
    /// Sent on every request (`HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO`).
    basic_auth: Option<(String, platform::config::Secret<String>)>,
    /// Topic -> the compiled schema and its id; only successful lookups are kept.
    writers: RwLock<HashMap<String, Arc<WriterSchema>>>,
    decoder: AvroDecoder,
}

impl std::fmt::Debug for EventCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventCodec")
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl EventCodec {
    /// A codec for the registry at `registry_url` (any path, e.g. Apicurio's
    /// `/apis/ccompat/v7`), reached with the process's registry credential and CA
    /// (`platform::transport`).
    pub fn new(registry_url: &str) -> Self {
        let access = platform::transport::registry();
        let registry_url = registry_url.trim_end_matches('/').to_string();
        let mut builder = SrSettings::new_builder(registry_url.clone());
        builder.set_timeout(TIMEOUT).no_proxy();
        if let Some((user, password)) = &access.basic_auth {
            builder.set_basic_authorization(user, Some(password.expose()));
        }
        let settings = builder
            .build_with(access.client_builder())
            .expect("an HTTP client with the system's TLS builds");
        EventCodec {
            http: access
                .client_builder()
                .timeout(TIMEOUT)
                .build()
                .expect("an HTTP client with the system's TLS builds"),
            basic_auth: access.basic_auth,
            registry_url,
            writers: RwLock::new(HashMap::new()),
            decoder: AvroDecoder::new(settings),
        }
    }

    /// Encodes a record given as JSON with the schema compiled into Healthplane for `topic`
    /// (never the registry's latest version). A record with a field the schema lacks, or
    /// without one it requires, does not fit.
    pub async fn encode_json(
        &self,
        topic: &str,
        record: &serde_json::Value,
    ) -> Result<Vec<u8>, CodecError> {
        let writer = self.writer_schema(topic).await?;
        let subject = events::catalog::value_subject(topic);
        let value = json_to_avro(record, &writer.schema)
            .map_err(|e| CodecError::DoesNotFitSchema(format!("{subject}: {e}")))?;
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&writer.id.to_be_bytes());
        GenericDatumWriter::builder(&writer.schema)
            .build()
            .and_then(|w| w.write_value(&mut bytes, value))
            .map_err(|e| CodecError::DoesNotFitSchema(format!("{subject}: {e}")))?;
        Ok(bytes)
    }

    /// The compiled schema of `topic` and its id in the registry, looked up once.
    async fn writer_schema(&self, topic: &str) -> Result<Arc<WriterSchema>, CodecError> {
        if let Some(found) = self
            .writers
            .read()
            .expect("schema cache poisoned")
            .get(topic)
        {
            return Ok(found.clone());
        }
        let compiled = catalog::latest(topic).ok_or_else(|| {
            CodecError::DoesNotFitSchema(format!("no schema is compiled in for topic {topic}"))
        })?;
        let schema = Schema::parse_str(compiled.avsc).map_err(|e| {
            CodecError::DoesNotFitSchema(format!("{topic} v{}: {e}", compiled.version))
        })?;
        let id = self.lookup_id(compiled).await?;
        let found = Arc::new(WriterSchema { id, schema });
        self.writers
            .write()
            .expect("schema cache poisoned")
            .insert(topic.to_string(), found.clone());
        Ok(found)
    }

    /// The id of `compiled` under its subject, by content (the Confluent lookup).
    async fn lookup_id(&self, compiled: &TopicSchema) -> Result<u32, CodecError> {
        let subject = events::catalog::value_subject(compiled.topic);
        let version = compiled.version;
        let unavailable =
            |e: String| CodecError::RegistryUnavailable(format!("looking up {subject}: {e}"));
        let mut request = self
            .http
            .post(format!("{}/subjects/{subject}", self.registry_url))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "schema": compiled.avsc }));
        if let Some((user, password)) = &self.basic_auth {
            request = request.basic_auth(user, Some(password.expose()));
        }
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let code = body["error_code"].as_i64();
        let message = body["message"].as_str().unwrap_or_default();
        if status.is_success() {
            return body["id"]
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| unavailable(format!("an answer without an id ({status})")));
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(unavailable(format!("{status}: {message}")));
        }
        if status == reqwest::StatusCode::NOT_FOUND && matches!(code, Some(40401 | 40403)) {
            return Err(CodecError::DoesNotFitSchema(format!(
                "{subject} v{version}, the schema compiled into Healthplane, is not registered \
                 ({message}); `replay-tool bootstrap` registers it"
            )));
        }
        Err(CodecError::DoesNotFitSchema(format!(
            "looking up {subject} v{version}: the registry answered {status}: {message}"
        )))
    }

    /// Encodes any serializable record (`EventRecord<P>`, `PhiAccessed`, ...).
    pub async fn encode<T: Serialize>(
        &self,
        topic: &str,
        record: &T,
    ) -> Result<Vec<u8>, CodecError> {
        let json = serde_json::to_value(record)
            .map_err(|e| CodecError::DoesNotFitSchema(e.to_string()))?;
        self.encode_json(topic, &json).await
    }

    /// Decodes a record value written in the Confluent wire format into JSON.
    pub async fn decode_json(&self, bytes: Option<&[u8]>) -> Result<serde_json::Value, CodecError> {
        match self.decoder.decode(bytes).await {
            Ok(result) => avro_to_json(&result.value).map_err(CodecError::Undecodable),
            Err(e) => {
                self.decoder.remove_errors_from_cache();
                Err(registry_error(e, CodecError::Undecodable))
            }
        }
    }

    /// Decodes a record value into a Rust event type.
    pub async fn decode<T: DeserializeOwned>(&self, bytes: Option<&[u8]>) -> Result<T, CodecError> {
        let decoded = self.decode_json(bytes).await?;
        events::typed::from_value(&decoded).map_err(CodecError::Undecodable)
    }
}

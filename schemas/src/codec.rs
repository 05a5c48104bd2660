//! The Confluent wire format (magic byte 0, 4-byte schema id, Avro binary) for topic records,
//! through `schema_registry_converter`, with schemas resolved in the registry by subject
//! (`<topic>-value`, TopicNameStrategy) when writing and by id when reading.

use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;
use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// Encodes and decodes topic record values. Cheap to share; caches schemas.
pub struct EventCodec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
}

impl std::fmt::Debug for EventCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventCodec")
    }
}

impl EventCodec {
    pub fn new(registry_url: &str) -> Self {
        let settings = || {
            SrSettings::new_builder(registry_url.trim_end_matches('/').to_string())
                .set_timeout(std::time::Duration::from_secs(10))
                .no_proxy()
                .build()
                .expect("a reqwest client without TLS always builds")
        };
        EventCodec {
            encoder: AvroEncoder::new(settings()),
            decoder: AvroDecoder::new(settings()),
        }
    }

    /// Encodes a record given as JSON with the latest schema registered for `topic`.
    pub async fn encode_json(
        &self,
        topic: &str,
        record: &serde_json::Value,
    ) -> Result<Vec<u8>, CodecError> {
        let strategy = SubjectNameStrategy::TopicNameStrategy(topic.to_string(), false);
        let subject = events::catalog::value_subject(topic);
        let schema = match self
            .encoder
            .get_schema_and_id(&subject, strategy.clone())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                self.encoder.remove_errors_from_cache();
                return Err(registry_error(e, CodecError::DoesNotFitSchema));
            }
        };
        let value = json_to_avro(record, &schema.parsed)
            .map_err(|e| CodecError::DoesNotFitSchema(format!("{subject}: {e}")))?;
        self.encoder
            .encode_value(value, &strategy)
            .await
            .map_err(|e| registry_error(e, CodecError::DoesNotFitSchema))
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
            Ok(result) => Ok(avro_to_json(&result.value)),
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

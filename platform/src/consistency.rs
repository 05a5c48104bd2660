//! Consistency tokens as the API hands them out: opaque, signed, and bound to the caller.
//!
//! A command response carries a token for "this aggregate has reached at least this
//! version"; the query API waits on it to read the caller's own write. The token is
//! `v1.<payload>.<mac>` (base64url): the payload is the [`ConsistencyToken`], the MAC an
//! HMAC-SHA256 over the caller's `sub` and the payload. A token that was altered, forged or
//! issued to someone else does not open, so nobody learns from waiting on it whether a
//! record exists or how often it changed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use events::ConsistencyToken;
use ring::hmac;

use crate::auth::{MIN_SECRET_BYTES, dev_mode};
use crate::config::Secret;

/// The documented development key, used only when `HEALTHPLANE_DEV_MODE=1` asks for it and
/// no key is configured. Public: never use it outside a developer's machine.
pub const DEV_CONSISTENCY_KEY: &str = "healthplane-local-consistency-key-do-not-use-in-production";

/// Longest token accepted (a real one is about 110 characters).
const MAX_TOKEN_LEN: usize = 256;

/// The keys both APIs need (typed settings; their values never print).
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// The identity provider's JWKS URL (Keycloak: `<realm URL>/protocol/openid-connect/certs`):
    /// RS256 and ES256 tokens signed with its keys are accepted, with the issuer and audience
    /// below. Takes precedence over the key and secret.
    #[arg(long, env = "HEALTHPLANE_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// The tokens' issuer (`iss`; Keycloak: the realm's URL). Required with a JWKS URL.
    #[arg(long, env = "HEALTHPLANE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The tokens' audience (`aud`: the client this API is to Keycloak). Required with a
    /// JWKS URL.
    #[arg(long, env = "HEALTHPLANE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The identity provider's RS256 public key, in PEM (production).
    #[arg(long, env = "HEALTHPLANE_JWT_PUBLIC_KEY_PEM", hide_env_values = true)]
    pub jwt_public_key_pem: Option<String>,
    /// An HS256 secret of at least 32 bytes (tokens signed with it are accepted).
    #[arg(long, env = "HEALTHPLANE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret<String>>,
    /// The consistency-token key (at least 32 bytes), the same for the command and query APIs.
    #[arg(long, env = "HEALTHPLANE_CONSISTENCY_KEY", hide_env_values = true)]
    pub consistency_key: Option<Secret<String>>,
}

/// The settings both APIs share: their keys, the broker and registry, and the HTTP bounds.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub kafka: crate::config::KafkaArgs,
    #[command(flatten)]
    pub http: crate::http::HttpLimits,
}

/// The keys both APIs need, read before anything else starts: no key, no service.
pub struct ApiKeys {
    pub verifier: std::sync::Arc<crate::auth::Verifier>,
    pub consistency: std::sync::Arc<ConsistencySigner>,
}

impl KeyArgs {
    /// The token verifier and the consistency signer; an error names the missing setting.
    pub async fn load(&self) -> anyhow::Result<ApiKeys> {
        use anyhow::Context;
        let settings = crate::auth::KeySettings {
            jwks_url: self.jwt_jwks_url.as_deref(),
            issuer: self.jwt_issuer.as_deref(),
            audience: self.jwt_audience.as_deref(),
            public_key_pem: self.jwt_public_key_pem.as_deref(),
            secret: self.jwt_secret.as_ref(),
        };
        Ok(ApiKeys {
            verifier: std::sync::Arc::new(
                crate::auth::Verifier::from_settings(&settings)
                    .await
                    .context("JWT configuration")?,
            ),
            consistency: std::sync::Arc::new(
                ConsistencySigner::from_setting(self.consistency_key.as_ref())
                    .context("consistency-token configuration")?,
            ),
        })
    }
}

/// Seals and opens consistency tokens with the key shared by the command and query APIs.
pub struct ConsistencySigner {
    key: hmac::Key,
}

impl std::fmt::Debug for ConsistencySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsistencySigner(***)")
    }
}

impl ConsistencySigner {
    pub fn new(key: &[u8]) -> Self {
        ConsistencySigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The configured `HEALTHPLANE_CONSISTENCY_KEY` (at least 32 bytes), or the public
    /// development key when `HEALTHPLANE_DEV_MODE=1` asks for it; otherwise an error naming
    /// the setting.
    pub fn from_setting(key: Option<&Secret<String>>) -> anyhow::Result<Self> {
        match key.map(Secret::expose) {
            Some(key) if key.len() >= MIN_SECRET_BYTES => {
                Ok(ConsistencySigner::new(key.as_bytes()))
            }
            Some(_) => anyhow::bail!(
                "HEALTHPLANE_CONSISTENCY_KEY is shorter than {MIN_SECRET_BYTES} bytes: use a \
                 random key of at least {MIN_SECRET_BYTES} bytes, the same for the command and \
                 query APIs"
            ),
            None if dev_mode() => {
                tracing::warn!(
                    "HEALTHPLANE_DEV_MODE=1 and no HEALTHPLANE_CONSISTENCY_KEY: signing \
                     consistency tokens with the PUBLIC development key"
                );
                Ok(ConsistencySigner::new(DEV_CONSISTENCY_KEY.as_bytes()))
            }
            None => anyhow::bail!(
                "no consistency-token key configured: set HEALTHPLANE_CONSISTENCY_KEY (at least \
                 {MIN_SECRET_BYTES} bytes, the same for the command and query APIs); on a \
                 developer's machine, HEALTHPLANE_DEV_MODE=1 uses the public development key"
            ),
        }
    }

    fn mac(&self, subject: &str, payload: &str) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(subject.as_bytes());
        context.update(b"\n");
        context.update(payload.as_bytes());
        context.sign()
    }

    /// The token to hand to `subject`.
    pub fn seal(&self, token: &ConsistencyToken, subject: &str) -> String {
        let payload = URL_SAFE_NO_PAD.encode(token.to_string());
        let mac = URL_SAFE_NO_PAD.encode(self.mac(subject, &payload));
        format!("v1.{payload}.{mac}")
    }

    /// The token `subject` presents, if it was sealed for them by this key.
    pub fn open(&self, sealed: &str, subject: &str) -> Result<ConsistencyToken, &'static str> {
        const FOREIGN: &str = "X-Consistency-Token is not a token this API issued to the caller";
        if sealed.len() > MAX_TOKEN_LEN {
            return Err(FOREIGN);
        }
        let mut parts = sealed.split('.');
        let (Some("v1"), Some(payload), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(FOREIGN);
        };
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| FOREIGN)?;
        let mut context = Vec::with_capacity(subject.len() + 1 + payload.len());
        context.extend_from_slice(subject.as_bytes());
        context.push(b'\n');
        context.extend_from_slice(payload.as_bytes());
        hmac::verify(&self.key, &context, &mac).map_err(|_| FOREIGN)?;
        URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.parse().ok())
            .ok_or(FOREIGN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> ConsistencyToken {
        ConsistencyToken {
            aggregate: events::registry::Aggregate::Patient,
            aggregate_id: uuid::Uuid::now_v7(),
            version: 3,
        }
    }

    #[test]
    fn a_token_opens_for_the_caller_it_was_sealed_for() {
        let signer = ConsistencySigner::new(b"0123456789abcdef0123456789abcdef");
        let token = token();
        let sealed = signer.seal(&token, "user-1");
        assert!(!sealed.contains(&token.aggregate_id.to_string()), "opaque");
        assert_eq!(signer.open(&sealed, "user-1"), Ok(token));
    }

    #[test]
    fn foreign_forged_and_altered_tokens_do_not_open() {
        let signer = ConsistencySigner::new(b"0123456789abcdef0123456789abcdef");
        let other = ConsistencySigner::new(b"fedcba9876543210fedcba9876543210");
        let token = token();
        let sealed = signer.seal(&token, "user-1");
        assert!(signer.open(&sealed, "user-2").is_err(), "another caller");
        assert!(
            signer
                .open(&other.seal(&token, "user-1"), "user-1")
                .is_err(),
            "another key"
        );
        let forged_payload = URL_SAFE_NO_PAD.encode(format!("patient:{}:9", token.aggregate_id));
        let mac = sealed.rsplit('.').next().unwrap();
        assert!(
            signer
                .open(&format!("v1.{forged_payload}.{mac}"), "user-1")
                .is_err()
        );
        assert!(
            signer.open(&token.to_string(), "user-1").is_err(),
            "the plain form"
        );
        assert!(signer.open("v1..", "user-1").is_err());
        assert!(signer.open(&"v1.a.".repeat(100), "user-1").is_err());
    }
}

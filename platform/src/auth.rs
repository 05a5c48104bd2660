//! Authentication: bearer JWTs and the `Caller` extractor. Tokens are checked against an
//! identity provider's JWKS (RS256/ES256, e.g. Keycloak; see [`crate::jwks`]), a fixed RS256
//! public key, or an HS256 secret (the local stack). Roles come from `roles` or Keycloak's
//! `realm_access.roles`.
//!
//! Missing, expired, forged or `alg: none` tokens are 401; the role checks that give 403 live
//! with each endpoint.

use std::sync::Arc;

use axum::extract::FromRef;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;
use events::{Actor, Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Secret;
use crate::problem::Problem;

/// The documented development secret, used only when `HEALTHPLANE_DEV_MODE=1` asks for it and
/// no key is configured (the local stack and the tests). Never use it outside a developer's
/// machine: it is public.
pub const DEV_JWT_SECRET: &str = "healthplane-local-development-secret-do-not-use-in-production";

/// The claims Healthplane reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Known roles; unknown role names in the token are ignored.
    #[serde(deserialize_with = "known_roles")]
    pub roles: Vec<Role>,
    /// The patient the user is, for the `patient` role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<Uuid>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

fn known_roles<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Role>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    Ok(names.iter().filter_map(|n| n.parse().ok()).collect())
}

fn some_known_roles<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<Role>>, D::Error> {
    known_roles(d).map(Some)
}

/// The claims as a token carries them: roles in `roles` (Healthplane's mapper) or in
/// Keycloak's `realm_access.roles`, or both.
#[derive(Debug, Deserialize)]
struct TokenClaims {
    sub: String,
    #[serde(default, deserialize_with = "some_known_roles")]
    roles: Option<Vec<Role>>,
    #[serde(default)]
    realm_access: Option<RealmAccess>,
    #[serde(default)]
    patient_id: Option<Uuid>,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    /// Keycloak's token type: `Bearer` for access tokens, `ID` for ID tokens.
    #[serde(default)]
    typ: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RealmAccess {
    #[serde(default, deserialize_with = "known_roles")]
    roles: Vec<Role>,
}

impl TokenClaims {
    fn into_claims(self) -> Result<Claims, AuthError> {
        if self.roles.is_none() && self.realm_access.is_none() {
            return Err(AuthError::Invalid(
                "it carries no roles (`roles` or `realm_access.roles`)".into(),
            ));
        }
        let mut roles = self.roles.unwrap_or_default();
        for role in self.realm_access.map(|r| r.roles).unwrap_or_default() {
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        Ok(Claims {
            sub: self.sub,
            roles,
            patient_id: self.patient_id,
            exp: self.exp,
            iat: self.iat,
        })
    }
}

/// Why a token was refused (all are 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token: send `Authorization: Bearer <JWT>`")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The service has no usable key: it must not start.
    #[error("{0}")]
    Config(String),
    /// The identity provider's keys cannot be fetched now (503: retry).
    #[error("{0}")]
    Unavailable(String),
}

/// The shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash's size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Whether the local development mode was asked for explicitly (`HEALTHPLANE_DEV_MODE=1`).
pub fn dev_mode() -> bool {
    std::env::var("HEALTHPLANE_DEV_MODE").is_ok_and(|v| v == "1" || v == "true")
}

/// The HS256 secret: the configured `HEALTHPLANE_JWT_SECRET` (at least 32 bytes), or the
/// public development secret when `HEALTHPLANE_DEV_MODE=1` asks for it; otherwise an error
/// naming the settings.
pub fn hs256_secret(configured: Option<&Secret<String>>) -> Result<String, AuthError> {
    match configured.map(Secret::expose) {
        Some(secret) if secret.len() >= MIN_SECRET_BYTES => Ok(secret.clone()),
        Some(_) => Err(AuthError::Config(format!(
            "HEALTHPLANE_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes: use a random secret \
             of at least {MIN_SECRET_BYTES} bytes"
        ))),
        None if dev_mode() => {
            tracing::warn!(
                "HEALTHPLANE_DEV_MODE=1 and no key configured: verifying tokens with the PUBLIC \
                 development secret; anyone can mint any role. Never run this way with real data"
            );
            Ok(DEV_JWT_SECRET.to_string())
        }
        None => Err(AuthError::Config(
            "no token key configured: set HEALTHPLANE_JWT_PUBLIC_KEY_PEM (RS256) or \
             HEALTHPLANE_JWT_SECRET (HS256, at least 32 bytes); on a developer's machine, \
             HEALTHPLANE_DEV_MODE=1 uses the public development secret"
                .into(),
        )),
    }
}

/// Checks tokens. One algorithm per key, fixed by the key, never by the token: a token signed
/// any other way (or not at all) is refused.
pub struct Verifier {
    keys: Keys,
    validation: Validation,
}

enum Keys {
    /// One key (HS256 secret or RS256 public key); `validation` names its algorithm.
    Fixed(DecodingKey),
    /// The identity provider's published keys, chosen by the token's `kid`; each key's own
    /// algorithm replaces `validation`'s.
    Jwks(Box<crate::jwks::Jwks>),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl Verifier {
    /// HS256 with a shared secret (the local stack).
    pub fn hs256(secret: &str) -> Self {
        Verifier::with(
            DecodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
    }

    /// RS256 with an identity provider's public key in PEM (production).
    pub fn rs256_pem(pem: &str) -> Result<Self, AuthError> {
        let key = DecodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| AuthError::Invalid(format!("bad RS256 public key: {e}")))?;
        Ok(Verifier::with(key, Algorithm::RS256))
    }

    fn with(key: DecodingKey, algorithm: Algorithm) -> Self {
        Verifier {
            keys: Keys::Fixed(key),
            validation: base_validation(algorithm),
        }
    }

    /// Keys from an identity provider's JWKS (`HEALTHPLANE_JWT_JWKS_URL`), tokens from
    /// `issuer` for `audience` only. The keys are fetched now (a failure is logged: the
    /// provider may start later) and again for a token with a key id not seen yet.
    pub async fn jwks(url: &str, issuer: &str, audience: &str) -> Result<Self, AuthError> {
        let jwks = crate::jwks::Jwks::new(url)?;
        if let Err(e) = jwks.refresh().await {
            tracing::error!(error = %e, "cannot fetch the identity provider's keys yet; tokens are refused until they can be fetched");
        }
        let mut validation = base_validation(Algorithm::RS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        Ok(Verifier {
            keys: Keys::Jwks(Box::new(jwks)),
            validation,
        })
    }

    /// From the settings: the JWKS URL (with issuer and audience) if given, else the RS256
    /// public key, else the HS256 secret (at least 32 bytes), else — only with
    /// `HEALTHPLANE_DEV_MODE=1` — the public development secret. Without a key: an error
    /// naming the settings. An issuer or audience set without a JWKS URL is checked too.
    pub async fn from_settings(settings: &KeySettings<'_>) -> Result<Self, AuthError> {
        let mut verifier = match (settings.jwks_url, settings.issuer, settings.audience) {
            (Some(url), Some(issuer), Some(audience)) => {
                return Verifier::jwks(url, issuer, audience).await;
            }
            (Some(_), _, _) => {
                return Err(AuthError::Config(
                    "HEALTHPLANE_JWT_JWKS_URL needs HEALTHPLANE_JWT_ISSUER (the realm's URL, the \
                     tokens' `iss`) and HEALTHPLANE_JWT_AUDIENCE (the tokens' `aud`)"
                        .into(),
                ));
            }
            _ => match settings.public_key_pem {
                Some(pem) => Verifier::rs256_pem(pem)?,
                None => hs256_secret(settings.secret).map(|secret| Verifier::hs256(&secret))?,
            },
        };
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = settings.issuer {
            verifier.validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = settings.audience {
            verifier.validation.set_audience(&[audience]);
            required.push("aud");
        }
        // Set, they are required: a token without them does not pass.
        verifier.validation.set_required_spec_claims(&required);
        Ok(verifier)
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let decoded = match &self.keys {
            Keys::Fixed(key) => jsonwebtoken::decode::<TokenClaims>(token, key, &self.validation),
            Keys::Jwks(jwks) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|_| AuthError::Invalid("it is not a well-formed JWT".into()))?;
                let kid = header
                    .kid
                    .filter(|k| !k.is_empty() && k.len() <= crate::jwks::MAX_KID_BYTES)
                    .ok_or_else(|| AuthError::Invalid("it names no signing key (`kid`)".into()))?;
                let key = jwks.key(&kid).await?;
                let mut validation = self.validation.clone();
                validation.algorithms = vec![key.algorithm];
                jsonwebtoken::decode::<TokenClaims>(token, &key.key, &validation)
            }
        };
        // The reason in a fixed vocabulary: the library's own messages quote claims and
        // serde internals.
        let claims = decoded
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet (nbf)".into()),
                ErrorKind::InvalidSignature => {
                    AuthError::Invalid("the signature does not verify".into())
                }
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::Invalid(
                        "signed with an algorithm this service does not accept".into(),
                    )
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Invalid(format!("the `{claim}` claim is missing"))
                }
                ErrorKind::InvalidIssuer => AuthError::Invalid(
                    "it was issued by an issuer this service does not trust".into(),
                ),
                ErrorKind::InvalidAudience => {
                    AuthError::Invalid("it was issued for another audience".into())
                }
                ErrorKind::Json(_) => {
                    AuthError::Invalid("its claims are not the expected JSON".into())
                }
                _ => AuthError::Invalid("it is not a well-formed JWT".into()),
            })?;
        // An identity provider's ID token (Keycloak: `typ: ID`) is not an access token, even
        // when its audience is this API's.
        if matches!(self.keys, Keys::Jwks(_))
            && claims
                .typ
                .as_deref()
                .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(AuthError::Invalid("it is not an access token".into()));
        }
        let claims = claims.into_claims()?;
        if claims.sub.is_empty()
            || claims.sub.len() > 256
            || claims.sub.chars().any(char::is_control)
        {
            return Err(AuthError::Invalid(
                "the `sub` claim must be 1 to 256 characters without control characters".into(),
            ));
        }
        Ok(claims)
    }

    /// Whether tokens can be checked: always with a fixed key; with a JWKS, while keys from a
    /// fetch less than an hour old are at hand (a probe past the cooldown fetches again).
    pub async fn readiness(&self) -> Result<(), String> {
        match &self.keys {
            Keys::Fixed(_) => Ok(()),
            Keys::Jwks(jwks) => jwks.readiness().await,
        }
    }

    /// Verifies the `Authorization` header of a request.
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Claims, AuthError> {
        let value = header.ok_or(AuthError::Missing)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Missing)?;
        self.verify(token.trim()).await
    }
}

/// What the token keys are configured from (see [`Verifier::from_settings`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct KeySettings<'a> {
    pub jwks_url: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
    pub public_key_pem: Option<&'a str>,
    pub secret: Option<&'a Secret<String>>,
}

/// What every token must satisfy whatever the key: `exp` and `sub`, `nbf` if present, 5 s
/// of clock skew.
fn base_validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.validate_nbf = true;
    validation
}

/// Mints an HS256 token (local development and tests).
pub fn mint_hs256(
    secret: &str,
    sub: &str,
    roles: &[Role],
    patient_id: Option<Uuid>,
    ttl: chrono::Duration,
) -> String {
    let now = Utc::now();
    let claims = Claims {
        sub: sub.to_string(),
        roles: roles.to_vec(),
        patient_id,
        exp: (now + ttl).timestamp(),
        iat: Some(now.timestamp()),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of serializable claims cannot fail")
}

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.claims.roles.contains(&role)
    }

    /// The first of `allowed` the caller holds: the role the action is performed in.
    pub fn acting_role(&self, allowed: &[Role]) -> Option<Role> {
        allowed.iter().copied().find(|r| self.has(*r))
    }

    /// The caller as the actor of an event, acting in `role`.
    pub fn actor(&self, role: Role) -> Actor {
        Actor {
            id: self.claims.sub.clone(),
            role,
        }
    }

    /// The caller's own role when several are allowed, or 403.
    pub fn require_any(&self, allowed: &[Role]) -> Result<Role, Problem> {
        self.acting_role(allowed).ok_or_else(|| {
            let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            Problem::forbidden(format!(
                "this requires one of the roles: {}",
                names.join(", ")
            ))
        })
    }
}

impl<S> axum::extract::FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Verifier>: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<Verifier>::from_ref(state);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match verifier.verify_header(header).await {
            Ok(claims) => Ok(Caller { claims }),
            Err(AuthError::Unavailable(reason)) => Err(Problem::unavailable(reason)),
            Err(e) => Err(Problem::unauthorized(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-secret";

    #[tokio::test]
    async fn a_minted_token_verifies() {
        let token = mint_hs256(
            SECRET,
            "u1",
            &[Role::Admin],
            None,
            chrono::Duration::minutes(5),
        );
        let claims = Verifier::hs256(SECRET).verify(&token).await.unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.roles, vec![Role::Admin]);
    }

    #[tokio::test]
    async fn an_empty_subject_or_a_future_nbf_is_refused_and_the_reason_names_no_internals() {
        let verifier = Verifier::hs256(SECRET);
        let empty = mint_hs256(
            SECRET,
            "",
            &[Role::Admin],
            None,
            chrono::Duration::minutes(5),
        );
        assert!(
            matches!(verifier.verify(&empty).await, Err(AuthError::Invalid(m)) if m.contains("`sub`"))
        );
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let exp = Utc::now().timestamp() + 600;
        let early = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u1", "roles": ["admin"], "exp": exp, "nbf": exp - 60}),
            &key,
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&early).await,
            Err(AuthError::Invalid("not valid yet (nbf)".into()))
        );
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u1", "roles": ["admin"]}),
            &key,
        )
        .unwrap();
        let message = verifier.verify(&no_exp).await.unwrap_err().to_string();
        assert!(
            !message.contains("JSON error") && !message.contains("serde"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn expired_forged_and_unsigned_tokens_are_refused() {
        let verifier = Verifier::hs256(SECRET);
        let expired = mint_hs256(
            SECRET,
            "u1",
            &[Role::Admin],
            None,
            chrono::Duration::minutes(-5),
        );
        assert_eq!(verifier.verify(&expired).await, Err(AuthError::Expired));

        let forged = mint_hs256(
            "other",
            "u1",
            &[Role::Admin],
            None,
            chrono::Duration::minutes(5),
        );
        assert!(matches!(
            verifier.verify(&forged).await,
            Err(AuthError::Invalid(_))
        ));

        // alg: none, with the same claims and no signature.
        let claims = forged.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
        assert!(matches!(
            verifier.verify(&none).await,
            Err(AuthError::Invalid(_))
        ));

        assert_eq!(verifier.verify_header(None).await, Err(AuthError::Missing));
        assert_eq!(
            verifier.verify_header(Some("Basic abc")).await,
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn unknown_roles_are_ignored() {
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "sub": "u", "roles": ["offline_access", "auditor"], "exp": 1
        }))
        .unwrap();
        assert_eq!(claims.roles, vec![Role::Auditor]);
    }
}

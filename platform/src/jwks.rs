//! An identity provider's signing keys, from its JWKS URL (Keycloak:
//! `<realm URL>/protocol/openid-connect/certs`), cached by key id.
//!
//! Only signature keys of RS256 (RSA) and ES256 (EC P-256) are kept, each with the one
//! algorithm it fixes (the JWK's `alg` if it names one, else its type and curve); a token is
//! checked with its key's algorithm, never the one its header claims, so an HS256 token made
//! with a public key as the secret, or `alg: none`, never passes. A token naming a key id not
//! in the cache makes one refetch, and so do keys older than [`MAX_AGE`] (so a key the
//! provider withdrew stops working); every fetch, whatever caused it, waits
//! [`REFRESH_COOLDOWN`] after the last one, so neither made-up key ids nor an unreachable
//! provider make a fetch per request. A failed fetch keeps the keys already known, for at most
//! [`MAX_STALE`] after the last successful fetch. Fetches are bounded: [`FETCH_TIMEOUT`],
//! [`MAX_BYTES`], [`MAX_KEYS`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::auth::AuthError;

/// The least time between two fetches caused by unknown key ids.
pub const REFRESH_COOLDOWN: Duration = Duration::from_secs(10);
/// Keys older than this are refetched before use.
pub const MAX_AGE: Duration = Duration::from_secs(600);
/// Keys not confirmed by a fetch for this long (the provider unreachable) are no longer used.
pub const MAX_STALE: Duration = Duration::from_secs(3_600);
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS document read.
pub const MAX_BYTES: usize = 1024 * 1024;
/// The most keys kept from one document.
pub const MAX_KEYS: usize = 100;
/// The longest key id a token may name.
pub const MAX_KID_BYTES: usize = 256;

/// A signing key and the algorithm it fixes.
pub struct Key {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

impl Cache {
    /// Keys from a good fetch within [`MAX_STALE`] are at hand.
    fn usable(&self) -> bool {
        self.fetched.is_some_and(|at| at.elapsed() < MAX_STALE)
    }
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<Key>>,
    /// When the keys were last fetched successfully.
    fetched: Option<Instant>,
    /// When a fetch was last tried (the cooldown runs from it).
    tried: Option<Instant>,
}

/// The cached keys of one JWKS URL.
pub struct Jwks {
    url: reqwest::Url,
    client: reqwest::Client,
    cache: tokio::sync::RwLock<Cache>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    /// Keys from `url` (`http` or `https`), none fetched yet.
    pub fn new(url: &str) -> Result<Self, AuthError> {
        let url = reqwest::Url::parse(url).map_err(|e| {
            AuthError::Config(format!("HEALTHPLANE_JWT_JWKS_URL is not a URL: {e}"))
        })?;
        match url.scheme() {
            // https verifies the provider's certificate against the system's CAs.
            "http" | "https" => {}
            other => {
                return Err(AuthError::Config(format!(
                    "HEALTHPLANE_JWT_JWKS_URL must be an http URL, not {other}"
                )));
            }
        }
        let ca_pem = crate::transport::settings()
            .ok()
            .and_then(|t| t.jwks_ca_pem.as_deref());
        let client = crate::transport::trusting(reqwest::Client::builder(), ca_pem)
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AuthError::Config(format!("cannot create an HTTP client: {e}")))?;
        Ok(Jwks {
            url,
            client,
            cache: tokio::sync::RwLock::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The key with id `kid`, fetching the keys again if it is not known (subject to the
    /// cooldown) or the keys are old.
    pub async fn key(&self, kid: &str) -> Result<Arc<Key>, AuthError> {
        {
            let cache = self.cache.read().await;
            let fresh = cache.fetched.is_some_and(|at| at.elapsed() < MAX_AGE);
            if let (true, Some(key)) = (fresh, cache.keys.get(kid)) {
                return Ok(key.clone());
            }
        }
        let _one = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        {
            let cache = self.cache.read().await;
            let fresh = cache.fetched.is_some_and(|at| at.elapsed() < MAX_AGE);
            if let (true, Some(key)) = (fresh, cache.keys.get(kid)) {
                return Ok(key.clone());
            }
        }
        self.fetch_if_due_locked().await;
        let cache = self.cache.read().await;
        match cache.keys.get(kid) {
            Some(key) if cache.usable() => Ok(key.clone()),
            _ if !cache.usable() => Err(AuthError::Unavailable(
                "the identity provider's signing keys cannot be fetched; retry later".into(),
            )),
            _ => Err(AuthError::Invalid(
                "it is signed with a key the identity provider does not publish".into(),
            )),
        }
    }

    /// Ready while keys from a good fetch within [`MAX_STALE`] are at hand; otherwise fetches
    /// (past the cooldown) and says why not, without the provider's address.
    pub async fn readiness(&self) -> Result<(), String> {
        if self.cache.read().await.usable() {
            return Ok(());
        }
        let _one = self.fetching.lock().await;
        self.fetch_if_due_locked().await;
        let cache = self.cache.read().await;
        match cache.fetched {
            _ if cache.usable() => Ok(()),
            Some(at) => Err(format!(
                "the identity provider's signing keys could not be fetched for {} s: tokens are \
                 refused until they can (the log has the error)",
                at.elapsed().as_secs()
            )),
            None => Err(
                "the identity provider's signing keys could not be fetched yet: tokens \
                 are refused until they can (the log has the error)"
                    .into(),
            ),
        }
    }

    /// Fetches the keys unless the last fetch was less than [`REFRESH_COOLDOWN`] ago (the
    /// caller holds `fetching`). The outcome is logged by the fetch; callers read the cache.
    async fn fetch_if_due_locked(&self) {
        let due = self
            .cache
            .read()
            .await
            .tried
            .is_none_or(|at| at.elapsed() >= REFRESH_COOLDOWN);
        if due {
            let _ = self.fetch_locked().await;
        }
    }

    /// Fetches the keys now (at start).
    pub async fn refresh(&self) -> Result<(), String> {
        let _one = self.fetching.lock().await;
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<(), String> {
        self.cache.write().await.tried = Some(Instant::now());
        match self.download().await {
            Ok(keys) => {
                tracing::info!(
                    keys = keys.len(),
                    "fetched the identity provider's signing keys"
                );
                let mut cache = self.cache.write().await;
                cache.keys = keys;
                cache.fetched = Some(Instant::now());
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the identity provider's signing keys; keeping the known ones");
                Err(e)
            }
        }
    }

    async fn download(&self) -> Result<HashMap<String, Arc<Key>>, String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| format!("{} unreachable: {e}", self.url))?;
        if !response.status().is_success() {
            return Err(format!("{} answered {}", self.url, response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading {}: {e}", self.url))?
        {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(format!("{} sent more than {MAX_BYTES} bytes", self.url));
            }
            body.extend_from_slice(&chunk);
        }
        // Key by key: one key of a kind this library cannot read must not hide the others.
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(&body).map_err(|e| format!("not a JWKS document: {e}"))?;
        let set = JwkSet {
            keys: document
                .keys
                .into_iter()
                .filter_map(|key| serde_json::from_value(key).ok())
                .collect(),
        };
        Ok(signing_keys(&set))
    }
}

/// The RS256 and ES256 signature keys of a JWKS, by key id (keys without an id, for
/// encryption, of other types or algorithms, or beyond [`MAX_KEYS`] are left out).
pub fn signing_keys(set: &JwkSet) -> HashMap<String, Arc<Key>> {
    set.keys
        .iter()
        .filter(|jwk| {
            !matches!(
                jwk.common.public_key_use,
                Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
            )
        })
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => return None,
            };
            let key = DecodingKey::from_jwk(jwk).ok()?;
            (kid.len() <= MAX_KID_BYTES).then(|| (kid, Arc::new(Key { key, algorithm })))
        })
        .take(MAX_KEYS)
        .collect()
}

#[cfg(test)]
mod tests {
    //! Tokens as Keycloak issues them, checked against a JWKS served over HTTP by the test,
    //! next to every way a token must be refused.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::KeyPair;
    use serde_json::{Value, json};

    use super::*;
    use crate::auth::{KeySettings, Verifier};
    use events::Role;

    const ISSUER: &str = "http://keycloak.test/realms/healthplane";
    const AUDIENCE: &str = "healthplane-api";

    /// A fresh RSA key made by `openssl` (no key is kept in the repository): the signing
    /// key, the public key in PEM and its JWK parameters.
    fn rsa_key() -> (EncodingKey, String, String) {
        let run = |args: &[&str], input: Option<&[u8]>| {
            use std::io::Write;
            let mut child = std::process::Command::new("openssl")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("openssl runs");
            if let Some(input) = input {
                child.stdin.take().unwrap().write_all(input).unwrap();
            }
            drop(child.stdin.take());
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            out.stdout
        };
        let private = run(&["genrsa", "2048"], None);
        let public = String::from_utf8(run(&["rsa", "-pubout"], Some(&private))).unwrap();
        let modulus =
            String::from_utf8(run(&["rsa", "-noout", "-modulus"], Some(&private))).unwrap();
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        (
            EncodingKey::from_rsa_pem(&private).unwrap(),
            public,
            URL_SAFE_NO_PAD.encode(bytes),
        )
    }

    fn rsa_jwk(kid: &str, n: &str) -> Value {
        json!({"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig", "n": n, "e": "AQAB",
               "x5c": [], "x5t": "x", "x5t#S256": "x"})
    }

    /// A fresh P-256 key: the signing key and its JWK.
    fn ec_key(kid: &str) -> (EncodingKey, Value) {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({"kid": kid, "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
                         "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
        (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
    }

    /// Serves `keys` (replaceable) as a JWKS; counts the fetches.
    async fn serve(keys: Arc<std::sync::Mutex<Value>>, fetches: Arc<AtomicUsize>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/realms/healthplane/protocol/openid-connect/certs",
            listener.local_addr().unwrap()
        );
        let app = axum::Router::new().route(
            "/realms/healthplane/protocol/openid-connect/certs",
            axum::routing::get(move || {
                let (keys, fetches) = (keys.clone(), fetches.clone());
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(keys.lock().unwrap().clone())
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    /// Claims as Keycloak puts them in an access token (roles in `realm_access`).
    fn keycloak_claims(sub: &str, exp_in: i64) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "exp": now + exp_in, "iat": now, "jti": "d9c1", "iss": ISSUER, "aud": AUDIENCE,
            "sub": sub, "typ": "Bearer", "azp": "healthplane-portal", "session_state": "s",
            "acr": "1", "realm_access": {"roles": ["default-roles-healthplane", "offline_access", "practitioner"]},
            "resource_access": {"account": {"roles": ["manage-account"]}},
            "scope": "openid profile email", "preferred_username": "dr.hopper"
        })
    }

    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    #[tokio::test]
    async fn keycloak_tokens_verify_against_the_jwks_and_every_forgery_is_refused() {
        let (rsa, public_pem, n) = rsa_key();
        let (_, enc_jwk) = ec_key("enc-key");
        let mut enc_jwk = enc_jwk;
        enc_jwk["use"] = json!("enc");
        let keys = Arc::new(std::sync::Mutex::new(
            json!({"keys": [rsa_jwk("rsa-1", &n), enc_jwk]}),
        ));
        let fetches = Arc::new(AtomicUsize::new(0));
        let url = serve(keys.clone(), fetches.clone()).await;
        let verifier = Verifier::from_settings(&KeySettings {
            jwks_url: Some(&url),
            issuer: Some(ISSUER),
            audience: Some(AUDIENCE),
            ..KeySettings::default()
        })
        .await
        .unwrap();

        // Given a token as Keycloak issues it: accepted, roles from realm_access.
        let good = keycloak_claims("f3a1-dr-hopper", 300);
        let claims = verifier
            .verify(&sign(Algorithm::RS256, Some("rsa-1"), &good, &rsa))
            .await
            .unwrap();
        assert_eq!(claims.sub, "f3a1-dr-hopper");
        assert_eq!(verifier.readiness().await, Ok(()));
        assert_eq!(claims.roles, vec![Role::Practitioner]);

        let refused = |token: String| {
            let verifier = &verifier;
            async move {
                match verifier.verify(&token).await {
                    Err(AuthError::Invalid(reason)) => reason,
                    Err(AuthError::Expired) => "expired".into(),
                    other => panic!("not refused as invalid: {other:?}"),
                }
            }
        };
        let with = |field: &str, value: Value| {
            let mut claims = good.clone();
            claims[field] = value;
            claims
        };
        assert_eq!(
            refused(sign(
                Algorithm::RS256,
                Some("rsa-1"),
                &keycloak_claims("u", -60),
                &rsa
            ))
            .await,
            "expired"
        );
        assert!(
            refused(sign(
                Algorithm::RS256,
                Some("rsa-1"),
                &with("iss", json!("http://evil.test/realms/healthplane")),
                &rsa
            ))
            .await
            .contains("issuer")
        );
        assert!(
            refused(sign(
                Algorithm::RS256,
                Some("rsa-1"),
                &with("aud", json!("another-app")),
                &rsa
            ))
            .await
            .contains("audience")
        );
        // Signed by a key the provider does not publish (a key id it never had, and the
        // published key id over another key's signature).
        let (stranger, _, _) = rsa_key();
        assert!(
            refused(sign(Algorithm::RS256, Some("rsa-9"), &good, &stranger))
                .await
                .contains("does not publish")
        );
        assert!(
            refused(sign(Algorithm::RS256, Some("rsa-1"), &good, &stranger))
                .await
                .contains("signature")
        );
        // HS256 with the provider's public key as the secret, under its key id.
        let confused = sign(
            Algorithm::HS256,
            Some("rsa-1"),
            &good,
            &EncodingKey::from_secret(public_pem.as_bytes()),
        );
        assert!(refused(confused).await.contains("algorithm"));
        // The encryption key is not a signing key.
        assert!(
            refused(sign(Algorithm::RS256, Some("enc-key"), &good, &rsa))
                .await
                .contains("does not publish")
        );
        // alg: none, and no kid.
        let body = URL_SAFE_NO_PAD.encode(good.to_string());
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#);
        assert!(!refused(format!("{none_header}.{body}.")).await.is_empty());
        assert!(
            refused(sign(Algorithm::RS256, None, &good, &rsa))
                .await
                .contains("kid")
        );
        // No roles anywhere.
        let mut roleless = good.clone();
        roleless.as_object_mut().unwrap().remove("realm_access");
        assert!(
            refused(sign(Algorithm::RS256, Some("rsa-1"), &roleless, &rsa))
                .await
                .contains("roles")
        );
        // Made-up key ids did not make a fetch each: the start, then at most one (cooldown).
        for i in 0..50 {
            let _ = verifier
                .verify(&sign(
                    Algorithm::RS256,
                    Some(&format!("made-up-{i}")),
                    &good,
                    &stranger,
                ))
                .await;
        }
        assert!(fetches.load(Ordering::SeqCst) <= 3, "{fetches:?} fetches");
    }

    #[tokio::test]
    async fn a_rotated_key_is_fetched_on_first_use_and_a_withdrawn_one_stops_working() {
        let (rsa, _, n) = rsa_key();
        let keys = Arc::new(std::sync::Mutex::new(
            json!({"keys": [rsa_jwk("rsa-1", &n)]}),
        ));
        let fetches = Arc::new(AtomicUsize::new(0));
        let url = serve(keys.clone(), fetches.clone()).await;
        let verifier = Verifier::jwks(&url, ISSUER, AUDIENCE).await.unwrap();
        let mut good = keycloak_claims("u1", 300);
        good["roles"] = json!(["admin"]);
        assert!(
            verifier
                .verify(&sign(Algorithm::RS256, Some("rsa-1"), &good, &rsa))
                .await
                .is_ok()
        );

        // The provider rotates to an ES256 key (and drops the RSA key): the first token
        // signed with it makes the verifier fetch the keys again.
        let (ec, ec_jwk) = ec_key("ec-2");
        *keys.lock().unwrap() =
            json!({"keys": [ec_jwk, {"kid": "odd", "kty": "OKP", "alg": "EdDSA-X", "use": "sig"}]});
        // (A rotation within the cooldown of the last fetch is seen once the cooldown ends.)
        tokio::time::sleep(REFRESH_COOLDOWN).await;
        let claims = verifier
            .verify(&sign(Algorithm::ES256, Some("ec-2"), &good, &ec))
            .await
            .unwrap();
        // `roles` and `realm_access.roles` together.
        assert_eq!(claims.roles, vec![Role::Admin, Role::Practitioner]);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // The withdrawn RSA key is gone with the fetch.
        assert!(matches!(
            verifier
                .verify(&sign(Algorithm::RS256, Some("rsa-1"), &good, &rsa))
                .await,
            Err(AuthError::Invalid(_))
        ));
        // An ES256 token claiming RS256 for the EC key's id is refused (the key fixes ES256).
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("ec-2".into());
        let lying = jsonwebtoken::encode(&header, &good, &rsa).unwrap();
        assert!(matches!(
            verifier.verify(&lying).await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn a_provider_that_cannot_be_reached_makes_503_not_401_and_bad_settings_stop_the_start() {
        let verifier = Verifier::jwks("http://127.0.0.1:9/certs", ISSUER, AUDIENCE)
            .await
            .unwrap();
        let (rsa, _, _) = rsa_key();
        let token = sign(
            Algorithm::RS256,
            Some("k"),
            &keycloak_claims("u", 300),
            &rsa,
        );
        // Not ready, saying why without the provider's address.
        assert!(matches!(verifier.readiness().await, Err(reason) if !reason.contains("127.0.0.1")));
        // Every request while the provider is down: 503, naming no internal address, and no
        // fetch of its own (one per cooldown at most).
        for _ in 0..20 {
            assert!(matches!(
                verifier.verify(&token).await,
                Err(AuthError::Unavailable(reason)) if !reason.contains("127.0.0.1")
            ));
        }
        for (url, issuer, audience) in [
            (Some("http://idp/certs"), None, Some(AUDIENCE)),
            (Some("http://idp/certs"), Some(ISSUER), None),
            (Some("ftp://idp/certs"), Some(ISSUER), Some(AUDIENCE)),
            (Some("not a url"), Some(ISSUER), Some(AUDIENCE)),
        ] {
            let settings = KeySettings {
                jwks_url: url,
                issuer,
                audience,
                ..KeySettings::default()
            };
            assert!(matches!(
                Verifier::from_settings(&settings).await,
                Err(AuthError::Config(_))
            ));
        }
    }
}

//! Ed25519 signatures over audit records, so that a record no audit writer made — produced
//! straight to the topic, or changed in the broker's storage — is found out.
//!
//! A writer signs the record as it goes to the broker: topic, key and value bytes, each
//! length-prefixed (so no two records sign the same bytes), under a domain tag. The signature
//! and the id of the key travel in the record's headers ([`SIGNATURE_HEADER`],
//! [`KEY_ID_HEADER`]). The verifier trusts a keyring: a file of `<key id> <public key>`
//! lines (base64), one per writer key ever used, so a rotated key's records still verify.
//!
//! A writer's private key is a PKCS#8 document, base64 in a file
//! (`HEALTHPLANE_AUDIT_SIGNING_KEY_FILE`); `replay-tool audit keygen` makes one and adds its
//! public half to a keyring.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

/// The header holding a record's signature (base64).
pub const SIGNATURE_HEADER: &str = "hp-signature";
/// The header naming the key that signed it.
pub const KEY_ID_HEADER: &str = "hp-key-id";

const DOMAIN: &[u8] = b"healthplane-audit-record-v1";

/// The bytes a record's signature covers.
fn signed_bytes(topic: &str, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + topic.len() + key.len() + value.len() + 24);
    out.extend_from_slice(DOMAIN);
    for part in [topic.as_bytes(), key, value] {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// A public key's id: the first 16 hex digits of its SHA-256.
pub fn key_id(public_key: &[u8]) -> String {
    Sha256::digest(public_key)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A writer's signing key.
pub struct RecordSigner {
    pair: Ed25519KeyPair,
    key_id: String,
}

impl std::fmt::Debug for RecordSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl RecordSigner {
    /// The key of a file holding a base64 PKCS#8 document.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the audit signing key {}", path.display()))?;
        Self::from_base64(text.trim())
            .with_context(|| format!("{} is not an audit signing key", path.display()))
    }

    /// The key given either as a file or as its text (`HEALTHPLANE_AUDIT_SIGNING_KEY`, e.g.
    /// from a Kubernetes `secretKeyRef`): exactly one of the two; `missing` says what to set.
    pub fn from_file_or_text(
        file: Option<&Path>,
        text: Option<&crate::config::Secret<String>>,
        missing: &str,
    ) -> anyhow::Result<Self> {
        match (file, text) {
            (Some(path), None) => Self::from_file(path),
            (None, Some(text)) => Self::from_base64(text.expose().trim())
                .context("HEALTHPLANE_AUDIT_SIGNING_KEY is not an audit signing key"),
            (Some(_), Some(_)) => anyhow::bail!(
                "the audit signing key is set twice: HEALTHPLANE_AUDIT_SIGNING_KEY_FILE or \
                 HEALTHPLANE_AUDIT_SIGNING_KEY, not both"
            ),
            (None, None) => anyhow::bail!("{missing}"),
        }
    }

    pub fn from_base64(text: &str) -> anyhow::Result<Self> {
        let der = STANDARD
            .decode(text)
            .context("not base64 (a key from `replay-tool audit keygen`)")?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|e| anyhow::anyhow!("not an Ed25519 PKCS#8 key: {e}"))?;
        let key_id = key_id(pair.public_key().as_ref());
        Ok(RecordSigner { pair, key_id })
    }

    /// A new key: its PKCS#8 document (base64) and its keyring line.
    pub fn generate() -> anyhow::Result<(String, String)> {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|e| anyhow::anyhow!("cannot generate a key: {e}"))?;
        let signer = Self::from_base64(&STANDARD.encode(der.as_ref()))?;
        Ok((STANDARD.encode(der.as_ref()), signer.keyring_line()))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// `<key id> <public key, base64>`: the line a keyring holds for this key.
    pub fn keyring_line(&self) -> String {
        format!(
            "{} {}",
            self.key_id,
            STANDARD.encode(self.pair.public_key().as_ref())
        )
    }

    /// The signature (base64) of a record.
    pub fn sign(&self, topic: &str, key: &[u8], value: &[u8]) -> String {
        STANDARD.encode(self.pair.sign(&signed_bytes(topic, key, value)).as_ref())
    }

    /// `headers` with the record's key id and signature added ([`KEY_ID_HEADER`],
    /// [`SIGNATURE_HEADER`]).
    pub fn signed_headers(
        &self,
        headers: rdkafka::message::OwnedHeaders,
        topic: &str,
        key: &[u8],
        value: &[u8],
    ) -> rdkafka::message::OwnedHeaders {
        let signature = self.sign(topic, key, value);
        headers
            .insert(rdkafka::message::Header {
                key: KEY_ID_HEADER,
                value: Some(self.key_id.as_str()),
            })
            .insert(rdkafka::message::Header {
                key: SIGNATURE_HEADER,
                value: Some(signature.as_str()),
            })
    }
}

/// Why a record's signature does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureFault {
    /// No signature or no key id in the headers.
    Unsigned,
    /// Signed with a key the keyring does not hold.
    UnknownKey,
    /// The signature does not match the record: it was changed, or signed by someone else.
    BadSignature,
}

/// The public keys the verifier trusts, by id.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    keys: HashMap<String, Vec<u8>>,
}

impl Keyring {
    /// A keyring file: `<key id> <public key, base64>` lines; `#` comments and blank lines are
    /// ignored.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the keyring {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the keyring {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, key) = line
                .split_once(char::is_whitespace)
                .with_context(|| format!("line {}: expected `<key id> <public key>`", n + 1))?;
            let key = STANDARD
                .decode(key.trim())
                .ok()
                .filter(|k| k.len() == 32)
                .with_context(|| format!("line {}: not a base64 Ed25519 public key", n + 1))?;
            anyhow::ensure!(
                key_id(&key) == id,
                "line {}: key id {id} is not this key's ({})",
                n + 1,
                key_id(&key)
            );
            keys.insert(id.to_string(), key);
        }
        Ok(Keyring { keys })
    }

    /// Whether a consumed record of `topic` carries a signature that holds (headers
    /// [`KEY_ID_HEADER`] and [`SIGNATURE_HEADER`]).
    pub fn verify_message(
        &self,
        topic: &str,
        message: &impl rdkafka::message::Message,
    ) -> Result<(), SignatureFault> {
        use rdkafka::message::Headers;
        let header = |name: &str| {
            message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
            })
        };
        self.verify(
            topic,
            message.key().unwrap_or_default(),
            message.payload().unwrap_or_default(),
            header(KEY_ID_HEADER),
            header(SIGNATURE_HEADER),
        )
    }

    /// Trusts one more key: a `<key id> <public key>` line.
    pub fn trust(&mut self, line: &str) -> anyhow::Result<()> {
        self.keys.extend(Self::parse(line)?.keys);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `signature` by key `key_id` (both from the record's headers) holds for the
    /// record.
    pub fn verify(
        &self,
        topic: &str,
        key: &[u8],
        value: &[u8],
        key_id: Option<&str>,
        signature: Option<&str>,
    ) -> Result<(), SignatureFault> {
        let (Some(key_id), Some(signature)) = (key_id, signature) else {
            return Err(SignatureFault::Unsigned);
        };
        let public = self.keys.get(key_id).ok_or(SignatureFault::UnknownKey)?;
        let signature = STANDARD
            .decode(signature)
            .map_err(|_| SignatureFault::BadSignature)?;
        UnparsedPublicKey::new(&ED25519, public)
            .verify(&signed_bytes(topic, key, value), &signature)
            .map_err(|_| SignatureFault::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_record_verifies_and_any_change_or_stranger_is_found() {
        let (private, line) = RecordSigner::generate().unwrap();
        let signer = RecordSigner::from_base64(&private).unwrap();
        let keyring = Keyring::parse(&format!("# writers\n{line}\n")).unwrap();
        let sig = signer.sign("t", b"k", b"value");
        let id = Some(signer.key_id());
        assert_eq!(keyring.verify("t", b"k", b"value", id, Some(&sig)), Ok(()));
        for (topic, key, value) in [
            ("t", &b"k"[..], &b"valuE"[..]),
            ("t", b"K", b"value"),
            ("u", b"k", b"value"),
        ] {
            assert_eq!(
                keyring.verify(topic, key, value, id, Some(&sig)),
                Err(SignatureFault::BadSignature)
            );
        }
        // Moving bytes between key and value changes what is signed.
        let moved = signer.sign("t", b"kv", b"alue");
        assert_eq!(
            keyring.verify("t", b"k", b"value", id, Some(&moved)),
            Err(SignatureFault::BadSignature)
        );
        assert_eq!(
            keyring.verify("t", b"k", b"value", None, None),
            Err(SignatureFault::Unsigned)
        );
        let (other, _) = RecordSigner::generate().unwrap();
        let stranger = RecordSigner::from_base64(&other).unwrap();
        let forged = stranger.sign("t", b"k", b"value");
        assert_eq!(
            keyring.verify("t", b"k", b"value", Some(stranger.key_id()), Some(&forged)),
            Err(SignatureFault::UnknownKey)
        );
        // Claiming a trusted key id does not help a stranger.
        assert_eq!(
            keyring.verify("t", b"k", b"value", id, Some(&forged)),
            Err(SignatureFault::BadSignature)
        );
    }

    #[test]
    fn a_consumed_record_verifies_by_the_headers_its_writer_added() {
        use rdkafka::message::{OwnedHeaders, OwnedMessage};
        let (private, line) = RecordSigner::generate().unwrap();
        let signer = RecordSigner::from_base64(&private).unwrap();
        let keyring = Keyring::parse(&line).unwrap();
        let message = |headers: OwnedHeaders| {
            OwnedMessage::new(
                Some(b"value".to_vec()),
                Some(b"key".to_vec()),
                "t".into(),
                rdkafka::Timestamp::NotAvailable,
                0,
                7,
                Some(headers),
            )
        };
        let signed = signer.signed_headers(OwnedHeaders::new(), "t", b"key", b"value");
        assert_eq!(
            keyring.verify_message("t", &message(signed.clone())),
            Ok(())
        );
        assert_eq!(
            keyring.verify_message("u", &message(signed)),
            Err(SignatureFault::BadSignature)
        );
        assert_eq!(
            keyring.verify_message("t", &message(OwnedHeaders::new())),
            Err(SignatureFault::Unsigned)
        );
    }

    #[test]
    fn the_key_comes_as_a_file_or_as_text_never_both() {
        let (text, line) = RecordSigner::generate().unwrap();
        let secret = crate::config::Secret::new(format!("{text}\n"));
        let signer = RecordSigner::from_file_or_text(None, Some(&secret), "missing").unwrap();
        assert!(line.starts_with(signer.key_id()));
        let file = std::env::temp_dir().join(format!("hp-key-{}", uuid::Uuid::new_v4()));
        std::fs::write(&file, &text).unwrap();
        let both = RecordSigner::from_file_or_text(Some(&file), Some(&secret), "missing");
        assert!(both.unwrap_err().to_string().contains("not both"));
        let from_file = RecordSigner::from_file_or_text(Some(&file), None, "missing").unwrap();
        assert_eq!(from_file.key_id(), signer.key_id());
        let none = RecordSigner::from_file_or_text(None, None, "set the key");
        assert_eq!(none.unwrap_err().to_string(), "set the key");
        let bad = crate::config::Secret::new("not a key".to_string());
        let e = RecordSigner::from_file_or_text(None, Some(&bad), "missing").unwrap_err();
        assert!(!format!("{e:#}").contains("not a key"), "{e:#}");
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn a_keyring_line_whose_id_is_not_its_keys_is_refused() {
        let (_, line) = RecordSigner::generate().unwrap();
        let (_, key) = line.split_once(' ').unwrap();
        assert!(Keyring::parse(&format!("0000000000000000 {key}")).is_err());
        assert!(Keyring::parse("abc not-base64").is_err());
    }
}

//! Encryption and credentials of the connections a service makes — Kafka (TLS, SASL),
//! PostgreSQL (TLS verified against the server's CA) and the schema registry (HTTPS, basic
//! auth) — read once from the environment and refused at start when they do not add up.
//!
//! | variable | what |
//! |---|---|
//! | `HEALTHPLANE_KAFKA_SECURITY_PROTOCOL` | `plaintext`, `ssl`, `sasl_ssl`, `sasl_plaintext` (default: `sasl_ssl` with a SASL user, `ssl` with a CA, else `plaintext`) |
//! | `HEALTHPLANE_KAFKA_SASL_MECHANISM` | `SCRAM-SHA-512` (default), `SCRAM-SHA-256`, `PLAIN` |
//! | `HEALTHPLANE_KAFKA_SASL_USERNAME` / `_PASSWORD` | the SASL credential |
//! | `HEALTHPLANE_KAFKA_CA_PEM` or `_CA_FILE` | CA of the brokers' certificates (else the system's) |
//! | `HEALTHPLANE_KAFKA_CERT_PEM` + `_KEY_PEM` | client certificate (mutual TLS) |
//! | `HEALTHPLANE_POSTGRES_CA_PEM` | CA of the PostgreSQL servers (trusted besides the system's): every connection is `verify-full` |
//! | `HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO` | `user:password`, sent on every registry request |
//! | `HEALTHPLANE_SCHEMA_REGISTRY_CA_PEM` | CA of an HTTPS registry (else the system's) |
//! | `HEALTHPLANE_JWT_JWKS_CA_PEM` | CA of an HTTPS identity provider (else the system's) |
//!
//! Brokers' host names are always verified against their certificates; there is no switch to
//! turn that off. A password never travels in clear: `PLAIN` needs TLS (`sasl_ssl`).

use std::sync::OnceLock;

use rdkafka::ClientConfig;

use crate::config::Secret;

/// How the Kafka clients authenticate and encrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSecurity {
    pub protocol: Protocol,
    pub sasl: Option<Sasl>,
    pub ca: Option<Trust>,
    /// Client certificate and key, PEM (mutual TLS).
    pub client_cert: Option<(String, Secret<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Plaintext => "plaintext",
            Protocol::Ssl => "ssl",
            Protocol::SaslPlaintext => "sasl_plaintext",
            Protocol::SaslSsl => "sasl_ssl",
        }
    }
    fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }
    fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sasl {
    pub mechanism: &'static str,
    pub username: String,
    pub password: Secret<String>,
}

/// Certificates to trust: PEM text, or a file of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    Pem(String),
    File(String),
}

/// `text` (from `name`) as a bundle of certificates an HTTPS client can trust.
fn ca_bundle(name: &str, text: String) -> Result<String, String> {
    let text = pem(name, text, "CERTIFICATE")?;
    reqwest::Certificate::from_pem_bundle(text.as_bytes())
        .map_err(|e| format!("{name} holds no usable certificate: {e}"))?;
    Ok(text)
}

/// `name`'s value from `var`, unless unset or blank.
fn set(var: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    var(name).filter(|v| !v.trim().is_empty())
}

fn pem(name: &str, value: String, kind: &str) -> Result<String, String> {
    if value.contains(&format!("-----BEGIN {kind}")) {
        Ok(value)
    } else {
        Err(format!("{name} must hold PEM text (-----BEGIN {kind}...)"))
    }
}

impl KafkaSecurity {
    /// Settings from `var` (the environment in a service; a map in tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| set(&var, name);
        let username = get("HEALTHPLANE_KAFKA_SASL_USERNAME");
        let password = get("HEALTHPLANE_KAFKA_SASL_PASSWORD");
        let ca = match (
            get("HEALTHPLANE_KAFKA_CA_PEM"),
            get("HEALTHPLANE_KAFKA_CA_FILE"),
        ) {
            (Some(_), Some(_)) => {
                return Err(
                    "set HEALTHPLANE_KAFKA_CA_PEM or HEALTHPLANE_KAFKA_CA_FILE, not both".into(),
                );
            }
            (Some(text), None) => Some(Trust::Pem(pem(
                "HEALTHPLANE_KAFKA_CA_PEM",
                text,
                "CERTIFICATE",
            )?)),
            (None, Some(path)) => Some(Trust::File(path)),
            (None, None) => None,
        };
        let client_cert = match (
            get("HEALTHPLANE_KAFKA_CERT_PEM"),
            get("HEALTHPLANE_KAFKA_KEY_PEM"),
        ) {
            (Some(cert), Some(key)) => Some((
                pem("HEALTHPLANE_KAFKA_CERT_PEM", cert, "CERTIFICATE")?,
                Secret::new(pem("HEALTHPLANE_KAFKA_KEY_PEM", key, "")?),
            )),
            (None, None) => None,
            _ => {
                return Err(
                    "HEALTHPLANE_KAFKA_CERT_PEM and HEALTHPLANE_KAFKA_KEY_PEM go together".into(),
                );
            }
        };
        let protocol = match get("HEALTHPLANE_KAFKA_SECURITY_PROTOCOL")
            .map(|p| p.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("plaintext") => Protocol::Plaintext,
            Some("ssl") => Protocol::Ssl,
            Some("sasl_plaintext") => Protocol::SaslPlaintext,
            Some("sasl_ssl") => Protocol::SaslSsl,
            Some(other) => {
                return Err(format!(
                    "HEALTHPLANE_KAFKA_SECURITY_PROTOCOL `{other}` is not one of plaintext, \
                     ssl, sasl_ssl, sasl_plaintext"
                ));
            }
            None if username.is_some() => Protocol::SaslSsl,
            None if ca.is_some() || client_cert.is_some() => Protocol::Ssl,
            None => Protocol::Plaintext,
        };
        let sasl = if protocol.sasl() {
            let (Some(username), Some(password)) = (username, password) else {
                return Err(format!(
                    "security protocol {} needs HEALTHPLANE_KAFKA_SASL_USERNAME and \
                     HEALTHPLANE_KAFKA_SASL_PASSWORD",
                    protocol.as_str()
                ));
            };
            let mechanism = match get("HEALTHPLANE_KAFKA_SASL_MECHANISM")
                .map(|m| m.trim().to_ascii_uppercase())
                .as_deref()
            {
                None | Some("SCRAM-SHA-512") => "SCRAM-SHA-512",
                Some("SCRAM-SHA-256") => "SCRAM-SHA-256",
                Some("PLAIN") => "PLAIN",
                Some(other) => {
                    return Err(format!(
                        "HEALTHPLANE_KAFKA_SASL_MECHANISM `{other}` is not one of \
                         SCRAM-SHA-512, SCRAM-SHA-256, PLAIN"
                    ));
                }
            };
            if mechanism == "PLAIN" && !protocol.tls() {
                return Err("SASL PLAIN sends the password in clear: use sasl_ssl".into());
            }
            Some(Sasl {
                mechanism,
                username,
                password: Secret::new(password),
            })
        } else {
            if username.is_some() || password.is_some() {
                return Err(format!(
                    "a SASL user is set but the security protocol is {}: set \
                     HEALTHPLANE_KAFKA_SECURITY_PROTOCOL=sasl_ssl",
                    protocol.as_str()
                ));
            }
            None
        };
        if !protocol.tls() && (ca.is_some() || client_cert.is_some()) {
            return Err(format!(
                "certificates are set but the security protocol is {}: use ssl or sasl_ssl",
                protocol.as_str()
            ));
        }
        Ok(KafkaSecurity {
            protocol,
            sasl,
            ca,
            client_cert,
        })
    }

    /// Sets the librdkafka properties of these settings on `config`.
    pub fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.protocol.as_str());
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism)
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        if self.protocol.tls() {
            // The default since librdkafka 1.9, pinned: a broker must prove its host name.
            config.set("ssl.endpoint.identification.algorithm", "https");
        }
        match &self.ca {
            Some(Trust::Pem(text)) => config.set("ssl.ca.pem", text),
            Some(Trust::File(path)) => config.set("ssl.ca.location", path),
            None => config,
        };
        if let Some((cert, key)) = &self.client_cert {
            config
                .set("ssl.certificate.pem", cert)
                .set("ssl.key.pem", key.expose());
        }
    }
}

/// How to reach the schema registry: credential and trusted CA.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryAccess {
    /// `(user, password)` sent as HTTP basic auth on every request.
    pub basic_auth: Option<(String, Secret<String>)>,
    /// PEM certificates to trust besides the system's.
    pub ca_pem: Option<String>,
}

impl RegistryAccess {
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| set(&var, name);
        let basic_auth = match get("HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO") {
            Some(info) => match info.split_once(':') {
                Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                    Some((user.to_string(), Secret::new(password.to_string())))
                }
                _ => {
                    return Err(
                        "HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO must be user:password".into(),
                    );
                }
            },
            None => None,
        };
        let ca_pem = get("HEALTHPLANE_SCHEMA_REGISTRY_CA_PEM")
            .map(|text| ca_bundle("HEALTHPLANE_SCHEMA_REGISTRY_CA_PEM", text))
            .transpose()?;
        Ok(RegistryAccess { basic_auth, ca_pem })
    }

    /// An HTTP client builder trusting the configured CA (and the system's).
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        trusting(
            reqwest::Client::builder().no_proxy(),
            self.ca_pem.as_deref(),
        )
    }
}

/// `builder` trusting the certificates of `ca_pem` besides the system's (checked at start by
/// [`ca_bundle`]).
pub fn trusting(
    mut builder: reqwest::ClientBuilder,
    ca_pem: Option<&str>,
) -> reqwest::ClientBuilder {
    for cert in ca_pem
        .and_then(|text| reqwest::Certificate::from_pem_bundle(text.as_bytes()).ok())
        .unwrap_or_default()
    {
        builder = builder.add_root_certificate(cert);
    }
    builder
}

/// Checks a registry URL: `http` or `https`, any path (e.g. Apicurio's
/// `/apis/ccompat/v7`), and no credentials in it (they would reach logs: use
/// `HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO`).
pub fn check_registry_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("HEALTHPLANE_SCHEMA_REGISTRY_URL is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "HEALTHPLANE_SCHEMA_REGISTRY_URL must be http or https, not {}",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "HEALTHPLANE_SCHEMA_REGISTRY_URL must not carry credentials: put them in \
                    HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO"
                .into(),
        );
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("HEALTHPLANE_SCHEMA_REGISTRY_URL must not have a query or fragment".into());
    }
    Ok(())
}

/// Every transport setting of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    pub kafka: KafkaSecurity,
    pub registry: RegistryAccess,
    /// PEM of the PostgreSQL servers' CA; with it every connection is `verify-full`.
    pub postgres_ca_pem: Option<String>,
    /// PEM of the identity provider's CA, for an `https` JWKS URL it signed.
    pub jwks_ca_pem: Option<String>,
}

impl Transport {
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let postgres_ca_pem = set(&var, "HEALTHPLANE_POSTGRES_CA_PEM")
            .map(|text| pem("HEALTHPLANE_POSTGRES_CA_PEM", text, "CERTIFICATE"))
            .transpose()?;
        let jwks_ca_pem = set(&var, "HEALTHPLANE_JWT_JWKS_CA_PEM")
            .map(|text| ca_bundle("HEALTHPLANE_JWT_JWKS_CA_PEM", text))
            .transpose()?;
        Ok(Transport {
            kafka: KafkaSecurity::from_vars(&var)?,
            registry: RegistryAccess::from_vars(&var)?,
            postgres_ca_pem,
            jwks_ca_pem,
        })
    }
}

static SETTINGS: OnceLock<Result<Transport, String>> = OnceLock::new();

/// The process's transport settings, read from the environment on first use.
pub fn settings() -> Result<&'static Transport, &'static str> {
    SETTINGS
        .get_or_init(|| Transport::from_vars(|name| std::env::var(name).ok()))
        .as_ref()
        .map_err(String::as_str)
}

/// Reads and checks the settings; services call it at start so that a mistake stops them
/// with a message instead of a connection that fails later.
pub fn init() -> anyhow::Result<&'static Transport> {
    settings().map_err(|e| anyhow::anyhow!("invalid connection settings: {e}"))
}

/// Kafka settings of the process (plaintext when the environment is invalid: [`init`] has
/// refused to start then).
pub fn kafka() -> Option<&'static KafkaSecurity> {
    settings().ok().map(|t| &t.kafka)
}

/// Registry settings of the process.
pub fn registry() -> RegistryAccess {
    settings().map(|t| t.registry.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn props(security: &KafkaSecurity) -> HashMap<String, String> {
        let mut config = ClientConfig::new();
        security.apply(&mut config);
        config
            .config_map()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_set_is_plaintext_as_on_the_local_stack() {
        let s = KafkaSecurity::from_vars(vars(&[])).unwrap();
        assert_eq!(s.protocol, Protocol::Plaintext);
        assert_eq!(props(&s)["security.protocol"], "plaintext");
        assert!(!props(&s).contains_key("sasl.password"));
    }

    #[test]
    fn a_sasl_user_means_scram_over_tls_with_host_names_verified() {
        let s = KafkaSecurity::from_vars(vars(&[
            ("HEALTHPLANE_KAFKA_SASL_USERNAME", "command-api"),
            ("HEALTHPLANE_KAFKA_SASL_PASSWORD", "pw"),
            ("HEALTHPLANE_KAFKA_CA_PEM", CERT),
        ]))
        .unwrap();
        let p = props(&s);
        assert_eq!(p["security.protocol"], "sasl_ssl");
        assert_eq!(p["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(p["sasl.username"], "command-api");
        // rdkafka keeps the password but never shows it (Debug, config_map).
        assert_eq!(p["sasl.password"], "[sanitized for safety]");
        let mut config = ClientConfig::new();
        s.apply(&mut config);
        assert_eq!(config.get("sasl.password"), Some("pw"));
        assert!(!format!("{config:?}").contains("\"pw\""));
        assert_eq!(p["ssl.ca.pem"], CERT);
        assert_eq!(p["ssl.endpoint.identification.algorithm"], "https");
        assert!(
            !format!("{s:?}").contains("pw\""),
            "the password never prints"
        );
    }

    #[test]
    fn mistakes_are_refused_with_what_to_set() {
        for (pairs, expected) in [
            (
                vec![("HEALTHPLANE_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")],
                "needs HEALTHPLANE_KAFKA_SASL_USERNAME",
            ),
            (
                vec![("HEALTHPLANE_KAFKA_SECURITY_PROTOCOL", "tls")],
                "is not one of",
            ),
            (
                vec![
                    ("HEALTHPLANE_KAFKA_SECURITY_PROTOCOL", "plaintext"),
                    ("HEALTHPLANE_KAFKA_SASL_USERNAME", "u"),
                    ("HEALTHPLANE_KAFKA_SASL_PASSWORD", "p"),
                ],
                "set HEALTHPLANE_KAFKA_SECURITY_PROTOCOL=sasl_ssl",
            ),
            (
                vec![
                    ("HEALTHPLANE_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                    ("HEALTHPLANE_KAFKA_SASL_MECHANISM", "PLAIN"),
                    ("HEALTHPLANE_KAFKA_SASL_USERNAME", "u"),
                    ("HEALTHPLANE_KAFKA_SASL_PASSWORD", "p"),
                ],
                "in clear",
            ),
            (
                vec![
                    ("HEALTHPLANE_KAFKA_SASL_USERNAME", "u"),
                    ("HEALTHPLANE_KAFKA_SASL_PASSWORD", "p"),
                    ("HEALTHPLANE_KAFKA_SASL_MECHANISM", "GSSAPI"),
                ],
                "is not one of",
            ),
            (
                vec![("HEALTHPLANE_KAFKA_CA_PEM", "/etc/ca.pem")],
                "must hold PEM text",
            ),
            (vec![("HEALTHPLANE_KAFKA_CERT_PEM", CERT)], "go together"),
            (
                vec![
                    ("HEALTHPLANE_KAFKA_SECURITY_PROTOCOL", "plaintext"),
                    ("HEALTHPLANE_KAFKA_CA_PEM", CERT),
                ],
                "use ssl or sasl_ssl",
            ),
        ] {
            let e = KafkaSecurity::from_vars(vars(&pairs)).expect_err(expected);
            assert!(e.contains(expected), "{e}");
            assert!(!e.contains("\"p\""), "no secret in {e}");
        }
    }

    #[test]
    fn scram_may_run_without_tls_but_not_plain() {
        let s = KafkaSecurity::from_vars(vars(&[
            ("HEALTHPLANE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("HEALTHPLANE_KAFKA_SASL_MECHANISM", "scram-sha-256"),
            ("HEALTHPLANE_KAFKA_SASL_USERNAME", "u"),
            ("HEALTHPLANE_KAFKA_SASL_PASSWORD", "p"),
        ]))
        .unwrap();
        assert_eq!(props(&s)["sasl.mechanism"], "SCRAM-SHA-256");
        assert!(!props(&s).contains_key("ssl.endpoint.identification.algorithm"));
    }

    #[test]
    fn mutual_tls_and_a_ca_file() {
        let s = KafkaSecurity::from_vars(vars(&[
            ("HEALTHPLANE_KAFKA_CA_FILE", "/etc/kafka/ca.crt"),
            ("HEALTHPLANE_KAFKA_CERT_PEM", CERT),
            (
                "HEALTHPLANE_KAFKA_KEY_PEM",
                "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
            ),
        ]))
        .unwrap();
        let p = props(&s);
        assert_eq!(p["security.protocol"], "ssl");
        assert_eq!(p["ssl.ca.location"], "/etc/kafka/ca.crt");
        assert!(p["ssl.key.pem"].contains("PRIVATE KEY"));
    }

    #[test]
    fn registry_urls_may_have_a_path_but_no_credentials() {
        check_registry_url("https://apicurio.example/apis/ccompat/v7").unwrap();
        check_registry_url("http://schema-registry:8081").unwrap();
        for bad in [
            "https://user:pw@registry.example",
            "ftp://registry.example",
            "registry:8081",
            "https://registry.example/?x=1",
        ] {
            let e = check_registry_url(bad).expect_err(bad);
            assert!(!e.contains("pw"), "{e}");
        }
        let access = RegistryAccess::from_vars(vars(&[(
            "HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO",
            "svc:pass:with:colons",
        )]))
        .unwrap();
        let (user, password) = access.basic_auth.unwrap();
        assert_eq!(
            (user.as_str(), password.expose().as_str()),
            ("svc", "pass:with:colons")
        );
        RegistryAccess::from_vars(vars(&[(
            "HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO",
            "nocolon",
        )]))
        .expect_err("no password");
        RegistryAccess::from_vars(vars(&[("HEALTHPLANE_SCHEMA_REGISTRY_CA_PEM", CERT)]))
            .expect_err("a PEM marker around garbage is no certificate");
    }
}

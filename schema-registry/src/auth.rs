//! Who may change the registry: HTTP Basic credentials for every write (register, config,
//! deletes), from `HEALTHPLANE_SCHEMA_REGISTRY_USERS`; reads, lookups and the compatibility
//! dry run stay open, as data teams' clients expect.
//!
//! A registry anyone can write to lets anyone loosen `healthcare.audit.phi_access-value` or
//! register a version without the actor or the patient, so the registry refuses to start
//! without credentials (the public development credential only with `HEALTHPLANE_DEV_MODE=1`).

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};

use schemas::client::{DEV_PASSWORD, DEV_USER};

use super::RegistryError;

/// The setting that holds the registry's users: comma-separated `user:password` pairs.
pub const USERS_ENV: &str = "HEALTHPLANE_SCHEMA_REGISTRY_USERS";
/// The shortest password accepted.
pub const MIN_PASSWORD_BYTES: usize = 16;
/// The challenge a refused write is answered with.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"healthplane-schema-registry\"";

type Digest32 = [u8; 32];

fn digest(password: &[u8]) -> Digest32 {
    Sha256::digest(password).into()
}

/// Equality of two digests that looks at every byte, so the time taken says nothing about
/// where they differ.
fn digests_equal(a: &Digest32, b: &Digest32) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The users allowed to write, with the SHA-256 digests of their passwords (never the
/// passwords themselves).
#[derive(Clone)]
pub struct Users {
    digests: BTreeMap<String, Digest32>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("names", &self.digests.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Users {
    /// Parses `user:password[,user:password...]` (the value of `HEALTHPLANE_SCHEMA_REGISTRY_USERS`).
    /// Whitespace around each pair is ignored; a user name has no `:`, a password no `,`.
    /// Errors name the setting and the user, never a password.
    pub fn parse(spec: &str) -> Result<Users, String> {
        let mut digests = BTreeMap::new();
        for (n, pair) in spec.split(',').map(str::trim).enumerate() {
            let (user, password) = pair
                .split_once(':')
                .ok_or_else(|| format!("{USERS_ENV}: entry {} is not `user:password`", n + 1))?;
            if user.is_empty() {
                return Err(format!("{USERS_ENV}: entry {} has no user name", n + 1));
            }
            if password.len() < MIN_PASSWORD_BYTES {
                return Err(format!(
                    "{USERS_ENV}: the password of `{user}` is shorter than {MIN_PASSWORD_BYTES} \
                     bytes: use a random password of at least {MIN_PASSWORD_BYTES} bytes"
                ));
            }
            if digests
                .insert(user.to_string(), digest(password.as_bytes()))
                .is_some()
            {
                return Err(format!("{USERS_ENV}: `{user}` is listed twice"));
            }
        }
        Ok(Users { digests })
    }

    /// The users from `users` (the setting's value, if set), or the public development
    /// credential when `dev_mode` asks for it; otherwise an error naming the setting.
    pub fn resolve(users: Option<&str>, dev_mode: bool) -> Result<Users, String> {
        match users {
            Some(spec) if !spec.trim().is_empty() => Users::parse(spec),
            Some(_) => Err(format!("{USERS_ENV} is set but empty")),
            None if dev_mode => Ok(Users::dev()),
            None => Err(format!(
                "no registry users configured: set {USERS_ENV} to comma-separated \
                 `user:password` pairs (passwords of at least {MIN_PASSWORD_BYTES} bytes); \
                 on a developer's machine, HEALTHPLANE_DEV_MODE=1 accepts the public \
                 development credential"
            )),
        }
    }

    /// [`Users::resolve`] over the process environment; warns loudly when it falls back to
    /// the development credential.
    pub fn from_env() -> Result<Users, String> {
        let users = match std::env::var(USERS_ENV) {
            Ok(users) => Some(users),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("{USERS_ENV} is not valid UTF-8"));
            }
        };
        let dev_mode = platform::auth::dev_mode();
        let resolved = Users::resolve(users.as_deref(), dev_mode)?;
        if users.is_none() {
            tracing::warn!(
                user = DEV_USER,
                "HEALTHPLANE_DEV_MODE=1 and {USERS_ENV} unset: registry writes accept the PUBLIC \
                 development credential; anyone can change the schemas. Never run this way with \
                 real data"
            );
        }
        Ok(resolved)
    }

    /// Only the public development credential.
    pub fn dev() -> Users {
        Users {
            digests: BTreeMap::from([(DEV_USER.to_string(), digest(DEV_PASSWORD.as_bytes()))]),
        }
    }

    /// The user named by a valid `Authorization: Basic` header; otherwise why not, with the
    /// user name claimed, if any (for the log).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        let value = headers.get(header::AUTHORIZATION).ok_or(Refusal::Missing)?;
        let (user, password) = basic_credentials(value).ok_or(Refusal::Malformed)?;
        // Unknown users are compared against a digest too, so that the answer takes as long.
        let expected = self.digests.get(&user).copied().unwrap_or([0xa5; 32]);
        let matches = digests_equal(&digest(password.as_bytes()), &expected);
        if matches && self.digests.contains_key(&user) {
            Ok(user)
        } else {
            Err(Refusal::Wrong { user })
        }
    }
}

/// Why a write was refused (all are 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// Not `Basic <base64 of user:password>`.
    Malformed,
    /// An unknown user or a wrong password.
    Wrong { user: String },
}

impl Refusal {
    fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "no credentials",
            Refusal::Malformed => "malformed Authorization header",
            Refusal::Wrong { .. } => "unknown user or wrong password",
        }
    }
}

fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Whether a request changes the registry. Reads, the lookup by content
/// (`POST /subjects/{subject}`) and the compatibility dry run (`POST /compatibility/...`)
/// do not; every other POST, PUT, PATCH or DELETE does, so a route added later is guarded
/// unless it is known not to write.
pub fn is_write(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => false,
        Method::POST => {
            let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let lookup =
                matches!(segments.as_slice(), ["subjects", subject] if !subject.is_empty());
            let dry_run = segments.first() == Some(&"compatibility");
            !(lookup || dry_run)
        }
        _ => true,
    }
}

/// What the guard needs: the users, and the counter of refused writes.
#[derive(Clone)]
pub struct Guard {
    pub users: Users,
    pub refused: Counter,
}

/// The middleware: lets reads through, answers a write without valid credentials with 401
/// (`error_code` 40101, `WWW-Authenticate: Basic`) before anything changes, and logs every
/// write with its user, method, path and status.
pub async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    if !is_write(&method, request.uri().path()) {
        return next.run(request).await;
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path().to_string(), |p| p.to_string());
    match guard.users.authenticate(request.headers()) {
        Ok(user) => {
            let response = next.run(request).await;
            let status = response.status().as_u16();
            tracing::info!(%user, %method, %path, status, "schema registry write");
            response
        }
        Err(refusal) => {
            guard.refused.inc();
            let user = match &refusal {
                Refusal::Wrong { user } => Some(user.as_str()),
                _ => None,
            };
            tracing::warn!(
                user,
                %method,
                %path,
                status = 401,
                reason = refusal.reason(),
                "schema registry write refused"
            );
            let mut response = RegistryError::new(
                401,
                40101,
                "Unauthorized: changing the schema registry needs HTTP Basic credentials",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn users_parse_from_comma_separated_pairs() {
        let users =
            Users::parse("ci:0123456789abcdef, ops:pass:with:colons-and-more ").expect("parses");
        assert_eq!(
            users.authenticate(&basic("ci", "0123456789abcdef")),
            Ok("ci".to_string())
        );
        assert_eq!(
            users.authenticate(&basic("ops", "pass:with:colons-and-more")),
            Ok("ops".to_string())
        );
    }

    #[test]
    fn bad_user_lists_are_refused_naming_the_setting_never_the_password() {
        for (spec, expected) in [
            ("ci:short-secret", "shorter than 16 bytes"),
            ("no-colon-0123456789", "not `user:password`"),
            (":0123456789abcdef", "no user name"),
            ("ci:0123456789abcdef,", "not `user:password`"),
            ("ci:0123456789abcdef,ci:fedcba9876543210", "listed twice"),
        ] {
            let e = Users::parse(spec).expect_err(spec);
            assert!(e.starts_with(USERS_ENV), "{e}");
            assert!(e.contains(expected), "{spec}: {e}");
            assert!(
                !e.contains("short-secret") && !e.contains("0123456789abcdef"),
                "{e}"
            );
        }
    }

    #[test]
    fn without_users_only_dev_mode_starts_and_then_with_the_public_credential() {
        let e = Users::resolve(None, false).expect_err("refuses to start");
        assert!(e.contains(USERS_ENV), "{e}");
        assert!(Users::resolve(Some("  "), true).is_err());
        let dev = Users::resolve(None, true).expect("dev mode");
        assert_eq!(
            dev.authenticate(&basic(DEV_USER, DEV_PASSWORD)),
            Ok(DEV_USER.to_string())
        );
        // Configured users replace the development credential, dev mode or not.
        let configured = Users::resolve(Some("ci:0123456789abcdef"), true).unwrap();
        assert!(
            configured
                .authenticate(&basic(DEV_USER, DEV_PASSWORD))
                .is_err()
        );
    }

    #[test]
    fn wrong_missing_and_malformed_credentials_are_refused() {
        let users = Users::parse("ci:0123456789abcdef").unwrap();
        assert_eq!(
            users.authenticate(&basic("ci", "0123456789abcdeX")),
            Err(Refusal::Wrong { user: "ci".into() })
        );
        assert_eq!(
            users.authenticate(&basic("nobody", "0123456789abcdef")),
            Err(Refusal::Wrong {
                user: "nobody".into()
            })
        );
        assert_eq!(users.authenticate(&HeaderMap::new()), Err(Refusal::Missing));
        for value in [
            "Bearer abc",
            "Basic not-base64!",
            "Basic Y2k=", // "ci", no colon
            "Basic",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(
                users.authenticate(&headers),
                Err(Refusal::Malformed),
                "{value}"
            );
        }
        assert!(!format!("{users:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn writes_are_told_from_reads_lookups_and_dry_runs() {
        let writes = [
            (Method::POST, "/subjects/a-value/versions"),
            (Method::PUT, "/config"),
            (Method::PUT, "/config/a-value"),
            (Method::DELETE, "/config/a-value"),
            (Method::DELETE, "/subjects/a-value"),
            (Method::DELETE, "/subjects/a-value/versions/1"),
            (Method::POST, "/subjects/a-value/versions/"),
            (Method::POST, "/somewhere/new"),
            (Method::PATCH, "/subjects/a-value"),
        ];
        for (method, path) in writes {
            assert!(is_write(&method, path), "{method} {path}");
        }
        let open = [
            (Method::GET, "/subjects"),
            (Method::GET, "/config/a-value"),
            (Method::HEAD, "/schemas/ids/1"),
            (Method::POST, "/subjects/a-value"),
            (
                Method::POST,
                "/compatibility/subjects/a-value/versions/latest",
            ),
            (Method::POST, "/compatibility/subjects/a-value/versions"),
        ];
        for (method, path) in open {
            assert!(!is_write(&method, path), "{method} {path}");
        }
    }
}

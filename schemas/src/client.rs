//! Registry administration used at deploy time: register every released schema and set each
//! subject's compatibility level, through the standard Confluent REST API, with HTTP Basic
//! credentials from `HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO` (as Confluent clients'
//! `basic.auth.user.info`).

use platform::config::Secret;
use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::catalog::{SCHEMAS, compatibility_for};

/// The setting a client's credential comes from (`user:password`, as Confluent clients'
/// `basic.auth.user.info`).
pub const USER_INFO_ENV: &str = "HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO";
/// The documented development user, accepted only with `HEALTHPLANE_DEV_MODE=1` and no users
/// configured. Public: never use it for a registry that holds real schemas.
pub const DEV_USER: &str = "healthplane";
/// The documented development password (public, see [`DEV_USER`]).
pub const DEV_PASSWORD: &str = "healthplane-dev-registry-password";

/// The outcome of registering one topic's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub subject: String,
    pub version: u32,
    pub id: u32,
}

/// A client's registry credential (`user:password`); the password never prints.
#[derive(Debug, Clone)]
pub struct UserInfo {
    pub user: String,
    pub password: Secret<String>,
}

impl UserInfo {
    /// The credential in `user_info` (the setting's value, if set), or the public development
    /// credential when `dev_mode` asks for it; otherwise an error naming the setting.
    pub fn resolve(user_info: Option<&str>, dev_mode: bool) -> Result<UserInfo, String> {
        match user_info {
            Some(value) => match value.split_once(':') {
                Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                    Ok(UserInfo {
                        user: user.to_string(),
                        password: Secret::new(password.to_string()),
                    })
                }
                _ => Err(format!("{USER_INFO_ENV} must be `user:password`")),
            },
            None if dev_mode => Ok(UserInfo {
                user: DEV_USER.to_string(),
                password: Secret::new(DEV_PASSWORD.to_string()),
            }),
            None => Err(format!(
                "no schema registry credential: set {USER_INFO_ENV}=user:password (a user of the \
                 registry's HEALTHPLANE_SCHEMA_REGISTRY_USERS); on a developer's machine, \
                 HEALTHPLANE_DEV_MODE=1 uses the public development credential"
            )),
        }
    }

    /// [`UserInfo::resolve`] over the process environment.
    pub fn from_env() -> anyhow::Result<UserInfo> {
        let value = match std::env::var(USER_INFO_ENV) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                anyhow::bail!("{USER_INFO_ENV} is not valid UTF-8")
            }
        };
        UserInfo::resolve(value.as_deref(), platform::auth::dev_mode()).map_err(anyhow::Error::msg)
    }
}

/// Explains a 401 from the registry: which credential it refused and where it came from.
fn refused(what: &str, credentials: &UserInfo, detail: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}: the schema registry refused the credentials of `{}` (from {USER_INFO_ENV}, or \
         the development credential with HEALTHPLANE_DEV_MODE=1): {detail}",
        credentials.user
    )
}

/// Registers every released schema (oldest first) and sets the subjects' compatibility levels,
/// as `credentials`. Idempotent: registering a schema again returns its existing id.
pub async fn register_all(
    registry_url: &str,
    credentials: &UserInfo,
) -> anyhow::Result<Vec<Registered>> {
    let url = registry_url.trim_end_matches('/').to_string();
    // HTTPS with the configured CA (and the system's), as every registry client.
    let access = platform::transport::registry();
    let settings = SrSettings::new_builder(url.clone())
        .set_basic_authorization(&credentials.user, Some(credentials.password.expose()))
        .no_proxy()
        .build_with(access.client_builder())?;
    let http = access.client_builder().build()?;
    let mut out = Vec::new();
    for schema in SCHEMAS {
        let subject = events::catalog::value_subject(schema.topic);
        let level = compatibility_for(schema.topic);
        let what = format!("setting {level} on {subject}");
        let response = http
            .put(format!("{url}/config/{subject}"))
            .basic_auth(&credentials.user, Some(credentials.password.expose()))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "compatibility": level.as_str() }))
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(refused(&what, credentials, &body));
        }
        anyhow::ensure!(status.is_success(), "{what}: {body}");
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.avsc.to_string());
        let what = format!("registering {subject} v{}", schema.version);
        let registered = post_schema(&settings, subject.clone(), supplied)
            .await
            .map_err(|e| {
                let detail = e.to_string();
                if detail.contains("status 401") {
                    refused(&what, credentials, &detail)
                } else {
                    anyhow::anyhow!("{what}: {detail}")
                }
            })?;
        out.push(Registered {
            subject,
            version: schema.version,
            id: registered.id,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_info_is_user_colon_password_or_in_dev_mode_the_public_credential() {
        let info = UserInfo::resolve(Some("ci:secret:with:colons"), false).unwrap();
        assert_eq!(
            (info.user.as_str(), info.password.expose().as_str()),
            ("ci", "secret:with:colons")
        );
        assert!(!format!("{info:?}").contains("secret"));
        for bad in ["ci", ":pw", "ci:", ""] {
            let e = UserInfo::resolve(Some(bad), true).expect_err(bad);
            assert!(e.contains(USER_INFO_ENV), "{e}");
        }
        let dev = UserInfo::resolve(None, true).unwrap();
        assert_eq!(
            (dev.user.as_str(), dev.password.expose().as_str()),
            (DEV_USER, DEV_PASSWORD)
        );
        let e = UserInfo::resolve(None, false).expect_err("no credential");
        assert!(e.contains(USER_INFO_ENV), "{e}");
    }
}

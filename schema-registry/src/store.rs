//! The registry's durable state in PostgreSQL: schemas with stable global ids, subject
//! versions, and compatibility levels; and the compatibility rules, decided with Avro
//! schema resolution (`apache_avro::schema_compatibility`).

use std::collections::BTreeMap;

use apache_avro::Schema;
use platform::db::Migration;
use schemas::compatibility::{Level, check_compatibility};
use sqlx::PgPool;

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "registry",
    sql: "CREATE TABLE sr_schemas (
            id INTEGER PRIMARY KEY,
            schema_type TEXT NOT NULL,
            schema TEXT NOT NULL,
            canonical TEXT NOT NULL UNIQUE,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now());
          CREATE TABLE sr_subject_versions (
            subject TEXT NOT NULL,
            version INTEGER NOT NULL,
            schema_id INTEGER NOT NULL REFERENCES sr_schemas (id),
            deleted BOOLEAN NOT NULL DEFAULT false,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (subject, version));
          CREATE TABLE sr_config (
            subject TEXT PRIMARY KEY,
            compatibility TEXT NOT NULL);",
}];

/// Subject name under which the global configuration is kept.
const GLOBAL: &str = "";
/// The level of a registry nobody configured, as in Confluent's.
pub const DEFAULT_COMPATIBILITY: Level = Level::Backward;

/// Registry failures, each with its Confluent `error_code`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// 404 / 40401
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 404 / 40402
    #[error("Version {1} not found.")]
    VersionNotFound(String, String),
    /// 404 / 40403
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    /// 422 / 42201
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// 422 / 42202
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// 404 / 40404
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// 404 / 40405
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// 404 / 40406
    #[error("Subject '{0}' Version {1} was soft deleted.Set permanent=true to delete permanently")]
    VersionSoftDeleted(String, i32),
    /// 404 / 40407
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, i32),
    /// 409 / 409
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{0}\", details: [{1}]"
    )]
    Incompatible(String, String),
    /// 500 / 50001
    #[error("Error in the backend data store: {0}")]
    Backend(#[from] sqlx::Error),
    /// 500 / 50001: a schema in the store does not parse (the store was changed by hand or
    /// by another release); names the subject, never skipped.
    #[error("Error in the backend data store: a stored schema of subject {0} does not parse: {1}")]
    Corrupt(String, String),
}

impl StoreError {
    /// `(HTTP status, Confluent error_code)`.
    pub fn codes(&self) -> (u16, u32) {
        match self {
            StoreError::SubjectNotFound(_) => (404, 40401),
            StoreError::VersionNotFound(..) => (404, 40402),
            StoreError::SchemaNotFound(_) => (404, 40403),
            StoreError::SubjectSoftDeleted(_) => (404, 40404),
            StoreError::SubjectNotSoftDeleted(_) => (404, 40405),
            StoreError::VersionSoftDeleted(..) => (404, 40406),
            StoreError::VersionNotSoftDeleted(..) => (404, 40407),
            StoreError::InvalidSchema(_) => (422, 42201),
            StoreError::Corrupt(..) => (500, 50001),
            StoreError::InvalidVersion(_) => (422, 42202),
            StoreError::Incompatible(..) => (409, 409),
            StoreError::Backend(_) => (500, 50001),
        }
    }
}

/// A version of a subject.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    pub schema: String,
}

/// `latest`, or a version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    Latest,
    Number(i32),
}

impl std::str::FromStr for VersionSelector {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" | "-1" => Ok(VersionSelector::Latest),
            _ => match s.parse::<i32>() {
                Ok(n) if n >= 1 => Ok(VersionSelector::Number(n)),
                _ => Err(StoreError::InvalidVersion(s.to_string())),
            },
        }
    }
}

/// A parsed, valid Avro schema with its canonical text (object keys sorted, no whitespace),
/// which identifies it: the same schema registered twice gets the same id.
pub struct ValidSchema {
    pub parsed: Schema,
    pub canonical: String,
}

impl ValidSchema {
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let json: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| StoreError::InvalidSchema(format!("not JSON: {e}")))?;
        let parsed = Schema::parse(&json).map_err(|e| StoreError::InvalidSchema(e.to_string()))?;
        Ok(ValidSchema {
            parsed,
            canonical: sorted(&json).to_string(),
        })
    }
}

fn sorted(json: &serde_json::Value) -> serde_json::Value {
    match json {
        serde_json::Value::Object(map) => {
            let ordered: BTreeMap<&String, serde_json::Value> =
                map.iter().map(|(k, v)| (k, sorted(v))).collect();
            serde_json::Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(sorted).collect())
        }
        other => other.clone(),
    }
}

/// The registry's PostgreSQL store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store { pool }
    }

    /// Registers `schema` under `subject` and returns its global id. Returns the existing id if
    /// the subject already holds the schema; refuses a schema incompatible under the subject's level.
    pub async fn register(
        &self,
        subject: &str,
        schema: &ValidSchema,
        original: &str,
    ) -> Result<i32, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Registrations are rare: serialize them, so ids and versions are allocated without gaps or races.
        sqlx::query("SELECT pg_advisory_xact_lock(8081)")
            .execute(&mut *tx)
            .await?;
        let existing: Option<i32> =
            sqlx::query_scalar("SELECT id FROM sr_schemas WHERE canonical = $1")
                .bind(&schema.canonical)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(id) = existing {
            let under_subject: Option<i32> = sqlx::query_scalar(
                "SELECT version FROM sr_subject_versions WHERE subject = $1 AND schema_id = $2 AND NOT deleted",
            )
            .bind(subject)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if under_subject.is_some() {
                return Ok(id);
            }
        }
        let earlier: Vec<String> = sqlx::query_scalar(
            "SELECT s.schema FROM sr_subject_versions v JOIN sr_schemas s ON s.id = v.schema_id
             WHERE v.subject = $1 AND NOT v.deleted ORDER BY v.version",
        )
        .bind(subject)
        .fetch_all(&mut *tx)
        .await?;
        let earlier = parse_stored(subject, &earlier)?;
        let level = self.effective_config(subject).await?;
        check_compatibility(level, &schema.parsed, &earlier)
            .map_err(|details| StoreError::Incompatible(subject.to_string(), details))?;
        let id = match existing {
            Some(id) => id,
            None => {
                let id: i32 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM sr_schemas")
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO sr_schemas (id, schema_type, schema, canonical) VALUES ($1, 'AVRO', $2, $3)")
                    .bind(id)
                    .bind(original)
                    .bind(&schema.canonical)
                    .execute(&mut *tx)
                    .await?;
                id
            }
        };
        sqlx::query(
            "INSERT INTO sr_subject_versions (subject, version, schema_id)
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2 FROM sr_subject_versions WHERE subject = $1",
        )
        .bind(subject)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(subject, schema_id = id, "registered schema");
        Ok(id)
    }

    /// The version of `subject` that holds `schema` (soft-deleted ones too with `deleted`).
    pub async fn lookup(
        &self,
        subject: &str,
        schema: &ValidSchema,
        deleted: bool,
    ) -> Result<SubjectVersion, StoreError> {
        self.versions(subject, deleted).await?;
        sqlx::query_as::<_, (String, i32, i32, String)>(
            "SELECT v.subject, v.version, s.id, s.schema FROM sr_subject_versions v
             JOIN sr_schemas s ON s.id = v.schema_id
             WHERE v.subject = $1 AND s.canonical = $2 AND ($3 OR NOT v.deleted)
             ORDER BY v.version DESC LIMIT 1",
        )
        .bind(subject)
        .bind(&schema.canonical)
        .bind(deleted)
        .fetch_optional(&self.pool)
        .await?
        .map(subject_version)
        .ok_or_else(|| StoreError::SchemaNotFound(String::new()))
    }

    pub async fn schema_by_id(&self, id: i32) -> Result<String, StoreError> {
        sqlx::query_scalar("SELECT schema FROM sr_schemas WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::SchemaNotFound(id.to_string()))
    }

    /// Subjects with a live version (or any version, with `deleted`).
    pub async fn subjects(&self, deleted: bool) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT subject FROM sr_subject_versions WHERE $1 OR NOT deleted ORDER BY subject",
        )
        .bind(deleted)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The live versions of `subject` (soft-deleted ones too with `deleted`); 40401 if none.
    pub async fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<i32>, StoreError> {
        let versions: Vec<i32> = sqlx::query_scalar(
            "SELECT version FROM sr_subject_versions WHERE subject = $1 AND ($2 OR NOT deleted) ORDER BY version",
        )
        .bind(subject)
        .bind(deleted)
        .fetch_all(&self.pool)
        .await?;
        if versions.is_empty() {
            return Err(StoreError::SubjectNotFound(subject.to_string()));
        }
        Ok(versions)
    }

    /// One version of `subject` (a soft-deleted one too with `deleted`).
    pub async fn version(
        &self,
        subject: &str,
        selector: VersionSelector,
        deleted: bool,
    ) -> Result<SubjectVersion, StoreError> {
        self.versions(subject, deleted).await?;
        let number = match selector {
            VersionSelector::Latest => None,
            VersionSelector::Number(n) => Some(n),
        };
        sqlx::query_as::<_, (String, i32, i32, String)>(
            "SELECT v.subject, v.version, s.id, s.schema FROM sr_subject_versions v
             JOIN sr_schemas s ON s.id = v.schema_id
             WHERE v.subject = $1 AND ($3 OR NOT v.deleted) AND ($2::INT IS NULL OR v.version = $2)
             ORDER BY v.version DESC LIMIT 1",
        )
        .bind(subject)
        .bind(number)
        .bind(deleted)
        .fetch_optional(&self.pool)
        .await?
        .map(subject_version)
        .ok_or_else(|| {
            let shown = number.map_or("latest".to_string(), |n| n.to_string());
            StoreError::VersionNotFound(subject.to_string(), shown)
        })
    }

    /// Soft-deletes every live version of `subject`, or (`permanent`) removes a subject whose
    /// versions were all soft-deleted first. Returns the versions deleted.
    pub async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<i32>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(8081)")
            .execute(&mut *tx)
            .await?;
        let all: Vec<(i32, bool)> = sqlx::query_as(
            "SELECT version, deleted FROM sr_subject_versions WHERE subject = $1 ORDER BY version",
        )
        .bind(subject)
        .fetch_all(&mut *tx)
        .await?;
        if all.is_empty() {
            return Err(StoreError::SubjectNotFound(subject.to_string()));
        }
        let live: Vec<i32> = all.iter().filter(|(_, d)| !d).map(|(v, _)| *v).collect();
        let deleted = if permanent {
            if !live.is_empty() {
                return Err(StoreError::SubjectNotSoftDeleted(subject.to_string()));
            }
            sqlx::query("DELETE FROM sr_subject_versions WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM sr_config WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            all.iter().map(|(v, _)| *v).collect()
        } else {
            if live.is_empty() {
                return Err(StoreError::SubjectSoftDeleted(subject.to_string()));
            }
            sqlx::query("UPDATE sr_subject_versions SET deleted = true WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            live
        };
        tx.commit().await?;
        tracing::info!(subject, permanent, versions = ?deleted, "deleted subject");
        Ok(deleted)
    }

    /// Soft-deletes one version, or (`permanent`) removes a version soft-deleted first.
    pub async fn delete_version(
        &self,
        subject: &str,
        selector: VersionSelector,
        permanent: bool,
    ) -> Result<i32, StoreError> {
        // A numbered version is found even when soft-deleted (to answer 40406); `latest` means
        // the latest live version for a soft delete.
        let include_deleted = permanent || matches!(selector, VersionSelector::Number(_));
        let found = self.version(subject, selector, include_deleted).await?;
        let was_deleted: bool = sqlx::query_scalar(
            "SELECT deleted FROM sr_subject_versions WHERE subject = $1 AND version = $2",
        )
        .bind(subject)
        .bind(found.version)
        .fetch_one(&self.pool)
        .await?;
        let statement = match (permanent, was_deleted) {
            (false, true) => {
                return Err(StoreError::VersionSoftDeleted(
                    subject.to_string(),
                    found.version,
                ));
            }
            (true, false) => {
                return Err(StoreError::VersionNotSoftDeleted(
                    subject.to_string(),
                    found.version,
                ));
            }
            (false, false) => {
                "UPDATE sr_subject_versions SET deleted = true WHERE subject = $1 AND version = $2"
            }
            (true, true) => "DELETE FROM sr_subject_versions WHERE subject = $1 AND version = $2",
        };
        sqlx::query(statement)
            .bind(subject)
            .bind(found.version)
            .execute(&self.pool)
            .await?;
        tracing::info!(
            subject,
            version = found.version,
            permanent,
            "deleted subject version"
        );
        Ok(found.version)
    }

    /// Whether `schema` could be registered under `subject`: against one version with
    /// `Some(selector)`, or against the versions the subject's level names with `None`.
    pub async fn test_compatibility(
        &self,
        subject: &str,
        schema: &ValidSchema,
        selector: Option<VersionSelector>,
    ) -> Result<Result<(), String>, StoreError> {
        let level = self.effective_config(subject).await?;
        let mut conn = self.pool.acquire().await?;
        let earlier = match selector {
            None => live_schemas(&mut conn, subject, None).await?,
            Some(selector) => {
                let found = self.version(subject, selector, false).await?;
                let one = live_schemas(&mut conn, subject, Some(found.version)).await?;
                // Against a single version, transitivity does not apply.
                return Ok(check_compatibility(
                    level.against_one(),
                    &schema.parsed,
                    &one,
                ));
            }
        };
        Ok(check_compatibility(level, &schema.parsed, &earlier))
    }

    /// Removes the subject's own level; returns it.
    pub async fn delete_config(&self, subject: &str) -> Result<String, StoreError> {
        sqlx::query_scalar("DELETE FROM sr_config WHERE subject = $1 RETURNING compatibility")
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::SubjectNotFound(subject.to_string()))
    }

    /// The level set on `subject` (or globally with `None`), if any.
    pub async fn config(&self, subject: Option<&str>) -> Result<Option<Level>, StoreError> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT compatibility FROM sr_config WHERE subject = $1")
                .bind(subject.unwrap_or(GLOBAL))
                .fetch_optional(&self.pool)
                .await?;
        stored
            .map(|level| {
                level.parse().map_err(|_| {
                    StoreError::Corrupt(
                        subject.unwrap_or("(global)").to_string(),
                        format!("unknown compatibility level {level:?}"),
                    )
                })
            })
            .transpose()
    }

    /// The subject's level, falling back to the global one, then to BACKWARD.
    pub async fn effective_config(&self, subject: &str) -> Result<Level, StoreError> {
        if let Some(level) = self.config(Some(subject)).await? {
            return Ok(level);
        }
        Ok(self.config(None).await?.unwrap_or(DEFAULT_COMPATIBILITY))
    }

    pub async fn set_config(&self, subject: Option<&str>, level: Level) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sr_config (subject, compatibility) VALUES ($1, $2)
             ON CONFLICT (subject) DO UPDATE SET compatibility = EXCLUDED.compatibility",
        )
        .bind(subject.unwrap_or(GLOBAL))
        .bind(level.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The parsed live schemas of `subject`, oldest first (only `version` with `Some`).
async fn live_schemas(
    conn: &mut sqlx::PgConnection,
    subject: &str,
    version: Option<i32>,
) -> Result<Vec<Schema>, StoreError> {
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT s.schema FROM sr_subject_versions v JOIN sr_schemas s ON s.id = v.schema_id
         WHERE v.subject = $1 AND NOT v.deleted AND ($2::INT IS NULL OR v.version = $2) ORDER BY v.version",
    )
    .bind(subject)
    .bind(version)
    .fetch_all(conn)
    .await?;
    parse_stored(subject, &texts)
}

/// The stored schemas of `subject`, parsed; one that does not parse is an error, not skipped
/// (a compatibility check without it would let an incompatible version in).
fn parse_stored(subject: &str, texts: &[String]) -> Result<Vec<Schema>, StoreError> {
    texts
        .iter()
        .map(|text| {
            Schema::parse_str(text)
                .map_err(|e| StoreError::Corrupt(subject.to_string(), e.to_string()))
        })
        .collect()
}

fn subject_version((subject, version, id, schema): (String, i32, i32, String)) -> SubjectVersion {
    SubjectVersion {
        subject,
        version,
        id,
        schema,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_schema_that_does_not_parse_is_an_error_naming_the_subject() {
        let good = r#"{"type": "record", "name": "A", "fields": []}"#.to_string();
        assert_eq!(
            parse_stored("a-value", std::slice::from_ref(&good))
                .map(|v| v.len())
                .ok(),
            Some(1)
        );
        let error = parse_stored("a-value", &[good, "{not avro".into()]).unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt(s, _) if s == "a-value"),
            "{error}"
        );
        assert_eq!(error.codes(), (500, 50001));
    }
}

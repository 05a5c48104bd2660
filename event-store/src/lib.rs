//! The Postgres event store, the system of record: one stream per aggregate with optimistic
//! concurrency on `(aggregate_id, aggregate_version)`, the transactional outbox that the
//! relay publishes from, idempotency keys and unique patient identifiers, and the reads a
//! rebuild needs (every published event in order).
//!
//! **Invariant:** this crate is the only code that names the `events`, `outbox`,
//! `idempotency_keys` and `patient_identifiers` tables.

use std::collections::{HashMap, HashSet};

use events::{Actor, Envelope};
use platform::db::Migration;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

pub mod group;

pub use group::GroupCommit;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event store and outbox",
        sql: "CREATE TABLE events (
            global_position BIGSERIAL UNIQUE,
            event_id UUID PRIMARY KEY,
            aggregate_type TEXT NOT NULL,
            aggregate_id UUID NOT NULL,
            aggregate_version BIGINT NOT NULL CHECK (aggregate_version > 0),
            event_type TEXT NOT NULL,
            payload JSONB NOT NULL,
            occurred_at TIMESTAMPTZ NOT NULL,
            correlation_id TEXT NOT NULL,
            causation_id TEXT,
            actor_id TEXT NOT NULL,
            actor_role TEXT NOT NULL,
            traceparent TEXT,
            UNIQUE (aggregate_id, aggregate_version));
          CREATE TABLE outbox (
            id BIGSERIAL PRIMARY KEY,
            event_id UUID NOT NULL REFERENCES events (event_id),
            aggregate_id UUID NOT NULL,
            topic TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            published_at TIMESTAMPTZ,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT);
          CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;",
    },
    Migration {
        version: 2,
        name: "idempotency keys",
        sql: "CREATE TABLE idempotency_keys (
            principal TEXT NOT NULL,
            key TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            status SMALLINT NOT NULL,
            body JSONB NOT NULL,
            location TEXT,
            etag TEXT,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (principal, key));
          CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
          CREATE INDEX events_aggregate_type ON events (aggregate_id, aggregate_type);",
    },
    Migration {
        version: 3,
        name: "unique patient identifiers",
        // Filled from each patient's latest event; were two patients ever given the same
        // identifier, the earlier registered keeps it.
        sql: "CREATE TABLE patient_identifiers (
            system TEXT NOT NULL,
            value TEXT NOT NULL,
            patient_id UUID NOT NULL,
            PRIMARY KEY (system, value));
          CREATE INDEX patient_identifiers_patient ON patient_identifiers (patient_id);
          INSERT INTO patient_identifiers (system, value, patient_id)
          SELECT i->>'system', i->>'value', latest.aggregate_id
          FROM (SELECT DISTINCT ON (aggregate_id) aggregate_id, payload FROM events
                WHERE aggregate_type = 'patient'
                ORDER BY aggregate_id, aggregate_version DESC) latest,
               jsonb_array_elements(latest.payload->'identifiers') i
          ORDER BY latest.aggregate_id
          ON CONFLICT DO NOTHING;",
    },
    Migration {
        version: 4,
        name: "identifiers compared normalised",
        // Keeps IDENTIFIER_SYSTEM_KEY and IDENTIFIER_VALUE_KEY's forms; where two patients'
        // identifiers become one, the earlier registered keeps it.
        sql: "CREATE TABLE patient_identifier_keys (
            system TEXT NOT NULL,
            value TEXT NOT NULL,
            patient_id UUID NOT NULL,
            PRIMARY KEY (system, value));
          INSERT INTO patient_identifier_keys (system, value, patient_id)
          SELECT lower(normalize(system, NFKC)),
                 upper(regexp_replace(normalize(value, NFKC), '[[:space:]./-]', '', 'g')),
                 patient_id
          FROM patient_identifiers ORDER BY patient_id
          ON CONFLICT DO NOTHING;
          DROP TABLE patient_identifiers;
          ALTER TABLE patient_identifier_keys RENAME TO patient_identifiers;
          ALTER INDEX patient_identifier_keys_pkey RENAME TO patient_identifiers_pkey;
          CREATE INDEX patient_identifiers_patient ON patient_identifiers (patient_id);",
    },
    Migration {
        version: 5,
        name: "outbox rows found by event",
        // Reads of published events (a rebuild's batches, `published_after`) join the outbox
        // on `event_id`: without this index every batch hashed the whole outbox, so a rebuild
        // slowed as the store grew.
        sql: "CREATE INDEX outbox_event ON outbox (event_id);",
    },
];

/// An event to append, with the topic it is published on (`None`: kept in the store only).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub envelope: Envelope,
    pub payload: serde_json::Value,
    pub topic: Option<&'static str>,
}

/// New events for one stream, which must be at `expected_version`.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub aggregate_type: &'static str,
    pub aggregate_id: Uuid,
    pub expected_version: i64,
    pub events: Vec<NewEvent>,
}

/// The response to a command sent with an `Idempotency-Key`, stored with its events so that
/// a retry gets the same answer and writes nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub principal: String,
    pub key: String,
    pub request_hash: String,
    pub status: u16,
    pub body: serde_json::Value,
    pub location: Option<String>,
    pub etag: Option<String>,
}

/// An event read back from a stream.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub envelope: Envelope,
    pub payload: serde_json::Value,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// 409: another writer got there first; names the stream (an append may span several)
    /// and carries its current version.
    #[error("version conflict: the {aggregate_type} is at version {current}")]
    Conflict {
        aggregate_type: &'static str,
        current: i64,
    },
    /// The same idempotency key was committed by a concurrent request: replay its response.
    #[error("the request was already processed")]
    AlreadyProcessed,
    /// 409: a business identifier (system + value) belongs to another patient.
    #[error("an identifier of system {system} belongs to another patient")]
    IdentifierTaken { system: String },
    /// 503: the store is unreachable or failed.
    #[error("event store failure: {0}")]
    Store(#[from] sqlx::Error),
}

/// How uniqueness compares identifier systems (SQL over `system`): Unicode compatibility
/// normalisation and lower case, so `URN:OID:…` is `urn:oid:…`.
const IDENTIFIER_SYSTEM_KEY: &str = "lower(normalize(system, NFKC))";
/// How uniqueness compares identifier values (SQL over `value`): Unicode compatibility
/// normalisation (full-width digits are digits), without spaces, dots, slashes or dashes, in
/// upper case, so `123-45-6789`, `123456789` and `１２３-45-6789` are one SSN.
const IDENTIFIER_VALUE_KEY: &str =
    "upper(regexp_replace(normalize(value, NFKC), '[[:space:]./-]', '', 'g'))";

/// The identifiers (systems, values) a patient stream's latest event gives the patient; `None`
/// when the stream is not a patient's or its latest event does not set them.
fn identifiers_claimed(stream: &StreamAppend) -> Option<(Vec<&str>, Vec<&str>)> {
    let identifiers = (stream.aggregate_type == "patient")
        .then(|| stream.events.last())
        .flatten()
        .and_then(|e| e.payload.get("identifiers"))
        .and_then(|i| i.as_array())?;
    Some(
        identifiers
            .iter()
            .filter_map(|i| Some((i.get("system")?.as_str()?, i.get("value")?.as_str()?)))
            .unzip(),
    )
}

/// Makes a patient's business identifiers (system + value) theirs alone: the set their latest
/// event carries replaces what they held. One held by another patient fails the append (the
/// unique key makes a concurrent claim wait for the first and then fail).
async fn claim_identifiers(
    tx: &mut PgConnection,
    stream: &StreamAppend,
) -> Result<(), AppendError> {
    let Some((systems, values)) = identifiers_claimed(stream) else {
        return Ok(());
    };
    sqlx::query("DELETE FROM patient_identifiers WHERE patient_id = $1")
        .bind(stream.aggregate_id)
        .execute(&mut *tx)
        .await?;
    let taken: Option<String> = sqlx::query_scalar(&format!(
        "WITH given AS (SELECT * FROM UNNEST($2::text[], $3::text[]) AS g (system, value)),
              wanted AS (SELECT DISTINCT ON (key_system, key_value) g.system AS given_system,
                                {IDENTIFIER_SYSTEM_KEY} AS key_system, {IDENTIFIER_VALUE_KEY} AS key_value
                         FROM given g ORDER BY key_system, key_value),
              claimed AS (INSERT INTO patient_identifiers (system, value, patient_id)
                          SELECT key_system, key_value, $1 FROM wanted
                          ON CONFLICT (system, value) DO NOTHING RETURNING system, value)
         SELECT w.given_system FROM wanted w
         WHERE NOT EXISTS (SELECT 1 FROM claimed c WHERE c.system = w.key_system AND c.value = w.key_value)
         ORDER BY w.given_system LIMIT 1"
    ))
    .bind(stream.aggregate_id)
    .bind(&systems)
    .bind(&values)
    .fetch_optional(&mut *tx)
    .await?;
    match taken {
        Some(system) => Err(AppendError::IdentifierTaken { system }),
        None => Ok(()),
    }
}

/// The event store.
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
    group: Option<group::Committer>,
}

/// An outbox row leased for publication, with its event.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub outbox_id: i64,
    pub topic: String,
    pub traceparent: Option<String>,
    pub event: StoredEvent,
}

/// The event columns every read of the store selects (table alias `e`).
const EVENT_COLUMNS: &str =
    "e.event_id, e.event_type, e.aggregate_id, e.aggregate_version, e.occurred_at,
    e.correlation_id, e.causation_id, e.actor_id, e.actor_role, e.payload";

fn stored_event(row: &PgRow) -> Result<StoredEvent, sqlx::Error> {
    let role: String = row.try_get("actor_role")?;
    Ok(StoredEvent {
        envelope: Envelope {
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            aggregate_version: row.try_get("aggregate_version")?,
            occurred_at: row.try_get("occurred_at")?,
            correlation_id: row.try_get("correlation_id")?,
            causation_id: row.try_get("causation_id")?,
            actor: Actor {
                id: row.try_get("actor_id")?,
                role: role
                    .parse()
                    .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            },
        },
        payload: row.try_get("payload")?,
    })
}

/// The relay's advisory-lock namespace (first key of `pg_try_advisory_xact_lock(int, int)`).
pub const RELAY_LOCK_SPACE: i32 = 8082;
/// Aggregates are leased in this many buckets: a relay transaction holds at most this many
/// advisory locks, however large the backlog.
pub const RELAY_LOCK_BUCKETS: u32 = 64;

/// The lease bucket of an aggregate (every event of an aggregate is in the same bucket).
pub fn lease_bucket(aggregate_id: Uuid) -> i32 {
    let bits = aggregate_id.as_u128();
    (((bits >> 64) as u64 ^ bits as u64) % u64::from(RELAY_LOCK_BUCKETS)) as i32
}

/// Leases about `limit` unpublished outbox rows, oldest first, for the length of `tx`,
/// skipping the aggregates in `skip` (those the caller is backing off from).
///
/// The lease is per bucket of aggregates (a transaction-scoped advisory lock on
/// `(RELAY_LOCK_SPACE, lease_bucket(aggregate))`): a relay skips every row of a bucket another
/// relay holds, so two relays never publish events of one aggregate at the same time, and
/// per-aggregate order holds with several relays. Locks are taken only on the buckets of a
/// bounded window of candidate rows, never per scanned row, so one lease holds at most
/// [`RELAY_LOCK_BUCKETS`] locks whatever the backlog. Buckets another relay holds are passed
/// over, so several relays share a backlog. (Relays of earlier releases locked per aggregate
/// and do not exclude these: stop them before starting these.)
///
/// No committed row is skipped: an aggregate's later event commits only after its earlier one
/// (optimistic concurrency), so when a later row is a candidate every earlier unpublished row
/// of its aggregate is one too, and the rows are re-read under the locks with a fresh snapshot.
pub async fn lease_unpublished(
    tx: &mut PgConnection,
    limit: i64,
    skip: &[Uuid],
) -> Result<Vec<OutboxEntry>, sqlx::Error> {
    // 1. A bounded window of the oldest unpublished rows; no locks.
    let candidates: Vec<(i64, Uuid)> = sqlx::query_as(
        "SELECT id, aggregate_id FROM outbox
         WHERE published_at IS NULL AND aggregate_id <> ALL($2)
         ORDER BY id LIMIT $1",
    )
    .bind(limit.saturating_mul(2))
    .bind(skip)
    .fetch_all(&mut *tx)
    .await?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    // 2. The buckets of the oldest rows, in order of first appearance, tried until the locked
    //    ones hold `limit` rows; a bucket another relay holds is passed over, so several relays
    //    share the window.
    let mut rows_in: HashMap<i32, i64> = HashMap::new();
    let mut order = Vec::new();
    for (_, aggregate) in &candidates {
        let bucket = lease_bucket(*aggregate);
        let count = rows_in.entry(bucket).or_insert(0);
        if *count == 0 {
            order.push(bucket);
        }
        *count += 1;
    }
    let mut locked: HashSet<i32> = HashSet::new();
    let mut rows = 0;
    let mut untried = order.as_slice();
    while rows < limit && !untried.is_empty() {
        // As many buckets as would reach `limit` if every lock were granted.
        let mut wanted = 0;
        let mut would = rows;
        while wanted < untried.len() && would < limit {
            would += rows_in[&untried[wanted]];
            wanted += 1;
        }
        let (attempt, rest) = untried.split_at(wanted);
        untried = rest;
        let granted: Vec<i32> = sqlx::query_scalar(
            "SELECT b FROM UNNEST($1::INT4[]) AS t (b) WHERE pg_try_advisory_xact_lock($2, b)",
        )
        .bind(attempt)
        .bind(RELAY_LOCK_SPACE)
        .fetch_all(&mut *tx)
        .await?;
        rows += granted.iter().map(|b| rows_in[b]).sum::<i64>();
        locked.extend(granted);
    }
    let ids: Vec<i64> = candidates
        .iter()
        .filter(|(_, aggregate)| locked.contains(&lease_bucket(*aggregate)))
        .map(|(id, _)| *id)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // 3. The leased rows with their events, re-read under the locks (a row another relay
    //    published since step 1 is gone from `published_at IS NULL`).
    sqlx::query(&format!(
        "SELECT o.id, o.topic, e.traceparent, {EVENT_COLUMNS}
         FROM outbox o JOIN events e ON e.event_id = o.event_id
         WHERE o.id = ANY($1) AND o.published_at IS NULL
         ORDER BY o.id
         FOR UPDATE OF o"
    ))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|row| {
        Ok(OutboxEntry {
            outbox_id: row.try_get("id")?,
            topic: row.try_get("topic")?,
            traceparent: row.try_get("traceparent")?,
            event: stored_event(row)?,
        })
    })
    .collect()
}

/// Marks outbox rows as published (after the broker acknowledged them).
pub async fn mark_published(tx: &mut PgConnection, outbox_ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY($1)",
    )
    .bind(outbox_ids)
    .execute(tx)
    .await
    .map(|_| ())
}

/// Records a failed publication attempt; the row stays unpublished.
pub async fn mark_failed(
    tx: &mut PgConnection,
    outbox_id: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1")
        .bind(outbox_id)
        .bind(error)
        .execute(tx)
        .await
        .map(|_| ())
}

/// Which of `aggregates` still have unpublished outbox rows.
pub async fn unpublished_aggregates(
    pool: &PgPool,
    aggregates: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT aggregate_id FROM outbox
         WHERE published_at IS NULL AND aggregate_id = ANY($1)",
    )
    .bind(aggregates)
    .fetch_all(pool)
    .await
    .map(|ids| ids.into_iter().collect())
}

/// Unpublished outbox rows and the age in seconds of the oldest (for the relay's gauges).
pub async fn outbox_backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    let (depth, age): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8
         FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok((depth, age.unwrap_or(0.0)))
}

/// Appends to one or more streams in a transaction of their own (see [`EventStore::append`]).
async fn append_alone(
    pool: &PgPool,
    streams: &[StreamAppend],
    traceparent: Option<&str>,
    response: Option<&StoredResponse>,
) -> Result<(), AppendError> {
    let mut tx = pool.begin().await?;
    if let Some(r) = response {
        let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (principal, key, request_hash, status, body, location, etag)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(&r.principal)
            .bind(&r.key)
            .bind(&r.request_hash)
            .bind(r.status as i16)
            .bind(&r.body)
            .bind(&r.location)
            .bind(&r.etag)
            .execute(&mut *tx)
            .await?;
        if inserted.rows_affected() == 0 {
            return Err(AppendError::AlreadyProcessed);
        }
    }
    for stream in streams {
        for (i, event) in stream.events.iter().enumerate() {
            let e = &event.envelope;
            let inserted = sqlx::query(
                    "INSERT INTO events (event_id, aggregate_type, aggregate_id, aggregate_version, event_type,
                                         payload, occurred_at, correlation_id, causation_id, actor_id, actor_role, traceparent)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (aggregate_id, aggregate_version) DO NOTHING",
                )
                .bind(e.event_id)
                .bind(stream.aggregate_type)
                .bind(stream.aggregate_id)
                .bind(e.aggregate_version)
                .bind(&e.event_type)
                .bind(&event.payload)
                .bind(e.occurred_at)
                .bind(&e.correlation_id)
                .bind(&e.causation_id)
                .bind(&e.actor.id)
                .bind(e.actor.role.as_str())
                .bind(traceparent)
                .execute(&mut *tx)
                .await?;
            if inserted.rows_affected() == 0
                || e.aggregate_version != stream.expected_version + i as i64 + 1
            {
                drop(tx);
                return Err(AppendError::Conflict {
                    aggregate_type: stream.aggregate_type,
                    current: stream_version(pool, stream.aggregate_id).await?,
                });
            }
            if let Some(topic) = event.topic {
                sqlx::query(
                    "INSERT INTO outbox (event_id, aggregate_id, topic) VALUES ($1, $2, $3)",
                )
                .bind(e.event_id)
                .bind(stream.aggregate_id)
                .bind(topic)
                .execute(&mut *tx)
                .await?;
            }
        }
        claim_identifiers(&mut tx, stream).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The current version of a stream (0 if it does not exist).
async fn stream_version(pool: &PgPool, aggregate_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(MAX(aggregate_version), 0) FROM events WHERE aggregate_id = $1",
    )
    .bind(aggregate_id)
    .fetch_one(pool)
    .await
}

impl EventStore {
    /// Each append in a transaction of its own.
    pub fn new(pool: PgPool) -> Self {
        EventStore { pool, group: None }
    }

    /// Concurrent appends share transactions, up to `config.max_batch` in one and
    /// `config.in_flight` transactions at once (must be called within a Tokio runtime).
    pub fn with_group_commit(pool: PgPool, config: GroupCommit) -> Self {
        let group = (config.max_batch > 1).then(|| group::Committer::spawn(pool.clone(), config));
        EventStore { pool, group }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The stream of one aggregate of `aggregate_type`, oldest first (empty if it does not exist).
    pub async fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: Uuid,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.aggregate_id = $1 AND e.aggregate_type = $2
             ORDER BY e.aggregate_version"
        ))
        .bind(aggregate_id)
        .bind(aggregate_type)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(stored_event)
        .collect()
    }

    /// Appends to one or more streams in one transaction, with the events' outbox rows and,
    /// if given, the idempotent response (first, so that a concurrent duplicate waits for this
    /// transaction and then finds the key taken). With group commit, concurrent appends share
    /// a transaction (see [`group`]); each still succeeds or fails on its own.
    pub async fn append(
        &self,
        streams: Vec<StreamAppend>,
        traceparent: Option<String>,
        response: Option<StoredResponse>,
    ) -> Result<(), AppendError> {
        match &self.group {
            Some(committer) => {
                committer
                    .append(group::Append {
                        streams,
                        traceparent,
                        response,
                    })
                    .await
            }
            None => {
                append_alone(
                    &self.pool,
                    &streams,
                    traceparent.as_deref(),
                    response.as_ref(),
                )
                .await
            }
        }
    }

    /// The stored response for `(principal, key)`, if a request with that key committed.
    pub async fn stored_response(
        &self,
        principal: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT request_hash, status, body, location, etag FROM idempotency_keys WHERE principal = $1 AND key = $2",
        )
        .bind(principal)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(StoredResponse {
                principal: principal.to_string(),
                key: key.to_string(),
                request_hash: row.try_get("request_hash")?,
                status: row.try_get::<i16, _>("status")? as u16,
                body: row.try_get("body")?,
                location: row.try_get("location")?,
                etag: row.try_get("etag")?,
            })
        })
        .transpose()
    }

    /// Forgets idempotency keys older than `max_age` (clients retry within minutes, not days).
    pub async fn expire_idempotency_keys(
        &self,
        max_age: chrono::Duration,
    ) -> Result<u64, sqlx::Error> {
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - $1::INTERVAL")
            .bind(format!("{} seconds", max_age.num_seconds()))
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
    }

    /// Whether an aggregate of `aggregate_type` with this id exists.
    pub async fn exists(
        &self,
        aggregate_type: &str,
        aggregate_id: Uuid,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_id = $1 AND aggregate_type = $2)",
        )
        .bind(aggregate_id)
        .bind(aggregate_type)
        .fetch_one(&self.pool)
        .await
    }

    /// The current version of a stream (0 if it does not exist).
    pub async fn version(&self, aggregate_id: Uuid) -> Result<i64, sqlx::Error> {
        stream_version(&self.pool, aggregate_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aggregate_always_leases_in_one_bucket_and_buckets_spread() {
        let ids: Vec<Uuid> = (0..4_096).map(|_| Uuid::now_v7()).collect();
        let mut used = HashSet::new();
        for id in &ids {
            let bucket = lease_bucket(*id);
            assert_eq!(bucket, lease_bucket(*id));
            assert!((0..RELAY_LOCK_BUCKETS as i32).contains(&bucket));
            used.insert(bucket);
        }
        // Time-ordered ids (v7, as the command API makes) still use every bucket.
        assert_eq!(used.len(), RELAY_LOCK_BUCKETS as usize);
    }
}

/// An event as it was published: its place in the store, its topic and the event.
#[derive(Debug, Clone)]
pub struct PublishedEvent {
    pub position: i64,
    pub topic: String,
    pub event: StoredEvent,
}

impl PublishedEvent {
    /// The topic record it was published as: the envelope's fields and the event's own.
    pub fn record(&self) -> serde_json::Value {
        let mut json = serde_json::to_value(&self.event.envelope).unwrap_or_default();
        if let (Some(record), serde_json::Value::Object(fields)) =
            (json.as_object_mut(), &self.event.payload)
        {
            record.extend(fields.clone());
        }
        json
    }
}

fn published(row: &PgRow) -> Result<PublishedEvent, sqlx::Error> {
    Ok(PublishedEvent {
        position: row.try_get("global_position")?,
        topic: row.try_get("topic")?,
        event: stored_event(row)?,
    })
}

/// Events on `topics` after store position `after`, in position order, at most `limit`.
pub async fn published_after(
    pool: &PgPool,
    topics: &[&str],
    after: i64,
    limit: i64,
) -> Result<Vec<PublishedEvent>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT e.global_position, o.topic, {EVENT_COLUMNS} FROM events e JOIN outbox o ON o.event_id = e.event_id
         WHERE o.topic = ANY($1) AND e.global_position > $2 ORDER BY e.global_position LIMIT $3"
    ))
    .bind(topics)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(published)
    .collect()
}

/// Every event on `topics` of the aggregates `ids`, in position order.
pub async fn published_streams(
    pool: &PgPool,
    topics: &[&str],
    ids: &[Uuid],
) -> Result<Vec<PublishedEvent>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT e.global_position, o.topic, {EVENT_COLUMNS} FROM events e JOIN outbox o ON o.event_id = e.event_id
         WHERE o.topic = ANY($1) AND e.aggregate_id = ANY($2) ORDER BY e.global_position"
    ))
    .bind(topics)
    .bind(ids)
    .fetch_all(pool)
    .await?
    .iter()
    .map(published)
    .collect()
}

/// How many events there are on `topics`.
pub async fn count_published(pool: &PgPool, topics: &[&str]) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM events e JOIN outbox o ON o.event_id = e.event_id WHERE o.topic = ANY($1)",
    )
    .bind(topics)
    .fetch_one(pool)
    .await
}

/// Imports records that were already published elsewhere (topic, record as on the topic) as
/// events of `aggregate_type` with published outbox rows, in one transaction: for loading a
/// store in bulk (benchmarks, migrations from another system), not for commands.
pub async fn import_published(
    pool: &PgPool,
    aggregate_type: &str,
    records: &[(&str, serde_json::Value)],
) -> Result<(), sqlx::Error> {
    let rows: Vec<serde_json::Value> = records
        .iter()
        .map(|(topic, r)| {
            let mut payload = r.clone();
            if let Some(object) = payload.as_object_mut() {
                for key in events::envelope::ENVELOPE_FIELDS {
                    object.remove(key);
                }
            }
            serde_json::json!({
                "event_id": r["event_id"], "aggregate_id": r["aggregate_id"],
                "aggregate_version": r["aggregate_version"], "event_type": r["event_type"], "payload": payload,
                "occurred_at": r["occurred_at"], "correlation_id": r["correlation_id"],
                "causation_id": r["causation_id"],
                "actor_id": r["actor"]["id"], "actor_role": r["actor"]["role"], "topic": topic,
            })
        })
        .collect();
    let rows = serde_json::Value::Array(rows);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, aggregate_version, event_type, payload,
                             occurred_at, correlation_id, causation_id, actor_id, actor_role)
         SELECT (r->>'event_id')::uuid, $2, (r->>'aggregate_id')::uuid,
                (r->>'aggregate_version')::bigint, r->>'event_type', r->'payload', (r->>'occurred_at')::timestamptz,
                r->>'correlation_id', r->>'causation_id', r->>'actor_id', r->>'actor_role'
         FROM jsonb_array_elements($1) r",
    )
    .bind(&rows)
    .bind(aggregate_type)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO outbox (event_id, aggregate_id, topic, published_at)
         SELECT (r->>'event_id')::uuid, (r->>'aggregate_id')::uuid, r->>'topic', now()
         FROM jsonb_array_elements($1) r",
    )
    .bind(&rows)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

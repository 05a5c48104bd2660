//! Group commit: appends from concurrent requests share one transaction, so that many commands
//! cost one commit (one WAL flush) and a handful of set-based statements instead of a
//! transaction and half a dozen round trips each.
//!
//! Appends queue for a committer; each transaction takes every append waiting (up to
//! [`GroupCommit::max_batch`]), with [`GroupCommit::in_flight`] transactions at once. A lone
//! append takes the ordinary path at once, so an idle store adds no latency. A shared
//! transaction commits only if every append in it would have succeeded alone: on any conflict
//! (a stream moved on, an idempotency key or a patient identifier taken, two appends of the batch
//! touching one stream) it is rolled back before anything is visible, and every append of the
//! batch runs again in a transaction of its own, which gives each its own answer. A failed
//! `COMMIT` fails every append of the batch (the outcome is unknown, as for a single append: the
//! clients retry with their idempotency keys); nothing is acknowledged before its commit.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::{
    AppendError, IDENTIFIER_SYSTEM_KEY, IDENTIFIER_VALUE_KEY, StoredResponse, StreamAppend,
    append_alone, identifiers_claimed,
};

/// How concurrent appends share transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// The most appends in one transaction (1: every append alone).
    pub max_batch: usize,
    /// Shared transactions in flight at once.
    pub in_flight: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            max_batch: 64,
            in_flight: 2,
        }
    }
}

/// One append, as [`crate::EventStore::append`] takes it.
pub(crate) struct Append {
    pub streams: Vec<StreamAppend>,
    pub traceparent: Option<String>,
    pub response: Option<StoredResponse>,
}

struct Job {
    append: Append,
    reply: oneshot::Sender<Result<(), AppendError>>,
}

impl Job {
    /// Whether its request still waits for the answer.
    fn wanted(&self) -> bool {
        !self.reply.is_closed()
    }
}

/// Appends of a rolled-back batch re-run alone this many at a time, so that one conflict in a
/// full batch does not take every connection of the pool.
const ALONE_AT_ONCE: usize = 4;

/// The queue to the committers.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    queue: mpsc::Sender<Job>,
}

impl Committer {
    pub(crate) fn spawn(pool: PgPool, config: GroupCommit) -> Self {
        let config = GroupCommit {
            max_batch: config.max_batch.max(1),
            in_flight: config.in_flight.max(1),
        };
        let (queue, jobs) = mpsc::channel(config.max_batch * config.in_flight * 2);
        tokio::spawn(dispatch(pool, config, jobs));
        Committer { queue }
    }

    /// Queues an append and waits for its commit (or its failure).
    pub(crate) async fn append(&self, append: Append) -> Result<(), AppendError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { append, reply })
            .await
            .map_err(|_| AppendError::Store(sqlx::Error::WorkerCrashed))?;
        answer
            .await
            .map_err(|_| AppendError::Store(sqlx::Error::WorkerCrashed))?
    }
}

/// Takes the waiting appends as transactions become free.
async fn dispatch(pool: PgPool, config: GroupCommit, mut jobs: mpsc::Receiver<Job>) {
    let free = Arc::new(Semaphore::new(config.in_flight));
    loop {
        let Ok(slot) = free.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = jobs.recv().await else {
            return;
        };
        // An append whose request gave up (its client left, its deadline passed) is not
        // written: nobody would learn that it was.
        let mut batch: Vec<Job> = std::iter::once(first).filter(Job::wanted).collect();
        while batch.len() < config.max_batch {
            match jobs.try_recv() {
                Ok(job) if job.wanted() => batch.push(job),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            commit(&pool, batch).await;
            drop(slot);
        });
    }
}

/// Commits a batch together if it can, else each append alone; answers every append.
async fn commit(pool: &PgPool, batch: Vec<Job>) {
    if batch.len() > 1 && can_share(&batch) {
        match together(pool, &batch).await {
            Together::Committed => {
                for job in batch {
                    let _ = job.reply.send(Ok(()));
                }
                return;
            }
            Together::CommitFailed(error) => {
                let error = platform::db::loggable(&error);
                tracing::warn!(appends = batch.len(), %error, "group commit failed");
                for job in batch {
                    let _ = job.reply.send(Err(AppendError::Store(sqlx::Error::Io(
                        std::io::Error::other(format!("commit failed: {error}")),
                    ))));
                }
                return;
            }
            Together::RolledBack => {}
        }
    }
    use futures::StreamExt;
    futures::stream::iter(batch.into_iter().filter(Job::wanted).map(|job| async move {
        let Append {
            streams,
            traceparent,
            response,
        } = &job.append;
        let result = append_alone(pool, streams, traceparent.as_deref(), response.as_ref()).await;
        let _ = job.reply.send(result);
    }))
    .buffer_unordered(ALONE_AT_ONCE)
    .for_each(|()| async {})
    .await;
}

/// Whether the batch's appends are independent and well numbered, so that they can share a
/// transaction (if not, each runs alone and gets its own answer).
fn can_share(batch: &[Job]) -> bool {
    let mut streams = HashSet::new();
    let mut keys = HashSet::new();
    batch.iter().all(|job| {
        let append = &job.append;
        append
            .response
            .as_ref()
            .is_none_or(|r| keys.insert((r.principal.as_str(), r.key.as_str())))
            && append.streams.iter().all(|stream| {
                streams.insert(stream.aggregate_id)
                    && stream.events.iter().enumerate().all(|(i, event)| {
                        event.envelope.aggregate_version == stream.expected_version + i as i64 + 1
                    })
            })
    })
}

enum Together {
    Committed,
    /// Nothing was written: run each append alone.
    RolledBack,
    /// `COMMIT` itself failed: the outcome is unknown.
    CommitFailed(sqlx::Error),
}

async fn together(pool: &PgPool, batch: &[Job]) -> Together {
    let Ok(mut tx) = pool.begin().await else {
        return Together::RolledBack;
    };
    match write(&mut tx, batch).await {
        Ok(true) => match tx.commit().await {
            Ok(()) => Together::Committed,
            Err(e) => Together::CommitFailed(e),
        },
        Ok(false) => Together::RolledBack,
        Err(e) => {
            tracing::debug!(error = %platform::db::loggable(&e), "group commit rolled back; appending alone");
            Together::RolledBack
        }
    }
}

/// Writes every append of the batch with one statement per table; `Ok(false)` if any of them
/// would have failed alone (the caller rolls back).
async fn write(tx: &mut PgConnection, batch: &[Job]) -> Result<bool, sqlx::Error> {
    let appends = || batch.iter().map(|job| &job.append);
    let responses: Vec<&StoredResponse> = appends().filter_map(|a| a.response.as_ref()).collect();
    if !responses.is_empty() {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (principal, key, request_hash, status, body, location, etag)
             SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::INT2[], $5::JSONB[], $6::TEXT[], $7::TEXT[])
             ON CONFLICT DO NOTHING",
        )
        .bind(responses.iter().map(|r| r.principal.as_str()).collect::<Vec<_>>())
        .bind(responses.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
        .bind(responses.iter().map(|r| r.request_hash.as_str()).collect::<Vec<_>>())
        .bind(responses.iter().map(|r| r.status as i16).collect::<Vec<_>>())
        .bind(responses.iter().map(|r| &r.body).collect::<Vec<_>>())
        .bind(responses.iter().map(|r| r.location.as_deref()).collect::<Vec<_>>())
        .bind(responses.iter().map(|r| r.etag.as_deref()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != responses.len() as u64 {
            return Ok(false);
        }
    }

    let mut events = EventColumns::default();
    let mut outbox: (Vec<Uuid>, Vec<Uuid>, Vec<&str>) = Default::default();
    for append in appends() {
        for stream in &append.streams {
            for event in &stream.events {
                events.push(stream, event, append.traceparent.as_deref());
                if let Some(topic) = event.topic {
                    outbox.0.push(event.envelope.event_id);
                    outbox.1.push(stream.aggregate_id);
                    outbox.2.push(topic);
                }
            }
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, aggregate_version, event_type,
                             payload, occurred_at, correlation_id, causation_id, actor_id, actor_role, traceparent)
         SELECT * FROM UNNEST($1::UUID[], $2::TEXT[], $3::UUID[], $4::INT8[], $5::TEXT[], $6::JSONB[],
                              $7::TIMESTAMPTZ[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[])
         ON CONFLICT (aggregate_id, aggregate_version) DO NOTHING",
    )
    .bind(&events.event_id)
    .bind(&events.aggregate_type)
    .bind(&events.aggregate_id)
    .bind(&events.aggregate_version)
    .bind(&events.event_type)
    .bind(&events.payload)
    .bind(&events.occurred_at)
    .bind(&events.correlation_id)
    .bind(&events.causation_id)
    .bind(&events.actor_id)
    .bind(&events.actor_role)
    .bind(&events.traceparent)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() != events.event_id.len() as u64 {
        return Ok(false);
    }
    if !outbox.0.is_empty() {
        // In the batch's order, which keeps every stream's events in version order.
        sqlx::query(
            "INSERT INTO outbox (event_id, aggregate_id, topic)
             SELECT e, a, t FROM UNNEST($1::UUID[], $2::UUID[], $3::TEXT[]) WITH ORDINALITY AS x (e, a, t, n)
             ORDER BY n",
        )
        .bind(&outbox.0)
        .bind(&outbox.1)
        .bind(&outbox.2)
        .execute(&mut *tx)
        .await?;
    }

    let mut patients = Vec::new();
    let mut claims: (Vec<Uuid>, Vec<&str>, Vec<&str>) = Default::default();
    for stream in appends().flat_map(|a| &a.streams) {
        if let Some((systems, values)) = identifiers_claimed(stream) {
            patients.push(stream.aggregate_id);
            for (system, value) in systems.into_iter().zip(values) {
                claims.0.push(stream.aggregate_id);
                claims.1.push(system);
                claims.2.push(value);
            }
        }
    }
    if !patients.is_empty() {
        sqlx::query("DELETE FROM patient_identifiers WHERE patient_id = ANY($1)")
            .bind(&patients)
            .execute(&mut *tx)
            .await?;
        // Every wanted identifier must be claimed; one that is taken (by another patient,
        // or by an earlier patient of this batch) sends the batch down the single path,
        // which names it.
        let unclaimed: i64 = sqlx::query_scalar(&format!(
            "WITH given AS (SELECT * FROM UNNEST($1::UUID[], $2::TEXT[], $3::TEXT[]) WITH ORDINALITY AS g (patient_id, system, value, n)),
                  wanted AS (SELECT DISTINCT ON (patient_id, key_system, key_value) patient_id,
                                    {IDENTIFIER_SYSTEM_KEY} AS key_system, {IDENTIFIER_VALUE_KEY} AS key_value, n
                             FROM given ORDER BY patient_id, key_system, key_value, n),
                  claimed AS (INSERT INTO patient_identifiers (system, value, patient_id)
                              SELECT key_system, key_value, patient_id FROM wanted ORDER BY n
                              ON CONFLICT (system, value) DO NOTHING RETURNING 1)
             SELECT (SELECT count(*) FROM wanted) - (SELECT count(*) FROM claimed)"
        ))
        .bind(&claims.0)
        .bind(&claims.1)
        .bind(&claims.2)
        .fetch_one(&mut *tx)
        .await?;
        if unclaimed != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The `events` rows of a batch, column by column (for `UNNEST`).
#[derive(Default)]
struct EventColumns<'a> {
    event_id: Vec<Uuid>,
    aggregate_type: Vec<&'static str>,
    aggregate_id: Vec<Uuid>,
    aggregate_version: Vec<i64>,
    event_type: Vec<&'a str>,
    payload: Vec<&'a serde_json::Value>,
    occurred_at: Vec<DateTime<Utc>>,
    correlation_id: Vec<&'a str>,
    causation_id: Vec<Option<&'a str>>,
    actor_id: Vec<&'a str>,
    actor_role: Vec<&'static str>,
    traceparent: Vec<Option<&'a str>>,
}

impl<'a> EventColumns<'a> {
    fn push(
        &mut self,
        stream: &'a StreamAppend,
        event: &'a crate::NewEvent,
        traceparent: Option<&'a str>,
    ) {
        let e = &event.envelope;
        self.event_id.push(e.event_id);
        self.aggregate_type.push(stream.aggregate_type);
        self.aggregate_id.push(stream.aggregate_id);
        self.aggregate_version.push(e.aggregate_version);
        self.event_type.push(&e.event_type);
        self.payload.push(&event.payload);
        self.occurred_at.push(e.occurred_at);
        self.correlation_id.push(&e.correlation_id);
        self.causation_id.push(e.causation_id.as_deref());
        self.actor_id.push(&e.actor.id);
        self.actor_role.push(e.actor.role.as_str());
        self.traceparent.push(traceparent);
    }
}

//! Read models of versioned aggregates, applied set-based.
//!
//! For a batch: the rows of every aggregate it touches are loaded in one query, together with
//! their held (early) events; each aggregate's events are folded in memory in
//! `aggregate_version` order — a version already applied is a duplicate and is ignored, one
//! whose predecessor has not arrived is held in `projection_pending` until the gap fills —
//! and the changed rows are written back with one statement per table
//! (`jsonb_populate_recordset` upserts). A model only says how one event changes one row.

use std::collections::{BTreeMap, HashMap};

use events::Envelope;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use platform::db::Migration;

use crate::runner::{Outcome, Projection, Record};

/// A record of a versioned aggregate.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    pub topic: String,
    pub envelope: Envelope,
    /// The whole record (envelope and event fields) as JSON.
    pub record: serde_json::Value,
}

impl IncomingEvent {
    pub fn from_record(topic: &str, record: serde_json::Value) -> Result<Self, String> {
        let envelope: Envelope =
            events::typed::from_value(&record).map_err(|e| format!("bad envelope: {e}"))?;
        Ok(IncomingEvent {
            topic: topic.to_string(),
            envelope,
            record,
        })
    }

    /// The event's own fields, typed.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, String> {
        events::typed::from_value(&self.record)
            .map_err(|e| format!("{}: {e}", self.envelope.event_type))
    }
}

/// One table of rows, one per aggregate, each at the version of the last event folded into it.
pub trait StateModel: Send + Sync + 'static {
    /// The row without `id` and `version`; field names are the table's column names.
    type Row: Serialize + DeserializeOwned + Clone + Send + Sync;
    /// The table (in the read-model schema); its key is `id`, it has a `version` column.
    const TABLE: &'static str;
    /// Every column, `id` and `version` included.
    const COLUMNS: &'static [&'static str];

    /// The event types this model folds (their topics are the ones it reads).
    const EVENTS: &'static [events::registry::EventKind];

    /// Whether this model folds records of `topic`.
    fn accepts(&self, topic: &str) -> bool {
        Self::EVENTS.iter().any(|k| k.topic == topic)
    }

    /// How one event changes the row (`None` before the aggregate's first event). No I/O, no
    /// rules: `Err` only for an event this model cannot read (it goes to the dead letters).
    fn fold(&self, row: Option<Self::Row>, event: &IncomingEvent) -> Result<Self::Row, String>;

    /// Runs after the changed rows were written (side tables, denormalized columns).
    fn after_save(
        &self,
        _conn: &mut PgConnection,
        _ids: &[Uuid],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async { Ok(()) }
    }
}

/// A state model that is a whole projection on its own.
pub trait SingleModel: StateModel + Default + Copy {
    /// The projection's name (`patient`); the DLQ is `healthcare.dlq.<name>-projector`.
    const PROJECTION: &'static str;
    /// Its service database, e.g. `patient_service`.
    const DATABASE: &'static str;
    const MIGRATIONS: &'static [Migration];
}

/// The projection of one state model.
#[derive(Debug, Default, Clone, Copy)]
pub struct ModelProjection<M>(pub M);

impl<M: SingleModel> Projection for ModelProjection<M> {
    fn name(&self) -> &'static str {
        M::PROJECTION
    }

    fn database(&self) -> &'static str {
        M::DATABASE
    }

    fn topics(&self) -> Vec<&'static str> {
        M::EVENTS.iter().map(|k| k.topic).collect()
    }

    fn migrations(&self) -> &'static [Migration] {
        M::MIGRATIONS
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        records: &[Record],
    ) -> Result<Outcome, sqlx::Error> {
        apply_state(&self.0, M::PROJECTION, conn, records).await
    }
}

struct Candidate {
    event: IncomingEvent,
    /// Index in the batch, or `None` for an event held from an earlier batch.
    index: Option<usize>,
}

/// Applies the records `model` accepts, in version order per aggregate (see the module docs).
pub async fn apply_state<M: StateModel>(
    model: &M,
    projection: &str,
    conn: &mut PgConnection,
    records: &[Record],
) -> Result<Outcome, sqlx::Error> {
    let mut outcome = Outcome::default();
    let mut by_aggregate: BTreeMap<Uuid, Vec<Candidate>> = BTreeMap::new();
    for (index, record) in records
        .iter()
        .enumerate()
        .filter(|(_, r)| model.accepts(&r.topic))
    {
        match IncomingEvent::from_record(&record.topic, record.json.clone()) {
            Ok(event) => by_aggregate
                .entry(event.envelope.aggregate_id)
                .or_default()
                .push(Candidate {
                    event,
                    index: Some(index),
                }),
            Err(reason) => outcome.poison.push((index, reason)),
        }
    }
    if by_aggregate.is_empty() {
        return Ok(outcome);
    }
    let ids: Vec<Uuid> = by_aggregate.keys().copied().collect();
    let mut current = load::<M>(conn, &ids).await?;
    for row in sqlx::query(
        "SELECT topic, record FROM projection_pending WHERE projection = $1 AND aggregate_id = ANY($2)",
    )
    .bind(projection)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?
    {
        let (topic, record): (String, serde_json::Value) = (row.try_get("topic")?, row.try_get("record")?);
        if let Ok(event) = IncomingEvent::from_record(&topic, record) {
            by_aggregate.entry(event.envelope.aggregate_id).or_default().push(Candidate { event, index: None });
        }
    }

    let mut changed: Vec<(Uuid, i64, M::Row)> = Vec::new();
    let mut released: Vec<(Uuid, i64)> = Vec::new();
    let mut hold: Vec<(Uuid, i64, String, serde_json::Value)> = Vec::new();
    for (id, mut candidates) in by_aggregate {
        candidates.sort_by_key(|c| (c.event.envelope.aggregate_version, c.index.is_some()));
        let (mut version, mut row) = current.remove(&id).map_or((0, None), |(v, r)| (v, Some(r)));
        let mut touched = false;
        for c in candidates {
            let v = c.event.envelope.aggregate_version;
            if c.index.is_none() && v <= version + 1 {
                released.push((id, v));
            }
            if v <= version {
                outcome.duplicates += u64::from(c.index.is_some());
                continue;
            }
            if v > version + 1 {
                if c.index.is_some() {
                    hold.push((id, v, c.event.topic.clone(), c.event.record.clone()));
                    outcome.held += 1;
                }
                continue;
            }
            match model.fold(row.clone(), &c.event) {
                Ok(next) => {
                    row = Some(next);
                    outcome.applied += 1;
                }
                Err(reason) => match c.index {
                    // The aggregate moves past an event it cannot read, which is kept as a dead
                    // letter, so its successors still apply.
                    Some(index) => outcome.poison.push((index, reason)),
                    None => {
                        tracing::error!(projection, aggregate_id = %id, version = v, %reason, "held event cannot be applied; skipped")
                    }
                },
            }
            version = v;
            touched = true;
        }
        if let (true, Some(row)) = (touched, row) {
            changed.push((id, version, row));
        }
    }
    save::<M>(conn, &changed).await?;
    if !changed.is_empty() {
        let ids: Vec<Uuid> = changed.iter().map(|(id, _, _)| *id).collect();
        model.after_save(conn, &ids).await?;
    }
    if !released.is_empty() {
        let (ids, versions): (Vec<Uuid>, Vec<i64>) = released.into_iter().unzip();
        sqlx::query(
            "DELETE FROM projection_pending p USING UNNEST($2::UUID[], $3::BIGINT[]) AS x (id, v)
             WHERE p.projection = $1 AND p.aggregate_id = x.id AND p.aggregate_version = x.v",
        )
        .bind(projection)
        .bind(ids)
        .bind(versions)
        .execute(&mut *conn)
        .await?;
    }
    if !hold.is_empty() {
        let mut ids = Vec::new();
        let mut versions = Vec::new();
        let mut topics = Vec::new();
        let mut bodies = Vec::new();
        for (id, v, topic, record) in hold {
            ids.push(id);
            versions.push(v);
            topics.push(topic);
            bodies.push(record);
        }
        sqlx::query(
            "INSERT INTO projection_pending (projection, aggregate_id, aggregate_version, topic, record)
             SELECT $1, id, v, t, r FROM UNNEST($2::UUID[], $3::BIGINT[], $4::TEXT[], $5::JSONB[]) AS x (id, v, t, r)
             ON CONFLICT DO NOTHING",
        )
        .bind(projection)
        .bind(ids)
        .bind(versions)
        .bind(topics)
        .bind(bodies)
        .execute(&mut *conn)
        .await?;
    }
    Ok(outcome)
}

/// The rows (with versions) of the given aggregates, in one query.
async fn load<M: StateModel>(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, (i64, M::Row)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        // A join rather than `id = ANY($1)`: on a table that is still small (a rebuild's start)
        // the planner scans it and compares every row with every id of the batch.
        "SELECT to_jsonb(t) AS row FROM {} t JOIN UNNEST($1::UUID[]) AS i (id) ON i.id = t.id",
        M::TABLE
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let json: serde_json::Value = r.try_get("row")?;
            let id = json["id"].as_str().and_then(|s| s.parse().ok());
            let version = json["version"].as_i64();
            let row = serde_json::from_value(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            match (id, version) {
                (Some(id), Some(version)) => Ok((id, (version, row))),
                _ => Err(sqlx::Error::Decode(
                    format!("{} row without id or version", M::TABLE).into(),
                )),
            }
        })
        .collect()
}

/// Upserts the rows with one statement.
pub(crate) async fn save<M: StateModel>(
    conn: &mut PgConnection,
    rows: &[(Uuid, i64, M::Row)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|(id, version, row)| {
            let mut value = serde_json::to_value(row).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.insert("id".into(), serde_json::json!(id));
                object.insert("version".into(), serde_json::json!(version));
            }
            value
        })
        .collect();
    sqlx::query(&upsert_sql(M::TABLE, M::COLUMNS))
        .bind(serde_json::Value::Array(json))
        .execute(conn)
        .await
        .map(|_| ())
}

/// `INSERT ... SELECT FROM jsonb_populate_recordset ... ON CONFLICT (id) DO UPDATE` for a table.
pub(crate) fn upsert_sql(table: &str, columns: &[&str]) -> String {
    let all = columns.join(", ");
    let updated: Vec<&str> = columns.iter().copied().filter(|c| *c != "id").collect();
    let excluded: Vec<String> = updated.iter().map(|c| format!("EXCLUDED.{c}")).collect();
    format!(
        "INSERT INTO {table} ({all}) SELECT {all} FROM jsonb_populate_recordset(NULL::{table}, $1)
         ON CONFLICT (id) DO UPDATE SET ({}) = ROW({})",
        updated.join(", "),
        excluded.join(", ")
    )
}

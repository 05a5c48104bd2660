//! The request's DataLoaders: every nested field and link loads through them, so a request
//! costs one statement per field (and per distinct arguments), however many parents it has —
//! `patients(first: 20) { appointments { ... } }` is two statements, not 21.
//!
//! One loader per request (its cache is the request's): the care-team checks of a
//! practitioner, pages of each patient's resources, and resources by id.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::graphql::ReadModels;
use crate::read_model::{
    AppointmentRow, EncounterRow, MedicationRequestFilter, MedicationRequestRow, ObservationFilter,
    ObservationRow, OfPatient, PatientCount, PatientRow, Position, TimelineFilter, Window,
    by_patient, decode_rows,
};

/// Loads for one request.
pub struct ReadLoader {
    models: Arc<ReadModels>,
    /// The practitioner whose care team [`InCare`] asks about.
    practitioner: Option<String>,
}

/// The loader of one request, caching what it loaded for the rest of the request.
pub type RequestLoader = DataLoader<ReadLoader, HashMapCache>;

impl ReadLoader {
    pub fn for_request(models: Arc<ReadModels>, practitioner: Option<String>) -> RequestLoader {
        DataLoader::with_cache(
            ReadLoader {
                models,
                practitioner,
            },
            tokio::spawn,
            HashMapCache::default(),
        )
    }
}

/// Errors are shared by every key of the batch that failed.
pub type LoadError = Arc<sqlx::Error>;

/// Whether a patient is in the request's practitioner's care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InCare(pub Uuid);

impl Loader<InCare> for ReadLoader {
    type Value = bool;
    type Error = LoadError;

    async fn load(&self, keys: &[InCare]) -> Result<HashMap<InCare, bool>, LoadError> {
        let Some(practitioner) = &self.practitioner else {
            return Ok(keys.iter().map(|k| (*k, false)).collect());
        };
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let in_care = self.models.patients.in_care(practitioner, &ids).await?;
        Ok(keys.iter().map(|k| (*k, in_care.contains(&k.0))).collect())
    }
}

/// A kind of resource in a patient's compartment, read a page (or a count) per patient.
pub trait Resource: Clone + OfPatient + DeserializeOwned + Send + Sync + 'static {
    type Filter: Clone + PartialEq + Eq + Hash + Send + Sync + 'static;

    /// The `window` of each of `patients`' rows, in one statement (rows as JSON).
    fn select(
        models: &ReadModels,
        patients: &[Uuid],
        filter: &Self::Filter,
        window: Window,
    ) -> impl Future<Output = Result<Vec<serde_json::Value>, sqlx::Error>> + Send;
}

/// `Resource` for a row type: its filter and the read model's field that selects it.
macro_rules! resources {
    ($($row:ty: $filter:ty, $model:ident;)+) => {
        $(impl Resource for $row {
            type Filter = $filter;
            async fn select(
                models: &ReadModels,
                patients: &[Uuid],
                filter: &$filter,
                window: Window,
            ) -> Result<Vec<serde_json::Value>, sqlx::Error> {
                models.$model.of(patients, filter, window).await
            }
        })+
    };
}

resources! {
    AppointmentRow: TimelineFilter, appointments;
    EncounterRow: TimelineFilter, encounters;
    ObservationRow: ObservationFilter, observations;
    MedicationRequestRow: MedicationRequestFilter, medication_requests;
}

/// A page of one patient's resources of kind `R`: narrowed by `filter`, after `after`,
/// `limit` rows (one more than asked for, to learn whether more follow).
pub struct PageOf<R: Resource> {
    pub patient: Uuid,
    pub filter: R::Filter,
    pub after: Option<Position>,
    pub limit: i64,
    kind: PhantomData<fn() -> R>,
}

impl<R: Resource> PageOf<R> {
    pub fn new(patient: Uuid, filter: R::Filter, after: Option<Position>, limit: i64) -> Self {
        PageOf {
            patient,
            filter,
            after,
            limit,
            kind: PhantomData,
        }
    }

    /// What the page asks for apart from the patient: pages alike load together.
    fn shape(&self) -> (&R::Filter, Option<Position>, i64) {
        (&self.filter, self.after, self.limit)
    }
}

impl<R: Resource> Clone for PageOf<R> {
    fn clone(&self) -> Self {
        PageOf::new(self.patient, self.filter.clone(), self.after, self.limit)
    }
}

impl<R: Resource> PartialEq for PageOf<R> {
    fn eq(&self, other: &Self) -> bool {
        self.patient == other.patient && self.shape() == other.shape()
    }
}

impl<R: Resource> Eq for PageOf<R> {}

impl<R: Resource> Hash for PageOf<R> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.patient.hash(state);
        self.shape().hash(state);
    }
}

impl<R: Resource> Loader<PageOf<R>> for ReadLoader {
    type Value = Vec<R>;
    type Error = LoadError;

    /// One statement per distinct page shape (usually one: the same field of every parent).
    async fn load(&self, keys: &[PageOf<R>]) -> Result<HashMap<PageOf<R>, Vec<R>>, LoadError> {
        let mut shapes: Vec<(&PageOf<R>, Vec<Uuid>)> = Vec::new();
        for key in keys {
            match shapes.iter_mut().find(|(k, _)| k.shape() == key.shape()) {
                Some((_, patients)) => patients.push(key.patient),
                None => shapes.push((key, vec![key.patient])),
            }
        }
        let mut pages = HashMap::new();
        for (shape, patients) in shapes {
            let window = Window::Page {
                after: shape.after,
                limit: shape.limit,
            };
            let rows = R::select(&self.models, &patients, &shape.filter, window).await?;
            let mut grouped = by_patient(decode_rows::<R>(rows)?);
            for patient in patients {
                let key = PageOf::new(patient, shape.filter.clone(), shape.after, shape.limit);
                pages.insert(key, grouped.remove(&patient).unwrap_or_default());
            }
        }
        Ok(pages)
    }
}

/// How many records of kind `R` one patient has that match `filter`.
pub struct CountOf<R: Resource> {
    pub patient: Uuid,
    pub filter: R::Filter,
    kind: PhantomData<fn() -> R>,
}

impl<R: Resource> CountOf<R> {
    pub fn new(patient: Uuid, filter: R::Filter) -> Self {
        CountOf {
            patient,
            filter,
            kind: PhantomData,
        }
    }
}

impl<R: Resource> Clone for CountOf<R> {
    fn clone(&self) -> Self {
        CountOf::new(self.patient, self.filter.clone())
    }
}

impl<R: Resource> PartialEq for CountOf<R> {
    fn eq(&self, other: &Self) -> bool {
        self.patient == other.patient && self.filter == other.filter
    }
}

impl<R: Resource> Eq for CountOf<R> {}

impl<R: Resource> Hash for CountOf<R> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.patient.hash(state);
        self.filter.hash(state);
    }
}

impl<R: Resource> Loader<CountOf<R>> for ReadLoader {
    type Value = i64;
    type Error = LoadError;

    /// One statement per distinct filter (a `GROUP BY` over the patients).
    async fn load(&self, keys: &[CountOf<R>]) -> Result<HashMap<CountOf<R>, i64>, LoadError> {
        let mut filters: Vec<(&R::Filter, Vec<Uuid>)> = Vec::new();
        for key in keys {
            match filters.iter_mut().find(|(f, _)| **f == key.filter) {
                Some((_, patients)) => patients.push(key.patient),
                None => filters.push((&key.filter, vec![key.patient])),
            }
        }
        let mut counts = HashMap::new();
        for (filter, patients) in filters {
            let found: HashMap<Uuid, i64> = decode_rows::<PatientCount>(
                R::select(&self.models, &patients, filter, Window::Count).await?,
            )?
            .into_iter()
            .map(|c| (c.patient_id, c.count))
            .collect();
            for patient in patients {
                let count = found.get(&patient).copied().unwrap_or(0);
                counts.insert(CountOf::new(patient, filter.clone()), count);
            }
        }
        Ok(counts)
    }
}

/// A kind of resource read by id.
pub trait Fetch: Clone + Send + Sync + 'static {
    fn id(&self) -> Uuid;
    /// The patient the record belongs to (a patient is their own).
    fn patient(&self) -> Option<Uuid>;
    /// The ones of `ids` there are, in one statement.
    fn fetch(
        models: &ReadModels,
        ids: &[Uuid],
    ) -> impl Future<Output = Result<Vec<Self>, sqlx::Error>> + Send;
}

impl Fetch for PatientRow {
    fn id(&self) -> Uuid {
        self.id
    }
    fn patient(&self) -> Option<Uuid> {
        Some(self.id)
    }
    async fn fetch(models: &ReadModels, ids: &[Uuid]) -> Result<Vec<Self>, sqlx::Error> {
        models.patients.get_many(ids).await
    }
}

impl Fetch for AppointmentRow {
    fn id(&self) -> Uuid {
        self.id
    }
    fn patient(&self) -> Option<Uuid> {
        Some(self.patient_id)
    }
    async fn fetch(models: &ReadModels, ids: &[Uuid]) -> Result<Vec<Self>, sqlx::Error> {
        models.appointments.get_many(ids).await
    }
}

impl Fetch for EncounterRow {
    fn id(&self) -> Uuid {
        self.id
    }
    fn patient(&self) -> Option<Uuid> {
        Some(self.patient_id)
    }
    async fn fetch(models: &ReadModels, ids: &[Uuid]) -> Result<Vec<Self>, sqlx::Error> {
        models.encounters.get_many(ids).await
    }
}

/// A resource of kind `R` by id.
pub struct ById<R>(pub Uuid, PhantomData<fn() -> R>);

impl<R> ById<R> {
    pub fn new(id: Uuid) -> Self {
        ById(id, PhantomData)
    }
}

impl<R> Clone for ById<R> {
    fn clone(&self) -> Self {
        ById::new(self.0)
    }
}

impl<R> PartialEq for ById<R> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<R> Eq for ById<R> {}

impl<R> Hash for ById<R> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl<R: Fetch> Loader<ById<R>> for ReadLoader {
    type Value = R;
    type Error = LoadError;

    async fn load(&self, keys: &[ById<R>]) -> Result<HashMap<ById<R>, R>, LoadError> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        Ok(R::fetch(&self.models, &ids)
            .await?
            .into_iter()
            .map(|row| (ById::new(row.id()), row))
            .collect())
    }
}

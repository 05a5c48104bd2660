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
use uuid::Uuid;

use crate::graphql::ReadModels;
use crate::read_model::{
    AppointmentRow, EncounterRow, MedicationRequestFilter, MedicationRequestRow, ObservationFilter,
    ObservationRow, OfPatient, PatientRow, Position, TimelineFilter, by_patient,
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

/// A kind of resource in a patient's compartment, read a page per patient.
pub trait Resource: Clone + OfPatient + Send + Sync + 'static {
    type Filter: Clone + PartialEq + Eq + Hash + Send + Sync + 'static;

    /// Up to `limit` rows of each of `patients`, in one statement.
    fn pages(
        models: &ReadModels,
        patients: &[Uuid],
        filter: &Self::Filter,
        after: Option<Position>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Self>, sqlx::Error>> + Send;
}

impl Resource for AppointmentRow {
    type Filter = TimelineFilter;
    async fn pages(
        models: &ReadModels,
        patients: &[Uuid],
        filter: &TimelineFilter,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<Self>, sqlx::Error> {
        models.appointments.of(patients, filter, after, limit).await
    }
}

impl Resource for EncounterRow {
    type Filter = TimelineFilter;
    async fn pages(
        models: &ReadModels,
        patients: &[Uuid],
        filter: &TimelineFilter,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<Self>, sqlx::Error> {
        models.encounters.of(patients, filter, after, limit).await
    }
}

impl Resource for ObservationRow {
    type Filter = ObservationFilter;
    async fn pages(
        models: &ReadModels,
        patients: &[Uuid],
        filter: &ObservationFilter,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<Self>, sqlx::Error> {
        models.observations.of(patients, filter, after, limit).await
    }
}

impl Resource for MedicationRequestRow {
    type Filter = MedicationRequestFilter;
    async fn pages(
        models: &ReadModels,
        patients: &[Uuid],
        filter: &MedicationRequestFilter,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<Self>, sqlx::Error> {
        models
            .medication_requests
            .of(patients, filter, after, limit)
            .await
    }
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
            let rows = R::pages(
                &self.models,
                &patients,
                &shape.filter,
                shape.after,
                shape.limit,
            )
            .await?;
            let mut grouped = by_patient(rows);
            for patient in patients {
                let key = PageOf::new(patient, shape.filter.clone(), shape.after, shape.limit);
                pages.insert(key, grouped.remove(&patient).unwrap_or_default());
            }
        }
        Ok(pages)
    }
}

/// A kind of resource read by id.
pub trait Fetch: Clone + Send + Sync + 'static {
    fn id(&self) -> Uuid;
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
    async fn fetch(models: &ReadModels, ids: &[Uuid]) -> Result<Vec<Self>, sqlx::Error> {
        models.patients.get_many(ids).await
    }
}

impl Fetch for AppointmentRow {
    fn id(&self) -> Uuid {
        self.id
    }
    async fn fetch(models: &ReadModels, ids: &[Uuid]) -> Result<Vec<Self>, sqlx::Error> {
        models.appointments.get_many(ids).await
    }
}

impl Fetch for EncounterRow {
    fn id(&self) -> Uuid {
        self.id
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

//! Patient events (FHIR R4 Patient in spirit): `PatientCreated` and `PatientUpdated`.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::DomainEvent;
use crate::catalog::{PATIENT_CREATED, PATIENT_UPDATED};
use crate::{examples, registry};

/// A business identifier, e.g. a national id: `system` is an absolute URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    pub system: String,
    pub value: String,
}

/// A person's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HumanName {
    pub given: Vec<String>,
    pub family: String,
}

impl HumanName {
    /// "Ada Lovelace".
    pub fn display(&self) -> String {
        let mut parts = self.given.clone();
        parts.push(self.family.clone());
        parts.join(" ")
    }
}

/// FHIR administrative gender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    Male,
    Female,
    Other,
    Unknown,
}

impl Gender {
    pub fn as_str(self) -> &'static str {
        match self {
            Gender::Male => "male",
            Gender::Female => "female",
            Gender::Other => "other",
            Gender::Unknown => "unknown",
        }
    }
}

/// A phone number, email address, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactPoint {
    /// phone | fax | email | pager | url | sms | other
    pub system: String,
    pub value: String,
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub line: Vec<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

/// Everything the platform holds about who a patient is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demographics {
    pub identifiers: Vec<Identifier>,
    pub name: HumanName,
    pub gender: Gender,
    pub birth_date: NaiveDate,
    pub telecom: Vec<ContactPoint>,
    pub address: Option<Address>,
    /// BCP 47 language tag the patient prefers, e.g. `en-GB` (schema v2).
    #[serde(default)]
    pub preferred_language: Option<String>,
}

/// A patient was registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientCreated {
    #[serde(flatten)]
    pub demographics: Demographics,
}

impl DomainEvent for PatientCreated {
    const EVENT_TYPE: &'static str = "PatientCreated";
    const TOPIC: &'static str = PATIENT_CREATED;
    const AGGREGATE: registry::Aggregate = registry::Aggregate::Patient;
    fn example() -> registry::Example<Self> {
        registry::Example {
            version: 1,
            actor: examples::admin(),
            payload: PatientCreated {
                demographics: examples::demographics(),
            },
        }
    }
}

/// A patient's demographics changed. Carries the full demographics after the change, so a
/// consumer never needs an earlier event to know the current state, and names what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientUpdated {
    #[serde(flatten)]
    pub demographics: Demographics,
    /// The top-level fields that changed: `identifiers`, `name`, `gender`, `birth_date`,
    /// `telecom`, `address`, `preferred_language`.
    pub changed_fields: Vec<String>,
}

impl DomainEvent for PatientUpdated {
    const EVENT_TYPE: &'static str = "PatientUpdated";
    const TOPIC: &'static str = PATIENT_UPDATED;
    const AGGREGATE: registry::Aggregate = registry::Aggregate::Patient;
    fn example() -> registry::Example<Self> {
        let mut demographics = examples::demographics();
        demographics.telecom.push(ContactPoint {
            system: "email".into(),
            value: "ada@example.org".into(),
        });
        registry::Example {
            version: 2,
            actor: examples::admin(),
            payload: PatientUpdated {
                demographics,
                changed_fields: vec!["telecom".into()],
            },
        }
    }
}

//! Medication request events (FHIR R4 MedicationRequest in spirit).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DomainEvent;
use crate::catalog::MEDICATION_PRESCRIBED;
use crate::clinical::{Coding, MedicationRequestIntent, MedicationRequestStatus, Quantity, RXNORM};
use crate::{examples, registry};

/// How the medication is to be taken (FHIR Dosage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dosage {
    /// Free-text instructions, e.g. "500 mg twice a day with food".
    pub text: String,
    /// Amount per administration, with its UCUM unit.
    pub dose: Option<Quantity>,
    /// Administrations per period (e.g. 2 per 1 d).
    pub frequency: Option<i32>,
    pub period: Option<f64>,
    /// UCUM unit of time: s | min | h | d | wk | mo | a
    pub period_unit: Option<String>,
    /// Route, e.g. SNOMED CT 26643006 "Oral route".
    pub route: Option<Coding>,
}

/// A medication was prescribed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MedicationPrescribed {
    pub patient_id: Uuid,
    pub encounter_id: Option<Uuid>,
    /// An RxNorm code.
    pub medication: Coding,
    /// FHIR medicationrequest-status: active | on-hold | cancelled | completed |
    /// entered-in-error | stopped | draft | unknown
    pub status: MedicationRequestStatus,
    /// FHIR medicationrequest-intent: proposal | plan | order | original-order | reflex-order |
    /// filler-order | instance-order | option
    pub intent: MedicationRequestIntent,
    pub dosage: Option<Dosage>,
    /// Amount to dispense.
    pub dispense_quantity: Option<Quantity>,
    pub refills: Option<i32>,
    pub authored_on: DateTime<Utc>,
    /// The prescriber (user id).
    pub requester_id: String,
    pub note: Option<String>,
}

impl DomainEvent for MedicationPrescribed {
    const EVENT_TYPE: &'static str = "MedicationPrescribed";
    const TOPIC: &'static str = MEDICATION_PRESCRIBED;
    const AGGREGATE: registry::Aggregate = registry::Aggregate::MedicationRequest;
    fn example() -> registry::Example<Self> {
        registry::Example {
            version: 1,
            actor: examples::practitioner(),
            payload: MedicationPrescribed {
                patient_id: examples::EXAMPLE_PATIENT,
                encounter_id: Some(Uuid::from_u128(0x0190_a0e4_7000_7000_8000_0000_0000_0e01)),
                medication: examples::coding(RXNORM, "314076", "lisinopril 10 MG Oral Tablet"),
                status: MedicationRequestStatus::Active,
                intent: MedicationRequestIntent::Order,
                dosage: Some(Dosage {
                    text: "10 mg once a day".into(),
                    dose: Some(examples::ucum(10.0, "mg")),
                    frequency: Some(1),
                    period: Some(1.0),
                    period_unit: Some("d".into()),
                    route: Some(examples::coding(
                        "http://snomed.info/sct",
                        "26643006",
                        "Oral route",
                    )),
                }),
                dispense_quantity: Some(examples::ucum(30.0, "{tbl}")),
                refills: Some(2),
                authored_on: examples::at(14, 20),
                requester_id: "dr-hopper".into(),
                note: None,
            },
        }
    }
}

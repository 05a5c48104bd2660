//! FHIR R4 data types shared by the clinical events: codes and quantities.

use serde::{Deserialize, Serialize};

/// LOINC, the code system of observations.
pub const LOINC: &str = "http://loinc.org";
/// RxNorm, the code system of medications.
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
/// UCUM, the unit system of quantities.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// HL7 v3 ActCode, the code system of encounter classes.
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// A code from a code system (FHIR Coding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

/// A measured amount with its UCUM unit (FHIR Quantity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantity {
    pub value: f64,
    /// UCUM code, e.g. `/min`, `Cel`, `kg`.
    pub unit: String,
    /// Always UCUM: `http://unitsofmeasure.org`.
    pub system: String,
}

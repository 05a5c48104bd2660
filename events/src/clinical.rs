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

/// A closed FHIR code set as a Rust enum: one spelling per code (its serde name and
/// `as_str`), `ALL`, and parsing with an error that lists the codes.
macro_rules! code_set {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $code)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $code),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let codes: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("`{s}` is not one of {}", codes.join(", "))
                })
            }
        }
    };
}

code_set! {
    /// FHIR medicationrequest-status.
    MedicationRequestStatus {
        Active = "active",
        OnHold = "on-hold",
        Cancelled = "cancelled",
        Completed = "completed",
        EnteredInError = "entered-in-error",
        Stopped = "stopped",
        Draft = "draft",
        Unknown = "unknown",
    }
}

code_set! {
    /// FHIR medicationrequest-intent.
    MedicationRequestIntent {
        Proposal = "proposal",
        Plan = "plan",
        Order = "order",
        OriginalOrder = "original-order",
        ReflexOrder = "reflex-order",
        FillerOrder = "filler-order",
        InstanceOrder = "instance-order",
        Option = "option",
    }
}

code_set! {
    /// FHIR ObservationStatus.
    ObservationStatus {
        Registered = "registered",
        Preliminary = "preliminary",
        Final = "final",
        Amended = "amended",
        Corrected = "corrected",
        Cancelled = "cancelled",
        EnteredInError = "entered-in-error",
        Unknown = "unknown",
    }
}

code_set! {
    /// FHIR EncounterStatus, as the read model tracks it.
    EncounterStatus {
        InProgress = "in-progress",
        Finished = "finished",
    }
}

code_set! {
    /// FHIR AppointmentStatus, as the read model tracks it: `arrived` while the encounter
    /// started from it is in progress, `fulfilled` once that encounter is finished.
    AppointmentStatus {
        Booked = "booked",
        Arrived = "arrived",
        Fulfilled = "fulfilled",
        Cancelled = "cancelled",
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_reads_back_and_serializes_as_itself() {
        for status in MedicationRequestStatus::ALL {
            assert_eq!(status.as_str().parse(), Ok(*status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        let error = "ongoing".parse::<MedicationRequestStatus>().unwrap_err();
        assert!(
            error.starts_with("`ongoing` is not one of active, on-hold"),
            "{error}"
        );
        assert_eq!(
            ObservationStatus::EnteredInError.as_str(),
            "entered-in-error"
        );
    }
}

//! The MedicationRequest aggregate: PrescribeMedication, with RxNorm codes and status and intent
//! from the FHIR value sets.

use crate::domain::FieldError;
use chrono::{DateTime, Utc};
use events::clinical::{
    Coding, MedicationRequestIntent, MedicationRequestStatus, Quantity, RXNORM,
};
use events::medication::{Dosage, MedicationPrescribed};
use serde::Deserialize;
use uuid::Uuid;

use super::validate::{Checker, CodingBody, QuantityBody};
use super::{Aggregate, Rejection, published_events};

/// UCUM units of time for a dosage period.
pub const PERIOD_UNITS: [&str; 7] = ["s", "min", "h", "d", "wk", "mo", "a"];
pub const MAX_REFILLS: i64 = 99;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DosageBody {
    pub text: Option<String>,
    pub dose: Option<QuantityBody>,
    pub frequency: Option<i64>,
    pub period: Option<f64>,
    pub period_unit: Option<String>,
    pub route: Option<CodingBody>,
}

/// The body of PrescribeMedication (FHIR MedicationRequest in spirit).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrescribeBody {
    pub patient_id: Option<String>,
    pub encounter_id: Option<String>,
    pub medication: Option<CodingBody>,
    pub status: Option<String>,
    pub intent: Option<String>,
    pub dosage: Option<DosageBody>,
    pub dispense_quantity: Option<QuantityBody>,
    pub refills: Option<i64>,
    pub note: Option<String>,
}

/// A valid prescription.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrescription {
    pub patient_id: Uuid,
    pub encounter_id: Option<Uuid>,
    pub medication: Coding,
    pub status: MedicationRequestStatus,
    pub intent: MedicationRequestIntent,
    pub dosage: Option<Dosage>,
    pub dispense_quantity: Option<Quantity>,
    pub refills: Option<i32>,
    pub note: Option<String>,
}

fn positive(c: &mut Checker, field: &str, q: Option<Quantity>) -> Option<Quantity> {
    match q {
        Some(q) if q.value <= 0.0 => {
            c.fail(&format!("{field}.value"), "must be greater than 0");
            None
        }
        q => q,
    }
}

fn dosage(c: &mut Checker, body: &DosageBody) -> Option<Dosage> {
    let text = c.text("$.dosage.text", body.text.as_ref());
    let dose = body.dose.as_ref().and_then(|d| {
        let q = c.quantity("$.dosage.dose", d);
        positive(c, "$.dosage.dose", q)
    });
    let frequency = match body.frequency {
        Some(f) if !(1..=48).contains(&f) => {
            c.fail("$.dosage.frequency", "must be between 1 and 48");
            None
        }
        f => f.map(|f| f as i32),
    };
    let period = match body.period {
        Some(p) if !(p.is_finite() && p > 0.0) => {
            c.fail("$.dosage.period", "must be greater than 0");
            None
        }
        p => p,
    };
    let period_unit = body
        .period_unit
        .as_ref()
        .and_then(|u| c.one_of("$.dosage.periodUnit", Some(u), &PERIOD_UNITS));
    if frequency.is_some() != period.is_some() {
        c.fail("$.dosage.period", "frequency and period go together");
    }
    if period.is_some() && body.period_unit.is_none() {
        c.fail("$.dosage.periodUnit", "is required with a period");
    }
    let route = body
        .route
        .as_ref()
        .and_then(|r| c.coding("$.dosage.route", Some(r), None));
    Some(Dosage {
        text: text?,
        dose,
        frequency,
        period,
        period_unit,
        route,
    })
}

pub fn parse_prescription(body: &PrescribeBody) -> Result<NewPrescription, Vec<FieldError>> {
    let mut c = Checker::default();
    let patient_id = c.uuid("$.patientId", body.patient_id.as_ref());
    let encounter_id = c.optional_uuid("$.encounterId", body.encounter_id.as_ref());
    let medication = c.coding("$.medication", body.medication.as_ref(), Some(RXNORM));
    if let Some(bad) = medication.as_ref().filter(|m| {
        m.code.is_empty() || m.code.len() > 10 || !m.code.chars().all(|d| d.is_ascii_digit())
    }) {
        c.fail(
            "$.medication.code",
            format!(
                "`{}` is not an RxNorm concept id (RxCUI, digits only)",
                bad.code
            ),
        );
    }
    let status = c.code(
        "$.status",
        body.status.as_ref(),
        MedicationRequestStatus::Active,
    );
    let intent = c.code(
        "$.intent",
        body.intent.as_ref(),
        MedicationRequestIntent::Order,
    );
    let dosage = body.dosage.as_ref().map(|d| dosage(&mut c, d));
    let dispense_quantity = body.dispense_quantity.as_ref().and_then(|q| {
        let q = c.quantity("$.dispenseQuantity", q);
        positive(&mut c, "$.dispenseQuantity", q)
    });
    let refills = match body.refills {
        Some(r) if !(0..=MAX_REFILLS).contains(&r) => {
            c.fail("$.refills", format!("must be between 0 and {MAX_REFILLS}"));
            None
        }
        r => r.map(|r| r as i32),
    };
    let note = c.optional_text("$.note", body.note.as_ref());
    let prescription = (|| {
        Some(NewPrescription {
            patient_id: patient_id?,
            encounter_id,
            medication: medication?,
            status: status?,
            intent: intent?,
            dosage: dosage.map(|d| d.ok_or(())).transpose().ok()?,
            dispense_quantity,
            refills,
            note,
        })
    })();
    c.finish(prescription)
}

#[derive(Debug, Clone, PartialEq)]
pub enum MedicationCommand {
    Prescribe {
        prescription: NewPrescription,
        requester_id: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum MedicationEvent {
    Prescribed(MedicationPrescribed),
}

published_events!(MedicationEvent { Prescribed(MedicationPrescribed) });

/// A medication request.
#[derive(Debug, Clone, PartialEq)]
pub struct MedicationRequest {
    pub patient_id: Uuid,
    pub status: MedicationRequestStatus,
}

impl Aggregate for MedicationRequest {
    const KIND: events::registry::Aggregate = events::registry::Aggregate::MedicationRequest;
    type Event = MedicationEvent;
    type Command = MedicationCommand;

    fn apply(_state: Option<Self>, event: &MedicationEvent) -> Option<Self> {
        let MedicationEvent::Prescribed(e) = event;
        Some(MedicationRequest {
            patient_id: e.patient_id,
            status: e.status,
        })
    }

    fn decide(
        state: Option<&Self>,
        command: MedicationCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<MedicationEvent>, Rejection> {
        let MedicationCommand::Prescribe {
            prescription: p,
            requester_id,
        } = command;
        if state.is_some() {
            return Err(Rejection::AlreadyExists(
                "the medication request already exists".into(),
            ));
        }
        Ok(vec![MedicationEvent::Prescribed(MedicationPrescribed {
            patient_id: p.patient_id,
            encounter_id: p.encounter_id,
            medication: p.medication,
            status: p.status,
            intent: p.intent,
            dosage: p.dosage,
            dispense_quantity: p.dispense_quantity,
            refills: p.refills,
            authored_on: now,
            requester_id,
            note: p.note,
        })])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lisinopril() -> PrescribeBody {
        PrescribeBody {
            patient_id: Some(Uuid::nil().to_string()),
            medication: Some(CodingBody {
                system: Some(RXNORM.into()),
                code: Some("314076".into()),
                display: Some("lisinopril 10 MG Oral Tablet".into()),
            }),
            dosage: Some(DosageBody {
                text: Some("10 mg once a day".into()),
                dose: Some(QuantityBody {
                    value: Some(10.0),
                    unit: Some("mg".into()),
                    system: None,
                }),
                frequency: Some(1),
                period: Some(1.0),
                period_unit: Some("d".into()),
                route: None,
            }),
            ..Default::default()
        }
    }

    fn fields(body: &PrescribeBody) -> Vec<String> {
        parse_prescription(body)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn given_nothing_when_prescribed_then_prescribed_once_as_an_active_order() {
        let prescription = parse_prescription(&lisinopril()).unwrap();
        assert_eq!(
            (prescription.status.as_str(), prescription.intent.as_str()),
            ("active", "order")
        );
        let command = MedicationCommand::Prescribe {
            prescription,
            requester_id: "dr-hopper".into(),
        };
        let now = Utc::now();
        let events = MedicationRequest::decide(None, command.clone(), now).unwrap();
        let MedicationEvent::Prescribed(p) = &events[0];
        assert_eq!((p.requester_id.as_str(), p.authored_on), ("dr-hopper", now));
        let state = MedicationRequest::replay(&events);
        assert!(matches!(
            MedicationRequest::decide(state.as_ref(), command, now),
            Err(Rejection::AlreadyExists(_))
        ));
    }

    #[test]
    fn medications_are_rxnorm() {
        let mut body = lisinopril();
        body.medication.as_mut().unwrap().system = Some("http://snomed.info/sct".into());
        assert_eq!(fields(&body), vec!["$.medication.system"]);
        let mut body = lisinopril();
        body.medication.as_mut().unwrap().code = Some("LIS10".into());
        assert_eq!(fields(&body), vec!["$.medication.code"]);
    }

    #[test]
    fn status_and_intent_come_from_the_fhir_value_sets() {
        let mut body = lisinopril();
        body.status = Some("ongoing".into());
        body.intent = Some("suggestion".into());
        assert_eq!(fields(&body), vec!["$.status", "$.intent"]);
        body.status = Some("on-hold".into());
        body.intent = Some("original-order".into());
        assert!(parse_prescription(&body).is_ok());
    }

    #[test]
    fn dosage_quantities_and_refills_are_sane() {
        let mut body = lisinopril();
        body.dosage.as_mut().unwrap().dose.as_mut().unwrap().value = Some(-10.0);
        body.dosage.as_mut().unwrap().period_unit = Some("fortnight".into());
        body.refills = Some(-1);
        assert_eq!(
            fields(&body),
            vec!["$.dosage.dose.value", "$.dosage.periodUnit", "$.refills"]
        );
    }
}

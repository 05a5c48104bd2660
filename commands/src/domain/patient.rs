//! The Patient aggregate: request bodies parsed into valid demographics at the edge, and the
//! pure `decide`/`apply` functions that hold the rules.

use crate::domain::FieldError;
use chrono::{DateTime, NaiveDate, Utc};
use events::patient::{
    Address, ContactPoint, Demographics, Gender, HumanName, Identifier, PatientCreated,
    PatientUpdated,
};
use serde::Deserialize;

use super::validate::Checker;
use super::{Aggregate, Rejection, published_events};

/// The JSON body of RegisterPatient and UpdatePatientDemographics (FHIR R4 Patient in spirit).
/// Every member is optional here so that a missing one is reported with its own path.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientBody {
    pub identifier: Option<Vec<IdentifierBody>>,
    pub name: Option<NameBody>,
    pub gender: Option<String>,
    #[serde(rename = "birthDate")]
    pub birth_date: Option<String>,
    pub telecom: Option<Vec<ContactPointBody>>,
    pub address: Option<AddressBody>,
    /// BCP 47 language tag, e.g. `en-GB`.
    #[serde(rename = "preferredLanguage")]
    pub preferred_language: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierBody {
    pub system: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    #[serde(default)]
    pub given: Vec<String>,
    pub family: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactPointBody {
    pub system: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressBody {
    #[serde(default)]
    pub line: Vec<String>,
    pub city: Option<String>,
    #[serde(rename = "postalCode")]
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

const CONTACT_SYSTEMS: [&str; 7] = ["phone", "fax", "email", "pager", "url", "sms", "other"];

/// True for an absolute URI: a scheme (`[A-Za-z][A-Za-z0-9+.-]*`), a colon and something after it.
pub fn is_absolute_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        && !rest.is_empty()
        && !s.chars().any(char::is_whitespace)
}

fn identifiers(c: &mut Checker, body: &[IdentifierBody]) -> Vec<Identifier> {
    if body.is_empty() {
        c.fail("$.identifier", "at least one identifier is required");
    }
    let parsed: Vec<Identifier> = body
        .iter()
        .enumerate()
        .filter_map(|(i, id)| {
            let system = c.text(&format!("$.identifier[{i}].system"), id.system.as_ref());
            if let Some(s) = system.as_deref().filter(|s| !is_absolute_uri(s)) {
                c.fail(
                    &format!("$.identifier[{i}].system"),
                    format!("`{s}` is not an absolute URI"),
                );
            }
            let value = c.text(&format!("$.identifier[{i}].value"), id.value.as_ref());
            Some(Identifier {
                system: system.filter(|s| is_absolute_uri(s))?,
                value: value?,
            })
        })
        .collect();
    // The same identifier twice (as the event store compares them) is a mistake.
    for (i, id) in parsed.iter().enumerate() {
        if let Some(first) = parsed[..i]
            .iter()
            .position(|earlier| identifier_key(earlier) == identifier_key(id))
        {
            c.fail(
                &format!("$.identifier[{i}]"),
                format!("repeats $.identifier[{first}]"),
            );
        }
    }
    parsed
}

/// An identifier as uniqueness compares it: the system in lower case, the value without
/// spaces, dashes, dots or slashes and in upper case, so `123-45-6789` and `123456789`, or
/// `URN:OID:…` and `urn:oid:…`, are the same identifier. (The event store applies the same
/// comparison, with Unicode compatibility normalisation, across patients.)
fn identifier_key(id: &Identifier) -> (String, String) {
    (
        id.system.to_lowercase(),
        id.value
            .chars()
            .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '.' | '/'))
            .flat_map(char::to_uppercase)
            .collect(),
    )
}

fn name(c: &mut Checker, body: &NameBody) -> Option<HumanName> {
    let family = c.text("$.name.family", body.family.as_ref());
    let given: Vec<String> = body
        .given
        .iter()
        .enumerate()
        .filter_map(|(i, g)| c.text(&format!("$.name.given[{i}]"), Some(g)))
        .collect();
    Some(HumanName {
        given,
        family: family?,
    })
}

fn gender(c: &mut Checker, value: &str) -> Option<Gender> {
    let parsed = match value {
        "male" => Gender::Male,
        "female" => Gender::Female,
        "other" => Gender::Other,
        "unknown" => Gender::Unknown,
        _ => {
            c.fail(
                "$.gender",
                format!("`{value}` is not one of male, female, other, unknown"),
            );
            return None;
        }
    };
    Some(parsed)
}

fn birth_date(c: &mut Checker, value: &str, today: NaiveDate) -> Option<NaiveDate> {
    let parsed = NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .filter(|_| value.len() == 10);
    match parsed {
        None => c.fail(
            "$.birthDate",
            format!("`{value}` is not a real date in YYYY-MM-DD form"),
        ),
        Some(d) if d > today => c.fail("$.birthDate", "must not be in the future"),
        Some(d) => return Some(d),
    }
    None
}

fn telecom(c: &mut Checker, body: &[ContactPointBody]) -> Vec<ContactPoint> {
    body.iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let system = c.text(&format!("$.telecom[{i}].system"), t.system.as_ref());
            if let Some(s) = system.as_deref().filter(|s| !CONTACT_SYSTEMS.contains(s)) {
                c.fail(
                    &format!("$.telecom[{i}].system"),
                    format!("`{s}` is not one of {}", CONTACT_SYSTEMS.join(", ")),
                );
            }
            let value = c.text(&format!("$.telecom[{i}].value"), t.value.as_ref());
            Some(ContactPoint {
                system: system.filter(|s| CONTACT_SYSTEMS.contains(&s.as_str()))?,
                value: value?,
            })
        })
        .collect()
}

/// True for a well-formed BCP 47 tag: a 2–3 letter language, then subtags of 1–8 letters/digits.
pub fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let language_ok = parts
        .next()
        .is_some_and(|l| (2..=3).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphabetic()));
    language_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn language(c: &mut Checker, value: &str) -> Option<String> {
    if is_language_tag(value) {
        Some(value.to_string())
    } else {
        c.fail(
            "$.preferredLanguage",
            format!("`{value}` is not a BCP 47 language tag such as en-GB"),
        );
        None
    }
}

fn address(c: &mut Checker, body: &AddressBody) -> Address {
    Address {
        line: body
            .line
            .iter()
            .enumerate()
            .filter_map(|(i, l)| c.text(&format!("$.address.line[{i}]"), Some(l)))
            .collect(),
        city: c.optional_text("$.address.city", body.city.as_ref()),
        postal_code: c.optional_text("$.address.postalCode", body.postal_code.as_ref()),
        country: c.optional_text("$.address.country", body.country.as_ref()),
    }
}

/// Parses a RegisterPatient body into valid demographics, or every field error it has.
pub fn parse_registration(body: &PatientBody) -> Result<Demographics, Vec<FieldError>> {
    let today = Utc::now().date_naive();
    let mut c = Checker::default();
    let ids = c
        .required("$.identifier", &body.identifier)
        .map(|b| identifiers(&mut c, b));
    let name = c
        .required("$.name", &body.name)
        .and_then(|b| name(&mut c, b));
    let gender = c
        .required("$.gender", &body.gender)
        .and_then(|g| gender(&mut c, g));
    let birth = c
        .required("$.birthDate", &body.birth_date)
        .and_then(|d| birth_date(&mut c, d, today));
    let telecom = telecom(&mut c, body.telecom.as_deref().unwrap_or_default());
    let address = body.address.as_ref().map(|a| address(&mut c, a));
    let preferred_language = body
        .preferred_language
        .as_ref()
        .and_then(|l| language(&mut c, l));
    match (ids, name, gender, birth) {
        (Some(identifiers), Some(name), Some(gender), Some(birth_date)) if c.errors.is_empty() => {
            Ok(Demographics {
                identifiers,
                name,
                gender,
                birth_date,
                telecom,
                address,
                preferred_language,
            })
        }
        _ => Err(c.errors),
    }
}

/// A validated partial update: each `Some` replaces that part of the demographics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemographicsPatch {
    pub identifiers: Option<Vec<Identifier>>,
    pub name: Option<HumanName>,
    pub gender: Option<Gender>,
    pub birth_date: Option<NaiveDate>,
    pub telecom: Option<Vec<ContactPoint>>,
    /// `Some(None)` removes the address (JSON merge patch `"address": null`).
    pub address: Option<Option<Address>>,
    pub preferred_language: Option<Option<String>>,
}

/// The optional members a merge patch removes with `null`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Removed {
    pub address: bool,
    pub preferred_language: bool,
}

impl Removed {
    /// Reads the `null` members of a JSON merge patch.
    pub fn from_patch(json: &serde_json::Value) -> Self {
        let null = |key: &str| json.get(key).is_some_and(serde_json::Value::is_null);
        Removed {
            address: null("address"),
            preferred_language: null("preferredLanguage"),
        }
    }
}

/// Parses an UpdatePatientDemographics body (JSON merge patch of the registration body).
pub fn parse_patch(
    body: &PatientBody,
    removed: &Removed,
) -> Result<DemographicsPatch, Vec<FieldError>> {
    let today = Utc::now().date_naive();
    let mut c = Checker::default();
    let patch = DemographicsPatch {
        identifiers: body.identifier.as_ref().map(|b| identifiers(&mut c, b)),
        name: body.name.as_ref().and_then(|b| name(&mut c, b)),
        gender: body.gender.as_ref().and_then(|g| gender(&mut c, g)),
        birth_date: body
            .birth_date
            .as_ref()
            .and_then(|d| birth_date(&mut c, d, today)),
        telecom: body.telecom.as_ref().map(|t| telecom(&mut c, t)),
        address: match (&body.address, removed.address) {
            (Some(a), _) => Some(Some(address(&mut c, a))),
            (None, true) => Some(None),
            (None, false) => None,
        },
        preferred_language: match (&body.preferred_language, removed.preferred_language) {
            (Some(l), _) => language(&mut c, l).map(Some),
            (None, true) => Some(None),
            (None, false) => None,
        },
    };
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    if patch == DemographicsPatch::default() {
        return Err(vec![FieldError::new(
            "$",
            "the patch changes nothing: send at least one field",
        )]);
    }
    Ok(patch)
}

/// The commands the Patient aggregate accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientCommand {
    Register(Demographics),
    UpdateDemographics(DemographicsPatch),
}

/// The events the Patient aggregate emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientEvent {
    Created(PatientCreated),
    Updated(PatientUpdated),
}

published_events!(PatientEvent {
    Created(PatientCreated),
    Updated(PatientUpdated),
});

/// A registered patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    pub demographics: Demographics,
}

impl Aggregate for Patient {
    const KIND: events::registry::Aggregate = events::registry::Aggregate::Patient;
    type Event = PatientEvent;
    type Command = PatientCommand;

    fn apply(_state: Option<Self>, event: &PatientEvent) -> Option<Self> {
        let demographics = match event {
            PatientEvent::Created(e) => e.demographics.clone(),
            PatientEvent::Updated(e) => e.demographics.clone(),
        };
        Some(Patient { demographics })
    }

    fn decide(
        state: Option<&Self>,
        command: PatientCommand,
        _now: DateTime<Utc>,
    ) -> Result<Vec<PatientEvent>, Rejection> {
        match (state, command) {
            (Some(_), PatientCommand::Register(_)) => Err(Rejection::AlreadyExists(
                "the patient is already registered".into(),
            )),
            (None, PatientCommand::Register(demographics)) => {
                Ok(vec![PatientEvent::Created(PatientCreated { demographics })])
            }
            (None, PatientCommand::UpdateDemographics(_)) => {
                Err(Rejection::NotFound("no such patient".into()))
            }
            (Some(current), PatientCommand::UpdateDemographics(patch)) => {
                let mut next = current.demographics.clone();
                let mut changed = Vec::new();
                macro_rules! merge {
                    ($field:ident, $name:literal) => {
                        if let Some(value) = patch.$field {
                            if value != next.$field {
                                next.$field = value;
                                changed.push($name.to_string());
                            }
                        }
                    };
                }
                merge!(identifiers, "identifiers");
                merge!(name, "name");
                merge!(gender, "gender");
                merge!(birth_date, "birth_date");
                merge!(telecom, "telecom");
                merge!(address, "address");
                merge!(preferred_language, "preferred_language");
                if changed.is_empty() {
                    // Nothing changed: accepted, and no event (idempotent by content).
                    return Ok(vec![]);
                }
                Ok(vec![PatientEvent::Updated(PatientUpdated {
                    demographics: next,
                    changed_fields: changed,
                })])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> PatientBody {
        serde_json::from_value(json).expect("test body deserializes")
    }

    fn ada() -> serde_json::Value {
        serde_json::json!({
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "123-45-6789"}],
            "name": {"given": ["Ada"], "family": "Lovelace"},
            "gender": "female", "birthDate": "1815-12-10",
            "telecom": [{"system": "phone", "value": "+44 20 7946 0000"}],
            "address": {"line": ["12 St James's Square"], "city": "London", "postalCode": "SW1Y 4JH", "country": "GB"}
        })
    }

    fn registered() -> Patient {
        Patient {
            demographics: parse_registration(&body(ada())).expect("the api.md example is valid"),
        }
    }

    fn decide(
        state: Option<&Patient>,
        command: PatientCommand,
    ) -> Result<Vec<PatientEvent>, Rejection> {
        Patient::decide(state, command, Utc::now())
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn given_no_patient_when_registered_then_created() {
        let state = registered();
        let events = decide(None, PatientCommand::Register(state.demographics.clone())).unwrap();
        let expected = PatientCreated {
            demographics: state.demographics.clone(),
        };
        assert_eq!(events, vec![PatientEvent::Created(expected)]);
        assert_eq!(Patient::replay(&events), Some(state));
    }

    #[test]
    fn given_a_patient_when_registered_again_then_rejected() {
        let state = registered();
        let command = PatientCommand::Register(state.demographics.clone());
        assert!(matches!(
            decide(Some(&state), command),
            Err(Rejection::AlreadyExists(_))
        ));
    }

    #[test]
    fn given_no_patient_when_updated_then_not_found() {
        let patch = DemographicsPatch {
            gender: Some(Gender::Other),
            ..Default::default()
        };
        let result = decide(None, PatientCommand::UpdateDemographics(patch));
        assert!(matches!(result, Err(Rejection::NotFound(_))));
    }

    #[test]
    fn given_a_patient_when_updated_then_full_demographics_and_changed_fields() {
        let state = registered();
        let patch = DemographicsPatch {
            gender: Some(Gender::Other),
            address: Some(None),
            ..Default::default()
        };
        let events = decide(Some(&state), PatientCommand::UpdateDemographics(patch)).unwrap();
        let PatientEvent::Updated(updated) = &events[0] else {
            panic!("expected an update")
        };
        assert_eq!(updated.changed_fields, vec!["gender", "address"]);
        assert_eq!(updated.demographics.gender, Gender::Other);
        assert_eq!(updated.demographics.address, None);
        assert_eq!(updated.demographics.name, state.demographics.name);
        let after = Patient::apply(Some(state), &events[0]).unwrap();
        assert_eq!(after.demographics.gender, Gender::Other);
    }

    #[test]
    fn given_a_patient_when_updated_with_the_same_values_then_no_event() {
        let state = registered();
        let patch = DemographicsPatch {
            gender: Some(Gender::Female),
            ..Default::default()
        };
        assert_eq!(
            decide(Some(&state), PatientCommand::UpdateDemographics(patch)),
            Ok(vec![])
        );
    }

    #[test]
    fn registration_requires_identifier_name_gender_and_birth_date() {
        let errors = parse_registration(&PatientBody::default()).unwrap_err();
        assert_eq!(
            fields(errors),
            vec!["$.identifier", "$.name", "$.gender", "$.birthDate"]
        );
    }

    #[test]
    fn gender_must_be_a_fhir_administrative_gender() {
        let mut json = ada();
        json["gender"] = "f".into();
        assert_eq!(
            fields(parse_registration(&body(json)).unwrap_err()),
            vec!["$.gender"]
        );
    }

    #[test]
    fn birth_date_must_be_real_and_not_in_the_future() {
        for bad in ["2023-02-30", "10-12-1915", "2999-01-01", "1915-1-1"] {
            let mut json = ada();
            json["birthDate"] = bad.into();
            assert_eq!(
                fields(parse_registration(&body(json)).unwrap_err()),
                vec!["$.birthDate"],
                "{bad}"
            );
        }
    }

    #[test]
    fn identifier_system_must_be_an_absolute_uri() {
        let mut json = ada();
        json["identifier"] = serde_json::json!([{"system": "ssn", "value": "1"}]);
        assert_eq!(
            fields(parse_registration(&body(json.clone())).unwrap_err()),
            vec!["$.identifier[0].system"]
        );
        json["identifier"] = serde_json::json!([]);
        assert_eq!(
            fields(parse_registration(&body(json)).unwrap_err()),
            vec!["$.identifier"]
        );
        assert!(is_absolute_uri("urn:oid:2.16.840.1.113883.4.1"));
        assert!(is_absolute_uri("http://hospital.example/mrn"));
        assert!(!is_absolute_uri("1http://x"));
        assert!(!is_absolute_uri("urn:"));
    }

    #[test]
    fn telecom_system_is_from_the_fhir_value_set() {
        let mut json = ada();
        json["telecom"] = serde_json::json!([{"system": "pigeon", "value": "x"}]);
        assert_eq!(
            fields(parse_registration(&body(json)).unwrap_err()),
            vec!["$.telecom[0].system"]
        );
    }

    #[test]
    fn an_empty_patch_is_refused() {
        assert_eq!(
            fields(parse_patch(&PatientBody::default(), &Removed::default()).unwrap_err()),
            vec!["$"]
        );
        let removed = Removed::from_patch(&serde_json::json!({"address": null}));
        let patch = parse_patch(&PatientBody::default(), &removed).unwrap();
        assert_eq!(patch.address, Some(None));
    }

    #[test]
    fn preferred_language_is_a_bcp47_tag() {
        let mut json = ada();
        json["preferredLanguage"] = "en-GB".into();
        let parsed = parse_registration(&body(json.clone())).unwrap();
        assert_eq!(parsed.preferred_language.as_deref(), Some("en-GB"));
        for bad in ["english", "e", "en_GB", "en-", "en-toolongsubtag"] {
            json["preferredLanguage"] = bad.into();
            let errors = parse_registration(&body(json.clone())).unwrap_err();
            assert_eq!(fields(errors), vec!["$.preferredLanguage"], "{bad}");
        }
    }
}

//! Reading a decoded record into its Rust type with an error that names where it does not
//! fit but never quotes the value there: the value may be PHI, and the error ends up in logs,
//! dead-letter headers and metrics.

use serde::de::DeserializeOwned;

/// `value` as a `T`, or why not: the JSON path and the kind of mismatch.
pub fn from_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        // serde's messages quote the offending value; keep only the ones that name fields.
        let kind = if inner.starts_with("missing field") || inner.starts_with("unknown field") {
            inner
                .split(", expected")
                .next()
                .unwrap_or_default()
                .to_string()
        } else if inner.starts_with("invalid type") {
            "has the wrong type".to_string()
        } else if inner.starts_with("unknown variant") {
            "is not one of the allowed values".to_string()
        } else {
            "is not a valid value".to_string()
        };
        format!("`{}` {kind}", e.path())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patient::PatientCreated;

    #[test]
    fn a_mismatch_names_the_path_and_never_the_value() {
        let mut record = serde_json::to_value(PatientCreated {
            demographics: crate::examples::demographics(),
        })
        .unwrap();
        record["birth_date"] = serde_json::json!("secret-birthday-1815");
        record["gender"] = serde_json::json!("secret-gender");
        let error = from_value::<PatientCreated>(&record).unwrap_err();
        assert!(!error.contains("secret"), "{error}");

        record["identifiers"] = serde_json::json!([{"system": "urn:x", "value": 12345678}]);
        let error = from_value::<PatientCreated>(&record).unwrap_err();
        assert!(!error.contains("12345678"), "{error}");
        let missing = from_value::<crate::Envelope>(&serde_json::json!({})).unwrap_err();
        assert!(missing.contains("missing field `event_id`"), "{missing}");
        // Where serde can follow the path (no flattened members), the error names it.
        let mut envelope = serde_json::to_value(&record).unwrap();
        envelope["aggregate_version"] = serde_json::json!("secret-version");
        let error = from_value::<crate::Envelope>(&envelope).unwrap_err();
        assert_eq!(error, "`aggregate_version` has the wrong type");
    }
}

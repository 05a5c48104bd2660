//! Conversion between serde JSON values and Avro values, driven by the Avro schema.
//!
//! The Rust event types serialize to JSON (dates as `YYYY-MM-DD`, instants as RFC 3339); the
//! schema says how each field is written in Avro (`date`, `timestamp-micros`, `uuid`, enums,
//! nullable unions). Converting through the schema keeps both representations exact.
//!
//! A JSON member the record schema does not have is an error, at any depth: dropping it
//! silently would let a record be written without what its producer meant to say (an audit
//! event whose schema lost `actor` must not be acknowledged without one).

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{Name, RecordSchema};
use apache_avro::types::Value;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::Value as Json;

/// A value that does not fit the schema; `path` is a JSON path into the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConversionError {
    pub path: String,
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> ConversionError {
    ConversionError {
        path: path.to_string(),
        message: message.into(),
    }
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");

/// Converts `json` to an Avro value of `schema`.
pub fn json_to_avro(json: &Json, schema: &Schema) -> Result<Value, ConversionError> {
    let mut names = HashMap::new();
    collect_names(schema, &mut names);
    convert(json, schema, &names, "$")
}

fn collect_names<'a>(schema: &'a Schema, names: &mut HashMap<Name, &'a Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.clone(), schema);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.clone(), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.clone(), schema);
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        _ => {}
    }
}

fn convert(
    json: &Json,
    schema: &Schema,
    names: &HashMap<Name, &Schema>,
    path: &str,
) -> Result<Value, ConversionError> {
    // Errors name the path and the JSON type, never the value: values can be PHI, and these
    // errors reach logs.
    let expected = |what: &str| err(path, format!("expected {what}, found {}", json_type(json)));
    Ok(match schema {
        Schema::Null => match json {
            Json::Null => Value::Null,
            _ => return Err(expected("null")),
        },
        Schema::Boolean => Value::Boolean(json.as_bool().ok_or_else(|| expected("a boolean"))?),
        Schema::Int => {
            let n = json.as_i64().ok_or_else(|| expected("an integer"))?;
            Value::Int(i32::try_from(n).map_err(|_| err(path, "out of range for int"))?)
        }
        Schema::Long => Value::Long(json.as_i64().ok_or_else(|| expected("an integer"))?),
        Schema::Float => Value::Float(json.as_f64().ok_or_else(|| expected("a number"))? as f32),
        Schema::Double => Value::Double(json.as_f64().ok_or_else(|| expected("a number"))?),
        Schema::String => Value::String(
            json.as_str()
                .ok_or_else(|| expected("a string"))?
                .to_string(),
        ),
        Schema::Uuid(_) => {
            let s = json.as_str().ok_or_else(|| expected("a UUID string"))?;
            Value::Uuid(
                s.parse()
                    .map_err(|e| err(path, format!("invalid UUID: {e}")))?,
            )
        }
        Schema::Date => match json {
            Json::String(s) => {
                let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map_err(|e| err(path, format!("invalid date: {e}")))?;
                Value::Date((d - EPOCH).num_days() as i32)
            }
            Json::Number(n) => Value::Date(n.as_i64().ok_or_else(|| expected("days"))? as i32),
            _ => return Err(expected("a date")),
        },
        Schema::TimestampMicros => Value::TimestampMicros(instant(json, path)?.timestamp_micros()),
        Schema::TimestampMillis => Value::TimestampMillis(instant(json, path)?.timestamp_millis()),
        Schema::Enum(e) => {
            let s = json.as_str().ok_or_else(|| expected("an enum symbol"))?;
            let index = e
                .symbols
                .iter()
                .position(|sym| sym == s)
                .ok_or_else(|| err(path, format!("not one of {:?}", e.symbols)))?;
            Value::Enum(index as u32, s.to_string())
        }
        Schema::Array(a) => Value::Array(
            json.as_array()
                .ok_or_else(|| expected("an array"))?
                .iter()
                .enumerate()
                .map(|(i, item)| convert(item, &a.items, names, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Schema::Map(m) => Value::Map(
            json.as_object()
                .ok_or_else(|| expected("an object"))?
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        convert(v, &m.types, names, &format!("{path}.{k}"))?,
                    ))
                })
                .collect::<Result<_, ConversionError>>()?,
        ),
        Schema::Union(u) => {
            // When no variant fits, the error that got deepest into the value says most.
            let mut deepest: Option<ConversionError> = None;
            for (i, variant) in u.variants().iter().enumerate() {
                match convert(json, variant, names, path) {
                    Ok(v) => return Ok(Value::Union(i as u32, Box::new(v))),
                    Err(e) => {
                        if deepest
                            .as_ref()
                            .is_none_or(|d| e.path.len() >= d.path.len())
                        {
                            deepest = Some(e);
                        }
                    }
                }
            }
            return Err(deepest.unwrap_or_else(|| err(path, "empty union")));
        }
        Schema::Record(r) => record(json, r, names, path)?,
        Schema::Ref { name } => {
            let target = names
                .get(name)
                .ok_or_else(|| err(path, format!("unknown named type {name}")))?;
            convert(json, target, names, path)?
        }
        other => return Err(err(path, format!("unsupported Avro type {other:?}"))),
    })
}

fn record(
    json: &Json,
    r: &RecordSchema,
    names: &HashMap<Name, &Schema>,
    path: &str,
) -> Result<Value, ConversionError> {
    let object = json
        .as_object()
        .ok_or_else(|| err(path, format!("expected an object for {}", r.name)))?;
    if let Some(unknown) = object
        .keys()
        .find(|k| !r.fields.iter().any(|f| &f.name == *k))
    {
        return Err(err(
            &format!("{path}.{unknown}"),
            format!("{} has no such field", r.name),
        ));
    }
    let fields = r
        .fields
        .iter()
        .map(|f| {
            let field_path = format!("{path}.{}", f.name);
            let value = match (object.get(&f.name), &f.default) {
                (Some(v), _) => convert(v, &f.schema, names, &field_path)?,
                (None, Some(default)) => convert(default, &f.schema, names, &field_path)?,
                (None, None) => return Err(err(&field_path, "missing required field")),
            };
            Ok((f.name.clone(), value))
        })
        .collect::<Result<_, ConversionError>>()?;
    Ok(Value::Record(fields))
}

fn instant(json: &Json, path: &str) -> Result<DateTime<Utc>, ConversionError> {
    match json {
        Json::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| err(path, format!("invalid RFC 3339 instant: {e}"))),
        Json::Number(n) => n
            .as_i64()
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| err(path, "invalid timestamp")),
        _ => Err(err(
            path,
            format!("expected an instant, found {}", json_type(json)),
        )),
    }
}

/// The JSON type of a value, for error messages that must not carry the value.
fn json_type(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Converts a decoded Avro value to JSON in the shape the Rust event types deserialize from;
/// an Avro type no Healthplane schema uses (decimal, duration, nanosecond timestamps) is an
/// error naming it, never a made-up string.
pub fn avro_to_json(value: &Value) -> Result<Json, String> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Int(n) | Value::TimeMillis(n) => Json::from(*n),
        Value::Long(n) | Value::TimeMicros(n) => Json::from(*n),
        Value::Float(x) => Json::from(*x as f64),
        Value::Double(x) => Json::from(*x),
        Value::String(s) | Value::Enum(_, s) => Json::String(s.clone()),
        Value::Uuid(u) => Json::String(u.to_string()),
        Value::Date(days) => Json::String(
            (EPOCH + chrono::Duration::days(i64::from(*days)))
                .format("%Y-%m-%d")
                .to_string(),
        ),
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => {
            rfc3339(DateTime::from_timestamp_micros(*us))
        }
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => {
            rfc3339(DateTime::from_timestamp_millis(*ms))
        }
        Value::Union(_, inner) => avro_to_json(inner)?,
        Value::Array(items) => {
            Json::Array(items.iter().map(avro_to_json).collect::<Result<_, _>>()?)
        }
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), avro_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Record(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), avro_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Bytes(b) | Value::Fixed(_, b) => {
            Json::Array(b.iter().map(|x| Json::from(*x)).collect())
        }
        other => {
            let kind = format!("{other:?}");
            let kind = kind.split(['(', ' ', '{']).next().unwrap_or_default();
            return Err(format!("Avro {kind} values are not supported"));
        }
    })
}

fn rfc3339(t: Option<DateTime<Utc>>) -> Json {
    t.map(|t| Json::String(t.to_rfc3339_opts(SecondsFormat::Micros, true)))
        .unwrap_or(Json::Null)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_avro_type_no_schema_uses_is_an_error_not_a_string() {
        let error = super::avro_to_json(&Value::TimestampNanos(5)).unwrap_err();
        assert_eq!(error, "Avro TimestampNanos values are not supported");
    }

    use serde_json::json;

    use super::*;

    fn schema() -> Schema {
        Schema::parse(&json!({
            "type": "record", "name": "Access", "namespace": "test",
            "fields": [
                {"name": "id", "type": "string"},
                {"name": "actor", "type": {"type": "record", "name": "Actor", "fields": [
                    {"name": "id", "type": "string"}]}},
                {"name": "place", "type": ["null", {"type": "record", "name": "Place", "fields": [
                    {"name": "city", "type": "string"}]}], "default": null},
                {"name": "others", "type": {"type": "array", "items": "Actor"}},
                {"name": "labels", "type": {"type": "map", "values": "string"}}
            ]
        }))
        .expect("valid schema")
    }

    fn record() -> Json {
        json!({
            "id": "a-1", "actor": {"id": "dr-hopper"}, "place": {"city": "London"},
            "others": [{"id": "nurse-1"}, {"id": "nurse-2"}], "labels": {"any key": "is fine"}
        })
    }

    #[test]
    fn a_record_with_the_schemas_fields_converts() {
        let value = json_to_avro(&record(), &schema()).expect("fits");
        assert_eq!(avro_to_json(&value), Ok(record()));
        // Optional fields may be left out: they take their default.
        let mut without_place = record();
        without_place.as_object_mut().unwrap().remove("place");
        assert!(json_to_avro(&without_place, &schema()).is_ok());
    }

    #[test]
    fn a_field_the_schema_lacks_is_refused_at_any_depth_naming_the_path_not_the_value() {
        let secret = "Ada Lovelace, SSN 123-45-6789";
        for (at, expected_path) in [
            ("", "$.patient"),
            ("/actor", "$.actor.patient"),
            ("/place", "$.place.patient"),
            ("/others/1", "$.others[1].patient"),
        ] {
            let mut hostile = record();
            hostile
                .pointer_mut(at)
                .and_then(Json::as_object_mut)
                .unwrap()
                .insert("patient".into(), json!(secret));
            let e = json_to_avro(&hostile, &schema()).expect_err(at);
            assert_eq!(e.path, expected_path, "{e}");
            assert!(e.message.contains("no such field"), "{e}");
            assert!(!e.to_string().contains(secret), "{e}");
        }
    }

    #[test]
    fn a_schema_that_lost_a_required_field_refuses_records_that_carry_it() {
        // A registry-side schema without `actor`: the record is refused, not written without it.
        let without_actor = Schema::parse(&json!({
            "type": "record", "name": "Access", "namespace": "test",
            "fields": [{"name": "id", "type": "string"}]
        }))
        .unwrap();
        let e = json_to_avro(
            &json!({"id": "a-1", "actor": {"id": "dr-hopper"}}),
            &without_actor,
        )
        .expect_err("actor is not in the schema");
        assert_eq!(e.path, "$.actor");
    }
}

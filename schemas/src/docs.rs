//! `docs/topics.md`: the data teams' reference, generated from the topic catalog
//! (`events::catalog`), the released Avro schemas and the example records, so it cannot drift
//! from the code. A test fails when the checked-in file is stale;
//! `HEALTHPLANE_BLESS=1 cargo test -p schemas docs` rewrites it.

use std::collections::HashMap;
use std::fmt::Write;

use events::catalog::CATALOG;
use events::examples::{EXAMPLE_PATIENT, example_record};
use serde_json::Value as Json;

use crate::catalog::{compatibility_for, latest, versions};

/// The whole document.
pub fn topics_markdown() -> String {
    let mut out = String::new();
    out.push_str(
        "# Topic catalog\n\n\
         <!-- Generated from events::catalog and schemas/avro by `HEALTHPLANE_BLESS=1 cargo test -p schemas docs`. Do not edit. -->\n\n\
         Every value is Avro in the Confluent wire format (magic byte `0`, 4-byte big-endian schema id, Avro binary),\n\
         registered under the subject `<topic>-value` (TopicNameStrategy). Keys are UTF-8 strings, partitioned with\n\
         murmur2 as the Java client does, so all events of one aggregate (and all accesses to one patient) share a\n\
         partition. Headers: `event_type`, `event_id`, `correlation_id`, and on domain events `traceparent` (W3C).\n\
         Delivery is at least once: deduplicate on `event_id`. Events of one aggregate are ordered by\n\
         `aggregate_version`, which is gap-free from 1; across topics Kafka orders nothing.\n\n\
         | topic | partitions | retention | key | subject | compatibility | versions |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for t in CATALOG {
        let released: Vec<String> = versions(t.name)
            .iter()
            .map(|s| format!("v{}", s.version))
            .collect();
        let _ = writeln!(
            out,
            "| [`{name}`](#{anchor}) | {} | {} d | {} | `{}` | {} | {} |",
            t.partitions,
            t.retention_days,
            t.key,
            t.value_subject(),
            compatibility_for(t.name),
            released.join(", "),
            name = t.name,
            anchor = t.name.replace('.', ""),
        );
    }
    out.push_str(
        "\nEach projector also has a dead-letter topic, `healthcare.dlq.<projection>-projector`, holding records it\n\
         could not decode or apply, with `dlq_reason`, `dlq_source_topic`, `dlq_source_partition` and\n\
         `dlq_source_offset` headers.\n",
    );
    for t in CATALOG {
        let schema = latest(t.name).expect("every documented topic has a schema");
        let json: Json = serde_json::from_str(schema.avsc).expect("schemas are JSON");
        let consumers = if t.consumers.is_empty() {
            "data teams".to_string()
        } else {
            format!("{}; data teams", t.consumers.join(", "))
        };
        let _ = write!(
            out,
            "\n## {}\n\n{}\n\n- Record: `{}.{}` (v{})\n- Produced by: {}\n- Consumed by: {}\n\n\
             | field | type | description |\n|---|---|---|\n",
            t.name,
            json["doc"].as_str().unwrap_or_default(),
            json["namespace"].as_str().unwrap_or_default(),
            json["name"].as_str().unwrap_or_default(),
            schema.version,
            t.producer,
            consumers,
        );
        let mut named = HashMap::new();
        field_rows(&json["fields"], "", &mut named, &mut out);
        let example =
            example_record(t.name, EXAMPLE_PATIENT).expect("every documented topic has an example");
        let _ = write!(
            out,
            "\nExample value (as JSON):\n\n```json\n{}\n```\n",
            serde_json::to_string_pretty(&example).expect("examples serialize")
        );
    }
    out
}

/// One table row per field, descending into records (`parent.child`, `list[].child`).
fn field_rows(fields: &Json, prefix: &str, named: &mut HashMap<String, Json>, out: &mut String) {
    for field in fields.as_array().into_iter().flatten() {
        let name = format!("{prefix}{}", field["name"].as_str().unwrap_or_default());
        let ty = &field["type"];
        let _ = writeln!(
            out,
            "| `{name}` | `{}` | {} |",
            type_name(ty).replace('|', "\\|"),
            field["doc"]
                .as_str()
                .unwrap_or_default()
                .replace('|', "\\|"),
        );
        if let Some((record, is_list)) = inner_record(ty, named) {
            let child = if is_list {
                format!("{name}[].")
            } else {
                format!("{name}.")
            };
            field_rows(&record["fields"], &child, named, out);
        }
    }
}

/// The record a field holds (directly, as an optional, or as list items), remembering named types.
fn inner_record(ty: &Json, named: &mut HashMap<String, Json>) -> Option<(Json, bool)> {
    match ty {
        Json::Object(map) if map.get("type") == Some(&Json::from("record")) => {
            if let Some(name) = map.get("name").and_then(Json::as_str) {
                named.insert(name.to_string(), ty.clone());
            }
            Some((ty.clone(), false))
        }
        Json::Object(map) if map.get("type") == Some(&Json::from("array")) => {
            inner_record(&map["items"], named).map(|(r, _)| (r, true))
        }
        Json::Array(branches) => branches.iter().find_map(|b| inner_record(b, named)),
        Json::String(name) => named.get(name).cloned().map(|r| (r, false)),
        _ => None,
    }
}

/// `uuid`, `timestamp-micros`, `array<Identifier>`, `string?` (nullable, default null), ...
fn type_name(ty: &Json) -> String {
    match ty {
        Json::String(s) => s.clone(),
        Json::Array(branches) => {
            let others: Vec<&Json> = branches.iter().filter(|b| *b != "null").collect();
            match others.as_slice() {
                [one] if others.len() < branches.len() => format!("{}?", type_name(one)),
                _ => branches
                    .iter()
                    .map(type_name)
                    .collect::<Vec<_>>()
                    .join(" | "),
            }
        }
        Json::Object(map) => {
            if let Some(logical) = map.get("logicalType").and_then(Json::as_str) {
                return logical.to_string();
            }
            match map.get("type").and_then(Json::as_str) {
                Some("array") => format!("array<{}>", type_name(&map["items"])),
                Some("map") => format!("map<{}>", type_name(&map["values"])),
                Some("enum") => {
                    let symbols: Vec<&str> = map["symbols"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Json::as_str)
                        .collect();
                    format!("enum {{{}}}", symbols.join(", "))
                }
                Some("record") => map["name"].as_str().unwrap_or("record").to_string(),
                Some(other) => other.to_string(),
                None => "?".to_string(),
            }
        }
        _ => "?".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_topics_md_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/topics.md");
        let generated = topics_markdown();
        if std::env::var_os("HEALTHPLANE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().expect("docs dir")).expect("create docs/");
            std::fs::write(&path, &generated).expect("write docs/topics.md");
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/topics.md is stale: run `HEALTHPLANE_BLESS=1 cargo test -p schemas docs` and commit it"
        );
    }

    #[test]
    fn every_topic_and_field_appears() {
        let doc = topics_markdown();
        for t in CATALOG {
            assert!(doc.contains(&format!("## {}", t.name)), "{}", t.name);
        }
        assert!(
            doc.contains("| `dosage.route.code` |"),
            "nested records are listed"
        );
        assert!(
            doc.contains("| `identifiers[].system` | `string` |"),
            "list items are listed"
        );
        assert!(doc.contains("| `occurred_at` | `timestamp-micros` |"));
        assert!(doc.contains("| `preferred_language` | `string?` |"));
    }
}

//! Parsing request members into valid values, collecting every failing field with its JSON path.

use crate::domain::FieldError;
use chrono::{DateTime, Utc};
use events::clinical::{Coding, Quantity, UCUM};
use serde::Deserialize;
use uuid::Uuid;

/// Longest free-text member accepted.
pub const MAX_TEXT: usize = 1024;
/// Allowed clock skew for "not in the future" and "not in the past" rules.
pub const SKEW: chrono::Duration = chrono::Duration::minutes(2);

/// Collects the field errors of one body.
#[derive(Debug, Default)]
pub struct Checker {
    pub errors: Vec<FieldError>,
}

impl Checker {
    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// `Ok(value)` if no field failed.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ if self.errors.is_empty() => Err(vec![FieldError::new("$", "is invalid")]),
            _ => Err(self.errors),
        }
    }

    pub fn required<'a, T>(&mut self, field: &str, value: &'a Option<T>) -> Option<&'a T> {
        if value.is_none() {
            self.fail(field, "is required");
        }
        value.as_ref()
    }

    /// A required, non-blank text of at most `MAX_TEXT` characters, trimmed.
    pub fn text(&mut self, field: &str, value: Option<&String>) -> Option<String> {
        match value.map(|v| v.trim()) {
            None => {
                self.fail(field, "is required");
                None
            }
            Some("") => {
                self.fail(field, "must not be empty");
                None
            }
            Some(v) if v.chars().count() > MAX_TEXT => {
                self.fail(field, format!("must be at most {MAX_TEXT} characters"));
                None
            }
            Some(v)
                if v.chars()
                    .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) =>
            {
                self.fail(field, "must not contain control characters");
                None
            }
            Some(v) if v.chars().any(is_invisible) => {
                self.fail(
                    field,
                    "must not contain invisible formatting characters (zero-width, bidi controls)",
                );
                None
            }
            Some(v) => Some(v.to_string()),
        }
    }

    pub fn optional_text(&mut self, field: &str, value: Option<&String>) -> Option<String> {
        value.and_then(|_| self.text(field, value))
    }

    /// A required UUID.
    pub fn uuid(&mut self, field: &str, value: Option<&String>) -> Option<Uuid> {
        let text = self.text(field, value)?;
        match text.parse() {
            Ok(id) => Some(id),
            Err(_) => {
                self.fail(field, format!("`{text}` is not a UUID"));
                None
            }
        }
    }

    pub fn optional_uuid(&mut self, field: &str, value: Option<&String>) -> Option<Uuid> {
        value.and_then(|_| self.uuid(field, value))
    }

    /// A required RFC 3339 instant, e.g. `2026-03-14T14:00:00Z`.
    pub fn instant(&mut self, field: &str, value: Option<&String>) -> Option<DateTime<Utc>> {
        let text = self.text(field, value)?;
        match DateTime::parse_from_rfc3339(&text) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.fail(
                    field,
                    format!("`{text}` is not an RFC 3339 date-time such as 2026-03-14T14:00:00Z"),
                );
                None
            }
        }
    }

    /// An instant that is not later than `now` (with clock skew); `now` when absent.
    pub fn past_instant(
        &mut self,
        field: &str,
        value: Option<&String>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if value.is_none() {
            return Some(now);
        }
        let t = self.instant(field, value)?;
        if t > now + SKEW {
            self.fail(field, "must not be in the future");
            return None;
        }
        Some(t)
    }

    /// A text that is one of `allowed`.
    pub fn one_of(
        &mut self,
        field: &str,
        value: Option<&String>,
        allowed: &[&str],
    ) -> Option<String> {
        let text = self.text(field, value)?;
        if allowed.contains(&text.as_str()) {
            Some(text)
        } else {
            self.fail(
                field,
                format!("`{text}` is not one of {}", allowed.join(", ")),
            );
            None
        }
    }

    /// A code of the closed set `T` (e.g. a FHIR status), or `default` when absent.
    pub fn code<T: std::str::FromStr<Err = String>>(
        &mut self,
        field: &str,
        value: Option<&String>,
        default: T,
    ) -> Option<T> {
        if value.is_none() {
            return Some(default);
        }
        let text = self.text(field, value)?;
        text.parse()
            .map_err(|message| self.fail(field, message))
            .ok()
    }

    /// A coding; `system` must equal `expected_system` when one is given.
    pub fn coding(
        &mut self,
        field: &str,
        value: Option<&CodingBody>,
        expected_system: Option<&str>,
    ) -> Option<Coding> {
        let Some(body) = value else {
            self.fail(field, "is required");
            return None;
        };
        let system = self.text(&format!("{field}.system"), body.system.as_ref());
        if let (Some(system), Some(expected)) = (&system, expected_system)
            && system != expected
        {
            self.fail(&format!("{field}.system"), format!("must be {expected}"));
            return None;
        }
        let code = self.text(&format!("{field}.code"), body.code.as_ref());
        let display = self.optional_text(&format!("{field}.display"), body.display.as_ref());
        Some(Coding {
            system: system?,
            code: code?,
            display,
        })
    }

    /// A quantity with a UCUM unit.
    pub fn quantity(&mut self, field: &str, body: &QuantityBody) -> Option<Quantity> {
        let value = match body.value {
            Some(v) if v.is_finite() => Some(v),
            Some(_) => {
                self.fail(&format!("{field}.value"), "must be a finite number");
                None
            }
            None => {
                self.fail(&format!("{field}.value"), "is required");
                None
            }
        };
        let unit = self.text(&format!("{field}.unit"), body.unit.as_ref());
        if let Some(u) = unit
            .as_deref()
            .filter(|u| u.chars().any(char::is_whitespace))
        {
            self.fail(
                &format!("{field}.unit"),
                format!("`{u}` is not a UCUM unit code"),
            );
            return None;
        }
        if let Some(system) = body.system.as_deref().filter(|s| *s != UCUM) {
            self.fail(
                &format!("{field}.system"),
                format!("`{system}` is not UCUM ({UCUM})"),
            );
            return None;
        }
        Some(Quantity {
            value: value?,
            unit: unit?,
            system: UCUM.to_string(),
        })
    }
}

/// A coding in a request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodingBody {
    pub system: Option<String>,
    pub code: Option<String>,
    pub display: Option<String>,
}

/// A quantity in a request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantityBody {
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub system: Option<String>,
}

/// True for a LOINC code with a valid mod-10 check digit, e.g. `8867-4`.
pub fn is_loinc(code: &str) -> bool {
    let Some((body, check)) = code.split_once('-') else {
        return false;
    };
    if body.is_empty() || body.len() > 7 || !body.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let Some(check) = check.parse::<u32>().ok().filter(|_| check.len() == 1) else {
        return false;
    };
    // LOINC's mod 10: from the right, double every other digit starting with the last one.
    let sum: u32 = body
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let x = d * 2;
                x / 10 + x % 10
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10 == check
}

/// Unicode format characters that render as nothing (zero-width spaces and joiners, word
/// joiner, bidirectional controls, BOM, soft hyphen): text that looks the same as other text
/// but is not.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_refuses_control_characters_but_keeps_line_breaks() {
        let mut c = Checker::default();
        assert_eq!(
            c.text("$.a", Some(&"two\nlines".to_string())),
            Some("two\nlines".to_string())
        );
        assert_eq!(c.text("$.b", Some(&"nul\u{0}byte".to_string())), None);
        assert_eq!(c.text("$.c", Some(&"bell\u{7}".to_string())), None);
        assert_eq!(
            c.errors
                .iter()
                .map(|e| e.field.as_str())
                .collect::<Vec<_>>(),
            vec!["$.b", "$.c"]
        );
    }

    #[test]
    fn loinc_check_digits() {
        for good in [
            "8867-4", "8310-5", "29463-7", "8480-6", "8462-4", "9279-1", "2708-6", "8302-2",
            "2345-7", "718-7",
        ] {
            assert!(is_loinc(good), "{good}");
        }
        for bad in [
            "8867-5",
            "8867",
            "8867-44",
            "abc-1",
            "-4",
            "12345678-9",
            "8867-x",
        ] {
            assert!(!is_loinc(bad), "{bad}");
        }
    }
}

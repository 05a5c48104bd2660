//! Confluent's compatibility levels, a closed set with one spelling each, and the check of a
//! new schema version against the earlier ones under a level.

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

/// How a subject's new schema versions must relate to the earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub const ALL: [Level; 7] = [
        Level::None,
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
    ];

    /// Confluent's name, e.g. `FULL_TRANSITIVE`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Checked against every earlier version, not only the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    /// The same level against one version (transitivity does not apply).
    pub fn against_one(self) -> Level {
        match self {
            Level::BackwardTransitive => Level::Backward,
            Level::ForwardTransitive => Level::Forward,
            Level::FullTransitive => Level::Full,
            other => other,
        }
    }

    /// The new schema must read data written with the earlier ones.
    pub fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    /// The earlier schemas must read data written with the new one.
    pub fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    /// Case-insensitive, as Confluent's registry reads it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "Invalid compatibility level. Valid values are {}",
                    Level::ALL.map(Level::as_str).join(", ")
                )
            })
    }
}

/// Checks `new` against the subject's earlier schemas (oldest first) under `level`.
pub fn check_compatibility(level: Level, new: &Schema, earlier: &[Schema]) -> Result<(), String> {
    let targets: &[Schema] = match (level, earlier.last()) {
        (Level::None, _) | (_, None) => return Ok(()),
        (l, Some(_)) if l.is_transitive() => earlier,
        (_, Some(_)) => &earlier[earlier.len() - 1..],
    };
    let (backward, forward) = (level.backward(), level.forward());
    let reads = |writer: &Schema, reader: &Schema, what: &str| match SchemaCompatibility::can_read(
        writer, reader,
    ) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(other) => Err(format!("{what}: {other:?} compatibility only")),
        Err(e) => Err(format!("{what}: {e}")),
    };
    for old in targets {
        if backward {
            reads(
                old,
                new,
                "the new schema cannot read data written with an earlier one",
            )?;
        }
        if forward {
            reads(
                new,
                old,
                "an earlier schema cannot read data written with the new one",
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_reads_back_from_its_name_in_any_case() {
        for level in Level::ALL {
            assert_eq!(level.as_str().parse(), Ok(level));
            assert_eq!(level.as_str().to_lowercase().parse(), Ok(level));
        }
        assert!(
            "SIDEWAYS"
                .parse::<Level>()
                .unwrap_err()
                .contains("FULL_TRANSITIVE")
        );
        assert_eq!(Level::FullTransitive.against_one(), Level::Full);
    }
}

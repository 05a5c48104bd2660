//! The consistency token a command returns, which a query presents to read its own write.

use uuid::Uuid;

use crate::registry::Aggregate;

/// "This aggregate has reached at least this version": `<aggregate type>:<id>:<version>`.
/// Clients treat it as opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyToken {
    pub aggregate: Aggregate,
    pub aggregate_id: Uuid,
    pub version: i64,
}

impl std::fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.aggregate, self.aggregate_id, self.version
        )
    }
}

impl std::str::FromStr for ConsistencyToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a consistency token from a command response");
        let mut parts = s.splitn(3, ':');
        let (Some(kind), Some(id), Some(version)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(ConsistencyToken {
            aggregate: kind.parse().map_err(|_| bad())?,
            aggregate_id: id.parse().map_err(|_| bad())?,
            version: version.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let token = ConsistencyToken {
            aggregate: Aggregate::Patient,
            aggregate_id: Uuid::nil(),
            version: 3,
        };
        assert_eq!(token.to_string().parse::<ConsistencyToken>(), Ok(token));
        assert!("patient:nope:1".parse::<ConsistencyToken>().is_err());
        assert!("x".parse::<ConsistencyToken>().is_err());
        assert!(
            format!("spaceship:{}:1", Uuid::nil())
                .parse::<ConsistencyToken>()
                .is_err()
        );
    }
}

//! The benchmarks' one table: each benchmark reports its measures next to the raw limit
//! measured in the same run, and `deploy/bench.sh` gathers them (from the JSON lines appended
//! to `HEALTHPLANE_BENCH_RESULTS`) into `docs/benchmarks.md`. A slow figure is a figure, never
//! an error.

use std::io::Write;

/// One row: what was measured, Healthplane's figure, the raw limit, their ratio, the target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measure {
    pub measure: String,
    pub healthplane: String,
    pub raw_limit: String,
    pub ratio: String,
    pub target: String,
}

impl Measure {
    /// A throughput next to its raw limit (both per second), with the ratio.
    pub fn rate(
        measure: &str,
        unit: &str,
        value: f64,
        raw: Option<(&str, f64)>,
        target: &str,
    ) -> Measure {
        let (raw_limit, ratio) = match raw {
            Some((what, limit)) => (
                format!("{} {unit}/s ({what})", thousands(limit)),
                format!("{:.0}%", 100.0 * value / limit),
            ),
            None => ("—".into(), "—".into()),
        };
        Measure {
            measure: measure.into(),
            healthplane: format!("{} {unit}/s", thousands(value)),
            raw_limit,
            ratio,
            target: target.into(),
        }
    }

    /// Any other figure, as text.
    pub fn text(
        measure: &str,
        healthplane: String,
        raw_limit: String,
        ratio: String,
        target: &str,
    ) -> Measure {
        Measure {
            measure: measure.into(),
            healthplane,
            raw_limit,
            ratio,
            target: target.into(),
        }
    }
}

/// Whether this bench binary was started as a benchmark: `cargo test --all-targets` runs
/// bench binaries without `--bench`, and then they have nothing to do.
pub fn requested() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A number from the environment variable `name`, else `default`.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `12,345`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Records in `topics` and the seconds a plain librdkafka consumer takes to read all of them
/// from the start (payloads touched, nothing decoded): the raw limit of reading a log.
pub fn raw_consume(brokers: &str, topics: &[&str]) -> anyhow::Result<(u64, f64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    use std::time::{Duration, Instant};

    let consumer: BaseConsumer = platform::kafka::client_config(brokers)
        .set("group.id", format!("bench-raw-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let started = Instant::now();
    let mut assignment = TopicPartitionList::new();
    let mut open = 0;
    for name in topics {
        let partitions = events::catalog::topic(name)
            .ok_or_else(|| anyhow::anyhow!("{name} is not in the catalog"))?
            .partitions;
        for p in 0..partitions {
            let (low, high) = consumer.fetch_watermarks(name, p, Duration::from_secs(10))?;
            if high > low {
                assignment.add_partition_offset(name, p, Offset::Offset(low))?;
                open += 1;
            }
        }
    }
    consumer.assign(&assignment)?;
    let (mut records, mut bytes) = (0u64, 0usize);
    while open > 0 {
        match consumer.poll(Duration::from_secs(10)) {
            None => anyhow::bail!("the broker stopped answering"),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                records += 1;
                bytes += m.payload().map_or(0, <[u8]>::len);
            }
        }
    }
    std::hint::black_box(bytes);
    Ok((records, started.elapsed().as_secs_f64()))
}

/// Prints `rows` as a Markdown table and appends them to `HEALTHPLANE_BENCH_RESULTS` (JSON
/// lines, with the benchmark's name) when set.
pub fn report(bench: &str, rows: &[Measure]) -> anyhow::Result<()> {
    println!("\n| measure | Healthplane | raw limit, same run | ratio | target |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.measure, r.healthplane, r.raw_limit, r.ratio, r.target
        );
    }
    if let Ok(path) = std::env::var("HEALTHPLANE_BENCH_RESULTS") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        for r in rows {
            writeln!(file, "{}", serde_json::json!({"bench": bench, "row": r}))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        let m = Measure::rate(
            "relay",
            "events",
            15_000.0,
            Some(("produce", 30_000.0)),
            ">= 50%",
        );
        assert_eq!(
            (
                m.healthplane.as_str(),
                m.raw_limit.as_str(),
                m.ratio.as_str()
            ),
            ("15,000 events/s", "30,000 events/s (produce)", "50%")
        );
    }
}

#!/usr/bin/env bash
# Benchmarks projection throughput (each projector, Kafka to Postgres, and a full rebuild from
# the event store) next to a raw COPY of the same rows into the same PostgreSQL, in one run,
# against a throwaway broker and registry. HEALTHPLANE_BENCH_EVENTS sets the event count.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_postgres
ensure_tansu
build_binaries
log "building the release binaries the benchmark runs"
(cd "$HP_ROOT" && cargo build --release --workspace --bins --quiet)
start_throwaway_cluster bench

log "running the projection benchmark"
cd "$HP_ROOT"
cargo bench -p tests --bench projection

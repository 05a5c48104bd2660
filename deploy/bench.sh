#!/usr/bin/env bash
# Benchmarks, release build, against a throwaway broker and registry:
# - projection throughput (each projector, Kafka to Postgres, and a full rebuild from the event
#   store) next to a raw COPY of the same rows into the same PostgreSQL, in one run
#   (HEALTHPLANE_BENCH_EVENTS sets the event count);
# - GraphQL latency at fixed rates: patient(id) at 1,000 req/s and a patient with four nested
#   connections at 300 req/s, each with its audit write, next to { __typename } on the same
#   server, and the query API's RSS (HEALTHPLANE_BENCH_SECONDS sets each run's length);
# - the audit log: full-log replay and verify next to a raw consume of the same topic, and a
#   patient's access report from a 10-million-row audit index (HEALTHPLANE_BENCH_AUDIT_RECORDS,
#   HEALTHPLANE_BENCH_AUDIT_ROWS set the sizes).
# Extra arguments pick benchmarks: ./deploy/bench.sh graphql
set -euo pipefail
# Benchmarks measure the release build: the local stack's and the tests' profile too, so the
# build below is the one they already made.
export HEALTHPLANE_PROFILE=release
source "$(dirname "$0")/lib.sh"

ensure_postgres
ensure_tansu
build_binaries
start_throwaway_cluster bench

cd "$HP_ROOT"
for bench in "${@:-projection graphql audit}"; do
  for name in $bench; do
    log "running the $name benchmark"
    # The whole workspace selected, as build_binaries does: the same features, nothing rebuilt.
    cargo bench --workspace --bench "$name"
  done
done

#!/usr/bin/env bash
# Runs the full Healthplane test suite: unit tests, and end-to-end tests against a throwaway
# tansu broker and schema registry started here, and the machine's PostgreSQL.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_postgres
ensure_tansu
ensure_python_client
build_binaries

RUN=$(mktemp -d -t healthplane-test.XXXXXX)
KAFKA_PORT=$(free_port)
REGISTRY_PORT=$(free_port)
REGISTRY_DB=hp_test_registry_$(date +%s)_$$
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # Drop the databases the test stacks created.
  PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -qtAc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'hp\_test\_%'" 2>/dev/null |
    while read -r db; do
      [ -n "$db" ] && PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1
    done
  rm -rf "$RUN"
}
trap cleanup EXIT

log "starting a throwaway tansu broker on :$KAFKA_PORT"
tansu broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --storage-engine memory://tansu/ >"$RUN/tansu.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$KAFKA_PORT" 30 || { cat "$RUN/tansu.log"; die "the broker did not start"; }

log "starting a throwaway schema registry on :$REGISTRY_PORT"
HEALTHPLANE_SCHEMA_REGISTRY_LISTEN=127.0.0.1:$REGISTRY_PORT \
HEALTHPLANE_SCHEMA_REGISTRY_DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/$REGISTRY_DB \
  "$HP_BIN/schema-registry" >"$RUN/registry.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$REGISTRY_PORT/health/ready" 60 || { cat "$RUN/registry.log"; die "the registry did not start"; }

export HEALTHPLANE_TEST_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export HEALTHPLANE_TEST_SCHEMA_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
export HEALTHPLANE_TEST_POSTGRES_URL=postgres://postgres:postgres@127.0.0.1:5432
export HEALTHPLANE_TANSU_BIN=$(command -v tansu)
export HEALTHPLANE_PYTHON=$HP_VENV/bin/python
HEALTHPLANE_KAFKA_BROKERS=$HEALTHPLANE_TEST_KAFKA_BROKERS HEALTHPLANE_SCHEMA_REGISTRY_URL=$HEALTHPLANE_TEST_SCHEMA_REGISTRY_URL \
  "$HP_BIN/replay-tool" bootstrap >/dev/null

log "running the tests"
cd "$HP_ROOT"
set +e
cargo test --workspace --all-targets "$@" 2>&1 | tee "$RUN/cargo-test.log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary: "tests: N passed, N failed, N skipped".
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$RUN/cargo-test.log"
exit "$status"

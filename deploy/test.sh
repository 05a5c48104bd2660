#!/usr/bin/env bash
# Runs the full Healthplane test suite: unit tests, and end-to-end tests against a throwaway
# tansu broker and schema registry started here, and the machine's PostgreSQL.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
# The tests run the binaries built next to them, in the one profile (release unless
# HEALTHPLANE_PROFILE says otherwise).
source "$(dirname "$0")/lib.sh"

ensure_postgres
ensure_tansu
ensure_python_client
build_binaries

start_throwaway_cluster test

log "running the tests"
cd "$HP_ROOT"
set +e
# shellcheck disable=SC2046
cargo test --workspace --all-targets $(cargo_profile) "$@" 2>&1 | tee "$RUN/cargo-test.log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary: "tests: N passed, N failed, N skipped".
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$RUN/cargo-test.log"
exit "$status"

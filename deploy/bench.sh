#!/usr/bin/env bash
# Every benchmark, release build, each measure next to the raw limit measured in the same run,
# gathered into one table printed at the end and written to docs/benchmarks.md (with the
# machine, the date and the commit). Exits non-zero only on an error, never on a slow figure.
# - write: the command API at saturation (relay on; the outbox's depth), next to single-row
#   transactional inserts; the relay draining a backlog, next to a plain librdkafka producer;
#   on a broker of its own with SQLite storage, as the local stack;
# - projection: each projector from Kafka and a full rebuild from the event store, next to a
#   raw COPY of the same rows and a raw librdkafka consume of the same topic
#   (HEALTHPLANE_BENCH_EVENTS sets the event count);
# - graphql: patient(id) at 1,000 req/s and a patient with four nested connections at
#   300 req/s, each with its audit write, next to { __typename } on the same server, and the
#   query API's RSS (HEALTHPLANE_BENCH_SECONDS sets each run's length);
# - audit: full-log replay and verify next to a raw consume of the same topic (SQLite storage),
#   and a patient's access report from a 10-million-row audit index
#   (HEALTHPLANE_BENCH_AUDIT_RECORDS, HEALTHPLANE_BENCH_AUDIT_ROWS set the sizes).
# Every benchmark runs on a throwaway broker with SQLite storage, as the local stack (the
# write and audit benchmarks start brokers of their own, also on SQLite).
# Extra arguments pick benchmarks: ./deploy/bench.sh graphql audit
set -euo pipefail
# Benchmarks measure the release build: the local stack's and the tests' profile too, so the
# build below is the one they already made.
export HEALTHPLANE_PROFILE=release
source "$(dirname "$0")/lib.sh"

ensure_postgres
ensure_tansu
build_binaries
start_throwaway_cluster bench sqlite

cd "$HP_ROOT"
export HEALTHPLANE_BENCH_RESULTS=$RUN/results.jsonl
: >"$HEALTHPLANE_BENCH_RESULTS"
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(write projection graphql audit)
for name in "${benches[@]}"; do
  log "running the $name benchmark"
  # The whole workspace selected, as build_binaries does: the same features, nothing rebuilt.
  cargo bench --workspace --bench "$name"
done

out=$HP_ROOT/docs/benchmarks.md
python3 - "$HEALTHPLANE_BENCH_RESULTS" "$out" "$(git -C "$HP_ROOT" rev-parse --short HEAD)" "${benches[*]}" <<'PY'
import json, os, platform, sys, datetime
results, out, commit, benches = sys.argv[1:5]
rows = [json.loads(line) for line in open(results) if line.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
mem = next((int(l.split()[1]) // 1024 // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
lines = [
    "# Benchmarks",
    "",
    "<!-- Written by ./deploy/bench.sh; do not edit. -->",
    "",
    f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC at commit {commit}, release build, "
    f"benchmarks: {benches}; machine: {os.cpu_count()} CPUs ({cpu}), {mem} GiB, with the broker (tansu 0.6.0), "
    "the registry, PostgreSQL, every service and the load generator on it. Each raw limit was measured in the same run.",
    "",
    "| benchmark | measure | Healthplane | raw limit, same run | ratio | target |",
    "|---|---|---|---|---|---|",
]
for r in rows:
    m = r["row"]
    lines.append(f"| {r['bench']} | {m['measure']} | {m['healthplane']} | {m['raw_limit']} | {m['ratio']} | {m['target']} |")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print("\n" + text)
PY
log "the table is in $out"

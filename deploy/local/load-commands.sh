#!/usr/bin/env bash
# Loads the running local stack's command API with patient registrations (wrk at saturation),
# then waits for the outbox relay to publish everything, and prints the figures: commands/s,
# latency, non-2xx answers, the outbox depth when the load stopped, and how long it took to drain.
# Usage: ./deploy/local/load-commands.sh [seconds=60] [connections=32]
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

SECONDS_OF_LOAD=${1:-60}
CONNECTIONS=${2:-32}
API=${HEALTHPLANE_COMMAND_API_URL:-http://127.0.0.1:8082}
EVENT_STORE=${HEALTHPLANE_EVENT_STORE_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/healthplane_event_store}

command -v wrk >/dev/null || {
  log "installing wrk from Debian packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}
curl -fsS -o /dev/null "$API/health/ready" || die "the command API at $API is not ready: start ./deploy/local/up.sh first"

WORK=$(mktemp -d -t healthplane-load.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# The local stack's key: the development secret unless one is configured.
[ -n "${HEALTHPLANE_JWT_SECRET:-}" ] || export HEALTHPLANE_DEV_MODE=1
TOKEN=$("$HP_BIN/mint-token" --role admin --sub load-test)
cat >"$WORK/register.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"identifier":[{"system":"urn:oid:2.16.840.1.113883.4.1","value":"000-00-0000"}],"name":{"given":["Load"],"family":"Test"},"gender":"unknown","birthDate":"1970-01-01"}'
LUA

depth() { psql "$EVENT_STORE" -qtAc "SELECT count(*) FROM outbox WHERE published_at IS NULL"; }
published() { psql "$EVENT_STORE" -qtAc "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"; }

before=$(published)
log "loading $API/v1/patients for ${SECONDS_OF_LOAD}s with $CONNECTIONS connections"
wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_OF_LOAD}s" --latency -s "$WORK/register.lua" "$API/v1/patients" | tee "$WORK/wrk.txt"
left=$(depth)
log "load stopped with $left events in the outbox; waiting for the relay"
start=$(date +%s%N)
deadline=$(($(date +%s) + 600))
while (($(depth) > 0)); do
  (($(date +%s) < deadline)) || die "the outbox did not drain in 10 minutes: $(depth) events left"
  sleep 0.5
done
drained_ms=$((($(date +%s%N) - start) / 1000000))
non2xx=$(grep -oP 'Non-2xx or 3xx responses: \K[0-9]+' "$WORK/wrk.txt" || echo 0)
cat <<MSG

commands/s accepted      $(grep -oP 'Requests/sec:\s+\K[0-9.]+' "$WORK/wrk.txt")
non-2xx answers          $non2xx
events published         $(($(published) - before))
outbox at load stop      $left
drained after the load   ${drained_ms} ms
MSG
[ "$non2xx" = 0 ] || die "$non2xx commands were not accepted"

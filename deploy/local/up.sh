#!/usr/bin/env bash
# Healthplane local stack, the embedded default: PostgreSQL, the tansu Kafka broker with
# durable SQLite storage, the schema registry, the command API, the patient projector and the
# GraphQL API, all on this machine. Installs what is missing; a second run keeps the data.
# A process that dies is restarted with backoff (and the restart is said here and in its log);
# Ctrl-C stops everything cleanly.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

DATA=${HEALTHPLANE_DATA_DIR:-$HP_ROOT/.data}
mkdir -p "$DATA/logs" "$DATA/kafka"

ensure_postgres
ensure_tansu
build_binaries

# The local stack verifies tokens with the public development secret unless a key is
# configured: it is a developer's stack, never one for real data.
if [ -z "${HEALTHPLANE_JWT_SECRET:-}${HEALTHPLANE_JWT_PUBLIC_KEY_PEM:-}" ]; then
  export HEALTHPLANE_DEV_MODE=1
  log "development mode: tokens are verified with the PUBLIC development secret (set HEALTHPLANE_JWT_SECRET to use your own)"
fi
# Registry writes need credentials: HEALTHPLANE_SCHEMA_REGISTRY_USERS (user:password,...) if
# set, else in development mode the PUBLIC development credential. Bootstrap registers as
# HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO, by default the first of those users.
if [ -n "${HEALTHPLANE_SCHEMA_REGISTRY_USERS:-}" ]; then
  export HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO=${HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO:-${HEALTHPLANE_SCHEMA_REGISTRY_USERS%%,*}}
elif [ "${HEALTHPLANE_DEV_MODE:-}" = 1 ] || [ "${HEALTHPLANE_DEV_MODE:-}" = true ]; then
  log "development mode: registry writes accept the PUBLIC development credential (set HEALTHPLANE_SCHEMA_REGISTRY_USERS to use your own)"
else
  die "a token key is configured but no registry users: set HEALTHPLANE_SCHEMA_REGISTRY_USERS=user:password (passwords of at least 16 bytes)"
fi

# Consistency tokens are sealed with a key of this stack's own, kept with its data.
mkdir -p "$DATA/secrets" && chmod 700 "$DATA/secrets"
if [ -z "${HEALTHPLANE_CONSISTENCY_KEY:-}" ]; then
  [ -s "$DATA/secrets/consistency-key" ] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DATA/secrets/consistency-key")
  HEALTHPLANE_CONSISTENCY_KEY=$(cat "$DATA/secrets/consistency-key")
  export HEALTHPLANE_CONSISTENCY_KEY
fi

require_free_port 9092 "Kafka"
require_free_port 8081 "schema registry"
require_free_port 8082 "command API"
require_free_port 8080 "GraphQL API"
for port in 9101 9102 9103 9104 9105 9106; do require_free_port "$port" "projector metrics"; done
require_free_port 9107 "audit sealer metrics"

RUNDIR=$(mktemp -d -t healthplane-up.XXXXXX)
supervisors=()
stop_all() {
  trap - INT TERM EXIT
  touch "$RUNDIR/stopping"
  if ((${#supervisors[@]})); then
    log "stopping Healthplane"
    # Reverse order, each stopped before the next: services first, the broker last.
    for ((i = ${#supervisors[@]} - 1; i >= 0; i--)); do
      kill -TERM "${supervisors[i]}" 2>/dev/null || true
      wait "${supervisors[i]}" 2>/dev/null || true
    done
  fi
  rm -rf "$RUNDIR"
}
trap stop_all EXIT
trap 'touch "$RUNDIR/stopping"; exit 130' INT TERM

# Runs "$@" as the service $1 and restarts it whenever it exits, until the stack stops: after
# 1 s, doubling to 30 s while it keeps failing (a run of a minute or more starts over at 1 s).
# TERM stops the service and waits for it.
supervise() {
  local name=$1 restarts=0 started status wait child=
  shift
  trap '[ -n "$child" ] && { kill -TERM "$child"; wait "$child"; } 2>/dev/null; exit 0' TERM
  while :; do
    started=$SECONDS
    "$@" >>"$DATA/logs/$name.log" 2>&1 &
    child=$!
    wait "$child" && status=0 || status=$?
    child=
    [ -e "$RUNDIR/stopping" ] && return 0
    ((SECONDS - started >= 60)) && restarts=0
    restarts=$((restarts + 1))
    wait=$((restarts > 5 ? 30 : 1 << (restarts - 1)))
    log "$name exited (status $status); restarting it in ${wait}s (restart $restarts in a row; see $DATA/logs/$name.log)"
    printf '%s healthplane up.sh: exited with status %s; restarting in %ss\n' "$(date -u +%FT%TZ)" "$status" "$wait" >>"$DATA/logs/$name.log"
    sleep "$wait" &
    wait $! || true
    [ -e "$RUNDIR/stopping" ] && return 0
  done
}

start() {
  local name=$1
  shift
  supervise "$name" "$@" &
  supervisors+=($!)
}

log "starting the tansu broker on :9092 (data in $DATA/kafka)"
# tansu's SQLite storage lacks an index every fetch needs; it is added at every (re)start.
start tansu bash -c "cd '$DATA/kafka' && { python3 '$HP_ROOT/deploy/local/tansu-sqlite-index.py' tansu.db & } && exec tansu broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://localhost:9092 --storage-engine sqlite://tansu.db"
wait_port 127.0.0.1 9092 30 || die "the broker did not start; see $DATA/logs/tansu.log"

log "provisioning PostgreSQL: one least-privileged role per service (passwords in $DATA/secrets)"
"$HP_BIN/replay-tool" provision-postgres --admin-url "$HP_PG_ADMIN_URL" --secrets-dir "$DATA/secrets" | sed 's/^/    /'
# The server URL (no database) with the credentials of one service's role.
pg_as() { echo "postgres://healthplane_$1:$(cat "$DATA/secrets/healthplane_$1")@127.0.0.1:5432"; }

log "starting the schema registry on :8081"
start schema-registry env HEALTHPLANE_POSTGRES_URL="$(pg_as registry)" "$HP_BIN/schema-registry"
wait_http http://127.0.0.1:8081/health/ready 60 || die "the registry did not start; see $DATA/logs/schema-registry.log"

log "creating topics and registering schemas"
"$HP_BIN/replay-tool" bootstrap | sed 's/^/    /'

log "starting the command API, the projectors and the GraphQL API"
start command-api env HEALTHPLANE_POSTGRES_URL="$(pg_as command)" "$HP_BIN/command-api"
PROJECTIONS=(patient appointment encounter laboratory pharmacy audit)
for i in "${!PROJECTIONS[@]}"; do
  start "projector-${PROJECTIONS[i]}" env HEALTHPLANE_POSTGRES_URL="$(pg_as projector)" "$HP_BIN/projector" --projection "${PROJECTIONS[i]}" --listen "127.0.0.1:$((9101 + i))"
done
wait_http http://127.0.0.1:8082/health/ready 60 || die "the command API did not start; see $DATA/logs/command-api.log"
for i in "${!PROJECTIONS[@]}"; do
  wait_http "http://127.0.0.1:$((9101 + i))/health/ready" 60 || die "the ${PROJECTIONS[i]} projector did not start; see $DATA/logs/projector-${PROJECTIONS[i]}.log"
done
# Every audit record is signed; the keyring is what `replay-tool audit verify` trusts.
if [ ! -s "$DATA/secrets/audit-signing.key" ]; then
  log "making the audit writer's signing key ($DATA/secrets/audit-signing.key; keyring $DATA/audit-keyring)"
  "$HP_BIN/replay-tool" audit keygen --key "$DATA/secrets/audit-signing.key" --keyring "$DATA/audit-keyring" >/dev/null
fi
export HEALTHPLANE_AUDIT_SIGNING_KEY_FILE=$DATA/secrets/audit-signing.key HEALTHPLANE_AUDIT_KEYRING=$DATA/audit-keyring
start query-api env HEALTHPLANE_POSTGRES_URL="$(pg_as query)" "$HP_BIN/query-api"
wait_http http://127.0.0.1:8080/health/ready 60 || die "the GraphQL API did not start; see $DATA/logs/query-api.log"
# The sealer signs its checkpoints with a key of its own, trusted by the same keyring.
if [ ! -s "$DATA/secrets/audit-sealer.key" ]; then
  log "making the audit sealer's signing key ($DATA/secrets/audit-sealer.key)"
  "$HP_BIN/replay-tool" audit keygen --key "$DATA/secrets/audit-sealer.key" --keyring "$DATA/audit-keyring" >/dev/null
fi
start audit-sealer env HEALTHPLANE_POSTGRES_URL="$(pg_as projector)" HEALTHPLANE_AUDIT_SIGNING_KEY_FILE="$DATA/secrets/audit-sealer.key" "$HP_BIN/audit-sealer"
wait_http http://127.0.0.1:9107/health/ready 60 || die "the audit sealer did not start; see $DATA/logs/audit-sealer.log"

cat <<MSG

Healthplane is up.
  GraphQL API       http://localhost:8080/graphql     (GraphiQL in a browser)
  Command API       http://localhost:8082/v1/patients
  Schema registry   http://localhost:8081/subjects
  Kafka (tansu)     localhost:9092
  PostgreSQL        127.0.0.1:5432                    (services: roles healthplane_*, passwords in $DATA/secrets)
  Projectors        patient, appointment, encounter, laboratory, pharmacy, audit: health and metrics on :9101-:9106
  Audit sealer      signed checkpoints over the PHI access log every minute: health and metrics on :9107
  Logs              $DATA/logs/

Try it:
  TOKEN=\$(HEALTHPLANE_DEV_MODE=1 $HP_BIN/mint-token --role admin)
  curl -s localhost:8082/v1/patients -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
    -d '{"identifier":[{"system":"urn:oid:2.16.840.1.113883.4.1","value":"123-45-6789"}],"name":{"given":["Ada"],"family":"Lovelace"},"gender":"female","birthDate":"1815-12-10"}'

A process that dies is restarted (said here and in its log). Ctrl-C stops everything;
the data stays in $DATA.
MSG

# Keep running until Ctrl-C; the supervisors restart what dies.
wait

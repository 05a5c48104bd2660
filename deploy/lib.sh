# shellcheck shell=bash
# Shared helpers of the local-stack scripts: install what is missing, start what is down.

HP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HP_ROOT/target}
# One build profile for the local stack, the tests and the benchmarks (release: on 2 cores it
# builds about as fast as debug), so nothing is compiled twice. HEALTHPLANE_PROFILE=debug is
# there for a developer who wants debug assertions and a debugger.
HP_PROFILE=${HEALTHPLANE_PROFILE:-release}
case "$HP_PROFILE" in debug | release) ;; *) echo "HEALTHPLANE_PROFILE must be debug or release" >&2; exit 2 ;; esac
HP_BIN=$CARGO_TARGET_DIR/$HP_PROFILE
TANSU_VERSION=0.6.0
HP_VENV=${HEALTHPLANE_VENV:-$HOME/.cache/healthplane/venv}
# The local PostgreSQL administrator: used only to create the services' roles and databases.
HP_PG_ADMIN_URL=${HEALTHPLANE_POSTGRES_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Waits until host:port accepts connections.
wait_port() {
  local host=$1 port=$2 timeout=${3:-30} i
  for ((i = 0; i < timeout * 10; i++)); do
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Waits until an HTTP URL answers 2xx.
wait_http() {
  local url=$1 timeout=${2:-60} i
  for ((i = 0; i < timeout * 10; i++)); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Fails if something already listens on the port.
require_free_port() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    die "port $1 is in use ($2): is another Healthplane stack running?"
  fi
}

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# PostgreSQL 15+ on 127.0.0.1:5432, installed from Debian packages if absent, started if down,
# with the `postgres` role reachable over TCP with password `postgres`.
ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL from Debian packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 100); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
    pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL did not start"
  fi
  if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -qtAc 'SELECT 1' >/dev/null 2>&1; then
    log "setting the local postgres role's password"
    su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  fi
}

# The pinned tansu broker, installed once with cargo (about 17 minutes on 2 cores).
ensure_tansu() {
  if tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return
  fi
  log "installing the tansu $TANSU_VERSION broker with cargo (once; about 17 minutes on 2 cores)"
  cargo install "tansu@$TANSU_VERSION" --locked --features libsql,dynostore
}

# A Python with confluent-kafka and its Schema Registry + Avro extras (for the data-team example).
ensure_python_client() {
  if [ ! -x "$HP_VENV/bin/python" ]; then
    log "creating a Python virtualenv for the data-team example at $HP_VENV"
    python3 -m venv "$HP_VENV"
  fi
  if ! "$HP_VENV/bin/python" -c 'import confluent_kafka.schema_registry.avro' >/dev/null 2>&1; then
    log "installing confluent-kafka[avro,schemaregistry] from PyPI"
    "$HP_VENV/bin/pip" install -q "confluent-kafka[avro,schemaregistry]>=2.6,<3"
  fi
}

# The cargo flag of the HEALTHPLANE_PROFILE profile.
cargo_profile() {
  [ "$HP_PROFILE" = release ] && echo --release || true
}

# Builds every target of the workspace (binaries, tests, benchmarks) in the HEALTHPLANE_PROFILE
# profile. Always the whole workspace with every target: cargo unifies dependency features over
# what it builds, so a narrower selection (`--bins`, `-p tests`) would compile dependencies
# again with other features.
build_binaries() {
  local profile
  profile=$(cargo_profile)
  log "building Healthplane (cargo build --workspace --all-targets $profile)"
  # shellcheck disable=SC2086
  (cd "$HP_ROOT" && cargo build --workspace --all-targets --quiet $profile)
}

# Starts a throwaway tansu broker and schema registry (fresh database, one user with a random
# password) on free ports, creates the topics and schemas, and exports HEALTHPLANE_TEST_* for
# the test harness (HEALTHPLANE_TEST_SCHEMA_REGISTRY_USER_INFO is the registry's
# user:password). Stops them and drops the hp_test_* databases on exit.
# $1 names the run (test, bench); $2 is the broker's storage: memory (the default: fast, for
# tests) or sqlite (the local stack's durable storage, indexed as up.sh does: for benchmarks).
start_throwaway_cluster() {
  local storage=memory://tansu/
  [ "${2:-memory}" = sqlite ] && storage=sqlite://tansu.db
  RUN=$(mktemp -d -t "healthplane-$1.XXXXXX")
  KAFKA_PORT=$(free_port)
  REGISTRY_PORT=$(free_port)
  REGISTRY_DB=hp_test_registry_$(date +%s)_$$
  local registry_user_info
  registry_user_info=healthplane-test:$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  CLUSTER_PIDS=()
  trap stop_throwaway_cluster EXIT

  log "starting a throwaway tansu broker on :$KAFKA_PORT ($storage)"
  (cd "$RUN" && exec tansu broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine "$storage") >"$RUN/tansu.log" 2>&1 &
  CLUSTER_PIDS+=($!)
  wait_port 127.0.0.1 "$KAFKA_PORT" 30 || { cat "$RUN/tansu.log"; die "the broker did not start"; }
  if [ "$storage" = sqlite://tansu.db ]; then
    python3 "$HP_ROOT/deploy/local/tansu-sqlite-index.py" "$RUN/tansu.db" || die "cannot index the broker's SQLite storage"
  fi

  log "starting a throwaway schema registry on :$REGISTRY_PORT"
  HEALTHPLANE_SCHEMA_REGISTRY_LISTEN=127.0.0.1:$REGISTRY_PORT \
  HEALTHPLANE_SCHEMA_REGISTRY_DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/$REGISTRY_DB \
  HEALTHPLANE_SCHEMA_REGISTRY_USERS=$registry_user_info \
    "$HP_BIN/schema-registry" >"$RUN/registry.log" 2>&1 &
  CLUSTER_PIDS+=($!)
  wait_http "http://127.0.0.1:$REGISTRY_PORT/health/ready" 60 || { cat "$RUN/registry.log"; die "the registry did not start"; }

  export HEALTHPLANE_TEST_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
  export HEALTHPLANE_TEST_SCHEMA_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
  export HEALTHPLANE_TEST_SCHEMA_REGISTRY_USER_INFO=$registry_user_info
  export HEALTHPLANE_TEST_POSTGRES_URL=postgres://postgres:postgres@127.0.0.1:5432
  HEALTHPLANE_TANSU_BIN=$(command -v tansu)
  export HEALTHPLANE_TANSU_BIN
  export HEALTHPLANE_PYTHON=$HP_VENV/bin/python
  HEALTHPLANE_KAFKA_BROKERS=$HEALTHPLANE_TEST_KAFKA_BROKERS HEALTHPLANE_SCHEMA_REGISTRY_URL=$HEALTHPLANE_TEST_SCHEMA_REGISTRY_URL \
  HEALTHPLANE_SCHEMA_REGISTRY_USER_INFO=$HEALTHPLANE_TEST_SCHEMA_REGISTRY_USER_INFO \
    "$HP_BIN/replay-tool" bootstrap >/dev/null
}

stop_throwaway_cluster() {
  for pid in "${CLUSTER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # Drop the databases the test stacks created.
  PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -qtAc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'hp\_test\_%'" 2>/dev/null |
    while read -r db; do
      [ -n "$db" ] && PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1
    done
  rm -rf "$RUN"
}

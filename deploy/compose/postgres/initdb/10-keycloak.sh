#!/bin/sh
# Healthplane compose: creates Keycloak's own role and database. The postgres image runs this
# once, on the first start with an empty data volume; the Healthplane roles and databases are
# made by the `provision` service (replay-tool provision-postgres) on every start instead.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v keycloak_password="${KEYCLOAK_DB_PASSWORD:?KEYCLOAK_DB_PASSWORD is not set}" <<'SQL'
CREATE ROLE keycloak LOGIN PASSWORD :'keycloak_password';
CREATE DATABASE keycloak OWNER keycloak;
REVOKE ALL ON DATABASE keycloak FROM PUBLIC;
SQL

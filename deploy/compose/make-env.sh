#!/bin/sh
# Healthplane compose stack: writes deploy/compose/.env with fresh random secrets and makes the
# stack's private CA in deploy/compose/secrets/ (ca.key never leaves this machine; ca.crt also
# goes into .env as HEALTHPLANE_CA_PEM, which the Healthplane services trust).
#
#   deploy/compose/make-env.sh            # refuses to overwrite an existing .env
#   deploy/compose/make-env.sh --force    # new secrets AND a new CA; POSTGRES_PASSWORD and
#                                         # KEYCLOAK_DB_PASSWORD then need ALTER ROLE in the
#                                         # existing volume, or fresh volumes (README.md)
#
# Needs OpenSSL 3 (`openssl`); without it (e.g. LibreSSL on macOS) it runs the same pinned
# alpine/openssl image the stack uses, through docker.
set -eu

cd "$(dirname "$0")"
OPENSSL_IMAGE=alpine/openssl:3.3.2

if [ -e .env ] && [ "${1:-}" != "--force" ]; then
  echo "make-env: .env exists; keeping it. --force makes new secrets and a new CA; read" >&2
  echo "make-env: 'Rotating' in deploy/compose/README.md first." >&2
  exit 1
fi

umask 077
mkdir -p secrets

ossl() {
  if openssl version 2>/dev/null | grep -q '^OpenSSL 3'; then
    (cd secrets && openssl "$@")
  else
    docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/secrets:/work" -w /work \
      "$OPENSSL_IMAGE" "$@"
  fi
}

# n random bytes as hex: URL-safe, so the passwords can go into postgres:// URLs unescaped.
hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

rm -f secrets/ca.key secrets/ca.crt
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out ca.key 2>/dev/null
ossl req -x509 -new -key ca.key -sha256 -days 1825 \
  -subj "/O=Healthplane compose/CN=Healthplane compose CA $(date -u +%Y-%m-%d)" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" \
  -out ca.crt
chmod 0600 secrets/ca.key
chmod 0644 secrets/ca.crt

# The CA certificate as one double-quoted .env value (compose turns \n back into newlines).
ca_pem=$(awk '{ printf "%s\\n", $0 }' secrets/ca.crt)

cat > .env.tmp <<EOF
# Healthplane compose stack secrets, written by make-env.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ).
# Keep this file private (it is git-ignored); every value here is a credential except
# HEALTHPLANE_CA_PEM (the public CA certificate, ./secrets/ca.crt).

# PostgreSQL superuser (used by the postgres image and by the one-shot provision service)
POSTGRES_PASSWORD=$(hex 24)
# The services' least-privileged roles (replay-tool provision-postgres creates them)
HEALTHPLANE_POSTGRES_PASSWORD_COMMAND=$(hex 24)
HEALTHPLANE_POSTGRES_PASSWORD_PROJECTOR=$(hex 24)
HEALTHPLANE_POSTGRES_PASSWORD_QUERY=$(hex 24)
HEALTHPLANE_POSTGRES_PASSWORD_REGISTRY=$(hex 24)
# Keycloak's own database role, and its bootstrap admin (user healthplane-admin, master realm)
KEYCLOAK_DB_PASSWORD=$(hex 24)
KEYCLOAK_ADMIN_PASSWORD=$(hex 24)
# Test users of the healthplane realm (TEST ONLY; see keycloak/healthplane-realm.json)
HEALTHPLANE_TEST_PASSWORD_PATIENT=$(hex 16)
HEALTHPLANE_TEST_PASSWORD_PRACTITIONER=$(hex 16)
HEALTHPLANE_TEST_PASSWORD_ADMIN=$(hex 16)
HEALTHPLANE_TEST_PASSWORD_AUDITOR=$(hex 16)
# Confluent Schema Registry: basic-auth password of user healthplane, and its TLS keystore's
SCHEMA_REGISTRY_PASSWORD=$(hex 24)
SCHEMA_REGISTRY_KEYSTORE_PASSWORD=$(hex 24)
# Consistency tokens: 64 hex chars, the same in command-api and query-api
HEALTHPLANE_CONSISTENCY_KEY=$(hex 32)
# Grafana admin (user admin)
GRAFANA_ADMIN_PASSWORD=$(hex 24)
# The CA that signed the brokers', PostgreSQL's, the registry's and Keycloak's certificates
HEALTHPLANE_CA_PEM="$ca_pem"
EOF
mv .env.tmp .env
chmod 0600 .env
echo "make-env: wrote $(pwd)/.env and $(pwd)/secrets/ca.{crt,key}"

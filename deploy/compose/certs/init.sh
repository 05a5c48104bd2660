#!/bin/sh
# Healthplane compose stack: one-shot key and certificate set-up, run by the `certs` service
# (alpine/openssl, as root) before anything else starts. Idempotent: every `docker compose up`
# runs it again; it keeps what is still valid and only makes what is missing.
#
# In:  /ca/ca.crt, /ca/ca.key       the stack's private CA (make-env.sh made it, in ./secrets)
#      HEALTHPLANE_CA_PEM           the same CA certificate as text (from .env; checked equal)
#      SCHEMA_REGISTRY_PASSWORD, SCHEMA_REGISTRY_KEYSTORE_PASSWORD
# Out: one volume per consumer, each holding only what that consumer needs, owned by the uid
#      that reads it:
#      /out/kafka-N          keystore.pem (key + certificate, PEM keystore), ca.crt   uid 1000
#      /out/postgres         tls.key, tls.crt, ca.crt                                 uid 999
#      /out/schema-registry  keystore.p12 (PKCS12, SCHEMA_REGISTRY_KEYSTORE_PASSWORD), ca.crt
#      /out/keycloak         tls.key, tls.crt, ca.crt                                 uid 1000
#      /out/schema-registry-auth  passwords.properties (Jetty PropertyFileLoginModule)
#      /out/audit-writer     audit-signing.key: the query API's Ed25519 audit key     uid 65532
#      /out/audit-sealer     audit-signing.key: the audit sealer's own key            uid 65532
#      /out/audit-keyrings   writers.keyring, sealers.keyring (public keys, for `replay-tool
#                            audit verify` and the sealer)
set -eu

CA_DIR=${CA_DIR:-/ca}
OUT=${OUT:-/out}
CA_CRT=$CA_DIR/ca.crt
CA_KEY=$CA_DIR/ca.key
# Leaf certificates live 397 days and are re-issued when fewer than 30 days remain, or when
# they were not signed by the current CA (make-env.sh --rotate-ca).
DAYS=397
RENEW_BEFORE_S=2592000

log() { echo "certs: $*"; }

[ -r "$CA_CRT" ] && [ -r "$CA_KEY" ] || {
  log "no CA in ./secrets (ca.crt, ca.key): run deploy/compose/make-env.sh first"
  exit 1
}
# The services trust HEALTHPLANE_CA_PEM (text in .env); the certificates below are signed by
# ./secrets/ca.key. Refuse to go on when the two do not belong together.
printf '%s\n' "${HEALTHPLANE_CA_PEM:?HEALTHPLANE_CA_PEM is not set}" > /tmp/env-ca.crt
if [ "$(openssl x509 -in /tmp/env-ca.crt -noout -fingerprint -sha256)" != \
     "$(openssl x509 -in "$CA_CRT" -noout -fingerprint -sha256)" ]; then
  log "HEALTHPLANE_CA_PEM in .env is not ./secrets/ca.crt: run make-env.sh again (see README)"
  exit 1
fi

# issue <dir> <common name> <subjectAltName>: a key and a CA-signed server certificate
# (tls.key PKCS#8, tls.crt), unless a valid one is there.
issue() {
  dir=$1 cn=$2 san=$3
  if [ -s "$dir/tls.crt" ] && [ -s "$dir/tls.key" ] \
    && openssl verify -CAfile "$CA_CRT" "$dir/tls.crt" >/dev/null 2>&1 \
    && openssl x509 -in "$dir/tls.crt" -noout -checkend "$RENEW_BEFORE_S" >/dev/null; then
    log "$cn: certificate kept"
    return 0
  fi
  work=$(mktemp -d)
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/tls.key" 2>/dev/null
  openssl req -new -key "$work/tls.key" -subj "/O=Healthplane compose/CN=$cn" -out "$work/tls.csr"
  cat > "$work/ext.cnf" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = $san
EOF
  openssl x509 -req -in "$work/tls.csr" -CA "$CA_CRT" -CAkey "$CA_KEY" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$DAYS" -sha256 \
    -extfile "$work/ext.cnf" -out "$work/tls.crt" 2>/dev/null
  mv "$work/tls.key" "$dir/tls.key"
  mv "$work/tls.crt" "$dir/tls.crt"
  rm -rf "$work"
  log "$cn: certificate issued ($san)"
}

# own <uid:gid> <mode> <file>...
own() {
  owner=$1 mode=$2
  shift 2
  chown "$owner" "$@"
  chmod "$mode" "$@"
}

for n in 1 2 3; do
  d=$OUT/kafka-$n
  issue "$d" "kafka-$n" "DNS:kafka-$n,DNS:localhost,IP:127.0.0.1"
  # Kafka's PEM keystore: the unencrypted PKCS#8 key followed by the certificate chain.
  cat "$d/tls.key" "$d/tls.crt" "$CA_CRT" > "$d/keystore.pem"
  cp "$CA_CRT" "$d/ca.crt"
  own 1000:1000 0400 "$d/keystore.pem" "$d/tls.key"
  own 1000:1000 0444 "$d/tls.crt" "$d/ca.crt"
done

d=$OUT/postgres
issue "$d" postgres "DNS:postgres,DNS:localhost,IP:127.0.0.1"
cp "$CA_CRT" "$d/ca.crt"
# PostgreSQL refuses a key file that group or others can read.
own 999:999 0600 "$d/tls.key"
own 999:999 0444 "$d/tls.crt" "$d/ca.crt"

d=$OUT/keycloak
issue "$d" keycloak "DNS:keycloak,DNS:localhost,IP:127.0.0.1"
cp "$CA_CRT" "$d/ca.crt"
own 1000:0 0440 "$d/tls.key"
own 1000:0 0444 "$d/tls.crt" "$d/ca.crt"

d=$OUT/schema-registry
issue "$d" schema-registry "DNS:schema-registry,DNS:localhost,IP:127.0.0.1"
# Jetty needs a Java keystore; made again on every run so that a changed password applies.
: "${SCHEMA_REGISTRY_KEYSTORE_PASSWORD:?SCHEMA_REGISTRY_KEYSTORE_PASSWORD is not set}"
openssl pkcs12 -export -name schema-registry -inkey "$d/tls.key" -in "$d/tls.crt" \
  -certfile "$CA_CRT" -out "$d/keystore.p12" \
  -passout env:SCHEMA_REGISTRY_KEYSTORE_PASSWORD
cp "$CA_CRT" "$d/ca.crt"
own 1000:1000 0400 "$d/tls.key" "$d/keystore.p12"
own 1000:1000 0444 "$d/tls.crt" "$d/ca.crt"

# Schema Registry's basic-auth users (Jetty PropertyFileLoginModule: `user: password,role`).
# Written on every run, so that a password changed in .env applies at the next `up`.
d=$OUT/schema-registry-auth
: "${SCHEMA_REGISTRY_PASSWORD:?SCHEMA_REGISTRY_PASSWORD is not set}"
case $SCHEMA_REGISTRY_PASSWORD in
  *[!A-Za-z0-9._~-]*) log "SCHEMA_REGISTRY_PASSWORD: use only A-Z a-z 0-9 . _ ~ -"; exit 1 ;;
esac
printf 'healthplane: %s,healthplane\n' "$SCHEMA_REGISTRY_PASSWORD" > "$d/passwords.properties"
own 1000:1000 0400 "$d/passwords.properties"

# audit_key <dir> <keyring>: an Ed25519 audit signing key in the format `replay-tool audit
# keygen` writes (base64 of a PKCS#8 v2 document: seed and public key, which is what ring's
# Ed25519KeyPair::from_pkcs8 takes), and its `<key id> <public key>` line appended to the
# keyring (key id: the first 16 hex digits of the SHA-256 of the raw public key). A key that
# exists is never replaced: records it signed must stay verifiable, and the keyring keeps
# every key ever used.
audit_key() {
  dir=$1 keyring=$2
  if [ -s "$dir/audit-signing.key" ]; then
    log "$dir/audit-signing.key kept"
    return 0
  fi
  work=$(mktemp -d)
  openssl genpkey -algorithm ed25519 -outform DER -out "$work/v1.der"
  openssl pkey -inform DER -in "$work/v1.der" -pubout -outform DER -out "$work/spki.der"
  # OpenSSL writes PKCS#8 v1 (48 bytes: a fixed 16-byte header, then the 32-byte seed) and
  # SubjectPublicKeyInfo (44 bytes: a fixed 12-byte header, then the 32-byte key). Check the
  # headers, so that the bytes taken below are the seed and the key and nothing else.
  [ "$(head -c 16 "$work/v1.der" | od -An -tx1 | tr -d ' \n')" = 302e020100300506032b657004220420 ] \
    && [ "$(wc -c < "$work/v1.der" | tr -d ' ')" = 48 ] \
    && [ "$(head -c 12 "$work/spki.der" | od -An -tx1 | tr -d ' \n')" = 302a300506032b6570032100 ] \
    && [ "$(wc -c < "$work/spki.der" | tr -d ' ')" = 44 ] || {
    log "unexpected Ed25519 key encoding from openssl"
    exit 1
  }
  tail -c 32 "$work/v1.der" > "$work/seed"
  tail -c 32 "$work/spki.der" > "$work/pub"
  # ring's PKCS#8 v2 template (what replay-tool audit keygen writes; OpenSSL 3.0 itself
  # cannot read v2): SEQUENCE { version 1, AlgorithmIdentifier id-Ed25519,
  # privateKey OCTET STRING { OCTET STRING seed }, [1] publicKey BIT STRING }
  {
    printf '\060\121\002\001\001\060\005\006\003\053\145\160\004\042\004\040'
    cat "$work/seed"
    printf '\201\041\000'
    cat "$work/pub"
  } > "$work/v2.der"
  [ "$(wc -c < "$work/v2.der" | tr -d ' ')" = 83 ] || {
    log "generated audit key has the wrong length"
    exit 1
  }
  id=$(openssl dgst -sha256 -r "$work/pub" | cut -c1-16)
  pub=$(openssl base64 -A -in "$work/pub")
  openssl base64 -A -in "$work/v2.der" > "$work/key"
  echo >> "$work/key"
  own 65532:65532 0400 "$work/key"
  mv "$work/key" "$dir/audit-signing.key"
  [ -f "$keyring" ] || printf '# Healthplane audit public keys: <key id> <public key>\n' > "$keyring"
  echo "$id $pub" >> "$keyring"
  chmod 0444 "$keyring"
  rm -rf "$work"
  log "audit key $id made in $dir, added to $keyring"
}

audit_key "$OUT/audit-writer" "$OUT/audit-keyrings/writers.keyring"
audit_key "$OUT/audit-sealer" "$OUT/audit-keyrings/sealers.keyring"
chown 65532:65532 "$OUT/audit-writer" "$OUT/audit-sealer"
chmod 0500 "$OUT/audit-writer" "$OUT/audit-sealer"

log "done"

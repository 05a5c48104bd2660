#!/usr/bin/env python3
# Asserts Healthplane's deployment policy on the rendered Kubernetes overlays and the compose file.
"""Usage: policy.py --catalog events/src/catalog.rs --compose deploy/compose/compose.yaml \
                    OVERLAY=rendered.yaml ...

What a schema cannot say: the documented topics with their partitions and retention (from
`events::catalog`, the one source of truth), replication 3 / min.insync.replicas 2, probes,
resources (seed 003), the restricted security context, a PDB, Service and ServiceMonitor per
Deployment, no `spec.replicas` where an HPA scales, projectors never above their partition
count, secrets only by `secretKeyRef`, pinned images, a default-deny NetworkPolicy, and the
compose stack's ports (seed 000) and broker settings. Prints one FAIL line per violation."""

import argparse
import re
import sys

import yaml

FAILURES = []


def fail(where, message):
    FAILURES.append(f"FAIL {where}: {message}")


def catalog_topics(path):
    """`spec(NAME, partitions, retention_days, ...)` entries of events/src/catalog.rs."""
    text = open(path).read()
    consts = dict(re.findall(r'pub const ([A-Z_]+): &str = "([^"]+)";', text))
    topics = {}
    for name, partitions, days in re.findall(r"spec\(\s*([A-Z_]+),\s*(\d+),\s*(\d+),", text):
        topics[consts[name]] = (int(partitions), int(days))
    if len(topics) < 9:
        fail(path, f"found only {len(topics)} topics in the catalog; the parser needs updating")
    return topics


def image_pinned(where, image):
    if not image or ":" not in image.rsplit("/", 1)[-1] and "@sha256:" not in image:
        fail(where, f"image `{image}` has no tag: pin a version")
    elif image.endswith(":latest"):
        fail(where, f"image `{image}` uses the moving tag latest: pin a version")


def pod_checks(where, pod, require_probes):
    security = pod.get("securityContext") or {}
    if security.get("runAsNonRoot") is not True:
        fail(where, "pod securityContext.runAsNonRoot must be true")
    if security.get("runAsUser") == 0:
        fail(where, "pod runs as root (securityContext.runAsUser 0)")
    if (security.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        fail(where, "pod securityContext.seccompProfile.type must be RuntimeDefault")
    containers = (pod.get("initContainers") or []) + (pod.get("containers") or [])
    for c in containers:
        cw = f"{where} container {c.get('name')}"
        image_pinned(cw, c.get("image"))
        sc = c.get("securityContext") or {}
        if sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False:
            fail(cw, "runs as root (runAsUser 0 / runAsNonRoot false)")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(cw, "securityContext.allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(cw, "securityContext.readOnlyRootFilesystem must be true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            fail(cw, "securityContext.capabilities.drop must include ALL")
        if sc.get("privileged"):
            fail(cw, "must not be privileged")
        resources = c.get("resources") or {}
        expected = {"requests": {"cpu": "250m", "memory": "256Mi"},
                    "limits": {"cpu": "1000m", "memory": "512Mi"}}
        same = {"1000m": {"1000m", "1"}}  # one CPU, written either way
        for kind, values in expected.items():
            for key, value in values.items():
                got = str((resources.get(kind) or {}).get(key))
                if got not in same.get(value, {value}):
                    fail(cw, f"resources.{kind}.{key} is {got}, seed 003 says {value}")
        for env in c.get("env") or []:
            source = env.get("valueFrom") or {}
            if source and not ({"secretKeyRef", "configMapKeyRef", "fieldRef"} >= source.keys()):
                fail(cw, f"env {env.get('name')}: only secretKeyRef may bring a secret")
            if re.search(r"PASSWORD|SECRET|_KEY$|USER_INFO|_PEM$", env.get("name", "")) and "value" in env:
                fail(cw, f"env {env.get('name')} holds a secret as a literal: use secretKeyRef")
        for source in c.get("envFrom") or []:
            if "secretRef" in source:
                fail(cw, "envFrom secretRef: take each secret by secretKeyRef")
    for volume in pod.get("volumes") or []:
        sources = [volume] + [(s or {}) for s in (volume.get("projected") or {}).get("sources", [])]
        if any("secret" in source for source in sources):
            fail(where, f"volume {volume.get('name')} mounts a Secret: take each secret by secretKeyRef")
    if require_probes:
        for c in pod.get("containers") or []:
            cw = f"{where} container {c.get('name')}"
            for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
                got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                if got is None:
                    fail(cw, f"has no {probe} (httpGet {path})")
                elif got != path:
                    fail(cw, f"{probe} asks {got}, not {path}")


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_overlay(name, path, documented):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        fail(name, "no Deployment rendered")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind.get("HorizontalPodAutoscaler", [])}
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in by_kind.get("KafkaTopic", [])}
    users = {u["metadata"]["name"]: u for u in by_kind.get("KafkaUser", [])}
    for d in deployments:
        dn = d["metadata"]["name"]
        where = f"{name} Deployment/{dn}"
        spec = d["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        pod_checks(where, pod, require_probes=True)
        strategy = spec.get("strategy") or {}
        rolling = strategy.get("rollingUpdate") or {}
        if strategy.get("type") != "RollingUpdate" or str(rolling.get("maxUnavailable")) != "1" \
                or str(rolling.get("maxSurge")) != "1":
            fail(where, "strategy must be RollingUpdate with maxUnavailable 1 and maxSurge 1")
        if not any(selects(p["spec"].get("selector", {}).get("matchLabels"), labels)
                   and str(p["spec"].get("minAvailable")) == "1"
                   for p in by_kind.get("PodDisruptionBudget", [])):
            fail(where, "no PodDisruptionBudget with minAvailable 1 selects its pods")
        services = [s for s in by_kind.get("Service", []) if selects(s["spec"].get("selector"), labels)]
        if not services:
            fail(where, "no Service selects its pods")
        for s in services:
            service_labels = s["metadata"].get("labels", {})
            if not any(selects(m["spec"].get("selector", {}).get("matchLabels"), service_labels)
                       for m in by_kind.get("ServiceMonitor", [])):
                fail(where, f"no ServiceMonitor scrapes Service/{s['metadata']['name']}")
        hpa = hpas.get(dn)
        if hpa:
            if "replicas" in spec:
                fail(where, "sets spec.replicas although an HPA scales it (every apply would reset it)")
            cpu = [m for m in hpa["spec"].get("metrics", [])
                   if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"]
            if not cpu or cpu[0]["resource"]["target"].get("averageUtilization") != 70:
                fail(where, "its HPA must target 70% CPU")
            if dn.startswith("projector-"):
                user = users.get(f"healthplane-{dn}")
                read = [a["resource"]["name"] for a in (user or {}).get("spec", {}).get("authorization", {}).get("acls", [])
                        if a["resource"]["type"] == "topic" and "Read" in a.get("operations", [])]
                partitions = [topics[t]["spec"]["partitions"] for t in read if t in topics]
                if not partitions:
                    fail(where, f"cannot tell its topics (no KafkaUser healthplane-{dn} reading known topics)")
                elif hpa["spec"]["maxReplicas"] > max(partitions):
                    fail(where, f"HPA maxReplicas {hpa['spec']['maxReplicas']} is above its topics' "
                                f"{max(partitions)} partitions (the extra consumers would idle)")
    for job in by_kind.get("Job", []):
        pod_checks(f"{name} Job/{job['metadata']['name']}", job["spec"]["template"]["spec"], require_probes=False)
    # Topics.
    for topic, (partitions, days) in documented.items():
        t = topics.get(topic)
        where = f"{name} KafkaTopic {topic}"
        if not t:
            fail(where, "missing (documented in events::catalog)")
            continue
        if t["spec"].get("partitions") != partitions:
            fail(where, f"has {t['spec'].get('partitions')} partitions, documented {partitions}")
        retention = str((t["spec"].get("config") or {}).get("retention.ms"))
        if retention != str(days * 86_400_000):
            fail(where, f"retention.ms is {retention}, documented {days} days = {days * 86_400_000}")
    for topic, t in topics.items():
        where = f"{name} KafkaTopic {topic}"
        if t["spec"].get("replicas") != 3:
            fail(where, f"replicas {t['spec'].get('replicas')}, must be 3")
        if str((t["spec"].get("config") or {}).get("min.insync.replicas")) != "2":
            fail(where, "min.insync.replicas must be 2")
    for kafka in by_kind.get("Kafka", []):
        config = kafka["spec"]["kafka"].get("config", {})
        for key, value in (("default.replication.factor", "3"), ("min.insync.replicas", "2"),
                           ("auto.create.topics.enable", "false")):
            if str(config.get(key)).lower() != value:
                fail(f"{name} Kafka/{kafka['metadata']['name']}", f"config {key} must be {value}")
    pools = by_kind.get("KafkaNodePool", [])
    for role in ("broker", "controller"):
        if sum(p["spec"]["replicas"] for p in pools if role in p["spec"]["roles"]) < 3:
            fail(name, f"fewer than 3 Kafka {role}s")
    # Who may write what.
    writers = {}
    for user in users.values():
        for acl in user["spec"].get("authorization", {}).get("acls", []):
            r = acl["resource"]
            if r["type"] == "topic" and "Write" in acl.get("operations", []):
                writers.setdefault(r["name"], set()).add(user["metadata"]["name"])
    for topic, allowed in documented.items():
        expected = {"healthcare.audit.phi_access": {"healthplane-query-api"},
                    "healthcare.audit.phi_access.checkpoints": {"healthplane-audit-sealer"}}.get(topic, {"healthplane-command-api"})
        got = writers.get(topic, set())
        if got != expected:
            fail(f"{name} KafkaUser ACLs", f"{topic} may be written by {sorted(got)}, must be {sorted(expected)}")
    if not any(p["spec"].get("podSelector") == {} and set(p["spec"].get("policyTypes", [])) >= {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress")
               for p in by_kind.get("NetworkPolicy", [])):
        fail(name, "no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
    for secret in by_kind.get("Secret", []):
        if secret.get("data") or secret.get("stringData"):
            fail(f"{name} Secret/{secret['metadata']['name']}", "secret values in manifests: create them out of band")


def check_compose(path):
    with open(path) as f:
        compose = yaml.safe_load(f)
    services = compose.get("services", {})
    expected = {"kafka-1": ("9092", "19092"), "kafka-2": ("9094", "19094"), "kafka-3": ("9095", "19095")}
    cluster_ids = set()
    for broker, (external, internal) in expected.items():
        where = f"compose {broker}"
        s = services.get(broker)
        if not s:
            fail(where, "missing")
            continue
        ports = [str(p) for p in s.get("ports", [])]
        if not any(p.split(":")[-2:][0] == external and p.endswith(f":{external}") or p.endswith(f"{external}:{external}")
                   for p in ports):
            fail(where, f"does not publish port {external} (seed 000)")
        env = s.get("environment", {})
        listeners = str(env.get("KAFKA_LISTENERS", "")) + str(env.get("KAFKA_ADVERTISED_LISTENERS", ""))
        if f"{broker}:{internal}" not in listeners and f":{internal}" not in listeners:
            fail(where, f"no internal listener on {internal} (seed 000)")
        cluster_ids.add(env.get("CLUSTER_ID"))
        for key, value in (("KAFKA_DEFAULT_REPLICATION_FACTOR", "3"), ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
                           ("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")):
            if str(env.get(key)).lower() != value:
                fail(where, f"{key} must be {value}")
    if len(cluster_ids) != 1:
        fail("compose", f"the brokers must share one CLUSTER_ID, found {sorted(map(str, cluster_ids))}")
    registry = services.get("schema-registry", {})
    if not any(str(p).endswith("8081") for p in registry.get("ports", [])):
        fail("compose schema-registry", "does not publish 8081 (seed 000)")
    for name, s in services.items():
        image_pinned(f"compose {name}", s.get("image"))
        if str(s.get("image", "")).startswith("ghcr.io/healthplane/") and "healthcheck" not in s \
                and s.get("restart") not in ("no", None) and "profiles" not in s:
            fail(f"compose {name}", "a long-running Healthplane service needs a healthcheck")
        for dep, condition in (s.get("depends_on") or {}).items() if isinstance(s.get("depends_on"), dict) else []:
            if not (condition or {}).get("condition"):
                fail(f"compose {name}", f"depends_on {dep} without a condition")
        if str(s.get("image", "")).startswith("ghcr.io/healthplane/") and str(s.get("user", "")).split(":")[0] in ("0", "root"):
            fail(f"compose {name}", "a Healthplane container runs as root")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--compose", required=True)
    parser.add_argument("overlays", nargs="+", help="NAME=rendered.yaml")
    args = parser.parse_args()
    documented = catalog_topics(args.catalog)
    for overlay in args.overlays:
        name, path = overlay.split("=", 1)
        check_overlay(f"overlay {name}", path, documented)
    check_compose(args.compose)
    for line in FAILURES:
        print(line)
    print(f"policy: {len(FAILURES)} violation(s) in {len(args.overlays)} overlays and the compose file")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()

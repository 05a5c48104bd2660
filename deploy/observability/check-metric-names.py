#!/usr/bin/env python3
# Checks that every metric the alert rules and the Grafana dashboard query is one Healthplane registers in its Rust sources.
"""Metric names come from `metrics.register("<name>", ...)` calls in the workspace (exported as
`healthplane_<name>`, plus `_total` for counters and `_bucket`/`_count`/`_sum` for histograms);
the only other names allowed are Prometheus's own `up`, in the Kubernetes-only saturation
panel cAdvisor's `container_cpu_usage_seconds_total`, and the few Kafka Exporter and
CloudNativePG metrics the platform alerts use (listed in EXTERNAL). Also parses every dashboard expression
with promtool (as recording rules in a scratch file) when promtool is installed.

    deploy/observability/check-metric-names.py      # exit 1 naming each unknown metric
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ALERTS = HERE / "alerts.yml"
DASHBOARD = HERE / "grafana" / "healthplane.json"
EXTERNAL = {
    "up",
    "container_cpu_usage_seconds_total",
    # Strimzi's Kafka Exporter (kafkaExporter in deploy/k8s/base/kafka/kafka.yaml).
    "kafka_brokers",
    "kafka_topic_partition_under_replicated_partition",
    # CloudNativePG's instance exporter (PodMonitor in deploy/k8s/base/monitoring).
    "cnpg_collector_up",
    "cnpg_pg_replication_lag",
}
SUFFIXES = ("", "_total", "_bucket", "_count", "_sum")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan"}


def registered() -> set[str]:
    names = set()
    pattern = re.compile(r'\.register(?:_with_unit)?\(\s*"([a-z0-9_]+)"', re.S)
    for path in REPO.rglob("*.rs"):
        if "target" in path.relative_to(REPO).parts:
            continue
        for name in pattern.findall(path.read_text(errors="replace")):
            names.update(f"healthplane_{name}{suffix}" for suffix in SUFFIXES)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (strings, matchers, ranges and groupings removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"(?<![A-Za-z0-9_:])[0-9][A-Za-z0-9_.+-]*", " ", e)  # numbers, durations
    found = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in KEYWORDS:
            continue
        found.add(m.group(0))
    return found


def exprs():
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"alerts.yml {rule.get('alert') or rule.get('record')}", rule["expr"]
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"dashboard panel {panel['title']!r}", target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = re.match(r"label_values\((.*),\s*\w+\)$", query)
            yield f"dashboard variable {var['name']}", inner.group(1) if inner else query


def promtool_parse(dashboard_exprs) -> list[str]:
    if not shutil.which("promtool"):
        return []
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": expr.replace("$job", "x")}
        for i, expr in enumerate(dashboard_exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump(rules, f)
        f.flush()
        run = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    return [] if run.returncode == 0 else [run.stdout + run.stderr]


def main() -> int:
    known = registered() | EXTERNAL
    problems = []
    used = set()
    dashboard_exprs = []
    for where, expr in exprs():
        if where.startswith("dashboard panel"):
            dashboard_exprs.append(expr)
        for name in metric_names(expr):
            used.add(name)
            if name not in known:
                problems.append(f"{where}: {name} is not registered by any Healthplane service")
    problems += promtool_parse(dashboard_exprs)
    for p in sorted(set(problems)):
        print(p, file=sys.stderr)
    print(f"{len(used)} metric names used; {len(set(problems))} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
# Renders deploy/observability/alerts.yml into the PrometheusRule deploy/k8s/base/monitoring/prometheusrule.yaml.
"""The PrometheusRule's spec.groups are exactly the groups of alerts.yml (the file promtool checks
and tests), so the two cannot drift apart.

    deploy/observability/render-prometheusrule.py           # rewrite the PrometheusRule
    deploy/observability/render-prometheusrule.py --check   # exit 1 if it is stale

Needs PyYAML (python3-yaml, or pip install pyyaml).
"""

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SOURCE = HERE / "alerts.yml"
TARGET = REPO / "deploy" / "k8s" / "base" / "monitoring" / "prometheusrule.yaml"

HEADER = (
    "# Healthplane alert rules as a prometheus-operator PrometheusRule; GENERATED from\n"
    "# deploy/observability/alerts.yml by deploy/observability/render-prometheusrule.py: edit those.\n"
    "# `release: prometheus` matches kube-prometheus-stack's default ruleSelector (change it to\n"
    "# your Prometheus's release name); `app.kubernetes.io/part-of` selects it otherwise.\n"
)


class _Dumper(yaml.SafeDumper):
    """Block style, sequences indented under their key (as yamllint wants), multi-line strings
    (the expressions) as literal blocks."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(source: Path = SOURCE) -> str:
    rules = yaml.safe_load(source.read_text())
    if not isinstance(rules, dict) or set(rules) != {"groups"}:
        raise SystemExit(f"{source}: expected a rule file with only `groups`")
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "healthplane-alerts",
            "namespace": "healthplane",
            "labels": {
                "app.kubernetes.io/name": "healthplane-alerts",
                "app.kubernetes.io/part-of": "healthplane",
                "release": "prometheus",
            },
        },
        "spec": {"groups": rules["groups"]},
    }
    body = yaml.dump(
        resource, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100,
        allow_unicode=True,
    )
    return HEADER + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the target is stale")
    parser.add_argument("--output", type=Path, default=TARGET, help="where to write")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

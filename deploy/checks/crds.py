#!/usr/bin/env python3
# Validates every custom resource in rendered manifests against its real CRD schema, strictly.
"""Usage: crds.py CRD_DIR MANIFEST...

Each CustomResourceDefinition's `openAPIV3Schema` is applied as JSON Schema, with unknown fields
refused wherever the schema does not preserve them (as the API server prunes or, with
`kubectl --validate=strict`, refuses them). A kind or version with no schema is a failure. Core
kinds are left to kubernetes-validate."""

import copy
import glob
import sys

import jsonschema
import yaml

CORE = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}


def load_schemas(crd_dir):
    schemas = {}
    for path in glob.glob(f"{crd_dir}/**/*.yaml", recursive=True):
        with open(path) as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def strict(schema):
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            if node.get("x-kubernetes-int-or-string"):
                node.pop("type", None)
                node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            for value in list(node.values()):
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # ObjectMeta is the API server's, not the CRD's.
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema


def main():
    crd_dir, files = sys.argv[1], sys.argv[2:]
    schemas = {key: strict(s) for key, s in load_schemas(crd_dir).items()}
    failed = checked = 0
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("apiVersion") in CORE:
                    continue
                checked += 1
                key = (doc.get("apiVersion"), doc.get("kind"))
                name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
                if key not in schemas:
                    print(f"FAIL {path}: {name}: no CRD schema for {key[0]} {key[1]} in {crd_dir}")
                    failed += 1
                    continue
                errors = list(jsonschema.Draft7Validator(schemas[key]).iter_errors(doc))
                for e in errors:
                    where = "/".join(map(str, e.absolute_path)) or "(top)"
                    print(f"FAIL {path}: {name}: {where}: {e.message}")
                failed += bool(errors)
    print(f"custom resources: {checked} checked against their CRDs, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

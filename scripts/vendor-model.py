#!/usr/bin/env python3
"""Copies an AWS service model from botocore into crates/api/model/, without documentation.

The API layer validates every request against the same model the AWS CLI and SDKs are
generated from, so wrong types, missing members and out-of-range values are refused exactly
where AWS would refuse them.

Usage: scripts/vendor-model.py ecs [logs ...]
       scripts/vendor-model.py ec2 --ops CreateVpc,DescribeVpcs,...

`--ops` keeps only the named operations and the shapes they reach (inputs, outputs, errors,
recursively): the full EC2 model is several megabytes, and Flotilla serves a small part of it.
"""
import argparse
import gzip
import json
import os

import botocore

DATA = os.path.join(os.path.dirname(botocore.__file__), "data")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "api", "model")


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k not in ("documentation", "documentationUrl", "examples")}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def reachable(model, operations):
    """Names of the shapes the operations reach."""
    seen = set()
    pending = []
    for name in operations:
        op = model["operations"][name]
        pending.extend(ref["shape"] for ref in [op.get("input"), op.get("output")] if ref)
        pending.extend(ref["shape"] for ref in op.get("errors", []))
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        shape = model["shapes"][name]
        refs = list(shape.get("members", {}).values())
        refs += [shape[k] for k in ("member", "key", "value") if k in shape]
        pending.extend(ref["shape"] for ref in refs)
    return seen


def keep_only(model, operations):
    unknown = sorted(set(operations) - set(model["operations"]))
    if unknown:
        raise SystemExit(f"not operations of {model['metadata']['serviceId']}: {', '.join(unknown)}")
    shapes = reachable(model, operations)
    model["operations"] = {k: v for k, v in model["operations"].items() if k in operations}
    model["shapes"] = {k: v for k, v in model["shapes"].items() if k in shapes}
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="*", default=["ecs"])
    parser.add_argument("--ops", help="comma-separated operations to keep (default: all)")
    args = parser.parse_args()
    operations = [op for op in (args.ops or "").split(",") if op]
    for service in args.services:
        base = os.path.join(DATA, service)
        version = sorted(os.listdir(base))[-1]
        path = os.path.join(base, version, "service-2.json")
        opener = open
        if not os.path.exists(path):
            path += ".gz"
            opener = gzip.open
        with opener(path, "rt") as f:
            model = strip(json.load(f))
        if operations:
            model = keep_only(model, operations)
            model["metadata"]["vendoredOperations"] = "subset"
        model["metadata"]["vendoredFrom"] = f"botocore {botocore.__version__}"
        with open(os.path.join(OUT, f"{service}.json"), "w") as f:
            json.dump(model, f, separators=(",", ":"), sort_keys=True)
        print(f"{service}: {len(model['operations'])} operations from botocore {botocore.__version__}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Copies an AWS service model from botocore into crates/api/model/, without documentation.

The API layer validates every request against the same model the AWS CLI and SDKs are
generated from, so wrong types, missing members and out-of-range values are refused exactly
where AWS would refuse them. Usage: scripts/vendor-model.py ecs [logs ...]
"""
import gzip
import json
import os
import sys

import botocore

DATA = os.path.join(os.path.dirname(botocore.__file__), "data")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "api", "model")


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k not in ("documentation", "documentationUrl", "examples")}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(services):
    for service in services:
        base = os.path.join(DATA, service)
        version = sorted(os.listdir(base))[-1]
        path = os.path.join(base, version, "service-2.json")
        opener = open
        if not os.path.exists(path):
            path += ".gz"
            opener = gzip.open
        with opener(path, "rt") as f:
            model = strip(json.load(f))
        model["metadata"]["vendoredFrom"] = f"botocore {botocore.__version__}"
        with open(os.path.join(OUT, f"{service}.json"), "w") as f:
            json.dump(model, f, separators=(",", ":"), sort_keys=True)
        print(f"{service}: {len(model['operations'])} operations from botocore {botocore.__version__}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["ecs"])

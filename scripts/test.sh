#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (real server, real AWS CLI, real
# aws-sdk-ecs, real registry), then the Python tests (boto3 and response-shape checks).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# deps.sh made sure the TLS registry tests have an address to serve on; if they still cannot
# start their registry, that is a failure, not a skip.
export FLOTILLA_REQUIRE_TLS_TESTS=1

cargo build --workspace --all-targets
log=$(mktemp)
# Both suites run even when the first fails, so one run shows every failure.
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
rust_status=${PIPESTATUS[0]}
# The shim's container tests again with runc as the OCI runtime (the default on cgroup v2
# hosts, and selectable with FLOTILLA_RUNTIME=runc).
FLOTILLA_RUNTIME=runc cargo test -p flotilla-shim --test lifecycle --test isolation --test resources 2>&1 | tee -a "$log"
runc_status=${PIPESTATUS[0]}
[ "$rust_status" = 0 ] && rust_status=$runc_status
python3 -m pytest tests/python -q
py_status=$?
set -e

passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
echo "rust: ${passed} passed, ${failed} failed"
[ "$rust_status" = 0 ] && [ "$py_status" = 0 ]

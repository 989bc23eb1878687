#!/usr/bin/env bash
# Store-level benchmark (issue 12, benchmark a at the store): the etcd backend on a real
# 3-member etcd on loopback against the embedded store, same run, with the ratio.
# Usage: bench/store.sh [--members N] [--ops N] [--concurrency N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
exec cargo run --quiet --release -p flotilla-store --features testing --example store-bench -- "$@"

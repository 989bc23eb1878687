#!/usr/bin/env bash
# Builds Flotilla and runs it in the foreground with its embedded defaults. Extra arguments go
# to `flotilla up` (e.g. --listen 127.0.0.1:7780 --data-dir /var/lib/flotilla).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release -p flotilla-cli -p flotilla-shim
exec "${CARGO_TARGET_DIR:-target}/release/flotilla" up "$@"

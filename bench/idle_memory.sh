#!/usr/bin/env bash
# Host memory per idle task: K Flotilla tasks running `sleep` (per-task flotilla-shim) vs K
# runc containers of the same rootfs supervised by conmon (podman's monitor).
# Usage: bench/idle_memory.sh [K]
K=${1:-10}
source "$(dirname "$0")/common.sh"
need conmon
start_registry
start_flotilla
"$BIN/idle-memory" "$ENDPOINT" "$FL_DATA" "$IMAGE" "$FL_PID" "$K"

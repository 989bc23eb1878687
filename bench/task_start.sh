#!/usr/bin/env bash
# Cached-image task start: Flotilla (RunTask response -> first output line in the task's log)
# vs `runc run` of the same busybox rootfs (spawn -> first stdout line), N rounds interleaved.
# Usage: bench/task_start.sh [N] [CPU_UNITS]   (task size, default 256 = 0.25 vCPU)
N=${1:-15}
CPU=${2:-256}
source "$(dirname "$0")/common.sh"
start_registry
start_flotilla
"$BIN/task-start" "$ENDPOINT" "$FL_DATA" "$IMAGE" "$N" "$CPU"

#!/usr/bin/env bash
# RunTask to RUNNING as a client sees it (boto3, DescribeTasks polled every 2 ms) and to the
# container's first output line, against `podman run --rm` of the same cached busybox image to
# its first output line, N rounds interleaved. Driver: bench/runtask_running.py.
# Usage: bench/runtask_running.sh [N]
N=${1:-20}
source "$(dirname "$0")/common.sh"
# The peer, and the client the issue names (boto3, pinned as for the Python tests).
source bench/podman.sh

start_registry
start_flotilla
# The image cached on both sides before measuring: podman pulls it here from the same registry;
# Flotilla's warm-up task pulls it.
podman_pull "$IMAGE"
AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
  python3 bench/runtask_running.py "$ENDPOINT" "$FL_DATA" "$IMAGE" "$N"

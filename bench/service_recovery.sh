#!/usr/bin/env bash
# Service recovery: a service of one busybox `sleep` task on a real `flotilla up`; N times SIGKILL
# the task's container process from the host and measure to the replacement task RUNNING (boto3,
# ListTasks + DescribeTasks polled every 1 ms), against podman `run -d --restart=always` of the
# same image and command, killed the same way, to its restarted process. Rounds interleaved.
# Driver: bench/service_recovery.py.
# Usage: bench/service_recovery.sh [N]
N=${1:-20}
source "$(dirname "$0")/common.sh"
source bench/podman.sh

start_registry
start_flotilla
podman_pull "$IMAGE"
AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
  python3 bench/service_recovery.py "$ENDPOINT" "$FL_DATA" "$IMAGE" "$N"

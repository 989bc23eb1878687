#!/usr/bin/env bash
# Cached-image task start: Flotilla (RunTask response -> first output line in the task's log,
# then -> first HTTP response from the task's own address) vs `runc run` of the same busybox
# rootfs (spawn -> first stdout line; spawn -> first HTTP response on loopback), N rounds
# interleaved.
# Usage: bench/task_start.sh [N] [CPU_UNITS]   (task size, default 256 = 0.25 vCPU)
N=${1:-15}
CPU=${2:-256}
source "$(dirname "$0")/common.sh"
start_registry
start_flotilla
# The HTTP rounds reach the task from the host side of its VPC: the default group must let
# port 8080 in (ingress is denied by default, as on AWS).
aws_local() {
  AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    aws --endpoint-url "$ENDPOINT" "$@"
}
SG=$(aws_local ec2 describe-security-groups --filters Name=group-name,Values=default \
  --query 'SecurityGroups[0].GroupId' --output text)
aws_local ec2 authorize-security-group-ingress --group-id "$SG" --protocol tcp --port 8080 \
  --cidr 0.0.0.0/0 >/dev/null
"$BIN/task-start" "$ENDPOINT" "$FL_DATA" "$IMAGE" "$N" "$CPU"

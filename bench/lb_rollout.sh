#!/usr/bin/env bash
# Zero-downtime rollout behind an application load balancer: a service of 2 busybox `httpd`
# tasks behind a real Flotilla ALB (the target group's default 300 s deregistration delay),
# clients hammering the listener throughout `update-service` to a new revision; prints the
# requests answered and failed during the rollout, and how long each old target spent
# draining. Driver: bench/lb_rollout.py.
# Usage: bench/lb_rollout.sh [CLIENTS] [ROLLOUTS]
CLIENTS=${1:-4}
ROLLOUTS=${2:-3}
source "$(dirname "$0")/common.sh"

start_registry
start_flotilla
AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
  python3 bench/lb_rollout.py "$ENDPOINT" "$IMAGE" "$CLIENTS" "$ROLLOUTS"

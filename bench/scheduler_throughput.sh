#!/usr/bin/env bash
# Scheduler throughput: `flotilla up --simulated-hosts 1` (the sandbox-free test agent; store,
# control plane, scheduler and API real), SERVICES services x TASKS desired tasks created at once;
# placements per second (task records created, from the first CreateService to the last record's
# createdAt) and the time until all are RUNNING in the store. Driver: bench/src/service_throughput.rs.
# Usage: bench/scheduler_throughput.sh [SERVICES] [TASKS]   (default 50 x 20)
SERVICES=${1:-50}
TASKS=${2:-20}
source "$(dirname "$0")/common.sh"
# The one simulated host must hold every task (this measures the scheduler, not capacity).
start_flotilla --simulated-hosts 1 --overcommit-cpu 100 --overcommit-memory 100
"$BIN/service-throughput" "$ENDPOINT" "$SERVICES" "$TASKS"

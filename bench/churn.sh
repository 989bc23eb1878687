#!/usr/bin/env bash
# Task churn: 100 tasks (10 batches of RunTask count=10 -> RUNNING -> StopTask -> STOPPED) on
# Flotilla vs the same 100 containers via runc run -d / kill / delete; then a leak check.
# Usage: bench/churn.sh [BATCHES]
BATCHES=${1:-10}
source "$(dirname "$0")/common.sh"
start_registry
start_flotilla
"$BIN/churn" "$ENDPOINT" "$FL_DATA" "$IMAGE" "$BATCHES"

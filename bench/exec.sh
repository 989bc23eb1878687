#!/usr/bin/env bash
# Exec round trip: `true` in a running busybox container through `flotilla exec`, through
# `aws ecs execute-command` with AWS's session-manager-plugin, and through `runc exec` into a
# runc container of the same busybox rootfs; N rounds interleaved, medians and ratios to runc.
# Usage: bench/exec.sh [N]   (the plugin: FLOTILLA_SSM_PLUGIN, ../shared/tools, or PATH)
N=${1:-20}
source "$(dirname "$0")/common.sh"
if [ -n "${FLOTILLA_SSM_PLUGIN:-}" ]; then PATH=$(dirname "$FLOTILLA_SSM_PLUGIN"):$PATH
elif [ -x ../shared/tools/session-manager-plugin ]; then PATH=$(cd ../shared/tools && pwd):$PATH; fi
need session-manager-plugin
export PATH
start_registry
start_flotilla
"$BIN/exec-bench" "$ENDPOINT" "$IMAGE" "$N" "$BIN/flotilla"

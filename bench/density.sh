#!/usr/bin/env bash
# Density (issue 13): N idle busybox `sleep` tasks (0.25 vCPU / 0.5 GB, awsvpc) RUNNING under
# `flotilla up --overcommit-cpu 200 --overcommit-memory 25 --max-tasks N`: host memory per task,
# start of the first tasks against those after N, RunTask past the capacity, idle CPU, API p99;
# then `flotilla up` restarted (SIGTERM, then kill -9) with every task adopted, StopTask for all
# (20 in flight) and the leak check; then the peer, N `runc run -d` of the same rootfs.
# Usage: bench/density.sh [N]   (default 1000)
N=${1:-1000}
source "$(dirname "$0")/common.sh"
need ip
start_registry
UP_FLAGS=(--overcommit-cpu 200 --overcommit-memory 25 --max-tasks "$N")
# The agent says at info when every task live at its start is supervised (the restart figure).
export FLOTILLA_LOG=${FLOTILLA_LOG:-warn,flotilla_agent::adoption=info}
# DENSITY_LOG=FILE keeps the first `flotilla up`'s log (e.g. with FLOTILLA_LOG=...supervise=debug for
# the per-task phase timings).
FL_LOG_FILE=${DENSITY_LOG:-$WORK/flotilla-0.log} start_flotilla "${UP_FLAGS[@]}"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); load: $(uptime | sed 's/.*load average/load average/')"
echo "limits: nofile $(ulimit -Sn)/$(ulimit -Hn) (flotilla up raises its soft limit to the hard one), pid_max $(cat /proc/sys/kernel/pid_max), inotify instances $(cat /proc/sys/fs/inotify/max_user_instances)"
STATE=$WORK/density.json
"$BIN/density" fill "$ENDPOINT" "$FL_DATA" "$IMAGE" "$N" "$STATE" "$FL_PID"

# restart SIGNAL NAME: stops `flotilla up` with SIGNAL and starts it again on the same data dir,
# port and task network; the driver times it from the spawn.
restart() {
  kill -"$1" "$FL_PID"
  wait "$FL_PID" 2>/dev/null || true
  local log=$WORK/flotilla-$2.log t0
  t0=$(date +%s%3N)
  FLOTILLA_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID FLOTILLA_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
    setsid "$BIN/flotilla" up --listen "${ENDPOINT#http://}" --data-dir "$FL_DATA" \
    --net-namespace "/run/netns/$FL_NETNS" "${UP_FLAGS[@]}" >"$log" 2>&1 & FL_PID=$!
  PIDS+=("$FL_PID")
  echo "restart at scale ($2: kill -$1 with $N tasks running, then flotilla up again):"
  "$BIN/density" adopted "$ENDPOINT" "$FL_DATA" "$STATE" "$t0" "$log"
}
restart TERM sigterm
restart KILL sigkill
"$BIN/density" stop "$ENDPOINT" "$FL_DATA" "$STATE"
"$BIN/density" runc "$N"

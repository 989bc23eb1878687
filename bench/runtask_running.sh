#!/usr/bin/env bash
# RunTask to RUNNING as a client sees it (boto3, DescribeTasks polled every 2 ms) and to the
# container's first output line, against `podman run --rm` of the same cached busybox image to
# its first output line, N rounds interleaved. Driver: bench/runtask_running.py.
# Usage: bench/runtask_running.sh [N]
N=${1:-20}
source "$(dirname "$0")/common.sh"
# The peer, and the client the issue names (boto3, pinned as for the Python tests).
command -v podman >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman; }
python3 -c 'import boto3' 2>/dev/null || pip install -q "$(grep '^boto3==' tests/python/requirements.txt)"

# podman on storage of its own under the work dir, so that the run touches nothing of a podman
# the machine may have, and the exit trap can remove all of it. cgroupfs and no events log:
# this machine runs no systemd or journald (and it spares the peer that work).
PODMAN_DIR=$WORK/podman
PODMAN=(podman --root "$PODMAN_DIR/root" --runroot "$PODMAN_DIR/run" --tmpdir "$PODMAN_DIR/tmp"
  --storage-driver overlay --cgroup-manager cgroupfs --events-backend none)
export BENCH_PODMAN="${PODMAN[*]}" BENCH_PODMAN_PREFIX=flotilla-bench-$$-podman
podman_cleanup() {
  set +e
  [ -d "$PODMAN_DIR" ] || return 0
  "${PODMAN[@]}" rm -af -t 0 >/dev/null 2>&1
  # The storage's overlay mounts (and the driver's own bind mount of its home): innermost first,
  # so that common.sh's cleanup finds nothing mounted under the work dir and removes it.
  grep " $PODMAN_DIR" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do umount "$m"; done
}
trap 'podman_cleanup; cleanup' EXIT

start_registry
start_flotilla
# The image cached on both sides before measuring: podman pulls it here from the same registry;
# Flotilla's warm-up task pulls it.
"${PODMAN[@]}" pull -q --tls-verify=false "$IMAGE" >/dev/null
echo "podman $(podman --version | awk '{print $3}'), OCI runtime $("${PODMAN[@]}" info --format '{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Version}}' | head -1)"
AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
  python3 bench/runtask_running.py "$ENDPOINT" "$FL_DATA" "$IMAGE" "$N"

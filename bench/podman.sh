# Shared by the bench/*.sh scripts whose peer is podman (sourced after common.sh): podman, and
# boto3 for the Python drivers, installed if missing; PODMAN, the podman command on storage of
# its own under the work dir, exported to the drivers as BENCH_PODMAN (space separated) with
# BENCH_PODMAN_PREFIX (container name prefix); and an exit trap that removes all of it before
# common.sh's cleanup.
command -v podman >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman; }
python3 -c 'import boto3' 2>/dev/null || pip install -q "$(grep '^boto3==' tests/python/requirements.txt)"

# Its own storage touches nothing of a podman the machine may have, and the exit trap can
# remove all of it. cgroupfs and no events log: this machine runs no systemd or journald (and it
# spares the peer that work).
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

# podman_pull IMAGE: caches the image in podman's storage (from the loopback registry) and says
# which podman and runtime the run used.
podman_pull() {
  "${PODMAN[@]}" pull -q --tls-verify=false "$1" >/dev/null
  echo "podman $(podman --version | awk '{print $3}'), OCI runtime $("${PODMAN[@]}" info --format '{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Version}}' | head -1)"
}

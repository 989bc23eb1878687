# Shared by the bench/*.sh scripts (sourced): build, a registry with the test images, and a
# `flotilla up` on a fresh data dir, all removed on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: tasks need namespaces, cgroups and mounts" >&2; exit 1; }
need() { for b in "$@"; do command -v "$b" >/dev/null || { echo "$b is missing: apt-get install -y $b" >&2; exit 1; }; done; }
need runc docker-registry mkfs.ext4 losetup aws
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
# BENCH_NO_BUILD=1 reuses the binaries already in $CARGO_TARGET_DIR/release, or in BENCH_BIN
# (a copy of them, safe from other builds sharing the target dir).
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build -q --release -p flotilla-cli -p flotilla-shim -p flotilla-bench
BIN=${BENCH_BIN:-$CARGO_TARGET_DIR/release}
export AWS_ACCESS_KEY_ID=AKIABENCHFLOTILLA001 AWS_SECRET_ACCESS_KEY=bench-secret
WORK=$(mktemp -d /var/tmp/flotilla-bench.XXXXXX)
# The helpers' scratch (runc bundles) goes here too, so an interrupted helper leaves nothing.
export TMPDIR=$WORK
PIDS=()
# The helpers name their runc containers with this prefix, so that the trap can remove them.
export BENCH_RUNC_PREFIX=flotilla-bench-$$
cleanup() {
  set +e
  # Tasks outlive `flotilla up` by design: stop any an interrupted helper left running first.
  if [ -n "${FL_PID:-}" ] && kill -0 "$FL_PID" 2>/dev/null; then
    "$BIN/stop-tasks" "$ENDPOINT"
  fi
  for id in $(runc list -q 2>/dev/null | grep "^$BENCH_RUNC_PREFIX-"); do
    runc kill "$id" KILL 2>/dev/null; sleep 0.1; runc delete -f "$id" >/dev/null 2>&1
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "${FL_NETNS:-}" ] && ip netns del "$FL_NETNS" 2>/dev/null
  # The server's scratch filesystem pool holds loop devices only while it runs.
  for _ in $(seq 50); do losetup -a | grep -q "$WORK" || break; sleep 0.1; done
  if losetup -a | grep -q "$WORK"; then
    echo "warning: loop devices left on files under $WORK:" >&2; losetup -a | grep "$WORK" >&2
  fi
  # Anything a task left mounted under the work dir would make rm fail; say so rather than hide it.
  if grep -q " $WORK" /proc/self/mountinfo; then
    echo "warning: mounts left under $WORK:" >&2; grep " $WORK" /proc/self/mountinfo | awk '{print $5}' >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_file() { for _ in $(seq 600); do [ -s "$1" ] && return; sleep 0.1; done; echo "$1 never appeared" >&2; exit 1; }
wait_port() { for _ in $(seq 300); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# start_registry [big]: sets IMAGE (busybox) and BIG_IMAGE.
start_registry() {
  setsid "$BIN/bench-registry" "$WORK/registry.json" "$@" & PIDS+=($!)
  wait_file "$WORK/registry.json"
  IMAGE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["busybox"])' "$WORK/registry.json")
  BIG_IMAGE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["big"] or "")' "$WORK/registry.json")
}

# start_flotilla [UP_FLAGS...]: sets FL_PID, FL_DATA, ENDPOINT; extra flags go to `flotilla up`
# (e.g. --simulated-hosts 1). In its own session, so that a Ctrl-C meant for the script does not
# stop the server before the trap has stopped its tasks.
start_flotilla() {
  FL_DATA=$WORK/flotilla
  local port; port=$(port)
  # The task network's host side in a namespace of its own: the benchmark leaves no routes,
  # addresses or nft table on the machine (the cost is the same as in the host's namespace).
  FL_NETNS=flt-bench-$$
  ip netns add "$FL_NETNS"
  export BENCH_NETNS=$FL_NETNS
  FLOTILLA_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID FLOTILLA_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY FLOTILLA_LOG=${FLOTILLA_LOG:-warn} \
    setsid "$BIN/flotilla" up --listen "127.0.0.1:$port" --data-dir "$FL_DATA" \
    --net-namespace "/run/netns/$FL_NETNS" "$@" >"${FL_LOG_FILE:-$WORK/flotilla.log}" 2>&1 & FL_PID=$!
  PIDS+=("$FL_PID")
  ENDPOINT=http://127.0.0.1:$port
  wait_port "$port"
  # RunTask needs a real subnet: the default VPC's, which exists from the first start.
  BENCH_SUBNET=$(AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    aws --endpoint-url "$ENDPOINT" ec2 describe-subnets --filters Name=default-for-az,Values=true \
    --query 'Subnets[0].SubnetId' --output text)
  export BENCH_SUBNET
}

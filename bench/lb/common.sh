# Shared by bench/lb_http.sh and bench/lb_tcp.sh (sourced): the tools, the release build of
# lb-plane, two nginx targets on 127.0.0.2 and 127.0.0.3, and cleanup of everything started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (apt-get, nginx, haproxy)" >&2; exit 1; }
for b in nginx haproxy wrk; do
  command -v "$b" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light haproxy wrk >/dev/null
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
# BENCH_NO_BUILD=1 reuses the lb-plane already in $CARGO_TARGET_DIR/release.
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build -q --release -p flotilla-bench --bin lb-plane
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /var/tmp/flotilla-lb-bench.XXXXXX)
# nginx workers (www-data) read the large file from here.
chmod 755 "$WORK"
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  for pid in "$WORK"/*.pid; do [ -s "$pid" ] && kill -TERM "$(cat "$pid")" 2>/dev/null; done
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait_port() { for _ in $(seq 300); do (echo >"/dev/tcp/$1/$2") 2>/dev/null && return; sleep 0.1; done; echo "$1:$2 never opened" >&2; exit 1; }

TARGET_A=127.0.0.2:8081
TARGET_B=127.0.0.3:8082
# The same two targets for every path: one nginx, a server block per address, a small static
# body (and /big, a large file, for transfer rates).
start_targets() {
  head -c $((64 << 20)) /dev/zero >"$WORK/big"
  cat >"$WORK/targets.conf" <<CONF
worker_processes 1;
pid $WORK/targets.pid;
error_log $WORK/targets.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen $TARGET_A; location / { return 200 "hello from a\n"; } location /big { alias $WORK/big; } }
  server { listen $TARGET_B; location / { return 200 "hello from b\n"; } location /big { alias $WORK/big; } }
}
CONF
  nginx -c "$WORK/targets.conf"
  wait_port 127.0.0.2 8081; wait_port 127.0.0.3 8082
}

# start_plane KIND PROTOCOL IP PORT: lb-plane with one load balancer (application/HTTP or
# network/TCP) forwarding to both targets, health-checked every 5 s.
start_plane() {
  python3 bench/lb/snapshot.py "$@" "$TARGET_A" "$TARGET_B" >"$WORK/snapshot.json"
  "$BIN/lb-plane" "$WORK/snapshot.json" >"$WORK/plane.out" 2>"$WORK/plane.err" & PIDS+=($!)
  for _ in $(seq 100); do grep -q ready "$WORK/plane.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$WORK/plane.out" || { cat "$WORK/plane.err" >&2; exit 1; }
}

# wrk_run NAME ARGS...: runs wrk, prints "NAME req/s p50_ms p99_ms transfer_MBps" and keeps the
# full output in $WORK/NAME.wrk.
wrk_run() {
  local name=$1; shift
  wrk --latency "$@" >"$WORK/$name.wrk"
  python3 bench/lb/wrk_summary.py "$name" <"$WORK/$name.wrk"
}

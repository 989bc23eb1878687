# Shared by bench/lb_http.sh and bench/lb_tcp.sh (sourced): a real `flotilla up` (bench/common.sh,
# task network in a namespace of its own, $FL_NETNS), two nginx targets inside that namespace on
# private addresses (where the server's load balancers connect), a load balancer made through the
# ELBv2 API, and the cleanup of everything started, interrupted or not.
#
# Fairness: every hop of every path is a local (loopback) delivery. Flotilla's listener is on the
# host's 127.0.0.1 (the default --lb-address) and it connects to the targets inside the namespace,
# so wrk runs on the host for Flotilla; the peers (and "direct") listen inside the namespace next
# to the targets, so wrk runs there, through `ip netns exec`, for them. Same wrk, same targets.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
for b in nginx haproxy wrk; do
  command -v "$b" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light haproxy wrk >/dev/null
done
# nginx workers (www-data) read the large file from the work dir.
chmod 755 "$WORK"

# nginx and haproxy daemonise with a pid file in $WORK; stop them (and wait) before
# bench/common.sh's cleanup removes the namespace and the work dir.
lb_cleanup() {
  set +e
  local pids=()
  for f in "$WORK"/*.pid; do [ -s "$f" ] && pids+=("$(cat "$f")"); done
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
}
trap 'lb_cleanup; cleanup' EXIT

in_ns() { ip netns exec "$FL_NETNS" "$@"; }
# ns_wait_port IP PORT: waits for a listener inside the namespace.
ns_wait_port() {
  for _ in $(seq 300); do in_ns bash -c "echo >/dev/tcp/$1/$2" 2>/dev/null && return; sleep 0.1; done
  echo "$1:$2 (in $FL_NETNS) never opened" >&2; exit 1
}
awsf() {
  AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    aws --endpoint-url "$ENDPOINT" "$@"
}

# ELB takes only private addresses as ip targets: the namespace's loopback carries the two
# targets and the peers' listening address (no dummy link: not every kernel has the module).
NS_NET=192.168.77
TARGET_A=$NS_NET.2:8081
TARGET_B=$NS_NET.3:8082
PEER_IP=$NS_NET.4

# start_targets: `flotilla up`, then the same two targets for every path: one nginx in the
# namespace, a server block per address, a small static body (and /big, a large file, for
# transfer rates).
start_targets() {
  start_flotilla
  in_ns ip link set lo up
  for ip in "${TARGET_A%:*}" "${TARGET_B%:*}" "$PEER_IP"; do in_ns ip addr add "$ip/32" dev lo; done
  # Connections to targets off the VPC leave from the load balancer's public address (SNAT into
  # 198.18.0.0/15); a target's reply needs a route before conntrack turns it back. A host has a
  # default route; this bare namespace has none.
  in_ns ip route add 198.18.0.0/15 dev lo
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
  in_ns nginx -c "$WORK/targets.conf"
  ns_wait_port "${TARGET_A%:*}" "${TARGET_A#*:}"; ns_wait_port "${TARGET_B%:*}" "${TARGET_B#*:}"
}

# start_lb application|network HTTP|TCP: an internet-facing load balancer over both targets
# (health-checked every 5 s), made through the API; sets LB_PORT (on 127.0.0.1) and TG_ARN once
# both targets are healthy.
start_lb() {
  read -r LB_PORT TG_ARN < <(python3 bench/lb/setup.py "$ENDPOINT" "$1" "$2" "$TARGET_A" "$TARGET_B")
  [ -n "${TG_ARN:-}" ] || { echo "load balancer set-up failed" >&2; exit 1; }
}

# target_verdicts: the targets' health as the server reports it after the run (a target that
# went unhealthy mid-run would have skewed the figures).
target_verdicts() {
  echo "target health after the run:"
  awsf elbv2 describe-target-health --target-group-arn "$TG_ARN" \
    --query 'TargetHealthDescriptions[].[Target.Id,Target.Port,TargetHealth.State,TargetHealth.Reason]' --output text
}

# wrk_run NAME host|ns ARGS...: runs wrk on the host or inside the namespace, prints
# "NAME req/s p50_ms p99_ms transfer_MBps" and keeps the full output in $WORK/NAME.wrk.
wrk_run() {
  local name=$1 where=$2; shift 2
  if [ "$where" = ns ]; then in_ns wrk --latency "$@" >"$WORK/$name.wrk"; else wrk --latency "$@" >"$WORK/$name.wrk"; fi
  python3 bench/lb/wrk_summary.py "$name" <"$WORK/$name.wrk"
}

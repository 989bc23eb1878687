#!/usr/bin/env bash
# A whole Flotilla cluster on one machine, to try many hosts and to drive failure tests:
# a 3-member etcd, two `flotilla server`s and three `flotilla agent`s (host-a, host-b, host-c
# in us-east-1a/b/c). Each agent runs in its own network namespace standing in for a host,
# joined to the others and to the servers by an underlay bridge this script makes.
#
#   scripts/dev-cluster.sh up DIR            start everything; writes DIR/env (source it)
#   scripts/dev-cluster.sh kill-host DIR NAME SIGKILL host NAME's agent and cut its links
#   scripts/dev-cluster.sh start-host DIR NAME  bring its links back and start its agent
#   scripts/dev-cluster.sh kill-server DIR N SIGKILL server N (1 or 2)
#   scripts/dev-cluster.sh start-server DIR N
#   scripts/dev-cluster.sh stop-etcd DIR N   stop etcd member N (1-3)
#   scripts/dev-cluster.sh start-etcd DIR N
#   scripts/dev-cluster.sh status DIR
#   scripts/dev-cluster.sh down DIR          stop tasks and everything else; nothing is left
#
# Runs as root (namespaces, tasks). FLOTILLA_BIN names a built flotilla binary (flotilla-shim
# next to it); without it the script builds both in release mode. FLOTILLA_DEV_STORE=embedded
# runs one server on an embedded store instead of etcd (no second server, no etcd).
set -euo pipefail

HOSTS=(host-a host-b host-c)
ZONES=(us-east-1a us-east-1b us-east-1c)
REGION=us-east-1
BRIDGE=fltdev0
UNDERLAY_PREFIX=10.77.0
SERVER_IP=$UNDERLAY_PREFIX.1
NFT_TABLE=flotilla_devcluster
# Tasks' public addresses (assignPublicIp): each is announced by the host its task runs on
# (ARP on the underlay), so this machine reaches it on the bridge like the internet would.
PUBLIC_POOL=198.18.0.0/24
STORE_KIND=${FLOTILLA_DEV_STORE:-etcd}

die() { echo "dev-cluster: $*" >&2; exit 1; }
say() { echo "dev-cluster: $*"; }

host_index() {
  local i
  for i in "${!HOSTS[@]}"; do [ "${HOSTS[$i]}" = "$1" ] && { echo "$i"; return; }; done
  die "no host named '$1' (hosts: ${HOSTS[*]})"
}
host_ip() { echo "$UNDERLAY_PREFIX.$((11 + $(host_index "$1")))"; }
host_ns() { echo "fltdev-$1"; }
host_link() { echo "fltdev-${1#host-}"; }
api_port() { echo $((7779 + $1)); }
agent_port() { echo $((7945 + $1)); }
etcd_client_port() { echo $((2379 + ($1 - 1) * 10000)); }
etcd_peer_port() { echo $((2380 + ($1 - 1) * 10000)); }
server_count() { if [ "$STORE_KIND" = embedded ]; then echo 1; else echo 2; fi; }

pidfile() { echo "$DIR/pids/$1.pid"; }
running() { local f; f=$(pidfile "$1"); [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

# Starts a detached process (its own session) logging to DIR/logs/NAME.log.
spawn() {
  local name=$1; shift
  setsid "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

# Sends SIG to NAME's process and waits (at most 20 s) until it is gone.
stop_process() {
  local name=$1 sig=${2:-TERM} f pid i
  f=$(pidfile "$name")
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

wait_until() {
  local what=$1 seconds=$2 i; shift 2
  for i in $(seq $((seconds * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "timed out after ${seconds}s waiting for $what (logs in $DIR/logs)"
}

binaries() {
  if [ -n "${FLOTILLA_BIN:-}" ]; then
    BIN=$FLOTILLA_BIN
  else
    (cd "$(dirname "$0")/.." && cargo build --release -q -p flotilla-cli -p flotilla-shim)
    BIN=$(cd "$(dirname "$0")/.." && echo "${CARGO_TARGET_DIR:-$PWD/target}")/release/flotilla
  fi
  [ -x "$BIN" ] || die "no flotilla binary at $BIN"
  [ -x "$(dirname "$BIN")/flotilla-shim" ] || die "no flotilla-shim next to $BIN"
  echo "$BIN" >"$DIR/bin"
}

deps() {
  "$(dirname "$0")/deps.sh"
  if [ "$STORE_KIND" = etcd ] && ! command -v etcd >/dev/null; then
    say "installing etcd-server"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  fi
}

# --- the underlay: a bridge in this namespace, one namespace per host -----------------------

underlay_up() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || {
    ip link add "$BRIDGE" type bridge
    ip addr add "$SERVER_IP/24" dev "$BRIDGE"
  }
  ip link set "$BRIDGE" up
  ip route replace "$PUBLIC_POOL" dev "$BRIDGE"
  # Hosts reach the outside (registries) through this machine.
  sysctl -qw net.ipv4.ip_forward=1
  nft list table ip "$NFT_TABLE" >/dev/null 2>&1 || nft -f - <<EOF
table ip $NFT_TABLE {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr $UNDERLAY_PREFIX.0/24 oifname != "$BRIDGE" masquerade
    ip saddr $PUBLIC_POOL oifname != "$BRIDGE" masquerade
  }
}
EOF
  local h
  for h in "${HOSTS[@]}"; do host_net_up "$h"; done
}

host_net_up() {
  local h=$1 ns link ip
  ns=$(host_ns "$h"); link=$(host_link "$h"); ip=$(host_ip "$h")
  [ -e "/run/netns/$ns" ] || ip netns add "$ns"
  if ! ip link show "$link" >/dev/null 2>&1; then
    ip link add "$link" type veth peer name eth0 netns "$ns"
    ip link set "$link" master "$BRIDGE"
    ip -n "$ns" addr add "$ip/24" dev eth0
  fi
  ip link set "$link" up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route replace default via "$SERVER_IP"
}

# --- etcd ---------------------------------------------------------------------------------

etcd_cluster() {
  local n out=""
  for n in 1 2 3; do out+="${out:+,}e$n=http://127.0.0.1:$(etcd_peer_port $n)"; done
  echo "$out"
}

start_etcd() {
  local n=$1
  running "etcd-$n" && return 0
  mkdir -p "$DIR/etcd/$n"
  spawn "etcd-$n" etcd --name "e$n" --data-dir "$DIR/etcd/$n" \
    --listen-client-urls "http://127.0.0.1:$(etcd_client_port "$n")" \
    --advertise-client-urls "http://127.0.0.1:$(etcd_client_port "$n")" \
    --listen-peer-urls "http://127.0.0.1:$(etcd_peer_port "$n")" \
    --initial-advertise-peer-urls "http://127.0.0.1:$(etcd_peer_port "$n")" \
    --initial-cluster "$(etcd_cluster)" --initial-cluster-token flotilla-dev \
    --initial-cluster-state new \
    --max-txn-ops 10000 --max-request-bytes 33554432 --auto-compaction-retention 1h
}

etcd_healthy() { curl -fsS "http://127.0.0.1:$(etcd_client_port "$1")/health" | grep -q '"health":"true"'; }

store_url() {
  if [ "$STORE_KIND" = embedded ]; then
    echo "file:$DIR/store.redb"
  else
    local n out=""
    for n in 1 2 3; do out+="${out:+,}127.0.0.1:$(etcd_client_port $n)"; done
    echo "etcd://$out"
  fi
}

# --- servers and agents ---------------------------------------------------------------------

credentials_env() {
  # shellcheck disable=SC1091
  . "$DIR/credentials"
  export FLOTILLA_ACCESS_KEY_ID FLOTILLA_SECRET_ACCESS_KEY
}

start_server() {
  local n=$1
  running "server-$n" && return 0
  credentials_env
  mkdir -p "$DIR/server-$n"
  spawn "server-$n" "$(cat "$DIR/bin")" server --store "$(store_url)" \
    --listen "127.0.0.1:$(api_port "$n")" --agent-listen "$SERVER_IP:$(agent_port "$n")" \
    --region "$REGION" --data-dir "$DIR/server-$n" --public-ip-pool "$PUBLIC_POOL"
  wait_until "server $n" 60 bash -c "exec 3<>/dev/tcp/127.0.0.1/$(api_port "$n")"
}

agent_servers() {
  local n out=""
  for n in $(seq "$(server_count)"); do out+="${out:+,}http://$SERVER_IP:$(agent_port "$n")"; done
  echo "$out"
}

flotilla_cli() {
  credentials_env
  FLOTILLA_ENDPOINT="http://127.0.0.1:$(api_port 1)" FLOTILLA_DATA_DIR="$DIR/server-1" "$(cat "$DIR/bin")" "$@"
}

start_host() {
  local h=$1 i
  i=$(host_index "$h")
  host_net_up "$h"
  running "agent-$h" && return 0
  if [ ! -s "$DIR/hosts/$h.token" ]; then
    flotilla_cli --output json hosts add "$h" | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' >"$DIR/hosts/$h.token"
    [ -s "$DIR/hosts/$h.token" ] || die "no token issued for $h"
  fi
  mkdir -p "$DIR/$h"
  # In the host's network namespace only (nsenter, not `ip netns exec`, which would also give
  # it a mount namespace of its own that its tasks' mounts would be lost in). The token goes
  # in the environment, not on the command line.
  export FLOTILLA_HOST_TOKEN
  FLOTILLA_HOST_TOKEN=$(cat "$DIR/hosts/$h.token")
  spawn "agent-$h" nsenter "--net=/run/netns/$(host_ns "$h")" -- "$(cat "$DIR/bin")" agent \
    --server "$(agent_servers)" --host-id "$h" --zone "${ZONES[$i]}" --underlay-ip "$(host_ip "$h")" \
    --data-dir "$DIR/$h"
  unset FLOTILLA_HOST_TOKEN
}

host_listed() { flotilla_cli --output json hosts | grep -q "\"id\": *\"$1\""; }

write_env() {
  credentials_env
  local n endpoints=""
  for n in $(seq "$(server_count)"); do endpoints+="${endpoints:+ }http://127.0.0.1:$(api_port "$n")"; done
  cat >"$DIR/env" <<EOF
export FLOTILLA_ENDPOINT=http://127.0.0.1:$(api_port 1)
export FLOTILLA_ENDPOINTS="$endpoints"
export AWS_ACCESS_KEY_ID=$FLOTILLA_ACCESS_KEY_ID
export AWS_SECRET_ACCESS_KEY=$FLOTILLA_SECRET_ACCESS_KEY
export AWS_DEFAULT_REGION=$REGION
export FLOTILLA_ACCESS_KEY_ID=$FLOTILLA_ACCESS_KEY_ID
export FLOTILLA_SECRET_ACCESS_KEY=$FLOTILLA_SECRET_ACCESS_KEY
EOF
}

cmd_up() {
  [ "$(id -u)" = 0 ] || die "run as root (agents make namespaces and run tasks)"
  mkdir -p "$DIR"/{pids,logs,hosts}
  DIR=$(cd "$DIR" && pwd)
  deps
  binaries
  echo "$STORE_KIND" >"$DIR/store-kind"
  if [ ! -f "$DIR/credentials" ]; then
    local id secret
    id=AKIA$(tr -dc 'A-Z2-7' </dev/urandom | head -c 16 || true)
    secret=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 40 || true)
    printf 'FLOTILLA_ACCESS_KEY_ID=%s\nFLOTILLA_SECRET_ACCESS_KEY=%s\n' "$id" "$secret" >"$DIR/credentials"
    chmod 600 "$DIR/credentials"
  fi
  underlay_up
  if [ "$STORE_KIND" = etcd ]; then
    local n
    for n in 1 2 3; do start_etcd "$n"; done
    for n in 1 2 3; do wait_until "etcd member $n" 60 etcd_healthy "$n"; done
  fi
  for n in $(seq "$(server_count)"); do start_server "$n"; done
  local h
  for h in "${HOSTS[@]}"; do start_host "$h"; done
  for h in "${HOSTS[@]}"; do wait_until "$h to register" 60 host_listed "$h"; done
  write_env
  say "up: $(server_count) server(s), hosts ${HOSTS[*]} ($STORE_KIND store)"
  echo "Endpoint: http://127.0.0.1:$(api_port 1)"
  echo "  . $DIR/env; aws --endpoint-url \$FLOTILLA_ENDPOINT ecs list-clusters"
}

# Stops every task through the API (services first: they would replace them) and waits for
# the hosts' sandboxes to go. Tasks outlive agents by design, so this comes before the rest.
stop_all_tasks() {
  local any=0 h
  for h in "${HOSTS[@]}"; do [ -n "$(ls -A "$DIR/$h/tasks" 2>/dev/null | grep -v '^\.')" ] && any=1; done
  [ "$any" = 1 ] || return 0
  if ! command -v aws >/dev/null || ! running server-1; then
    say "cannot stop tasks through the API (no aws CLI or server 1 down); killing them"
    return 0
  fi
  # shellcheck disable=SC1091
  . "$DIR/env"
  local aws="aws --endpoint-url $FLOTILLA_ENDPOINT --output text" cluster arn
  for cluster in $($aws ecs list-clusters --query 'clusterArns[]' 2>/dev/null); do
    for arn in $($aws ecs list-services --cluster "$cluster" --query 'serviceArns[]' 2>/dev/null); do
      $aws ecs delete-service --cluster "$cluster" --service "$arn" --force >/dev/null 2>&1 || true
    done
    for arn in $($aws ecs list-tasks --cluster "$cluster" --query 'taskArns[]' 2>/dev/null); do
      $aws ecs stop-task --cluster "$cluster" --task "$arn" >/dev/null 2>&1 || true
    done
  done
  local i
  for i in $(seq 600); do
    any=0
    for h in "${HOSTS[@]}"; do [ -n "$(ls -A "$DIR/$h/tasks" 2>/dev/null | grep -v '^\.')" ] && any=1; done
    [ "$any" = 0 ] && return 0
    sleep 0.1
  done
  say "some tasks did not stop in time; killing them"
}

# Whatever is left of tasks: shims (by their task dir under DIR), cgroups, mounts.
kill_leftovers() {
  local pid cmd
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    cmd=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null || true)
    case "$cmd" in *"--task-dir $DIR/"*) kill -KILL "$pid" 2>/dev/null || true ;; esac
  done
  local h t cg i
  for h in "${HOSTS[@]}"; do
    for t in "$DIR/$h"/tasks/*; do
      [ -d "$t" ] || continue
      t=$(basename "$t")
      # cgroup v2 (one tree, cgroup.kill) or v1 (a tree per controller: kill what it lists).
      for cg in /sys/fs/cgroup/flotilla/"$t" /sys/fs/cgroup/*/flotilla/"$t"; do
        [ -d "$cg" ] || continue
        if [ -e "$cg/cgroup.kill" ]; then
          echo 1 >"$cg/cgroup.kill" 2>/dev/null || true
        else
          find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | xargs -r kill -KILL 2>/dev/null || true
        fi
        for i in $(seq 50); do
          [ -z "$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && break
          sleep 0.1
        done
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
      done
    done
  done
  local m
  for m in $(awk -v d="$DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

cmd_down() {
  [ -d "$DIR/pids" ] || die "$DIR holds no dev cluster"
  DIR=$(cd "$DIR" && pwd)
  STORE_KIND=$(cat "$DIR/store-kind" 2>/dev/null || echo "$STORE_KIND")
  stop_all_tasks
  local h n
  for h in "${HOSTS[@]}"; do stop_process "agent-$h" KILL; done
  kill_leftovers
  for n in 1 2; do stop_process "server-$n"; done
  for n in 1 2 3; do stop_process "etcd-$n"; done
  for h in "${HOSTS[@]}"; do
    ip netns delete "$(host_ns "$h")" 2>/dev/null || true
    ip link delete "$(host_link "$h")" 2>/dev/null || true
  done
  ip route delete "$PUBLIC_POOL" dev "$BRIDGE" 2>/dev/null || true
  ip link delete "$BRIDGE" 2>/dev/null || true
  nft delete table ip "$NFT_TABLE" 2>/dev/null || true
  say "down: nothing of the cluster is left running (its files stay in $DIR)"
}

cmd_status() {
  local name
  for name in etcd-1 etcd-2 etcd-3 server-1 server-2 "${HOSTS[@]/#/agent-}"; do
    if running "$name"; then echo "$name: running (pid $(cat "$(pidfile "$name")"))"; else echo "$name: stopped"; fi
  done
  running server-1 && flotilla_cli hosts || true
}

[ $# -ge 2 ] || die "usage: $0 up|down|status|kill-host|start-host|kill-server|start-server|stop-etcd|start-etcd DIR [NAME|N]"
CMD=$1
DIR=$2
[ "$CMD" = up ] || { [ -d "$DIR" ] && DIR=$(cd "$DIR" && pwd); }
[ -f "$DIR/store-kind" ] && STORE_KIND=$(cat "$DIR/store-kind")
case "$CMD" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kill-host)
    [ $# -eq 3 ] || die "usage: $0 kill-host DIR NAME"
    host_index "$3" >/dev/null
    stop_process "agent-$3" KILL
    ip link set "$(host_link "$3")" down
    say "killed $3's agent and cut its links (its tasks keep running until its fence)"
    ;;
  start-host)
    [ $# -eq 3 ] || die "usage: $0 start-host DIR NAME"
    start_host "$3"
    say "started $3"
    ;;
  kill-server)
    [ $# -eq 3 ] || die "usage: $0 kill-server DIR N"
    stop_process "server-$3" KILL
    say "killed server $3"
    ;;
  start-server)
    [ $# -eq 3 ] || die "usage: $0 start-server DIR N"
    start_server "$3"
    say "started server $3"
    ;;
  stop-etcd)
    [ $# -eq 3 ] || die "usage: $0 stop-etcd DIR N"
    stop_process "etcd-$3"
    say "stopped etcd member $3"
    ;;
  start-etcd)
    [ $# -eq 3 ] || die "usage: $0 start-etcd DIR N"
    start_etcd "$3"
    wait_until "etcd member $3" 60 etcd_healthy "$3"
    say "started etcd member $3"
    ;;
  *) die "unknown command '$CMD'" ;;
esac

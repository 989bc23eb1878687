# Shared by the benchmarks of a cluster (sourced after common.sh): a real etcd, `flotilla
# server`s on it (or on an embedded store) and simulated hosts connected over the link by
# `flotilla agent --simulated-hosts`. Everything is started under $WORK and stopped on exit.
need etcd curl

AWS_NO_CONFIG=(env AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null)

# start_etcd [MEMBERS]: a MEMBERS-member etcd (default 3) on loopback, data on $WORK's disk
# (fsync as in production); sets ETCD_URL (etcd://...). The limits are those the store's
# tests use: Flotilla's transactions can be larger than etcd's defaults.
start_etcd() {
  local n=${1:-3} i cluster="" clients=""
  local -a cport pport
  for i in $(seq "$n"); do cport[i]=$(port); pport[i]=$(port); done
  for i in $(seq "$n"); do cluster+="${cluster:+,}m$i=http://127.0.0.1:${pport[i]}"; done
  for i in $(seq "$n"); do
    mkdir -p "$WORK/etcd/$i"
    setsid etcd --name "m$i" --data-dir "$WORK/etcd/$i" \
      --listen-client-urls "http://127.0.0.1:${cport[i]}" --advertise-client-urls "http://127.0.0.1:${cport[i]}" \
      --listen-peer-urls "http://127.0.0.1:${pport[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${pport[i]}" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "bench-$$" \
      --max-txn-ops 10000 --max-request-bytes 33554432 --logger zap --log-level warn \
      >"$WORK/etcd-$i.log" 2>&1 & PIDS+=($!)
    clients+="${clients:+,}127.0.0.1:${cport[i]}"
  done
  for i in $(seq "$n"); do
    for _ in $(seq 300); do
      curl -fsS "http://127.0.0.1:${cport[i]}/health" 2>/dev/null | grep -q '"health":"true"' && break
      sleep 0.1
    done
    curl -fsS "http://127.0.0.1:${cport[i]}/health" | grep -q '"health":"true"' || { echo "etcd member $i not healthy" >&2; exit 1; }
  done
  ETCD_URL=etcd://$clients
}

# start_server NAME STORE: a `flotilla server` on STORE (etcd://... or file:PATH) with data dir
# $WORK/NAME; sets SERVER_ENDPOINT and SERVER_AGENTS (its link address) and records the
# server's pid in SERVER_PID.
start_server() {
  local name=$1 store=$2 api agents
  api=$(port); agents=$(port)
  FLOTILLA_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID FLOTILLA_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY FLOTILLA_LOG=${FLOTILLA_LOG:-warn} \
    setsid "$BIN/flotilla" server --store "$store" --listen "127.0.0.1:$api" --agent-listen "127.0.0.1:$agents" \
    --data-dir "$WORK/$name" >"$WORK/$name.log" 2>&1 & SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_port "$api"
  SERVER_ENDPOINT=http://127.0.0.1:$api
  SERVER_AGENTS=http://127.0.0.1:$agents
}

# add_hosts ENDPOINT FILE COUNT: issues tokens for host-1..COUNT (zones a, b, c in turn) and
# writes FILE for `flotilla agent --simulated-hosts`.
add_hosts() {
  local endpoint=$1 file=$2 count=$3 i zone token
  : >"$file"
  for i in $(seq "$count"); do
    zone=us-east-1$(echo abc | cut -c$(((i - 1) % 3 + 1)))
    token=$(FLOTILLA_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID FLOTILLA_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
      "$BIN/flotilla" --endpoint "$endpoint" --data-dir "$WORK/cli" --output json hosts add "host-$i" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    echo "host-$i $zone $token" >>"$file"
  done
}

# start_sim_agents NAME SERVERS FILE [AGENT_FLAGS...]: `flotilla agent --simulated-hosts FILE`
# connected to SERVERS (comma-separated link addresses), then waits until ENDPOINT (set by the
# caller) lists every host of FILE.
start_sim_agents() {
  local name=$1 servers=$2 file=$3; shift 3
  FLOTILLA_LOG=${FLOTILLA_LOG:-warn} setsid "$BIN/flotilla" agent --server "$servers" --simulated-hosts "$file" \
    --data-dir "$WORK/$name" "$@" >"$WORK/$name.log" 2>&1 & PIDS+=($!)
  local want listed
  want=$(grep -c . "$file")
  for _ in $(seq 600); do
    listed=$(FLOTILLA_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID FLOTILLA_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
      "$BIN/flotilla" --endpoint "$ENDPOINT" --data-dir "$WORK/cli" --output json hosts |
      python3 -c 'import json,sys; print(sum(1 for h in json.load(sys.stdin)["hosts"] if h.get("registeredAt")))')
    [ "$listed" = "$want" ] && return
    sleep 0.1
  done
  echo "only $listed of $want simulated hosts registered (log: $WORK/$name.log)" >&2; exit 1
}

# default_subnets ENDPOINT [ZONE]: the default VPC's default subnets (comma-separated), or the
# one in ZONE.
default_subnets() {
  local filters=(Name=default-for-az,Values=true)
  [ -n "${2:-}" ] && filters+=("Name=availability-zone,Values=$2")
  "${AWS_NO_CONFIG[@]}" aws --endpoint-url "$1" ec2 describe-subnets --filters "${filters[@]}" \
    --query 'Subnets[].SubnetId' --output text | tr '\t' ','
}

# BENCH_LOGS=DIR keeps the servers', agents' and etcd's logs there (the work dir goes on exit).
if [ -n "${BENCH_LOGS:-}" ]; then
  trap 'mkdir -p "$BENCH_LOGS"; cp "$WORK"/*.log "$BENCH_LOGS"/ 2>/dev/null; cleanup' EXIT
fi

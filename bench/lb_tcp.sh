#!/usr/bin/env bash
# Issue 11 benchmark (b): TCP through a network load balancer of a real `flotilla up` (made through
# the ELBv2 API, targets registered by IP) vs HAProxy (mode tcp) vs straight to one target. Connections/s: wrk with `Connection: close` (a new
# connection, through the proxy and on to a target, per request). Bytes/s: wrk fetching a
# 64 MiB file over a few connections. Rounds in rotating order, medians reported. Same two
# nginx targets for every path, inside the server's task-network namespace; where each client
# runs, and why that is fair: bench/lb/common.sh.
#
# Usage: bench/lb_tcp.sh   (env: CONNS=32 BULK_CONNS=4 THREADS=2 DURATION=10s ROUNDS=3)
source "$(dirname "${BASH_SOURCE[0]}")/lb/common.sh"
CONNS=${CONNS:-32} BULK_CONNS=${BULK_CONNS:-4} THREADS=${THREADS:-2} DURATION=${DURATION:-10s} ROUNDS=${ROUNDS:-3}

start_targets
start_lb network TCP

cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread $(nproc)
  maxconn 8000
  pidfile $WORK/haproxy.pid
defaults
  mode tcp
  timeout connect 10s
  timeout client 350s
  timeout server 350s
frontend nlb
  bind $PEER_IP:9000
  default_backend targets
backend targets
  balance roundrobin
  server a $TARGET_A
  server b $TARGET_B
CONF
in_ns haproxy -D -f "$WORK/haproxy.cfg"
ns_wait_port "$PEER_IP" 9000

declare -A HOST=([direct]=$TARGET_A [haproxy]=$PEER_IP:9000 [flotilla]=127.0.0.1:$LB_PORT)
declare -A WHERE=([direct]=ns [haproxy]=ns [flotilla]=host)
echo "connections/s: wrk -t$THREADS -c$CONNS -H 'Connection: close'; bytes/s: wrk -t$THREADS -c$BULK_CONNS /big (64 MiB); -d$DURATION, $ROUNDS rounds; nproc $(nproc)"
order=(direct haproxy flotilla)
for round in $(seq "$ROUNDS"); do
  for path in "${order[@]}"; do
    wrk_run "conn-$path-$round" "${WHERE[$path]}" -t"$THREADS" -c"$CONNS" -d"$DURATION" -H "Connection: close" "http://${HOST[$path]}/" | tee -a "$WORK/results"
    wrk_run "bulk-$path-$round" "${WHERE[$path]}" -t"$THREADS" -c"$BULK_CONNS" -d"$DURATION" "http://${HOST[$path]}/big" | tee -a "$WORK/results"
  done
  order=("${order[@]:1}" "${order[0]}")
done
python3 - "$WORK/results" <<'PY'
import statistics, sys
conn, bulk = {}, {}
for line in open(sys.argv[1]):
    name, rps, _p50, p99, mb, *_ = line.split()
    kind, path, _round = name.split("-")
    (conn if kind == "conn" else bulk).setdefault(path, []).append((float(rps), float(p99), float(mb)))
m = lambda rows, i: statistics.median(r[i] for r in rows)
print(f"\n{'path':10} {'conn/s':>10} {'conn p99 ms':>12} {'MiB/s':>10}   (medians)")
for k in ("direct", "haproxy", "flotilla"):
    print(f"{k:10} {m(conn[k], 0):10.0f} {m(conn[k], 1):12.3f} {m(bulk[k], 2):10.1f}")
print(f"\nflotilla/haproxy: connections/s {m(conn['flotilla'], 0)/m(conn['haproxy'], 0):.2f}x, "
      f"bytes/s {m(bulk['flotilla'], 2)/m(bulk['haproxy'], 2):.2f}x (target >= 0.90)")
PY
target_verdicts

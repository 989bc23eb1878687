#!/usr/bin/env bash
# Issue 12, benchmark a: API latency and throughput of RegisterTaskDefinition and DescribeTasks
# through a real `flotilla server` on a real 3-member etcd (loopback, data on disk) against a
# `flotilla server` on its embedded store (file:), in one run, with the same signed requests
# from the same load generator (bench/src/api_load.rs). Each server has one simulated host
# (over the link) so that DescribeTasks describes 10 real tasks. Prints req/s, p50 and p99 of
# both, and the ratios.
# Usage: bench/api_store.sh [CONCURRENCY] [REQUESTS]
CONC=${1:-16}
REQS=${2:-5000}
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/cluster.sh"
start_etcd 3
declare -A ENDPOINTS
for store in etcd embedded; do
  if [ "$store" = etcd ]; then url=$ETCD_URL; else url=file:$WORK/embedded.redb; fi
  start_server "server-$store" "$url"
  ENDPOINT=$SERVER_ENDPOINT
  ENDPOINTS[$store]=$ENDPOINT
  add_hosts "$ENDPOINT" "$WORK/hosts-$store" 1
  start_sim_agents "agents-$store" "$SERVER_AGENTS" "$WORK/hosts-$store"
done
echo "concurrency=$CONC requests=$REQS  (etcd: 3 members on loopback, one flotilla server; embedded: redb, fsync per batch)"
printf '%-15s %-9s %10s %9s %9s %7s\n' kind store req/s p50_ms p99_ms errors
for kind in register describe-tasks; do
  declare -A OUT
  for store in etcd embedded; do
    # host-1 is in us-east-1a: the tasks go in that zone's default subnet.
    BENCH_SUBNET=$(default_subnets "${ENDPOINTS[$store]}" us-east-1a)
    export BENCH_SUBNET
    OUT[$store]=$("$BIN/api-load" "${ENDPOINTS[$store]}" "$kind" "$CONC" "$REQS")
  done
  python3 - "$kind" "${OUT[etcd]}" "${OUT[embedded]}" <<'PY'
import json, sys
kind, et, em = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
for name, r in (("etcd", et), ("embedded", em)):
    print(f"{kind:<15} {name:<9} {r['rps']:>10.0f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} {r['errors']:>7}")
print(f"{kind:<15} {'ratio':<9} etcd/embedded throughput {et['rps']/em['rps']:.2f}x, "
      f"p50 {et['p50_ms']/em['p50_ms']:.2f}x, p99 {et['p99_ms']/em['p99_ms']:.2f}x")
PY
done

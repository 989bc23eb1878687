#!/usr/bin/env bash
# Issue 12, benchmark b on a real cluster: placement throughput with real servers on a real
# 3-member etcd (loopback, data on disk), and HOSTS simulated hosts, each with its own link to
# the servers (`flotilla agent --simulated-hosts`: the real agent, containers that pretend).
# SERVICES x TASKS desired tasks created at once and spread over the hosts by capacity; prints
# placements/s (task records created per second). Driver: bench/src/service_throughput.rs.
# Target (issue 12): at least 2,000 placements/s.
# Usage: bench/placement_etcd.sh [HOSTS] [SERVICES] [TASKS] [SERVERS]
#   (default 50 hosts, 50 x 100 = 5,000 tasks, 2 servers; the driver calls the first)
HOSTS=${1:-50}
SERVICES=${2:-50}
TASKS=${3:-100}
SERVERS=${4:-2}
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/cluster.sh"
start_etcd 3
LINKS=""
for n in $(seq "$SERVERS"); do
  start_server "server-$n" "$ETCD_URL"
  [ "$n" = 1 ] && ENDPOINT=$SERVER_ENDPOINT
  LINKS+="${LINKS:+,}$SERVER_AGENTS"
done
add_hosts "$ENDPOINT" "$WORK/hosts" "$HOSTS"
# As bench/placement.sh: a simulated host is a pretend 4-vCPU, 16 GiB machine, with room for
# 300 tasks of 0.25 vCPU and 512 MiB with these factors (the RunTask baseline afterwards uses
# one subnet, so one zone: a third of the hosts).
start_sim_agents agents "$LINKS" "$WORK/hosts" --overcommit-cpu 20 --overcommit-memory 10
echo "$SERVERS server(s) on a 3-member etcd, $HOSTS simulated hosts over the link"
BENCH_SUBNET=$(default_subnets "$ENDPOINT" us-east-1a)
BENCH_SUBNETS=$(default_subnets "$ENDPOINT")
export BENCH_SUBNET BENCH_SUBNETS
# BENCH_NO_BASELINE=1 skips the driver's RunTask baseline after the services.
"$BIN/service-throughput" "$ENDPOINT" "$SERVICES" "$TASKS"

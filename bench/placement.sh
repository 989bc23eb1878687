#!/usr/bin/env bash
# Placement throughput over many hosts: `flotilla up --simulated-hosts HOSTS` (simulated agents
# over the real store, control plane, scheduler and API), SERVICES services x TASKS desired tasks
# created at once and spread over the hosts by capacity (each reservation compared and written
# with its task); prints placements/s (task records created per second). Driver:
# bench/src/service_throughput.rs. Target (issue 12): at least 2,000 placements/s.
# Usage: bench/placement.sh [HOSTS] [SERVICES] [TASKS]   (default 50 hosts, 50 x 100 = 5,000 tasks)
HOSTS=${1:-50}
SERVICES=${2:-50}
TASKS=${3:-100}
source "$(dirname "$0")/common.sh"
# A simulated host is a pretend 4-vCPU, 16 GiB machine (15,360 units and MiB after its reserve):
# room for 300 tasks of 0.25 vCPU and 512 MiB each with these factors, so that the driver's
# RunTask baseline afterwards (one subnet, so one zone: 17 of the 50 hosts) fits as well.
start_flotilla --simulated-hosts "$HOSTS" --overcommit-cpu 20 --overcommit-memory 10
# The services use every default subnet (one per zone), so they spread over every host.
BENCH_SUBNETS=$(AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
  aws --endpoint-url "$ENDPOINT" ec2 describe-subnets --filters Name=default-for-az,Values=true \
  --query 'Subnets[].SubnetId' --output text | tr '\t' ',')
export BENCH_SUBNETS
"$BIN/service-throughput" "$ENDPOINT" "$SERVICES" "$TASKS"

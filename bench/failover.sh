#!/usr/bin/env bash
# Failover (issue 12, benchmark c): from a host's death to its service tasks' replacements
# RUNNING on the other hosts, on the local cluster of scripts/dev-cluster.sh (real etcd, two
# servers, three agents in namespaces of their own). A service of 3 busybox `sleep` tasks,
# spread one per host. Per round: `dev-cluster.sh kill-host` the host of one of its tasks (the
# clock starts just before the kill: SIGKILL of the agent and its links cut), then ListTasks +
# DescribeTasks (boto3, every 20 ms) until as many tasks as desired are RUNNING on the other
# hosts; that moment is the figure. Then `start-host` and wait until the host is ACTIVE again
# and its stale copies are gone, before the next round. Prints each round and the median.
#
# What it measures is dominated by the control plane's grace (FLOTILLA_HOST_GRACE, default
# 20 s: the agents' fence, FLOTILLA_AGENT_FENCE, default 10 s, plus a margin) plus a start;
# set both to measure other settings (the grace must stay above the fence).
#
# Usage: bench/failover.sh [N]   (N kills, default 10; root; BENCH_NO_BUILD=1 reuses the
# release binaries in $CARGO_TARGET_DIR/release, or in BENCH_BIN: a directory holding
# flotilla, flotilla-shim and bench-registry)
set -euo pipefail
N=${1:-10}
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: agents make namespaces and run tasks" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build -q --release -p flotilla-cli -p flotilla-shim -p flotilla-bench
BIN=${BENCH_BIN:-$CARGO_TARGET_DIR/release}
WORK=$(mktemp -d /var/tmp/flotilla-failover.XXXXXX)
REG_PID=
cleanup() {
  set +e
  [ -f "$WORK/cluster/env" ] && scripts/dev-cluster.sh down "$WORK/cluster" >/dev/null
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
  grep -q " $WORK" /proc/self/mountinfo || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A registry over TLS on this machine's non-loopback address: the hosts' namespaces reach it
# through the underlay bridge (a loopback registry would be their own loopback).
setsid "$BIN/bench-registry" "$WORK/registry.json" tls & REG_PID=$!
for _ in $(seq 600); do [ -s "$WORK/registry.json" ] && break; sleep 0.1; done
[ -s "$WORK/registry.json" ] || { echo "the registry never came up" >&2; exit 1; }
IMAGE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["busybox"])' "$WORK/registry.json")
python3 -c 'import json,sys; open(sys.argv[2], "w").write(json.load(open(sys.argv[1]))["ca"])' \
  "$WORK/registry.json" "$WORK/registry-ca.pem"

FLOTILLA_BIN=$BIN/flotilla FLOTILLA_REGISTRY_CA=$WORK/registry-ca.pem \
  scripts/dev-cluster.sh up "$WORK/cluster" >/dev/null
# shellcheck disable=SC1091
. "$WORK/cluster/env"
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
echo "failover: grace ${FLOTILLA_HOST_GRACE:-20 (default)} s, fence ${FLOTILLA_AGENT_FENCE:-10 (default)} s, $N kills"

python3 - "$FLOTILLA_ENDPOINT" "$WORK/cluster" "$IMAGE" "$N" <<'EOF'
import json, os, subprocess, sys, time

import boto3
from botocore.config import Config

endpoint, cluster_dir, image, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ZONE_HOST = {"us-east-1a": "host-a", "us-east-1b": "host-b", "us-east-1c": "host-c"}
DESIRED = 3
DEADLINE_S = 180.0
cfg = Config(retries={"max_attempts": 1, "mode": "standard"})
kw = dict(endpoint_url=endpoint, region_name="us-east-1", config=cfg)
ecs, ec2 = boto3.client("ecs", **kw), boto3.client("ec2", **kw)


def script(*args):
    subprocess.run(["scripts/dev-cluster.sh", args[0], cluster_dir, *args[1:]], check=True, stdout=subprocess.DEVNULL)


def hosts():
    out = subprocess.run(
        [open(os.path.join(cluster_dir, "bin")).read().strip(), "--output", "json", "hosts"],
        check=True, capture_output=True, text=True,
    ).stdout
    return {h["id"]: h for h in json.loads(out)["hosts"]}


def live():
    arns = ecs.list_tasks(cluster="default", serviceName="failover", desiredStatus="RUNNING")["taskArns"]
    return ecs.describe_tasks(cluster="default", tasks=arns)["tasks"] if arns else []


def wait(what, check, poll=0.02):
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > DEADLINE_S:
            raise RuntimeError(f"{what}: not after {DEADLINE_S} s")
        time.sleep(poll)


def stale_gone(host, ids):
    """No process on this machine still runs one of `ids` in `host`'s task dirs."""
    needles = [f"{cluster_dir}/{host}/tasks/{i}".encode() for i in ids]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if any(nd in cmd for nd in needles):
            return False
    return all(not os.path.exists(f"/sys/fs/cgroup/flotilla/{i}/cgroup.procs")
               or not open(f"/sys/fs/cgroup/flotilla/{i}/cgroup.procs").read().strip() for i in ids)


ecs.create_cluster(clusterName="default")
subnets = [s["SubnetId"] for s in ec2.describe_subnets(
    Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]]
td = ecs.register_task_definition(
    family="bench-failover", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
    containerDefinitions=[{"name": "main", "image": image, "essential": True,
                           "command": ["sleep", "1000000"], "stopTimeout": 2}],
)["taskDefinition"]["taskDefinitionArn"]
ecs.create_service(cluster="default", serviceName="failover", taskDefinition=td, desiredCount=DESIRED,
                   launchType="FARGATE",
                   networkConfiguration={"awsvpcConfiguration": {"subnets": subnets}})
wait("the service RUNNING", lambda: sum(t["lastStatus"] == "RUNNING" for t in live()) == DESIRED, 0.2)

figures = []
order = ["host-a", "host-b", "host-c"]
try:
    for i in range(n):
        tasks = live()
        by_host = {}
        for t in tasks:
            by_host.setdefault(ZONE_HOST[t["availabilityZone"]], []).append(t["taskArn"].rsplit("/", 1)[1])
        victim = next(h for h in order[i % 3:] + order[: i % 3] if by_host.get(h))
        ids = by_host[victim]
        t0 = time.monotonic()
        script("kill-host", victim)
        zone = next(z for z, h in ZONE_HOST.items() if h == victim)
        wait("replacements RUNNING", lambda: sum(
            t["lastStatus"] == "RUNNING" and t["availabilityZone"] != zone for t in live()) == DESIRED)
        took = time.monotonic() - t0
        figures.append(took)
        print(f"kill {i + 1}: {victim} ({len(ids)} task(s)) -> replaced RUNNING in {took:.2f} s", flush=True)
        script("start-host", victim)
        wait(f"{victim} ACTIVE", lambda: hosts()[victim]["status"] == "ACTIVE", 0.2)
        wait(f"{victim}'s stale copies gone", lambda: stale_gone(victim, ids), 0.2)
    s = sorted(figures)
    mid = len(s) // 2
    med = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    print(f"failover: median {med:.2f} s over {len(s)} kills (min {s[0]:.2f}, max {s[-1]:.2f})")
finally:
    ecs.update_service(cluster="default", service="failover", desiredCount=0)
    ecs.delete_service(cluster="default", service="failover", force=True)
EOF

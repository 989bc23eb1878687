#!/usr/bin/env bash
# EFS volume throughput: one workload (sequential write of 1 GiB with fsync, sequential read
# of it three times, 10,000 small files written then synced, then read five times) run by the
# same busybox inside a task on its EFS volume and on the host in a directory of the same disk
# (the EFS root sits in the data dir under /var/tmp, like the host's directory). ROUNDS rounds interleaved; medians, and
# the task's throughput as a share of the host's (target >= 90%).
# Reads come from the page cache on both sides (a container cannot drop caches); the write
# phases end with fsync/sync, so they reach the disk.
# Usage: bench/efs.sh [ROUNDS]
ROUNDS=${1:-3}
source "$(dirname "$0")/common.sh"
need busybox
start_registry
start_flotilla
aws_local() {
  AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    aws --endpoint-url "$ENDPOINT" "$@"
}
# $1: the directory to work in; $2: where to write the result line. Times in centiseconds
# (/proc/uptime), the same clock on both sides.
WORKLOAD='d=$1/bench; t() { read u _ < /proc/uptime; echo "${u%.*}${u#*.}"; }
rm -rf "$d"; mkdir -p "$d/s"
a=$(t); dd if=/dev/zero of="$d/big" bs=1M count=1024 conv=fsync 2>/dev/null; b=$(t)
for k in 1 2 3; do dd if="$d/big" of=/dev/null bs=1M 2>/dev/null; done; c=$(t)
i=0; while [ $i -lt 10000 ]; do echo small > "$d/s/$i"; i=$((i+1)); done; sync; e=$(t)
for k in 1 2 3 4 5; do cat "$d"/s/* > /dev/null; done; f=$(t)
rm -rf "$d"
echo "$((b-a)) $((c-b)) $((e-c)) $((f-e))" > "$2"'

FS=$(aws_local efs create-file-system --creation-token bench --query FileSystemId --output text)
aws_local efs create-mount-target --file-system-id "$FS" --subnet-id "$BENCH_SUBNET" >/dev/null
FS_DIR=$FL_DATA/efs/$FS
TD=$(python3 - "$IMAGE" "$FS" "$WORKLOAD" <<'EOF'
import json, sys
image, fs, workload = sys.argv[1:]
print(json.dumps({
    "family": "efs-bench", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
    # Two vCPUs and 4 GiB: the task's quota must not be what limits it.
    "cpu": "2048", "memory": "4096",
    "containerDefinitions": [{"name": "w", "image": image, "essential": True,
        "command": ["sh", "-c", workload + "; exit 0", "sh", "/mnt/efs", "/mnt/efs/result"],
        "mountPoints": [{"sourceVolume": "data", "containerPath": "/mnt/efs"}]}],
    "volumes": [{"name": "data", "efsVolumeConfiguration": {"fileSystemId": fs}}],
}))
EOF
)
TD_ARN=$(aws_local ecs register-task-definition --cli-input-json "$TD" --query taskDefinition.taskDefinitionArn --output text)
aws_local ecs create-cluster --cluster-name default >/dev/null
HOST_DIR=$WORK/host-fs
mkdir -p "$HOST_DIR"
echo "efs root: $FS_DIR; host directory: $HOST_DIR ($(df --output=source "$HOST_DIR" | tail -1) for both)"

run_task() {
  rm -f "$FS_DIR/result"
  local task
  task=$(aws_local ecs run-task --task-definition "$TD_ARN" --launch-type FARGATE \
    --network-configuration "awsvpcConfiguration={subnets=[$BENCH_SUBNET],assignPublicIp=DISABLED}" \
    --query 'tasks[0].taskArn' --output text)
  for _ in $(seq 1800); do
    status=$(aws_local ecs describe-tasks --tasks "$task" --query 'tasks[0].lastStatus' --output text)
    [ "$status" = STOPPED ] && break
    sleep 0.5
  done
  [ -s "$FS_DIR/result" ] || { echo "the task wrote no result ($status)" >&2; exit 1; }
  cat "$FS_DIR/result"
}

: > "$WORK/host.txt"; : > "$WORK/task.txt"
for r in $(seq "$ROUNDS"); do
  busybox sh -c "$WORKLOAD" sh "$HOST_DIR" "$WORK/host-result"
  cat "$WORK/host-result" >> "$WORK/host.txt"
  run_task >> "$WORK/task.txt"
  echo "round $r: host $(tail -1 "$WORK/host.txt") | task $(tail -1 "$WORK/task.txt") (cs: write read small-write small-read)"
done

python3 - "$WORK/host.txt" "$WORK/task.txt" <<'EOF'
import statistics, sys
def load(p): return [list(map(int, l.split())) for l in open(p) if l.strip()]
host, task = load(sys.argv[1]), load(sys.argv[2])
names = ["sequential write 1 GiB (fsync)", "sequential read 1 GiB x3", "10,000 small files written (sync)", "10,000 small files read x5"]
units = [1024, 3072, 10000, 50000]
print(f"{'phase':38} {'host':>12} {'EFS in task':>12} {'task/host':>10}")
for i, name in enumerate(names):
    h = statistics.median(r[i] for r in host) / 100 or 0.01
    t = statistics.median(r[i] for r in task) / 100 or 0.01
    unit = "MiB/s" if i < 2 else "files/s"
    print(f"{name:38} {units[i]/h:9.0f} {unit:>7} {units[i]/t:9.0f} {unit:>7} {h/t*100:8.0f}%")
EOF
aws_local efs delete-mount-target --mount-target-id \
  "$(aws_local efs describe-mount-targets --file-system-id "$FS" --query 'MountTargets[0].MountTargetId' --output text)"
aws_local efs delete-file-system --file-system-id "$FS"

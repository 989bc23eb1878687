#!/usr/bin/env bash
# Issue 15: the cost of authorisation. DescribeTaskDefinition throughput and p99 through one
# `flotilla up --no-agent`, signed by the account root (allowed without evaluating a policy) and
# by an IAM user holding 10 managed policies of 20 statements each (wildcard actions,
# resources, conditions, and Deny statements that do not apply, so every request evaluates all
# 200 statements; some allow the call). Rounds alternate root and user in the same run, with the
# same signed requests from the same load generator (bench/src/api_load.rs). Prints req/s, p50
# and p99 of both (median of the rounds) and the ratios. Target: the user under 10% slower.
# Usage: bench/authz.sh [CONCURRENCY] [REQUESTS] [ROUNDS]
CONC=${1:-16}
REQS=${2:-20000}
ROUNDS=${3:-3}
source "$(dirname "$0")/common.sh"
start_flotilla --no-agent
aws_as() {
  AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    aws --endpoint-url "$ENDPOINT" "$@"
}
ACCOUNT=$(aws_as sts get-caller-identity --query Account --output text)
aws_as iam create-user --user-name bench >/dev/null
read -r USER_KEY USER_SECRET < <(aws_as iam create-access-key --user-name bench \
  --query 'AccessKey.[AccessKeyId,SecretAccessKey]' --output text)
for p in $(seq 0 9); do
  doc=$(python3 - "$p" "$ACCOUNT" <<'PY'
import json, sys
p, account = int(sys.argv[1]), sys.argv[2]
statements = []
for s in range(20):
    kind = s % 4
    if kind == 0:
        st = {"Effect": "Allow", "Action": ["ecs:Describe*", "ecs:List*"], "Resource": "*",
              "Condition": {"StringEquals": {"aws:RequestedRegion": ["us-east-1", "eu-west-1"]}}}
    elif kind == 1:
        st = {"Effect": "Allow", "Action": ["ssm:GetParameter*"],
              "Resource": f"arn:aws:ssm:*:{account}:parameter/team-{p}/{s}/*"}
    elif kind == 2:
        st = {"Effect": "Allow", "Action": "logs:*",
              "Resource": f"arn:aws:logs:us-east-1:{account}:log-group:/ecs/team-{p}-{s}:*",
              "Condition": {"IpAddress": {"aws:SourceIp": ["127.0.0.0/8", "10.0.0.0/8"]}}}
    else:
        st = {"Effect": "Deny", "Action": ["ecs:Delete*", "ecs:Stop*"],
              "Resource": f"arn:aws:ecs:*:{account}:cluster/prod-{p}-{s}"}
    st["Sid"] = f"P{p}S{s}"
    statements.append(st)
# The load generator registers its task definition once before it starts.
statements[1] = {"Sid": f"P{p}S1", "Effect": "Allow", "Action": "ecs:RegisterTaskDefinition", "Resource": "*"}
print(json.dumps({"Version": "2012-10-17", "Statement": statements}))
PY
)
  arn=$(aws_as iam create-policy --policy-name "bench-$p" --policy-document "$doc" --query Policy.Arn --output text)
  aws_as iam attach-user-policy --user-name bench --policy-arn "$arn"
done
# The user's policies are in force once it may list task definitions.
for _ in $(seq 100); do
  AWS_ACCESS_KEY_ID=$USER_KEY AWS_SECRET_ACCESS_KEY=$USER_SECRET aws_as ecs list-task-definitions >/dev/null 2>&1 && break
  sleep 0.1
done
echo "concurrency=$CONC requests=$REQS rounds=$ROUNDS  (user: 10 managed policies x 20 statements; load: $(cut -d' ' -f1-3 /proc/loadavg))"
RESULTS=$WORK/results.jsonl
for round in $(seq "$ROUNDS"); do
  for who in root user; do
    if [ "$who" = root ]; then key=$AWS_ACCESS_KEY_ID; secret=$AWS_SECRET_ACCESS_KEY; else key=$USER_KEY; secret=$USER_SECRET; fi
    out=$(AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret "$BIN/api-load" "$ENDPOINT" describe "$CONC" "$REQS")
    echo "{\"who\": \"$who\", \"round\": $round, \"result\": $out}" >>"$RESULTS"
  done
done
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'who':<6} {'round':>5} {'req/s':>9} {'p50_ms':>8} {'p99_ms':>8} {'errors':>7}")
for r in rows:
    x = r["result"]
    print(f"{r['who']:<6} {r['round']:>5} {x['rps']:>9.0f} {x['p50_ms']:>8.2f} {x['p99_ms']:>8.2f} {x['errors']:>7}")
med = {}
for who in ("root", "user"):
    xs = [r["result"] for r in rows if r["who"] == who]
    med[who] = {k: statistics.median(x[k] for x in xs) for k in ("rps", "p50_ms", "p99_ms")}
    print(f"{who:<6} {'med':>5} {med[who]['rps']:>9.0f} {med[who]['p50_ms']:>8.2f} {med[who]['p99_ms']:>8.2f}")
# Each round's user run against the root run just before it: the machine's load drifts between
# rounds far more than within one, so the paired ratios are the measure.
pairs = {}
for r in rows:
    pairs.setdefault(r["round"], {})[r["who"]] = r["result"]
paired = sorted(p["user"]["rps"] / p["root"]["rps"] for p in pairs.values())
print("paired user/root throughput by round: " + ", ".join(f"{x:.3f}" for x in paired))
ratio = statistics.median(paired)
print(f"ratio  user/root throughput {ratio:.3f}x (median of rounds, {(1 - ratio) * 100:+.1f}% slower); "
      f"medians: throughput {med['user']['rps'] / med['root']['rps']:.3f}x, "
      f"p50 {med['user']['p50_ms'] / med['root']['p50_ms']:.2f}x, p99 {med['user']['p99_ms'] / med['root']['p99_ms']:.2f}x "
      f"(target: under 10% slower)")
if any(r["result"]["errors"] for r in rows):
    sys.exit("errors in the load: the user was refused or the server failed")
PY

#!/usr/bin/env bash
# RegisterTaskDefinition and DescribeTaskDefinition load against Flotilla and moto_server, in
# one run, with the same signed requests from the same load generator. Prints both and the ratio.
# Usage: bench/api_vs_moto.sh [CONCURRENCY] [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
CONC=${1:-16}
REQS=${2:-5000}
command -v moto_server >/dev/null || pip install -q "moto[server]==5.2.1"
cargo build -q --release -p flotilla-cli -p flotilla-bench
BIN=${CARGO_TARGET_DIR:-target}/release
export AWS_ACCESS_KEY_ID=AKIABENCHFLOTILLA001 AWS_SECRET_ACCESS_KEY=bench-secret
DATA=$(mktemp -d)
cleanup() { kill "$FL_PID" "$MOTO_PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
FL_PORT=$(port); MOTO_PORT=$(port)
FLOTILLA_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID FLOTILLA_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY FLOTILLA_LOG=warn \
  "$BIN/flotilla" up --listen "127.0.0.1:$FL_PORT" --data-dir "$DATA" >/dev/null & FL_PID=$!
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 & MOTO_PID=$!
wait_port() { for _ in $(seq 300); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
wait_port "$FL_PORT"; wait_port "$MOTO_PORT"
echo "concurrency=$CONC requests=$REQS  (flotilla: durable redb store, fsync per batch; moto: in-memory)"
printf '%-10s %-9s %10s %9s %9s %7s\n' kind server req/s p50_ms p99_ms errors
for kind in register describe; do
  fl=$("$BIN/api-load" "http://127.0.0.1:$FL_PORT" "$kind" "$CONC" "$REQS")
  mo=$("$BIN/api-load" "http://127.0.0.1:$MOTO_PORT" "$kind" "$CONC" "$REQS")
  python3 - "$kind" "$fl" "$mo" <<'PY'
import json, sys
kind, fl, mo = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
for name, r in (("flotilla", fl), ("moto", mo)):
    print(f"{kind:<10} {name:<9} {r['rps']:>10.0f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} {r['errors']:>7}")
print(f"{kind:<10} {'ratio':<9} {fl['rps']/mo['rps']:>9.1f}x throughput, p99 {fl['p99_ms']:.2f} ms vs {mo['p99_ms']:.2f} ms")
PY
done

#!/usr/bin/env bash
# Issue 11 benchmark (a): HTTP through an application load balancer of a real `flotilla up` (made
# through the ELBv2 API, targets registered by IP) vs nginx
# as the same reverse proxy (keep-alive upstreams) vs straight to one target. wrk with
# keep-alive, fixed connections and duration; requests/s, p50 and p99; rounds in rotating
# order, medians reported. Same two nginx targets for every path, inside the server's
# task-network namespace; where each client runs, and why that is fair: bench/lb/common.sh.
#
# Usage: bench/lb_http.sh   (env: CONNS=64 THREADS=2 DURATION=10s ROUNDS=3)
source "$(dirname "${BASH_SOURCE[0]}")/lb/common.sh"
CONNS=${CONNS:-64} THREADS=${THREADS:-2} DURATION=${DURATION:-10s} ROUNDS=${ROUNDS:-3}

start_targets
start_lb application HTTP

# nginx configured as the ALB is: round robin over both targets, HTTP/1.1 keep-alive to them,
# the same forwarded headers. As many workers as the machine has cores (Flotilla's runtime
# has as many threads).
cat >"$WORK/proxy.conf" <<CONF
worker_processes auto;
pid $WORK/proxy.pid;
error_log $WORK/proxy.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream targets { server $TARGET_A; server $TARGET_B; keepalive 256; }
  server {
    listen $PEER_IP:8080;
    location / {
      proxy_pass http://targets;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Port \$server_port;
    }
  }
}
CONF
in_ns nginx -c "$WORK/proxy.conf"
ns_wait_port "$PEER_IP" 8080

declare -A URL=([direct]=http://$TARGET_A/ [nginx]=http://$PEER_IP:8080/ [flotilla]=http://127.0.0.1:$LB_PORT/)
declare -A WHERE=([direct]=ns [nginx]=ns [flotilla]=host)
echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency, $ROUNDS rounds; nproc $(nproc)"
for path in direct nginx flotilla; do wrk_run "warmup-$path" "${WHERE[$path]}" -t"$THREADS" -c"$CONNS" -d2s "${URL[$path]}" >/dev/null; done
order=(direct nginx flotilla)
for round in $(seq "$ROUNDS"); do
  for path in "${order[@]}"; do
    wrk_run "$path-$round" "${WHERE[$path]}" -t"$THREADS" -c"$CONNS" -d"$DURATION" "${URL[$path]}" | tee -a "$WORK/results"
  done
  order=("${order[@]:1}" "${order[0]}")
done
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rps, p50, p99, _mb, *_ = line.split()
    rows.setdefault(name.rsplit("-", 1)[0], []).append((float(rps), float(p50), float(p99)))
med = {k: tuple(statistics.median(v[i] for v in vs) for i in range(3)) for k, vs in rows.items()}
print(f"\n{'path':10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}   (medians)")
for k in ("direct", "nginx", "flotilla"):
    print(f"{k:10} {med[k][0]:10.0f} {med[k][1]:8.3f} {med[k][2]:8.3f}")
f, n = med["flotilla"], med["nginx"]
print(f"\nflotilla/nginx: throughput {f[0]/n[0]:.2f}x (target >= 1.00), p99 {f[2]/n[2]:.2f}x (target <= 1.20)")
PY
target_verdicts

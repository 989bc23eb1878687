#!/usr/bin/env bash
# Pull and unpack a ~100 MB, 5-layer image from a registry on loopback: `flotilla image pull`
# into a fresh data dir vs `skopeo copy` to an OCI layout + `umoci unpack` to a bundle.
# Rounds alternate between the two; each round starts from nothing on the client side.
# Usage: bench/pull_unpack.sh [ROUNDS]
ROUNDS=${1:-3}
source "$(dirname "$0")/common.sh"
need skopeo umoci
start_registry big
echo "image: $BIG_IMAGE (busybox layer + 4 x 25 MiB incompressible gzip layers)"
ms() { date +%s%N | cut -c1-13; }
FL=() SK=() UM=() PAIR=()
for r in $(seq "$ROUNDS"); do
  d=$WORK/fl-$r
  t0=$(ms)
  "$BIN/flotilla" --data-dir "$d" -o json image pull "$BIG_IMAGE" >/dev/null
  t1=$(ms)
  FL+=($((t1 - t0)))
  o=$WORK/oci-$r
  t0=$(ms)
  skopeo copy -q --src-tls-verify=false "docker://$BIG_IMAGE" "oci:$o:latest"
  t1=$(ms)
  umoci unpack --image "$o:latest" "$WORK/bundle-$r" >/dev/null
  t2=$(ms)
  SK+=($((t1 - t0))) UM+=($((t2 - t1))) PAIR+=($((t2 - t0)))
  # Both must have produced the same files.
  for f in 0 1 2 3; do
    cmp "$(ls "$d"/images/layers/*/fs/data/layer-$f.bin)" "$WORK/bundle-$r/rootfs/data/layer-$f.bin"
  done
  cmp "$(ls "$d"/images/layers/*/fs/bin/busybox)" "$WORK/bundle-$r/rootfs/bin/busybox"
  rm -rf "$d" "$o" "$WORK/bundle-$r"
done
python3 - "${FL[*]}" "${SK[*]}" "${UM[*]}" "${PAIR[*]}" <<'PY'
import statistics, sys
fl, sk, um, pair = ([int(x) for x in a.split()] for a in sys.argv[1:5])
print(f"pull + unpack, ms ({len(fl)} rounds each, alternating)")
print(f"{'what':<28} {'median':>8} {'min':>8} {'max':>8}  rounds")
for name, v in (("flotilla image pull", fl), ("skopeo copy", sk), ("umoci unpack", um), ("skopeo + umoci", pair)):
    print(f"{name:<28} {statistics.median(v):>8.0f} {min(v):>8} {max(v):>8}  {' '.join(map(str, v))}")
r = statistics.median(fl) / statistics.median(pair)
print(f"ratio flotilla / (skopeo + umoci): {r:.2f}x  ({'faster' if r < 1 else 'slower'}; target: faster)")
PY

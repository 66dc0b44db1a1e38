#!/usr/bin/env bash
# The reconcile scaling table: `meshca reconcile` (the release binary, as users run it) over
# 100, 1,000 and 10,000 clusters, on disk and on tmpfs: first issuance, then a steady-state run
# that keeps every bundle. Prints wall time, CPU time (user+sys: above wall means both cores
# worked), per-cluster time and peak RSS, from GNU time; then, per fleet size, first issuance on
# disk over the same on tmpfs (the price of durable writes: #27's target is at most 2x).
#
#   benches/scale.sh [COUNTS...]        default: 100 1000 10000
#   DISK_DIR=/var/tmp TMPFS_DIR=/dev/shm benches/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("${@:-100 1000 10000}")
read -r -a counts <<<"${counts[*]}"
disk=${DISK_DIR:-$(pwd)/target/scale}
tmpfs=${TMPFS_DIR:-/dev/shm}
mkdir -p "$disk"
[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time; Debian package 'time')" >&2; exit 1; }
cargo build --release --locked --quiet -p meshca-cli
bin=$(pwd)/target/release/meshca

declare -A issue_wall
run() { # label dir clusters-file -> one table row; the wall time in $wall
  local label=$1 dir=$2 list=$3 n=$4 out user sys rss
  out=$(/usr/bin/time -f '%e %U %S %M' "$bin" reconcile --policy "$dir/policy.yaml" --store "$dir/store" \
    --clusters-file "$list" 2>&1 >/dev/null | tail -1)
  read -r wall user sys rss <<<"$out"
  awk -v l="$label" -v n="$n" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" 'BEGIN {
    printf "| %-22s | %6d | %8.2f s | %8.2f s | %8.1f µs | %7.1f MiB |\n", l, n, w, u + s, w / n * 1e6, r / 1024 }'
}

echo "| run                    | clusters |     wall |  user+sys | per cluster |  peak RSS |"
echo "|---|---|---|---|---|---|"
for where in disk tmpfs; do
  base=$disk; [ "$where" = tmpfs ] && base=$tmpfs
  for n in "${counts[@]}"; do
    dir=$(mktemp -d "$base/meshca-scale-$n-XXXX")
    # The quickstart leaves the seed's policy and its root in a store (and three clusters of
    # its own, named cluster1..3, which the runs below do not touch).
    "$bin" quickstart --dir "$dir" >/dev/null
    seq -f "c%g" 1 "$n" >"$dir/clusters"
    run "issue, $where" "$dir" "$dir/clusters" "$n"
    issue_wall[$where,$n]=$wall
    run "keep, $where" "$dir" "$dir/clusters" "$n"
    rm -rf "$dir"
  done
done
echo
echo "First issuance, disk over tmpfs (target: at most 2x):"
for n in "${counts[@]}"; do
  awk -v n="$n" -v d="${issue_wall[disk,$n]}" -v t="${issue_wall[tmpfs,$n]}" 'BEGIN {
    printf "  %6d clusters: %.2f s / %.2f s = %.1fx\n", n, d, t, (t > 0 ? d / t : 0) }'
done

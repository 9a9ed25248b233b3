#!/usr/bin/env bash
# Diff throughput against the number of threads, side by side in one run: the same
# pair diffed with --threads N for each N, ROUNDS rounds interleaved, the median wall
# time of each, and the speed-up over one thread as a ratio to N.
#
#   benches/scaling.sh [DELTAWARD_BIN] [PAIR] [LEVEL] [ROUNDS] [THREADS...]
#     defaults: target/release/deltaward, kernel-ext4, default, 3, 1 2 (up to nproc)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/deltaward}
pair=${2:-kernel-ext4}
level=${3:-default}
rounds=${4:-3}
shift 4 2>/dev/null || shift $#
threads=("$@")
if [ ${#threads[@]} -eq 0 ]; then
  threads=(1)
  n=2; while (( n <= $(nproc) )); do threads+=("$n"); n=$((n * 2)); done
fi
pairs=${DELTAWARD_PAIRS:-$HOME/.cache/deltaward-pairs}
[[ -x $bin ]] || { echo "build it first: cargo build --release -p deltaward" >&2; exit 1; }
[[ -f $pairs/$pair.new ]] || { echo "no pair $pair in $pairs: bash scripts/make-pairs.sh" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" keygen -s "$work/k.key" -p "$work/k.pub" --unencrypted >/dev/null 2>&1
# Warm the page cache so that the first run does not pay for the disk.
cat "$pairs/$pair.old" "$pairs/$pair.new" >/dev/null
for r in $(seq "$rounds"); do
  for t in "${threads[@]}"; do
    t0=$EPOCHREALTIME
    "$bin" diff "$pairs/$pair.old" "$pairs/$pair.new" -o "$work/p.dwp" -s "$work/k.key" \
      --level "$level" --threads "$t" --force >/dev/null 2>&1
    echo "$t $t0 $EPOCHREALTIME" >> "$work/times"
  done
done
python3 - "$work/times" "$pair" "$level" "$(stat -c %s "$pairs/$pair.new")" <<'PY'
import sys, statistics, collections
times = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, t0, t1 = line.split()
    times[int(t)].append(float(t1) - float(t0))
pair, level, size = sys.argv[2], sys.argv[3], int(sys.argv[4])
one = statistics.median(times[1])
print(f"{pair}, level {level}, {len(times[1])} rounds (median wall):")
print(f"{'threads':>7} {'wall s':>8} {'MiB/s':>8} {'speed-up':>9} {'/ N':>6}")
for t in sorted(times):
    m = statistics.median(times[t])
    print(f"{t:7d} {m:8.2f} {size/m/2**20:8.1f} {one/m:8.2f}x {one/m/t:6.2f}")
PY

#!/usr/bin/env bash
# Side-by-side comparison of deltaward with zstd --patch-from, xdelta3 and bsdiff on
# one image pair, in one run: patch size, diff time, apply time, apply peak RSS,
# each as a ratio to deltaward's figure. Times are wall-clock from GNU time; the
# machine is noisy, so compare ratios from the same run, not absolute seconds.
#
#   scripts/compare.sh [PAIR] [TOOLS...]
#     PAIR   corpus pair name (default kernel-ext4), from scripts/make-pairs.sh
#     TOOLS  any of: deltaward-fast deltaward deltaward-best zstd3 zstd19 xdelta3 bsdiff
#            (default: deltaward-fast deltaward zstd3 xdelta3; zstd19 and bsdiff take minutes)
# Needs: cargo, GNU time (/usr/bin/time), zstd, xdelta3, bsdiff (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
pair=${1:-kernel-ext4}
shift || true
tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(deltaward-fast deltaward zstd3 xdelta3)

pairs=${DELTAWARD_PAIRS:-$HOME/.cache/deltaward-pairs}
bash scripts/make-pairs.sh "$pairs" >/dev/null
old="$pairs/$pair.old"
new="$pairs/$pair.new"
for cmd in zstd xdelta3 bsdiff /usr/bin/time; do
  command -v "$cmd" >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd xdelta3 bsdiff time >/dev/null
    break
  }
done
cargo build --release --locked -q -p deltaward
dw=target/release/deltaward
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$dw" keygen -s "$work/k.key" -p "$work/k.pub" --unencrypted 2>/dev/null

# measure NAME DIFF_CMD APPLY_CMD PATCH OUT
measure() {
  local name=$1 diff_cmd=$2 apply_cmd=$3 patch=$4 out=$5
  /usr/bin/time -f "%e %M" -o "$work/t.diff" bash -c "$diff_cmd" >/dev/null 2>&1
  /usr/bin/time -f "%e %M" -o "$work/t.apply" bash -c "$apply_cmd" >/dev/null 2>&1
  cmp -s "$out" "$new" || { echo "$name: rebuilt image differs" >&2; exit 1; }
  read -r dt _ <"$work/t.diff"
  read -r at arss <"$work/t.apply"
  printf '%s %s %s %s %s\n' "$name" "$(stat -c %s "$patch")" "$dt" "$at" "$arss" >>"$work/results"
  rm -f "$out"
}

for t in "${tools[@]}"; do
  case $t in
    deltaward-fast|deltaward|deltaward-best)
      level=${t#deltaward-}; [ "$level" = deltaward ] && level=default
      measure "$t" "$dw diff $old $new -o $work/$t.dwp -s $work/k.key --level $level" \
        "$dw apply $old $work/$t.dwp -o $work/$t.out -p $work/k.pub" "$work/$t.dwp" "$work/$t.out" ;;
    zstd3)
      measure zstd-3 "zstd -q -f -3 --long=30 --patch-from=$old $new -o $work/z3.zst" \
        "zstd -q -f -d --long=30 --patch-from=$old $work/z3.zst -o $work/z3.out" "$work/z3.zst" "$work/z3.out" ;;
    zstd19)
      measure zstd-19 "zstd -q -f --ultra -19 --long=30 --patch-from=$old $new -o $work/z19.zst" \
        "zstd -q -f -d --long=30 --patch-from=$old $work/z19.zst -o $work/z19.out" "$work/z19.zst" "$work/z19.out" ;;
    xdelta3)
      measure xdelta3 "xdelta3 -f -9 -B 1073741824 -e -s $old $new $work/x.vcdiff" \
        "xdelta3 -f -B 1073741824 -d -s $old $work/x.vcdiff $work/x.out" "$work/x.vcdiff" "$work/x.out" ;;
    bsdiff)
      measure bsdiff "bsdiff $old $new $work/b.bsdiff" "bspatch $old $work/b.out $work/b.bsdiff" "$work/b.bsdiff" "$work/b.out" ;;
    *) echo "unknown tool $t" >&2; exit 2 ;;
  esac
done

ref=$(awk 'NR==1' "$work/results")
echo "pair $pair ($(stat -c %s "$new") bytes), $(nproc) cores; ratios are to the first row"
awk -v ref="$ref" 'BEGIN { split(ref, r, " ");
  printf "| %-15s | %12s | %10s | %10s | %13s | %6s | %6s | %6s |\n", "tool", "patch bytes", "diff s", "apply s", "apply RSS MiB", "size x", "diff x", "RSS x";
  print "|---|---|---|---|---|---|---|---|" }
  { printf "| %-15s | %12d | %10.2f | %10.2f | %13.1f | %6.2f | %6.2f | %6.2f |\n", $1, $2, $3, $4, $5/1024, $2/r[2], $3/r[3], $5/r[5] }' "$work/results"

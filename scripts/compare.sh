#!/usr/bin/env bash
# Side-by-side comparison of deltaward with other delta tools on one image pair, in
# one run: patch size, diff wall time and peak memory, apply wall time and peak
# memory, and ratios to the reference tools. The machine is noisy: compare ratios
# from the same run, not absolute seconds.
#
#   scripts/compare.sh [PAIR] [TOOLS...]
#     PAIR   a pair from scripts/make-pairs.sh (default kernel-ext4): kernel-ext4,
#            kernel-tar, vmlinuz, qemu-x86, shifted-ext4
#     TOOLS  any of: deltaward-fast deltaward deltaward-best zstd3 zstd19 xdelta3
#            bsdiff hdiffz (default: deltaward-fast deltaward zstd3 xdelta3;
#            zstd19 and bsdiff take minutes on the 600 MiB pairs)
#
# Environment:
#   DELTAWARD_BIN    the deltaward binary to run (default: build target/release/deltaward)
#   DELTAWARD_PAIRS  where the pairs are (default ~/.cache/deltaward-pairs)
#   HDIFFZ, HPATCHZ  HDiffPatch's programs for the hdiffz tool (default: from PATH).
#                    HDiffPatch is not installed by this script: build it from its
#                    public source if you want it in the table.
#   COMPARE_MD=1     print only the markdown table (for benches/compare-all.sh)
#   APPLY_ROUNDS     applies per tool (default 3; 9 where the median is under 1 s):
#                    the median wall time is reported
#                    (an apply takes seconds, and one round on a noisy machine
#                    varies by up to 2x); a diff runs once, or where it took
#                    under 2 s, 3 more times (their median wall time is reported)
#
# Each diff and apply runs under GNU time (peak RSS; the wall time is taken around
# it, to the microsecond); the anonymous part of
# the peak (RssAnon, without mapped file pages) is sampled from /proc every 50 ms.
# Every rebuilt image is compared with the new image byte for byte.
# Needs: cargo, GNU time, zstd, xdelta3, bsdiff (installed when missing, as root).
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
[ -f "$old" ] && [ -f "$new" ] || { echo "compare: no pair $pair in $pairs" >&2; exit 1; }
for cmd in zstd xdelta3 bsdiff /usr/bin/time; do
  command -v "$cmd" >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd xdelta3 bsdiff time >/dev/null
    break
  }
done
if [ -n "${DELTAWARD_BIN:-}" ]; then
  dw=$DELTAWARD_BIN
else
  cargo build --release --locked -q -p deltaward
  dw=target/release/deltaward
fi
hdiffz=${HDIFFZ:-hdiffz}
hpatchz=${HPATCHZ:-hpatchz}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/compare.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$dw" keygen -s "$work/k.key" -p "$work/k.pub" --unencrypted >/dev/null 2>&1

# run OUT CMD...: runs CMD under GNU time; writes "wall_s peak_rss_kib peak_anon_kib" to OUT.
# The wall time is taken in a subshell around GNU time, to the microsecond (GNU
# time gives hundredths, too coarse for applies of 0.05 s), and so includes
# starting GNU time, the same for every tool.
run() {
  local out=$1
  shift
  (
    start=$EPOCHREALTIME
    /usr/bin/time -f "%M" -o "$out.time" "$@" >/dev/null 2>"$out.err" || exit
    echo "$start $EPOCHREALTIME" >"$out.wall"
  ) &
  local tpid=$! pid="" anon=0 key value _ timer start end
  while kill -0 "$tpid" 2>/dev/null; do
    if [ -z "$pid" ]; then
      timer=$(pgrep -P "$tpid" | head -n1 || true)
      [ -z "$timer" ] || pid=$(pgrep -P "$timer" | head -n1 || true)
    fi
    if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
      while read -r key value _; do
        [ "$key" = RssAnon: ] && [ "$value" -gt "$anon" ] && anon=$value
      done <"/proc/$pid/status" 2>/dev/null || true
    fi
    sleep 0.05
  done
  wait "$tpid" || { echo "compare: failed: $*" >&2; cat "$out.err" >&2; exit 1; }
  read -r start end <"$out.wall"
  echo "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.4f", e - s }') $(cat "$out.time") $anon" >"$out"
}

# rounds OUT N FILE CHECK CMD...: runs CMD N times (removing FILE before each, then
# running CHECK); writes "median_wall_s max_peak_rss_kib max_peak_anon_kib" to OUT.
rounds() {
  local result=$1 n=$2 file=$3 check=$4 r walls=() rss=0 anon=0 w m a
  shift 4
  for ((r = 0; r < n; r++)); do
    rm -f "$file"
    run "$result.run" "$@"
    "$check"
    read -r w m a <"$result.run"
    walls+=("$w")
    (( m > rss )) && rss=$m
    (( a > anon )) && anon=$a
  done
  echo "$(printf '%s\n' "${walls[@]}" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}') $rss $anon" >"$result"
}

# measure NAME PATCH OUT -- DIFF_CMD... -- APPLY_CMD...
measure() {
  local name=$1 patch=$2 out=$3
  shift 4
  local diff=() apply=()
  while [ "$1" != -- ]; do diff+=("$1"); shift; done
  shift
  apply=("$@")
  rounds "$work/d" 1 "$patch" : "${diff[@]}"
  read -r dt drss danon <"$work/d"
  # A diff under 2 s runs 3 more times, and their median wall time is reported:
  # at a tenth of a second, one run on a noisy machine varies by 2x.
  if awk -v t="$dt" 'BEGIN { exit !(t < 2) }'; then
    rounds "$work/d" 3 "$patch" : "${diff[@]}"
    read -r dt drss danon <"$work/d"
  fi
  # shellcheck disable=SC2317 # called by rounds
  rebuilt() { cmp -s "$out" "$new" || { echo "compare: $name: rebuilt image differs" >&2; exit 1; }; }
  rounds "$work/a" "${APPLY_ROUNDS:-3}" "$out" rebuilt "${apply[@]}"
  read -r at arss aanon <"$work/a"
  # An apply under 1 s runs 9 times instead (the median of those).
  if awk -v t="$at" 'BEGIN { exit !(t < 1) }'; then
    rounds "$work/a" 9 "$out" rebuilt "${apply[@]}"
    read -r at arss aanon <"$work/a"
  fi
  echo "$name $(stat -c %s "$patch") $dt $drss $danon $at $arss $aanon" >>"$work/results"
  rm -f "$out" "$patch"
}

for t in "${tools[@]}"; do
  case $t in
    deltaward-fast|deltaward|deltaward-best)
      level=${t#deltaward-}; [ "$level" = deltaward ] && level=default
      measure "$t" "$work/p.dwp" "$work/p.out" -- \
        "$dw" diff "$old" "$new" -o "$work/p.dwp" -s "$work/k.key" --level "$level" -- \
        "$dw" apply "$old" "$work/p.dwp" -o "$work/p.out" -p "$work/k.pub" ;;
    zstd3|zstd19)
      lvl=(-3); [ "$t" = zstd19 ] && lvl=(--ultra -19)
      measure "zstd-${t#zstd}" "$work/z.zst" "$work/z.out" -- \
        zstd -q -f "${lvl[@]}" --long=30 --patch-from="$old" "$new" -o "$work/z.zst" -- \
        zstd -q -f -d --long=30 --patch-from="$old" "$work/z.zst" -o "$work/z.out" ;;
    xdelta3)
      measure xdelta3-9 "$work/x.vcdiff" "$work/x.out" -- \
        xdelta3 -f -9 -B 1073741824 -e -s "$old" "$new" "$work/x.vcdiff" -- \
        xdelta3 -f -B 1073741824 -d -s "$old" "$work/x.vcdiff" "$work/x.out" ;;
    bsdiff)
      measure bsdiff "$work/b.bsdiff" "$work/b.out" -- \
        bsdiff "$old" "$new" "$work/b.bsdiff" -- \
        bspatch "$old" "$work/b.out" "$work/b.bsdiff" ;;
    hdiffz)
      command -v "$hdiffz" >/dev/null && command -v "$hpatchz" >/dev/null ||
        { echo "compare: hdiffz: set HDIFFZ and HPATCHZ (HDiffPatch is not installed here)" >&2; exit 2; }
      measure "hdiffz-m" "$work/h.hdiff" "$work/h.out" -- \
        "$hdiffz" -m-6 -SD -c-zstd-21-24 -p-2 "$old" "$new" "$work/h.hdiff" -- \
        "$hpatchz" "$old" "$work/h.hdiff" "$work/h.out" ;;
    *) echo "compare: unknown tool $t" >&2; exit 2 ;;
  esac
done

[ "${COMPARE_MD:-}" = 1 ] || echo "pair $pair ($(stat -c %s "$new") bytes), $(nproc) cores"
# Ratios: size to zstd -19 and to HDiffPatch, diff wall to zstd -3's, apply wall to
# zstd -3's apply (zstd's own --patch-from); "-" when that tool was not run.
awk '
  { row[NR] = $0; name[NR] = $1; n = NR }
  $1 == "zstd-19" { z19 = $2 }
  $1 == "hdiffz-m" { hd = $2 }
  $1 == "zstd-3" { z3d = $3; z3a = $6 }
  function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
  function sratio(a, b) { return b > 0 ? sprintf("%.3f", a / b) : "-" }
  END {
    print "| tool | patch bytes | size / zstd -19 | size / HDiffPatch | diff s | diff / zstd -3 | diff peak RSS MiB (anon) | apply s | apply / zstd | apply peak RSS MiB |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= n; i++) {
      split(row[i], f, " ")
      printf "| %s | %d | %s | %s | %.3f | %s | %.0f (%.0f) | %.3f | %s | %.1f |\n",
        f[1], f[2], sratio(f[2], z19), sratio(f[2], hd), f[3], ratio(f[3], z3d),
        f[4] / 1024, f[5] / 1024, f[6], ratio(f[6], z3a), f[7] / 1024
    }
  }' "$work/results"

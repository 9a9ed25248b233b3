#!/usr/bin/env bash
# An 8 GiB sparse image pair against the plain pair it contains, side by side in one
# run: kernel-ext4 (600 MiB) placed 1 GiB into 8 GiB sparse files, the new one
# shifted by an unaligned 4,219 bytes. deltaward finds the holes with
# SEEK_DATA/SEEK_HOLE and skips them, so the 8 GiB pair should cost about what the
# 600 MiB pair costs. Reports diff and apply wall time, peak RSS split into
# anonymous memory and mapped file pages (sampled from /proc every 50 ms), and
# patch size, each as a ratio to the plain pair's figure.
#
#   benches/sparse-8g.sh [DELTAWARD_BIN] [LEVEL]
#     defaults: target/release/deltaward, default; pairs from $DELTAWARD_PAIRS
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/deltaward}
level=${2:-default}
pairs=${DELTAWARD_PAIRS:-$HOME/.cache/deltaward-pairs}
[[ -x $bin ]] || { echo "build it first: cargo build --release -p deltaward" >&2; exit 1; }
[[ -f $pairs/kernel-ext4.new ]] || { echo "no pairs in $pairs: bash scripts/make-pairs.sh" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
work=$(mktemp -d "${TMPDIR:-/var/tmp}/sparse-8g.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" keygen -s k.key -p k.pub --unencrypted >/dev/null 2>&1
place() { # src dst offset: src written at offset into an 8 GiB sparse dst
  dd if="$1" of="$2" bs=1M oflag=seek_bytes seek="$3" conv=notrunc,sparse status=none
  truncate -s 8G "$2"
}
place "$pairs/kernel-ext4.old" old8.img $((1 << 30))
place "$pairs/kernel-ext4.new" new8.img $(((1 << 30) + 4219))
echo "8 GiB files: old $(du -k old8.img | cut -f1) KiB allocated, new $(du -k new8.img | cut -f1) KiB allocated"

# run NAME CMD...: runs CMD, sampling its RSS; appends "NAME wall anon_kib file_kib" to stats
run() {
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1 &
  local pid=$! anon=0 file=0
  while kill -0 "$pid" 2>/dev/null; do
    if read -r a f < <(awk '/^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {print a+0, f+0}' "/proc/$pid/status" 2>/dev/null); then
      (( a > anon )) && anon=$a
      (( f > file )) && file=$f
    fi
    sleep 0.05
  done
  wait "$pid"
  echo "$name $(echo "$(date +%s.%N) - $t0" | bc) $anon $file" >> stats
}
run diff-plain "$bin" diff "$pairs/kernel-ext4.old" "$pairs/kernel-ext4.new" -o plain.dwp -s k.key --level "$level"
run diff-8g "$bin" diff old8.img new8.img -o sparse.dwp -s k.key --level "$level"
run apply-plain "$bin" apply "$pairs/kernel-ext4.old" plain.dwp -o plain.out -p k.pub
run apply-8g "$bin" apply old8.img sparse.dwp -o sparse.out -p k.pub
cmp -s sparse.out new8.img || { echo "the applied 8 GiB image differs" >&2; exit 1; }
echo "applied 8 GiB image: $(du -k sparse.out | cut -f1) KiB allocated"
python3 - "$(stat -c %s plain.dwp)" "$(stat -c %s sparse.dwp)" "$level" <<'PY'
import sys
plain_patch, sparse_patch, level = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = {l.split()[0]: list(map(float, l.split()[1:])) for l in open("stats")}
print(f"level {level}: patch plain {plain_patch} bytes, 8 GiB {sparse_patch} bytes ({sparse_patch/plain_patch:.3f}x)")
print(f"{'':12} {'wall s':>8} {'anon MiB':>9} {'file MiB':>9}")
for k in ["diff-plain", "diff-8g", "apply-plain", "apply-8g"]:
    w, a, f = s[k]
    print(f"{k:12} {w:8.2f} {a/1024:9.1f} {f/1024:9.1f}")
for op in ["diff", "apply"]:
    p, g = s[f"{op}-plain"], s[f"{op}-8g"]
    print(f"{op}: 8 GiB / plain: wall {g[0]/p[0]:.2f}x, anon {g[1]/max(p[1],1):.2f}x, file pages {g[2]/max(p[2],1):.2f}x")
PY

#!/usr/bin/env bash
# The comparison runner: every pair from scripts/make-pairs.sh through deltaward at
# each level and the other delta tools, side by side in one run, written into
# docs/BENCHMARKS.md (between its "compare-all" markers) with the machine and the
# commands. Each diff runs once (3 more where it took under 2 s) and each apply
# three times, and the median wall time is given: read the ratios, not the
# seconds. About 30 to 45 minutes on 2 cores, most of it zstd -19 on the three
# large pairs.
#
#   benches/compare-all.sh [DELTAWARD_BIN]
#     default: builds target/release/deltaward
#
# Environment:
#   PAIRS       the pairs to run (default: kernel-ext4 kernel-tar shifted-ext4 vmlinuz qemu-x86 qemu-arm64 qemu-ext4)
#   BSDIFF_MAX  bsdiff runs on pairs whose new image is at most this many bytes
#               (default 32 MiB): bsdiff 4.3 needs about 17 times the image in memory,
#               10 GiB for a 600 MiB image, and its suffix sort takes most of an hour
#               on two cores (more than 13 minutes on the 64 MiB qemu-ext4 image, whose
#               long runs of zero bytes it sorts slowly); the table says where it was
#               left out
#   HDIFFZ, HPATCHZ  HDiffPatch's programs, if built (see scripts/compare.sh); the
#               table has an HDiffPatch row only where they are given
#   OUT         the file to write (default docs/BENCHMARKS.md)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ -n "${1:-}" ]; then
  bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
else
  cargo build --release --locked -q -p deltaward
  bin=$root/target/release/deltaward
fi
pairs_dir=${DELTAWARD_PAIRS:-$HOME/.cache/deltaward-pairs}
bash scripts/make-pairs.sh "$pairs_dir" >/dev/null
read -r -a pairs <<<"${PAIRS:-kernel-ext4 kernel-tar shifted-ext4 vmlinuz qemu-x86 qemu-arm64 qemu-ext4}"
bsdiff_max=${BSDIFF_MAX:-$((32 << 20))}
out=${OUT:-docs/BENCHMARKS.md}
have_hdiffz=0
if command -v "${HDIFFZ:-hdiffz}" >/dev/null && command -v "${HPATCHZ:-hpatchz}" >/dev/null; then
  have_hdiffz=1
fi

section=$(mktemp)
trap 'rm -f "$section" "$out.partial"' EXIT
{
  echo "<!-- compare-all: begin (written by benches/compare-all.sh; do not edit by hand) -->"
  echo "## Every pair against the other delta tools"
  echo
  echo "Written by \`benches/compare-all.sh\` on $(date -u +%Y-%m-%d) at deltaward $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
  echo "Machine: $(nproc) vCPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -n1)), $(free -g | awk '/^Mem:/ {print $2}') GiB,"
  echo "Linux $(uname -r). Tools: $(zstd --version | head -n1 | sed 's/^\*\*\* //; s/ \*\*\*$//; s/, by.*//'),"
  echo "xdelta3 $(dpkg-query -W -f '${Version}' xdelta3 2>/dev/null), bsdiff $(dpkg-query -W -f '${Version}' bsdiff 2>/dev/null)$([ $have_hdiffz = 1 ] && echo ", HDiffPatch $("${HDIFFZ:-hdiffz}" -v 2>&1 | grep -o 'v[0-9.]*' | head -n1) (built from its public source; not part of this repository)")."
  echo "Pairs (\`scripts/make-pairs.sh\`):"
  echo
  sed 's/^/    /' "$pairs_dir/VERSIONS"
  echo
  echo "Commands (\`scripts/compare.sh PAIR TOOLS...\` runs them, each under GNU time, and"
  echo "checks every rebuilt image byte for byte):"
  echo
  echo '    deltaward diff OLD NEW -o P -s KEY --level fast|default|best;  deltaward apply OLD P -o OUT -p PUB'
  echo '    zstd -q -f -3 | --ultra -19 --long=30 --patch-from=OLD NEW -o P;  zstd -d --long=30 --patch-from=OLD P -o OUT'
  echo '    xdelta3 -9 -B 1073741824 -e -s OLD NEW P;  xdelta3 -B 1073741824 -d -s OLD P OUT'
  echo '    bsdiff OLD NEW P;  bspatch OLD OUT P'
  [ $have_hdiffz = 1 ] && echo '    hdiffz -m-6 -SD -c-zstd-21-24 -p-2 OLD NEW P;  hpatchz OLD P OUT'
  echo
  echo "Peak RSS is GNU time's (it counts mapped file pages: deltaward's diff and zstd map"
  echo "the images); the anonymous part, in brackets, is sampled from /proc every 50 ms."
  echo "Each diff runs once, or where it took under 2 s 3 more times (median of those); each apply runs ${APPLY_ROUNDS:-3} times, or 9 where their median is under 1 s, and its median wall time is given. Wall times are to the millisecond (taken around GNU time, which gives the peak RSS)."
  echo "\"apply / zstd\" is the apply wall time over zstd -3's \`--patch-from\` apply."
  echo
} >"$section"

for pair in "${pairs[@]}"; do
  tools=(deltaward-fast deltaward deltaward-best zstd3 zstd19 xdelta3)
  size=$(stat -c %s "$pairs_dir/$pair.new")
  note=""
  if [ "$size" -le "$bsdiff_max" ]; then
    tools+=(bsdiff)
  else
    note="bsdiff not run: the new image is $((size >> 20)) MiB, over BSDIFF_MAX (needs about $((size * 17 >> 30)) GiB)."
  fi
  [ $have_hdiffz = 1 ] && tools+=(hdiffz)
  echo "compare-all: $pair: ${tools[*]}" >&2
  {
    echo "### $pair ($size bytes)"
    echo
    DELTAWARD_BIN=$bin COMPARE_MD=1 bash scripts/compare.sh "$pair" "${tools[@]}"
    [ -z "$note" ] || { echo; echo "$note"; }
    echo
  } >>"$section"
done
echo "<!-- compare-all: end -->" >>"$section"

# Replace the section in OUT (or append it), through a temporary file and a rename.
python3 - "$out" "$section" <<'PY'
import os, re, sys
out, section = sys.argv[1], open(sys.argv[2]).read()
text = open(out).read() if os.path.exists(out) else "# Benchmarks\n"
pat = re.compile(r"<!-- compare-all: begin.*?<!-- compare-all: end -->\n", re.S)
text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section
tmp = out + ".partial"
with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, out)
PY
echo "compare-all: wrote $out" >&2

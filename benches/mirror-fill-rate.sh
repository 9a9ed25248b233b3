#!/usr/bin/env bash
# A cold-object fill through `deltaward mirror serve` against its upstream rate cap:
# an origin serves a signed release of a 64 MiB image; a mirror with
# --upstream-rate RATE fetches its full image (64 MiB of incompressible bytes) for a
# client that asks once. Prints the achieved rate as a ratio to the cap.
#
#   benches/mirror-fill-rate.sh [DELTAWARD_BIN] [RATE_MIB_PER_S]
#     defaults: target/release/deltaward, 16
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/deltaward}
rate=${2:-16}
[[ -x $bin ]] || { echo "build it first: cargo build --release -p deltaward" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
"$bin" keygen -s k.key -p k.pub --unencrypted >/dev/null 2>&1
"$bin" root --repo repo --root-pub k.pub --release-pub k.pub --channel-pub k.pub -s k.key >/dev/null 2>&1
head -c $((64 << 20)) /dev/urandom > new.img
head -c $((1 << 20)) /dev/urandom > old.img
cat > NOTES.toml <<'NOTES'
hardware_ids = ["bench"]
[compatibility]
statement = "Benchmark."
applies_from = ["1.0"]
[support]
class = "maintained"
end_of_support = "2030-01-01"
[approval]
approved = true
[installation]
instructions = "none"
NOTES
"$bin" release --product bench --version 2.0 --counter 2 --image new.img --base 1.0=old.img \
  --notes NOTES.toml --repo repo -s k.key --level fast >/dev/null 2>&1
start() { # name args...: starts a server (in this shell, so that cleanup kills it); sets $url
  local name=$1; shift
  mkfifo "$name.fifo"
  "$bin" mirror serve --listen 127.0.0.1:0 "$@" >"$name.fifo" 2>"$name.log" &
  pids+=($!)
  local line; read -r line <"$name.fifo"
  url=${line#listening on }
}
start origin --root repo
origin=$url
start mirror --upstream "$origin" --cache cache --trust repo/root.json --upstream-rate "${rate}M"
mirror=$url
curl -sf "$mirror/products/bench/channel.json" >/dev/null
curl -sf "$mirror/products/bench/releases/2.0/release.json" >/dev/null
full=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["full_image"]["object"]["blake3"])' \
  repo/products/bench/releases/2.0/release.json)
size=$(stat -c %s "repo/objects/$full")
t0=$(date +%s.%N)
curl -sf -o got "$mirror/objects/$full"
t1=$(date +%s.%N)
cmp -s got "repo/objects/$full" || { echo "the client got different bytes" >&2; exit 1; }
python3 - "$size" "$t0" "$t1" "$rate" <<'PY'
import sys
size, t0, t1, rate = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
achieved = size / (t1 - t0) / (1 << 20)
print(f"cold fill of {size} bytes at --upstream-rate {rate:g} MiB/s: {t1 - t0:.2f} s, "
      f"{achieved:.2f} MiB/s = {achieved / rate:.3f} x the cap "
      f"(the bucket starts empty and holds a tenth of a second's worth)")
PY

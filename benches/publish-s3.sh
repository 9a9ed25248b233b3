#!/usr/bin/env bash
# Publishing to S3-compatible storage and mirroring from it, on loopback, against a
# single Garage node (`cargo install garage --locked`):
#   1. `deltaward publish` of a release of the kernel-ext4 pair (the 600 MiB new
#      image: its full image and one patch): wall time and bytes uploaded, then a
#      second publish (nothing to upload);
#   2. the mirror's cold fill of the full image from the private bucket
#      (`--upstream s3://…`, signed requests) against curl fetching the same object
#      with a presigned URL, alternating, ROUNDS rounds each, side by side in one run.
#
#   benches/publish-s3.sh [DELTAWARD_BIN] [ROUNDS]
#     defaults: target/release/deltaward, 3; pairs from $DELTAWARD_PAIRS
#     (scripts/make-pairs.sh), the presign example built with
#     cargo build --release -p deltaward-mirror --example presign
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/deltaward}
rounds=${2:-3}
presign=$root/target/release/examples/presign
pairs=${DELTAWARD_PAIRS:-$HOME/.cache/deltaward-pairs}
garage=$(command -v garage || echo "$HOME/.cargo/bin/garage")
for f in "$bin" "$presign" "$garage"; do
  [[ -x $f ]] || { echo "missing $f (see the header of this script)" >&2; exit 1; }
done
[[ -f $pairs/kernel-ext4.new ]] || { echo "no pairs in $pairs: bash scripts/make-pairs.sh" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
now() { date +%s.%N; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Garage: one node, layout, bucket and key through its CLI.
rpc=$(port); s3=$(port)
cat > garage.toml <<CONF
metadata_dir = "$work/meta"
data_dir = "$work/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
CONF
g() { "$garage" -c garage.toml "$@"; }
RUST_LOG=garage=warn "$garage" -c garage.toml server >garage.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do g node id -q >node 2>/dev/null && break; sleep 0.1; done
g layout assign -z dc1 -c 10G "$(cut -d@ -f1 node)" >/dev/null
g layout apply --version 1 >/dev/null
g bucket create bench >/dev/null
g key create bench-key > key.txt
export AWS_ACCESS_KEY_ID=$(awk -F': *' '/Key ID/ {print $2}' key.txt)
export AWS_SECRET_ACCESS_KEY=$(awk -F': *' '/Secret key/ {print $2}' key.txt)
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3 AWS_REGION=garage
g bucket allow --read --write --owner bench --key bench-key >/dev/null

# The release: kernel-ext4, new from old, default level.
"$bin" keygen -s k.key -p k.pub --unencrypted >/dev/null 2>&1
"$bin" root --repo repo --root-pub k.pub --release-pub k.pub --channel-pub k.pub -s k.key >/dev/null 2>&1
cat > NOTES.toml <<'NOTES'
hardware_ids = ["bench"]
[compatibility]
statement = "Benchmark."
applies_from = ["old"]
[support]
class = "maintained"
end_of_support = "2030-01-01"
[approval]
approved = true
[installation]
instructions = "none"
NOTES
"$bin" release --product bench --version new --counter 2 --image "$pairs/kernel-ext4.new" \
  --base "old=$pairs/kernel-ext4.old" --notes NOTES.toml --repo repo -s k.key >/dev/null 2>&1
repo_bytes=$(du -sb repo | cut -f1)

echo "== publish (repository: $repo_bytes bytes)"
t0=$(now); "$bin" publish repo s3://bench/repo --json > pub1.json; t1=$(now)
t2=$(now); "$bin" publish repo s3://bench/repo --json > pub2.json; t3=$(now)
python3 - "$t0" "$t1" "$t2" "$t3" <<'PY'
import json, sys
t0, t1, t2, t3 = map(float, sys.argv[1:])
a, b = json.load(open("pub1.json")), json.load(open("pub2.json"))
print(f"first publish:  {t1-t0:6.2f} s wall, {a['uploaded']} files, {a['bytes_uploaded']} bytes "
      f"({a['bytes_uploaded']/(t1-t0)/2**20:.0f} MiB/s), {a['multipart']} in parts")
print(f"second publish: {t3-t2:6.2f} s wall, {b['uploaded']} files, {b['bytes_uploaded']} bytes uploaded, {b['skipped']} skipped")
PY

full=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["full_image"]["object"]["blake3"])' \
  repo/products/bench/releases/new/release.json)
size=$(stat -c %s "repo/objects/$full")
echo "== cold fill of the full image ($size bytes): mirror from the bucket vs curl with a presigned URL"
start_mirror() { # cache dir; sets $mirror
  mkfifo "$1.fifo"
  "$bin" mirror serve --listen 127.0.0.1:0 --upstream s3://bench/repo --cache "$1" \
    --trust repo/root.json >"$1.fifo" 2>"$1.log" &
  pids+=($!)
  local line; read -r line <"$1.fifo"
  mirror=${line#listening on }
}
for r in $(seq "$rounds"); do
  url=$("$presign" s3://bench/repo "objects/$full")
  t0=$(now); curl -sf -o curl.out "$url"; t1=$(now)
  cmp -s curl.out "repo/objects/$full" || { echo "curl got different bytes" >&2; exit 1; }
  start_mirror "cache$r"
  curl -sf "$mirror/products/bench/channel.json" >/dev/null
  curl -sf "$mirror/products/bench/releases/new/release.json" >/dev/null
  t2=$(now); curl -sf -o mirror.out "$mirror/objects/$full"; t3=$(now)
  cmp -s mirror.out "repo/objects/$full" || { echo "the mirror gave different bytes" >&2; exit 1; }
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  echo "$t0 $t1 $t2 $t3" >> fill.txt
done
python3 - "$size" <<'PY'
import sys, statistics
size = int(sys.argv[1])
rows = [list(map(float, l.split())) for l in open("fill.txt")]
curl = [r[1] - r[0] for r in rows]
mirror = [r[3] - r[2] for r in rows]
for i, (c, m) in enumerate(zip(curl, mirror), 1):
    print(f"round {i}: curl {size/c/2**20:7.1f} MiB/s, mirror cold fill {size/m/2**20:7.1f} MiB/s, ratio {c/m:.2f}")
c, m = statistics.median(curl), statistics.median(mirror)
print(f"median: mirror cold-fill rate = {c/m:.2f} x curl's (presigned URL)")
PY

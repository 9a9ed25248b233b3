#!/usr/bin/env bash
# Side-by-side benchmark of `deltaward mirror serve` as an origin against nginx
# serving the same repository directory on loopback, with wrk as the client, in
# one run. Both servers run at the same time and are measured alternately
# (nginx, deltaward, nginx, deltaward), keeping the best of the two rounds for
# each figure (highest throughput, lowest p99), so compare the ratios from one
# run rather than absolute numbers across machines.
#
#   benches/mirror-vs-nginx.sh [DELTAWARD_BIN] [SECONDS]
#     DELTAWARD_BIN  deltaward binary (default: target/release/deltaward of this checkout)
#     SECONDS        duration of each wrk run (default 10; the run takes about 20x that)
#
# Scenarios: one 256 MiB object with 1 and 16 connections; 64 objects of 1 MiB,
# fetched round-robin, with 1, 16 and 256 connections. wrk threads = min(connections, 2).
# Needs: nginx (/usr/sbin/nginx), wrk, python3, b3sum (`cargo install b3sum --locked`).
# Traffic goes to 127.0.0.1 only; disk: about 330 MiB under $TMPDIR (or /tmp).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/deltaward}
duration=${2:-10}

die() {
  echo "mirror-vs-nginx: $*" >&2
  exit 1
}

[[ $duration =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive integer, got '$duration'"
if [[ $bin == */* ]]; then
  [[ -x $bin ]] || die "deltaward binary not found or not executable: $bin (build it with: cargo build --release -p deltaward)"
  bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
else
  bin=$(command -v "$bin") || die "deltaward binary not found in PATH: ${1:-}"
fi
if ! command -v b3sum >/dev/null; then
  echo "mirror-vs-nginx: b3sum is required to name objects by their BLAKE3 hash." >&2
  echo "  install it with: cargo install b3sum --locked" >&2
  exit 2
fi
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $nginx ]] || die "nginx not found (Debian: apt-get install nginx-light or nginx)"
command -v wrk >/dev/null || die "wrk not found (Debian: apt-get install wrk)"
command -v python3 >/dev/null || die "python3 not found"

# --- Temp dir, cleanup -------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mirror-vs-nginx.XXXXXX")
nginx_pid=
dw_pid=

stop() { # stop PID: SIGTERM, up to 10 s to drain, then SIGKILL
  local pid=$1 i
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop "$dw_pid"
  stop "$nginx_pid"
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Repository layout: objects/<blake3 hex> ------------------------------------
repo=$tmp/repo
mkdir -p "$repo/objects" "$tmp/gen"
echo "generating objects (1 x 256 MiB, 64 x 1 MiB) in $tmp ..." >&2
head -c $((256 << 20)) /dev/urandom >"$tmp/gen/big"
for i in $(seq 1 64); do
  head -c $((1 << 20)) /dev/urandom >"$tmp/gen/small$i"
done
# name_by_hash FILE...: move each file to objects/<its BLAKE3>, print the names.
name_by_hash() {
  local hash file
  b3sum -- "$@" | while read -r hash file; do
    [[ $hash =~ ^[0-9a-f]{64}$ ]] || die "unexpected b3sum output: $hash $file"
    mv -- "$file" "$repo/objects/$hash"
    echo "$hash"
  done
}
big=$(name_by_hash "$tmp/gen/big")
mapfile -t small < <(name_by_hash "$tmp/gen"/small*)
[[ ${#small[@]} -eq 64 ]] || die "expected 64 small objects, got ${#small[@]}"
rmdir "$tmp/gen"

# wrk script spreading requests round-robin over the 64 small objects.
lua=$tmp/small.lua
{
  echo "local paths = {"
  for h in "${small[@]}"; do echo "  \"/objects/$h\","; done
  echo "}"
  echo "local i = 0"
  echo "request = function()"
  echo "  i = i % #paths + 1"
  echo "  return wrk.format(\"GET\", paths[i])"
  echo "end"
} >"$lua"

# --- Servers ---------------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_tcp PID PORT: until 127.0.0.1:PORT accepts (10 s), or PID has died.
wait_tcp() {
  local pid=$1 port=$2 i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

ngx=$tmp/nginx
mkdir -p "$ngx"
nginx_port=$(free_port)
# Workers must read the 0700 temp dir: as root they would otherwise drop to
# nobody, so keep them root; as another user nginx cannot switch users and runs
# everything as that user (the `user` directive would only warn).
user_line=
[[ $(id -u) -eq 0 ]] && user_line="user root;"
cat >"$ngx/nginx.conf" <<EOF
$user_line
worker_processes auto;
daemon off;
pid $ngx/nginx.pid;
error_log $ngx/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    # wrk keeps its connections open for the whole run; do not cycle them.
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $ngx/client_body;
    proxy_temp_path $ngx/proxy;
    fastcgi_temp_path $ngx/fastcgi;
    uwsgi_temp_path $ngx/uwsgi;
    scgi_temp_path $ngx/scgi;
    server {
        listen 127.0.0.1:$nginx_port;
        root $repo;
    }
}
EOF
"$nginx" -p "$ngx/" -c "$ngx/nginx.conf" -e "$ngx/error.log" </dev/null >"$ngx/stdout" 2>&1 &
nginx_pid=$!
if ! wait_tcp "$nginx_pid" "$nginx_port"; then
  cat "$ngx/stdout" "$ngx/error.log" >&2 2>/dev/null || true
  die "nginx did not start on 127.0.0.1:$nginx_port"
fi
nginx_url=http://127.0.0.1:$nginx_port

# nginx has no per-client request limit; lift deltaward's (200/s by default) so
# that both serve the one load generator on 127.0.0.1 alike.
printf '[limits]\nclient_rate = 100000000\nclient_burst = 100000000\n' >"$tmp/dw.toml"
"$bin" mirror serve --root "$repo" --listen 127.0.0.1:0 --config "$tmp/dw.toml" </dev/null >"$tmp/dw.out" 2>"$tmp/dw.err" &
dw_pid=$!
dw_url=
for ((i = 0; i < 100; i++)); do
  if [[ $(wc -l <"$tmp/dw.out") -ge 1 ]]; then # a complete first line
    line=$(head -n 1 "$tmp/dw.out")
    [[ $line =~ ^listening\ on\ (http://[^[:space:]]+) ]] || die "unexpected first line from deltaward: $line"
    dw_url=${BASH_REMATCH[1]%/}
    break
  fi
  if ! kill -0 "$dw_pid" 2>/dev/null; then
    cat "$tmp/dw.err" >&2
    die "deltaward mirror serve exited before listening"
  fi
  sleep 0.1
done
if [[ -z $dw_url ]]; then
  cat "$tmp/dw.err" >&2
  die "deltaward printed no 'listening on' line within 10 s"
fi

# Both servers must return the object's exact bytes before anything is timed.
fetch_hash() { # fetch_hash URL: BLAKE3 of the body
  if command -v curl >/dev/null; then
    curl -fsS "$1" | b3sum --no-names
  else
    python3 -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())' "$1" | b3sum --no-names
  fi
}
for url in "$nginx_url" "$dw_url"; do
  for h in "$big" "${small[0]}"; do
    got=$(fetch_hash "$url/objects/$h") || die "GET $url/objects/$h failed"
    [[ $got == "$h" ]] || die "GET $url/objects/$h returned content with BLAKE3 $got"
  done
done

# --- Measurements ------------------------------------------------------------------
# to_mib VALUE: wrk's Transfer/sec (binary units: B, KB, MB, GB, TB) in MiB/s.
to_mib() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    f["B"] = 1 / 1048576; f["KB"] = 1 / 1024; f["MB"] = 1; f["GB"] = 1024; f["TB"] = 1048576
    if (!(u in f)) exit 1
    printf "%.1f", n * f[u] }'
}
# to_ms VALUE: wrk's latency (us, ms, s, m, h) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    f["us"] = 0.001; f["ms"] = 1; f["s"] = 1000; f["m"] = 60000; f["h"] = 3600000
    if (!(u in f)) exit 1
    printf "%.2f", n * f[u] }'
}

declare -A best_mib best_p99
notes=()
# bench SERVER SCENARIO CONNECTIONS URL [LUA]: one wrk run; keeps the best figures.
bench() {
  local server=$1 scenario=$2 conns=$3 url=$4 lua_file=${5:-}
  local threads=$((conns < 2 ? conns : 2)) out rps transfer p99 mib ms key errs non2xx reqs
  local args=(-t "$threads" -c "$conns" -d "${duration}s" --timeout 60s --latency)
  [[ -n $lua_file ]] && args+=(-s "$lua_file")
  out=$tmp/wrk.out
  wrk "${args[@]}" "$url" >"$out" 2>&1 || {
    cat "$out" >&2
    die "wrk failed against $server ($scenario)"
  }
  reqs=$(awk '/ requests in / { print $1 }' "$out")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  transfer=$(awk '/^Transfer\/sec:/ { print $2 }' "$out")
  p99=$(awk '$1 == "99%" { print $2 }' "$out")
  if ! mib=$(to_mib "$transfer") || ! ms=$(to_ms "$p99") || [[ -z $rps || -z $reqs ]]; then
    cat "$out" >&2
    die "could not parse wrk output ($server, $scenario)"
  fi
  errs=$(awk '/Socket errors:/ { sub(/.*Socket errors: */, ""); print }' "$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
  [[ -n $errs ]] && notes+=("$server, $scenario: socket errors: $errs")
  [[ -n $non2xx ]] && notes+=("$server, $scenario: $non2xx non-2xx/3xx responses")
  if [[ $reqs -eq 0 ]]; then
    # wrk prints 0 latency when no response completed: no p99 from this run.
    ms=
    notes+=("$server, $scenario: no response completed within ${duration}s, no p99 (raise SECONDS)")
  fi
  printf '  %-9s %-22s %10s req/s %10s MiB/s  p99 %9s ms\n' "$server" "$scenario" "$rps" "$mib" "${ms:-n/a}" >&2
  key="$scenario|$server"
  if [[ -z ${best_mib[$key]:-} ]] || awk -v a="$mib" -v b="${best_mib[$key]}" 'BEGIN { exit !(a > b) }'; then
    best_mib[$key]=$mib
  fi
  if [[ -z $ms ]]; then
    :
  elif [[ -z ${best_p99[$key]:-} ]] || awk -v a="$ms" -v b="${best_p99[$key]}" 'BEGIN { exit !(a < b) }'; then
    best_p99[$key]=$ms
  fi
}

scenarios=()
# scenario NAME CONNECTIONS PATH [LUA]
scenario() {
  local name=$1 conns=$2 path=$3 lua_file=${4:-} _round
  scenarios+=("$name")
  for _round in 1 2; do
    bench nginx "$name" "$conns" "$nginx_url$path" "$lua_file"
    bench deltaward "$name" "$conns" "$dw_url$path" "$lua_file"
  done
}

echo "nginx at $nginx_url, deltaward at $dw_url; ${duration}s per run, 2 rounds each" >&2
scenario "256 MiB object, c=1" 1 "/objects/$big"
scenario "256 MiB object, c=16" 16 "/objects/$big"
scenario "64 x 1 MiB, c=1" 1 / "$lua"
scenario "64 x 1 MiB, c=16" 16 / "$lua"
scenario "64 x 1 MiB, c=256" 256 / "$lua"

# --- Report ------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
nginx_version=$("$nginx" -v 2>&1 | head -n 1) || true
wrk_version=$(wrk -v 2>&1 | head -n 1) || true
dw_version=$("$bin" --version 2>&1 | head -n 1) || true
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null) || true

echo
echo "machine: $(nproc) CPUs${cpu:+ ($cpu)}, Linux $(uname -r)"
echo "nginx: ${nginx_version#nginx version: }"
echo "wrk: $wrk_version"
echo "deltaward: $dw_version"
echo "wrk runs of ${duration}s, best of 2 alternating rounds per figure; loopback; threads = min(c, 2)"
echo
echo "| scenario | nginx MiB/s | deltaward MiB/s | throughput ratio (deltaward/nginx) | nginx p99 ms | deltaward p99 ms | p99 ratio (deltaward/nginx) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for s in "${scenarios[@]}"; do
  n_mib=${best_mib["$s|nginx"]} d_mib=${best_mib["$s|deltaward"]}
  n_p99=${best_p99["$s|nginx"]:-} d_p99=${best_p99["$s|deltaward"]:-}
  echo "| $s | $n_mib | $d_mib | $(ratio "$d_mib" "$n_mib") | ${n_p99:-n/a} | ${d_p99:-n/a} | $(ratio "$d_p99" "$n_p99") |"
done
if [[ ${#notes[@]} -gt 0 ]]; then
  echo
  echo "Notes (the figures of these runs are suspect):"
  printf -- '- %s\n' "${notes[@]}"
fi

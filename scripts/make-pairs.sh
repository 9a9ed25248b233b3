#!/usr/bin/env bash
# Builds real device-image pairs (old -> new) for deltaward's tests and benchmarks.
#
#   scripts/make-pairs.sh [DIR]     DIR defaults to $DELTAWARD_PAIRS or ~/.cache/deltaward-pairs
#
# The kernel pairs come from Debian's kernel package: the oldest and the newest
# linux-image-amd64 the package index offers (usually a point release and its
# security update). For each side it writes:
#   DIR/kernel-ext4.{old,new}  600 MiB ext4 images of the unpacked package, built with a
#                              fixed UUID, hash seed, clock and inode times so that only
#                              the content differs and every machine makes the same bytes;
#   DIR/kernel-tar.{old,new}   the same trees as sorted, mtime-normalised tar files;
#   DIR/vmlinuz.{old,new}      the compressed kernels alone (small, delta-hostile).
# Then four more pairs:
#   DIR/qemu-x86.{old,new}     a large x86-64 executable: /usr/bin/qemu-system-x86_64
#                              from the oldest and the newest qemu-system-x86 offered
#                              (security updates of one release; about 18 MB, stripped);
#   DIR/qemu-ext4.{old,new}    64 MiB ext4 images of those two unpacked packages (three
#                              x86-64 programs, 44 MB, with the pinned ext4 settings
#                              of the kernel images);
#   DIR/qemu-arm64.{old,new}   the same program from the same two versions built for
#                              AArch64 (the arm64 packages, fetched with curl from
#                              the mirror apt names for the amd64 ones, or else found
#                              by source version in that mirror's arm64 indexes, as
#                              arm64 rebuilds can carry another +bN; skipped, with a
#                              warning, when they are not there);
#   DIR/shifted-ext4.{old,new} kernel-ext4.old, and kernel-ext4.new moved 4,219 bytes
#                              later (an unaligned shift: the head of vmlinuz.new in
#                              front, the same length cut from the end).
# DIR/VERSIONS names the packages used, DIR/SHA256SUMS the outputs. Each finished
# stage is left alone (DIR/DONE marks the kernel pairs; the others are there when
# both files are). The qemu pairs are skipped, with a warning, when the package
# index does not offer two versions. Needs apt-get, dpkg-deb, e2fsprogs (installed
# when missing, as root) and GNU tar.
set -euo pipefail

out=${1:-${DELTAWARD_PAIRS:-$HOME/.cache/deltaward-pairs}}
mkdir -p "$out"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The oldest and the newest version of package $1 in the package index.
pick_versions() {
  local pkg=$1 v
  v=$(apt-cache madison "$pkg" 2>/dev/null | awk '{print $3}' | sort -uV | sed -n '1p;$p')
  if [ "$(echo "$v" | grep -c .)" -lt 2 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    v=$(apt-cache madison "$pkg" 2>/dev/null | awk '{print $3}' | sort -uV | sed -n '1p;$p')
  fi
  echo "$v"
}

# Fixed inode times: 2023-11-14T22:13:20Z.
stamp=0x6553f100

# ext4_image TREE IMAGE SIZE: an ext4 image of TREE with a fixed UUID, hash seed,
# clock and inode times, so that only the content differs and every machine makes
# the same bytes. Written to IMAGE.partial, then renamed.
ext4_image() {
  local tree=$1 img=$2 size=$3
  if ! command -v mkfs.ext4 >/dev/null || ! command -v debugfs >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq e2fsprogs
  fi
  E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -b 4096 \
    -E root_owner=0:0,hash_seed=01234567-89ab-cdef-0123-456789abcdef,lazy_itable_init=0 \
    -U 11111111-2222-3333-4444-555555555555 -L devimg -d "$tree" "$img.partial" "$size" >/dev/null
  # mkfs -d copies atime and ctime from the extracted files (now): pin them.
  {
    echo "sif / atime $stamp"
    echo "sif / ctime $stamp"
    (cd "$tree" && find . -mindepth 1 | sed 's|^\.||') |
      awk -v t="$stamp" '{printf "sif \"%s\" atime %s\nsif \"%s\" ctime %s\n", $0, t, $0, t}'
  } >"$tmp/pin-times"
  E2FSPROGS_FAKE_TIME=1700000000 debugfs -w -f "$tmp/pin-times" "$img.partial" >/dev/null 2>&1
  mv "$img.partial" "$img"
}

kernel_pairs() {
  mapfile -t versions < <(pick_versions linux-image-amd64)
  if [ "${#versions[@]}" -ne 2 ] || [ "${versions[0]}" = "${versions[1]}" ]; then
    echo "make-pairs: the package index must offer two versions of linux-image-amd64 (see apt-cache madison linux-image-amd64)" >&2
    exit 1
  fi

  side=old
  for version in "${versions[@]}"; do
    # linux-image-amd64 is a metapackage; its first dependency is the real image package.
    pkg=$(apt-cache show "linux-image-amd64=$version" | sed -n 's/^Depends: \([^ ,]*\).*/\1/p' | head -n1)
    (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1)
    tree="$tmp/tree-$side"
    mkdir -p "$tree"
    dpkg-deb -x "$tmp/${pkg}"_*.deb "$tree"
    echo "$side $pkg $version" >>"$tmp/VERSIONS"

    ext4_image "$tree" "$out/kernel-ext4.$side" 600M

    (cd "$tree" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out/kernel-tar.$side.partial" .)
    mv "$out/kernel-tar.$side.partial" "$out/kernel-tar.$side"
    cp "$tree"/boot/vmlinuz-* "$out/vmlinuz.$side"
    side=new
  done

  cp "$tmp/VERSIONS" "$out/VERSIONS"
  touch "$out/DONE"
}

exe_pair() {
  local versions side=old version
  mapfile -t versions < <(pick_versions qemu-system-x86)
  if [ "${#versions[@]}" -ne 2 ] || [ "${versions[0]}" = "${versions[1]}" ]; then
    echo "make-pairs: warning: the package index offers fewer than two versions of qemu-system-x86; no qemu-x86 pair" >&2
    return 0
  fi
  for version in "${versions[@]}"; do
    mkdir -p "$tmp/qemu-$side"
    (cd "$tmp/qemu-$side" && apt-get download -qq "qemu-system-x86=$version" >/dev/null 2>&1)
    dpkg-deb -x "$tmp/qemu-$side"/qemu-system-x86_*.deb "$tmp/qemu-$side/tree"
    cp "$tmp/qemu-$side/tree/usr/bin/qemu-system-x86_64" "$out/qemu-x86.$side.partial"
    ext4_image "$tmp/qemu-$side/tree" "$out/qemu-ext4.$side" 64M
    echo "$side qemu-system-x86 $version" >>"$tmp/qemu-versions"
    side=new
  done
  mv "$out/qemu-x86.old.partial" "$out/qemu-x86.old"
  mv "$out/qemu-x86.new.partial" "$out/qemu-x86.new"
  # VERSIONS names the kernel packages, then the qemu packages (once).
  grep -v qemu-system-x86 "$out/VERSIONS" >"$tmp/versions" 2>/dev/null || true
  cat "$tmp/versions" "$tmp/qemu-versions" >"$out/VERSIONS"
}

# A stalled mirror fails a fetch (under 1 KB/s for 60 s, or 15 minutes in all)
# instead of hanging the script.
fetch() { curl -fsSL --connect-timeout 30 --speed-limit 1024 --speed-time 60 --max-time 900 "$@"; }

# The arm64 build of qemu-system-x86 VERSION (an amd64 version apt offers), as a URI
# found in the arm64 package indexes of the repositories apt uses: a binary-only
# rebuild can carry another +bN suffix on arm64 than on amd64, or the local amd64
# index can lag the mirror's, so the match is on the source version.
arm64_uri() {
  local source=${1%+b[0-9]*} repo release
  source=${source#*:}
  while read -r repo release; do
    fetch "${repo%/}/dists/$release/main/binary-arm64/Packages.xz" 2>/dev/null | xz -dc 2>/dev/null |
      awk -v RS= -v FS='\n' -v src="$source" -v repo="${repo%/}" '
        /(^|\n)Package: qemu-system-x86(\n|$)/ {
          v = ""; f = ""
          for (i = 1; i <= NF; i++) {
            if ($i ~ /^Version: /) { v = substr($i, 10); sub(/^[0-9]+:/, "", v) }
            if ($i ~ /^Filename: /) f = substr($i, 11)
          }
          if (f != "" && (v == src || index(v, src "+b") == 1)) print repo "/" f
        }'
  done < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null | sort -u) |
    sort -V | tail -n 1
}

arm64_pair() {
  local versions side=old version uri
  mapfile -t versions < <(pick_versions qemu-system-x86)
  if [ "${#versions[@]}" -ne 2 ] || [ "${versions[0]}" = "${versions[1]}" ]; then
    return 0
  fi
  for version in "${versions[@]}"; do
    uri=$(apt-get download --print-uris -qq "qemu-system-x86=$version" 2>/dev/null |
      awk -F"'" 'NR == 1 {print $2}' | sed 's/_amd64\.deb$/_arm64.deb/')
    mkdir -p "$tmp/arm64-$side"
    if [ -z "$uri" ] || ! fetch -o "$tmp/arm64-$side/q.deb" "$uri" 2>/dev/null; then
      uri=$(arm64_uri "$version")
      if [ -z "$uri" ] || ! fetch -o "$tmp/arm64-$side/q.deb" "$uri"; then
        echo "make-pairs: warning: could not fetch the arm64 build of qemu-system-x86 $version (${uri:-none in the arm64 indexes}); no qemu-arm64 pair" >&2
        rm -f "$out/qemu-arm64.old.partial" "$out/qemu-arm64.new.partial"
        return 0
      fi
    fi
    dpkg-deb -x "$tmp/arm64-$side/q.deb" "$tmp/arm64-$side/tree"
    cp "$tmp/arm64-$side/tree/usr/bin/qemu-system-x86_64" "$out/qemu-arm64.$side.partial"
    side=new
  done
  mv "$out/qemu-arm64.old.partial" "$out/qemu-arm64.old"
  mv "$out/qemu-arm64.new.partial" "$out/qemu-arm64.new"
}

shifted_pair() {
  local shift=4219 size
  size=$(stat -c %s "$out/kernel-ext4.new")
  ln -f "$out/kernel-ext4.old" "$out/shifted-ext4.old.partial" 2>/dev/null ||
    cp "$out/kernel-ext4.old" "$out/shifted-ext4.old.partial"
  { head -c "$shift" "$out/vmlinuz.new"; head -c "$((size - shift))" "$out/kernel-ext4.new"; } \
    >"$out/shifted-ext4.new.partial"
  mv "$out/shifted-ext4.old.partial" "$out/shifted-ext4.old"
  mv "$out/shifted-ext4.new.partial" "$out/shifted-ext4.new"
}

[ -f "$out/DONE" ] || kernel_pairs
have() { [ -f "$out/$1.old" ] && [ -f "$out/$1.new" ]; }
have qemu-x86 && have qemu-ext4 || exe_pair
have qemu-arm64 || arm64_pair
have shifted-ext4 || shifted_pair
(cd "$out" && sha256sum -- *.old *.new >SHA256SUMS.partial && mv SHA256SUMS.partial SHA256SUMS)
ls -l "$out"

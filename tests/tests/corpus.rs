//! Round trip on the real corpus pairs built by `scripts/make-pairs.sh`: a Debian
//! kernel security update as an ext4 image, a tar file and the bare vmlinuz; and
//! qemu-system-x86 security updates as the bare program (x86-64 and AArch64
//! builds) and as an ext4 image.
//!
//! The tests are ignored when run plainly (the pairs take a download and 30 s to
//! build); `.ci/run` builds the pairs and runs them with `--include-ignored`, and a
//! missing corpus then fails them.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

use std::path::Path;

use deltaward_engine::{apply_to_file, ApplyOptions, BuildOptions, Image, Level, Patch};
use deltaward_testkit as kit;

/// Builds a patch for pair `name`, checks it against `max_ratio` of the new image
/// and applies it (in at most 64 MiB); returns its length.
fn round_trip(name: &str, level: Level, max_ratio: f64) -> u64 {
    round_trip_with(name, BuildOptions::default().level(level), max_ratio)
}

fn round_trip_with(name: &str, opts: BuildOptions, max_ratio: f64) -> u64 {
    let (old_path, new_path) = kit::pair(name);
    let old = Image::open(&old_path).expect("old image");
    let new = Image::open(&new_path).expect("new image");
    let keys = kit::keys();
    let (key, trusted) = (keys.secret, keys.trusted);

    let patch = Patch::build(&old, &new, &opts)
        .expect("build")
        .sign(&key)
        .expect("sign");
    assert!(
        (patch.len() as f64) < new.len() as f64 * max_ratio,
        "{name}: patch {} bytes for a {} byte image",
        patch.len(),
        new.len()
    );
    let work = tempfile::tempdir().expect("tempdir");
    let patch_path = work.path().join("p.dwp");
    let mut f = std::fs::File::create(&patch_path).expect("create patch");
    patch.write_to(&mut f).expect("write patch");
    drop(f);
    let out = work.path().join("out.img");
    let report = apply_to_file(
        &old_path,
        &patch_path,
        &out,
        &trusted,
        &ApplyOptions::default().memory_limit(64 << 20),
        &|_| {},
    )
    .expect("apply");
    assert_eq!(report.manifest.target_size, new.len() as u64);
    assert!(same_file(&out, &new_path), "{name}: rebuilt image differs");
    patch.len()
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (a, b) = (Image::open(a).expect("a"), Image::open(b).expect("b"));
    *a == *b
}

#[test]
#[ignore = "needs scripts/make-pairs.sh"]
fn kernel_ext4_round_trips() {
    round_trip("kernel-ext4", Level::Fast, 0.1);
}

#[test]
#[ignore = "needs scripts/make-pairs.sh"]
fn kernel_tar_round_trips() {
    round_trip("kernel-tar", Level::Fast, 0.2);
}

#[test]
#[ignore = "needs scripts/make-pairs.sh"]
fn vmlinuz_round_trips_at_default_level() {
    // Compressed kernels barely delta; the patch must at least not blow up.
    round_trip("vmlinuz", Level::Default, 1.01);
}

/// The program transform on a real program (x86-64 and AArch64 builds), and inside
/// a file system that stores three programs in pieces: patches smaller than
/// without it by what each gained when measured, less a margin.
#[test]
#[ignore = "needs scripts/make-pairs.sh"]
fn qemu_programs_round_trip_and_the_program_transform_pays() {
    // Measured (with / without): qemu-x86 254,840 / 522,857 (0.49); qemu-arm64
    // 845,805 / 1,103,317 (0.77); qemu-ext4 1,012,607 / 1,561,061 (0.65).
    for (name, most) in [("qemu-x86", 0.7), ("qemu-arm64", 0.9), ("qemu-ext4", 0.8)] {
        let with = round_trip(name, Level::Default, 0.1);
        let without = round_trip_with(
            name,
            BuildOptions::default()
                .level(Level::Default)
                .transform(false),
            0.1,
        );
        assert!(
            (with as f64) < without as f64 * most,
            "{name}: {with} bytes with the transform, {without} without"
        );
        // The hash chains start no search from grams the window holds thousands
        // of times (bsdiff.rs, COMMON_GRAM): qemu-x86 236,581 bytes, 402,350 when
        // they searched from every gram (both before the next rule; 254,840 now).
        // Every search the scan does not take is a miss (Finder::untaken_is_miss):
        // qemu-arm64 845,805 bytes and qemu-ext4 1,012,607, 1,188,634 and
        // 1,183,423 when only short matches were.
        let cap = match name {
            "qemu-x86" => 300_000,
            "qemu-arm64" => 1_000_000,
            _ => 1_100_000,
        };
        assert!(with < cap, "{name}: {with} bytes at the default level");
    }
}

//! Mutation sweep (issue 7): every bit of a small signed patch, and a random sample
//! of offsets in a large one, flipped one at a time; each mutant must be refused,
//! leaving no output file and nothing else behind.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

use std::path::Path;

use deltaward_engine::{apply_to_file, ApplyOptions, BuildOptions, TrustedKeys};
use deltaward_testkit as kit;

/// Applies each mutant of `patch` (one per position in `flips`) to `old` and
/// requires a refusal with nothing written.
fn sweep(old: &[u8], new: &[u8], patch: &[u8], trusted: &TrustedKeys, flips: &[(usize, u8)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let old_path = dir.path().join("old.img");
    std::fs::write(&old_path, old).expect("old");
    let patch_path = dir.path().join("p.dwp");
    let out = dir.path().join("out.img");
    let opts = ApplyOptions::default();
    std::fs::write(&patch_path, patch).expect("patch");
    apply_to_file(&old_path, &patch_path, &out, trusted, &opts, &|_| {}).expect("clean patch");
    assert_eq!(std::fs::read(&out).expect("out"), new);
    std::fs::remove_file(&out).expect("rm");
    let mut mutant = patch.to_vec();
    for &(at, bit) in flips {
        mutant[at] ^= bit;
        std::fs::write(&patch_path, &mutant).expect("mutant");
        let result = apply_to_file(&old_path, &patch_path, &out, trusted, &opts, &|_| {});
        assert!(
            result.is_err(),
            "flipping bit {bit:#04x} of byte {at} was accepted"
        );
        assert!(!out.exists(), "byte {at}: an output was written");
        assert_eq!(leftovers(dir.path()), 2, "byte {at}: files left behind");
        mutant[at] ^= bit;
    }
}

/// Files in the work directory (the old image and the patch when clean).
fn leftovers(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("ls").count()
}

#[test]
fn every_bit_of_a_small_patch_is_checked() {
    let keys = kit::keys();
    let old = kit::noise(64 << 10, 1);
    let mut new = old.clone();
    new[1000..1040].fill(7);
    new.extend(kit::text(b"new firmware strings ", 3000, 97));
    let patch = kit::build(
        &old,
        &new,
        &keys.secret,
        &BuildOptions::default().block_size(512),
    );
    assert!(patch.len() < 4096, "small patch is {} bytes", patch.len());
    let flips: Vec<_> = (0..patch.len())
        .flat_map(|at| (0..8).map(move |b| (at, 1u8 << b)))
        .collect();
    sweep(&old, &new, &patch, &keys.trusted, &flips);
}

#[test]
fn sampled_offsets_of_a_large_patch_are_checked() {
    let keys = kit::keys();
    let old = kit::noise(8 << 20, 2);
    let mut new = old.clone();
    for at in (0..new.len()).step_by(256 << 10) {
        new[at..at + 2000].copy_from_slice(&kit::noise(2000, at as u64));
    }
    let patch = kit::build(&old, &new, &keys.secret, &BuildOptions::default());
    // A fixed xorshift sample: reproducible, spread over every section.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let flips: Vec<_> = (0..400)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x % patch.len() as u64) as usize, 1u8 << (x >> 61))
        })
        .collect();
    sweep(&old, &new, &patch, &keys.trusted, &flips);
}

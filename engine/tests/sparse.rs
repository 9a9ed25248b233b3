//! Sparse images: holes found with SEEK_DATA/SEEK_HOLE are skipped by the diff, and
//! the patch is the one the same bytes give without hole information.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

use std::{fs::OpenOptions, io::Write, os::unix::fs::FileExt, path::Path};

use deltaward_engine::{BuildOptions, Image, Level, Patch};
use deltaward_testkit::{apply_bytes, keys, noise};

/// A sparse file of `len` bytes with `data` written at each offset.
fn sparse(path: &Path, len: u64, data: &[(u64, &[u8])]) {
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .expect("create");
    f.set_len(len).expect("set_len");
    for (at, bytes) in data {
        f.write_all_at(bytes, *at).expect("write");
    }
    (&f).flush().expect("flush");
}

#[test]
fn holes_are_skipped_and_the_patch_is_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (old_p, new_p) = (dir.path().join("old"), dir.path().join("new"));
    let a = noise(3 << 20, 1);
    let b = noise(1 << 20, 2);
    let mut a2 = a.clone();
    a2[100_000..100_300].copy_from_slice(&noise(300, 3));
    // 256 MiB images; the data moved by an unaligned 4,219 bytes in the new one.
    let len = 256 << 20;
    sparse(&old_p, len, &[(8 << 20, &a), (200 << 20, &b)]);
    sparse(
        &new_p,
        len,
        &[((8 << 20) + 4219, &a2), ((200 << 20) + 4219, &b)],
    );
    let (old, new) = (
        Image::open(&old_p).expect("old"),
        Image::open(&new_p).expect("new"),
    );
    // The file system here (ext4, tmpfs, xfs, btrfs) reports holes; one that does not
    // would make this test meaningless, so it fails rather than passes vacuously.
    assert!(
        old.holes().len() >= 2 && new.holes().len() >= 2,
        "no holes reported: {:?} {:?}",
        old.holes(),
        new.holes()
    );
    assert!(old.holes().iter().map(|h| h.end - h.start).sum::<u64>() > 240 << 20);

    let opts = BuildOptions::default().level(Level::Fast);
    let sparse_patch = Patch::build_images(&old, &new, &opts, &|_| {}).expect("build");
    let dense_patch = Patch::build(&old, &new, &opts).expect("build");
    assert_eq!(sparse_patch.manifest(), dense_patch.manifest());
    assert!(sparse_patch.manifest().frames.len() > 3);

    let k = keys();
    let signed = sparse_patch.sign(&k.secret).expect("sign");
    let mut bytes = Vec::new();
    signed.write_to(&mut bytes).expect("write");
    assert!(bytes.len() < 2 << 20, "patch of {} bytes", bytes.len());
    let out = apply_bytes(&old, &bytes, &k.trusted).expect("apply");
    assert!(out.as_slice() == &new[..], "the applied image differs");
}

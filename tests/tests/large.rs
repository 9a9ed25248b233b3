//! Images over 4 GiB, as sparse files: every offset and length is a u64 end to end.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

use std::{
    fs::{File, OpenOptions},
    io::{Seek, SeekFrom, Write},
    path::Path,
};

use deltaward_engine::{BuildOptions, FrameKind, Image, Level, Patch};
use deltaward_testkit::{self as kit, noise};

const GIB: u64 = 1 << 30;

fn sparse(path: &Path, len: u64, parts: &[(u64, &[u8])]) {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .expect("create");
    f.set_len(len).expect("set_len");
    for (at, bytes) in parts {
        f.seek(SeekFrom::Start(*at)).expect("seek");
        f.write_all(bytes).expect("write");
    }
    f.sync_all().expect("sync");
}

#[test]
fn sparse_images_over_4_gib_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (old_path, new_path) = (dir.path().join("old.img"), dir.path().join("new.img"));
    let a = noise(1 << 20, 1);
    let b = noise(300 << 10, 2);
    let c = noise(2 << 20, 3);
    let old_len = 4 * GIB + 256 * (1 << 20) + 12_345;
    sparse(
        &old_path,
        old_len,
        &[
            (0, &a),
            (3 * GIB + 900 * (1 << 20), &b),
            (4 * GIB + (64 << 10), &c),
        ],
    );
    let mut c2 = c.clone();
    c2[777_777..777_999].fill(0xAB);
    let mut moved = b.clone();
    moved[10] ^= 1;
    sparse(
        &new_path,
        old_len + 4096,
        &[
            (0, &a),
            // Data from below 4 GiB moved above it, with a change.
            (4 * GIB + 100 * (1 << 20) + 1, &moved),
            // Data above 4 GiB, edited in place.
            (4 * GIB + (64 << 10), &c2),
        ],
    );

    let old = Image::open(&old_path).expect("old");
    let new = Image::open(&new_path).expect("new");
    let keys = kit::keys();
    let (key, trusted) = (keys.secret, keys.trusted);
    let patch = Patch::build(&old, &new, &BuildOptions::default().level(Level::Fast))
        .expect("build")
        .sign(&key)
        .expect("sign");
    let m = patch.manifest();
    assert_eq!(m.target_size, old_len + 4096);
    assert!(
        m.frames.iter().any(|f| f.kind.has_payload()
            && f.target_offset > u64::from(u32::MAX)
            && f.source_offset > u64::from(u32::MAX)),
        "no delta frame above 4 GiB in both images"
    );
    let zeros: u64 = m
        .frames
        .iter()
        .filter(|f| f.kind == FrameKind::Zero)
        .map(|f| f.target_len)
        .sum();
    assert!(zeros > 4 * GIB, "only {zeros} bytes of zero frames");
    assert!(
        patch.len() < 4 << 20,
        "patch of {} bytes for 3 MiB of data",
        patch.len()
    );
    let patch_path = dir.path().join("p.dwp");
    patch
        .write_to(File::create(&patch_path).expect("create"))
        .expect("write");
    drop((old, new));

    let out = dir.path().join("out.img");
    deltaward_engine::apply_to_file(
        &old_path,
        &patch_path,
        &out,
        &trusted,
        &deltaward_engine::ApplyOptions::default(),
        &|_| {},
    )
    .expect("apply");
    let (x, y) = (
        Image::open(&out).expect("out"),
        Image::open(&new_path).expect("new"),
    );
    assert_eq!(x.len(), y.len());
    assert!(*x == *y, "rebuilt image differs");
    // Zero runs were written as holes, not 4 GiB of zeros.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&out).expect("meta").blocks();
        assert!(
            blocks * 512 < GIB,
            "output is not sparse: {} bytes allocated",
            blocks * 512
        );
    }
}

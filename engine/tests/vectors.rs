//! Golden vectors pin format v1: `vectors/patch.dwp` (made from `old.bin` and
//! `new.bin`, signed by `key.key`) must apply with `key.pub`, and building the same
//! pair today must give the same manifest and payload bytes (the signature differs:
//! minisign signs with fresh randomness).
//!
//! Regenerate after an intended format change (and bump the version):
//! `DELTAWARD_BLESS=1 cargo test -p deltaward-engine --test vectors`.

use std::path::{Path, PathBuf};

use deltaward_testkit as kit;

use deltaward_engine::{BuildOptions, FrameKind, Patch, SecretKey, TrustedKeys};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// The vector pair: every frame kind, at 512-byte blocks, in under 200 KiB.
fn pair() -> (Vec<u8>, Vec<u8>) {
    let table = |shift: u32| -> Vec<u8> {
        (0..8192u32)
            .flat_map(|i| (i * 40 + if i % 64 == 0 { shift } else { 0 } + 0x1000).to_le_bytes())
            .collect()
    };
    let mut old = table(0);
    let mut x = 0x1234_5678u32;
    old.extend((0..32768).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    let mut new = old[32768..].to_vec(); // copy
    new.extend(std::iter::repeat_n(0u8, 16384)); // zero
    new.extend(table(0x40)); // bsdiff
    new.extend_from_slice(&old[40960..49152]); // copy
    new.extend(
        b"golden vector text "
            .iter()
            .cycle()
            .take(20000)
            .enumerate()
            .map(|(i, b)| b ^ (i / 331) as u8),
    ); // zstd
    (old, new)
}

fn opts() -> BuildOptions {
    BuildOptions::default().block_size(512).frame_len(16 << 10)
}

/// Everything but the signature: manifest and payloads.
fn unsigned_parts(patch: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let s = kit::sections(patch);
    (s.manifest.to_vec(), s.payloads.to_vec())
}

#[test]
fn golden_patch_applies_and_rebuilds_identically() {
    let d = dir();
    let (old, new) = pair();
    if std::env::var_os("DELTAWARD_BLESS").is_some() {
        std::fs::create_dir_all(&d).expect("mkdir");
        let kp = deltaward_engine::generate_keypair(None).expect("keygen");
        let key = SecretKey::from_text(&kp.secret, None).expect("secret");
        let patch = Patch::build(&old, &new, &opts())
            .expect("build")
            .sign(&key)
            .expect("sign");
        let mut bytes = Vec::new();
        patch.write_to(&mut bytes).expect("write");
        std::fs::write(d.join("old.bin"), &old).expect("write");
        std::fs::write(d.join("new.bin"), &new).expect("write");
        std::fs::write(d.join("key.key"), &kp.secret).expect("write");
        std::fs::write(d.join("key.pub"), &kp.public).expect("write");
        std::fs::write(d.join("patch.dwp"), &bytes).expect("write");
    }
    let read = |n: &str| std::fs::read(d.join(n)).unwrap_or_else(|e| panic!("vector {n}: {e}"));
    assert_eq!(read("old.bin"), old, "old.bin differs from the generator");
    assert_eq!(read("new.bin"), new, "new.bin differs from the generator");
    let golden = read("patch.dwp");

    // The reader accepts the golden patch.
    let mut trusted = TrustedKeys::new();
    trusted
        .add_text(&String::from_utf8(read("key.pub")).expect("utf8"))
        .expect("key");
    let mut out = Vec::new();
    let m = deltaward_engine::apply(
        &old.as_slice(),
        &mut golden.as_slice(),
        &mut out,
        &trusted,
        &Default::default(),
        &|_| {},
    )
    .expect("golden patch applies");
    assert_eq!(out, new);
    let kinds: std::collections::HashSet<_> = m.frames.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds.len(),
        4,
        "vectors must cover every frame kind: {kinds:?}"
    );
    assert!(kinds.contains(&FrameKind::Bsdiff));

    // The writer produces the same bytes.
    let key = SecretKey::from_text(&String::from_utf8(read("key.key")).expect("utf8"), None)
        .expect("key");
    let again = Patch::build(&old, &new, &opts())
        .expect("build")
        .sign(&key)
        .expect("sign");
    let mut bytes = Vec::new();
    again.write_to(&mut bytes).expect("write");
    assert!(
        unsigned_parts(&bytes) == unsigned_parts(&golden),
        "the writer's output changed: bump the format version or bless new vectors"
    );
}

//! Fixtures shared by deltaward's tests, in one place (as ripgrep's `testutil`):
//! deterministic data, keys, patches split into their sections and re-signed, the
//! location of the real image pairs, and fixtures that run the real `deltaward`
//! binary ([`cli`]).
//!
//! This crate is a dev-dependency only; it panics on failure, as tests want.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // reason: test fixtures fail loudly by design
#![allow(clippy::disallowed_methods)] // reason: fixtures write test files directly

pub mod cli;
pub mod elf;
pub mod modules;
pub mod programs;

use std::path::PathBuf;

use deltaward_engine::{
    apply, generate_keypair, ApplyOptions, BuildOptions, Manifest, Patch, SecretKey, Sections,
    TrustedKeys,
};

/// A deterministic pseudo-random word generator (xorshift64), the same sequence
/// for the same seed.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Deterministic pseudo-random bytes (xorshift), the same for the same seed.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut next = xorshift(seed);
    (0..n).map(|_| (next() >> 24) as u8).collect()
}

/// A little-endian table of `count` u32 words, `i * 40 + 0x1000`, with every 64th
/// word shifted by `shift`: relocated-code-like data on which the bsdiff coder wins.
pub fn table(count: u32, shift: u32) -> Vec<u8> {
    (0..count)
        .flat_map(|i| (i * 40 + if i % 64 == 0 { shift } else { 0 } + 0x1000).to_le_bytes())
        .collect()
}

/// Text-like bytes with no counterpart in the other fixtures: the zstd coder wins.
pub fn text(seed: &[u8], n: usize, period: usize) -> Vec<u8> {
    seed.iter()
        .cycle()
        .take(n)
        .enumerate()
        .map(|(i, b)| b ^ (i / period) as u8)
        .collect()
}

/// An unencrypted key pair: the secret key, the trusted set holding its public key,
/// and both key files' text.
#[derive(Debug)]
pub struct Keys {
    /// The secret key.
    pub secret: SecretKey,
    /// A trusted set with the public key.
    pub trusted: TrustedKeys,
    /// The public key file's text.
    pub public_text: String,
    /// The secret key file's text.
    pub secret_text: String,
}

/// A fresh unencrypted key pair.
pub fn keys() -> Keys {
    let kp = generate_keypair(None).expect("keygen");
    let mut trusted = TrustedKeys::new();
    trusted.add_text(&kp.public).expect("public key");
    Keys {
        secret: SecretKey::from_text(&kp.secret, None).expect("secret key"),
        trusted,
        public_text: kp.public,
        secret_text: kp.secret,
    }
}

/// Builds and signs a patch, returning the file's bytes.
pub fn build(old: &[u8], new: &[u8], key: &SecretKey, opts: &BuildOptions) -> Vec<u8> {
    let patch = Patch::build(old, new, opts)
        .expect("build")
        .sign(key)
        .expect("sign");
    let mut bytes = Vec::new();
    patch.write_to(&mut bytes).expect("write");
    assert_eq!(bytes.len() as u64, patch.len());
    bytes
}

/// Applies a patch in memory with default options.
pub fn apply_bytes(
    old: &[u8],
    patch: &[u8],
    trusted: &TrustedKeys,
) -> deltaward_engine::Result<Vec<u8>> {
    let mut out = Vec::new();
    apply(
        &old,
        &mut &patch[..],
        &mut out,
        trusted,
        &ApplyOptions::default(),
        &|_| {},
    )?;
    Ok(out)
}

/// Splits a well-formed patch into its sections (panics on a malformed one).
pub fn sections(patch: &[u8]) -> Sections<'_> {
    Sections::split(patch).expect("patch sections")
}

/// The manifest of a well-formed patch (not verified).
pub fn manifest(patch: &[u8]) -> Manifest {
    Manifest::parse(sections(patch).manifest).expect("manifest")
}

/// Re-signs a modified manifest `m` with `key`, keeping `patch`'s payloads: a patch
/// that a trusted key signed, for tests of what the applier checks after the
/// signature.
pub fn resign(patch: &[u8], m: &Manifest, key: &SecretKey) -> Vec<u8> {
    let mb = m.to_bytes();
    let sig = key.sign(&mb, &m.trusted_comment()).expect("sign");
    Sections::join(&mb, sig.as_bytes(), sections(patch).payloads)
}

/// Directory of the real image pairs: `$DELTAWARD_PAIRS`, else
/// `~/.cache/deltaward-pairs` (where `scripts/make-pairs.sh` writes them).
pub fn pairs_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DELTAWARD_PAIRS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/deltaward-pairs")
}

/// The pair `name` (`DIR/name.old`, `DIR/name.new`). Panics with the command that
/// builds the pairs when they are missing: tests that need them are
/// `#[ignore = "needs scripts/make-pairs.sh"]` and CI runs them with
/// `--include-ignored` after building the pairs, so a missing corpus fails there.
pub fn pair(name: &str) -> (PathBuf, PathBuf) {
    let dir = pairs_dir();
    assert!(
        dir.join("DONE").is_file(),
        "image pairs missing in {}: run scripts/make-pairs.sh",
        dir.display()
    );
    (
        dir.join(format!("{name}.old")),
        dir.join(format!("{name}.new")),
    )
}

//! Helpers for the CLI tests: run the real binary and the real
//! `minisign`, make images, check outcomes.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The deltaward binary built by cargo for this test run.
pub fn deltaward_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deltaward"))
}

/// Runs deltaward with `args`.
pub fn deltaward(args: &[&str]) -> Output {
    Command::new(deltaward_bin())
        .args(args)
        .output()
        .expect("running deltaward")
}

/// Runs a command and returns its output.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e} (is it installed? .ci/run installs it)"))
}

/// Asserts success, printing stderr otherwise.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts failure with `code`, returning stderr.
pub fn fails_with(out: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "unexpected exit status; stderr: {err}"
    );
    err
}

/// Path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Deterministic pseudo-random bytes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A work directory with an unencrypted key pair and an old/new image pair.
pub struct Fixture {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// Secret key.
    pub key: PathBuf,
    /// Public key.
    pub public: PathBuf,
    /// Old image.
    pub old: PathBuf,
    /// New image.
    pub new: PathBuf,
}

impl Fixture {
    /// Keys from `deltaward keygen`, and a pair of `mib` MiB images.
    pub fn new(mib: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("test.key");
        let public = dir.path().join("test.pub");
        ok(&deltaward(&[
            "keygen",
            "-s",
            s(&key),
            "-p",
            s(&public),
            "--unencrypted",
        ]));
        let old_bytes = noise(mib << 20, 11);
        let mut new_bytes = old_bytes.clone();
        // Change a little in every MiB, insert a few bytes in the middle.
        for m in 0..mib {
            let at = (m << 20) + 1000;
            new_bytes[at..at + 300].copy_from_slice(&noise(300, m as u64 + 100));
        }
        let mid = new_bytes.len() / 2;
        new_bytes.splice(mid..mid, *b"inserted");
        let old = dir.path().join("old.img");
        let new = dir.path().join("new.img");
        std::fs::write(&old, old_bytes).expect("write old");
        std::fs::write(&new, new_bytes).expect("write new");
        Self {
            dir,
            key,
            public,
            old,
            new,
        }
    }

    /// A path in the work directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Builds a patch with deltaward diff.
    pub fn diff(&self, name: &str, extra: &[&str]) -> PathBuf {
        let patch = self.path(name);
        let mut args = vec![
            "diff",
            s(&self.old),
            s(&self.new),
            "-o",
            s(&patch),
            "-s",
            s(&self.key),
        ];
        args.extend_from_slice(extra);
        ok(&deltaward(&args));
        patch
    }
}

//! Fixtures that run the real `deltaward` binary (and other real programs) and
//! check their outcome.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::noise;

/// Runs `program` with `args` and returns its output.
pub fn run(program: impl AsRef<Path>, args: &[&str]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {}: {e} (is it installed? .ci/run installs it)",
                program.display()
            )
        })
}

/// Asserts success, printing both streams otherwise; returns stdout.
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

/// Asserts failure with exit code `code`; returns stderr.
pub fn fails_with(out: &Output, code: u8) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(i32::from(code)),
        "unexpected exit status; stderr: {err}"
    );
    err
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A work directory with the binary under test, an unencrypted key pair made by
/// `deltaward keygen`, and an old/new image pair.
#[derive(Debug)]
pub struct Fixture {
    /// The `deltaward` binary.
    pub bin: PathBuf,
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
    /// Keys from `deltaward keygen`, and a pair of `mib` MiB images that differ a
    /// little in every MiB, with a few bytes inserted in the middle.
    pub fn new(bin: impl Into<PathBuf>, mib: usize) -> Self {
        let bin = bin.into();
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("test.key");
        let public = dir.path().join("test.pub");
        ok(&run(
            &bin,
            &["keygen", "-s", s(&key), "-p", s(&public), "--unencrypted"],
        ));
        let old_bytes = noise(mib << 20, 11);
        let mut new_bytes = old_bytes.clone();
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
            bin,
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

    /// Runs the binary with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        run(&self.bin, args)
    }

    /// Builds a patch OLD -> NEW named `name` with `deltaward diff`, asserting success.
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
        ok(&self.run(&args));
        patch
    }

    /// Writes a patch's manifest and signature with `deltaward inspect
    /// --extract-manifest M --extract-signature S` (asserting success), for checks
    /// with the reference `minisign`; returns (M, S).
    pub fn extract(&self, patch: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (m, sig) = (
            self.path(&format!("{name}.bin")),
            self.path(&format!("{name}.minisig")),
        );
        ok(&self.run(&[
            "inspect",
            s(patch),
            "--extract-manifest",
            s(&m),
            "--extract-signature",
            s(&sig),
        ]));
        (m, sig)
    }

    /// Runs `deltaward apply OLD PATCH -o OUT -p PUBLIC` with `extra` flags (not
    /// asserting the outcome).
    pub fn apply(&self, patch: &Path, out: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            "apply",
            s(&self.old),
            s(patch),
            "-o",
            s(out),
            "-p",
            s(&self.public),
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

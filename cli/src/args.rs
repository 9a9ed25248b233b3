//! Argument groups shared by several commands, flattened into each command's
//! `Args` (signing keys, a role's signing keys, trusted keys, level, threads, JSON
//! output, overwriting), and the parsing of durations and times they share.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use deltaward_engine::{BuildOptions, Level, SecretKey, TrustedKeys};

use crate::keys;

/// A secret key to sign with.
#[derive(Args, Debug)]
pub struct SigningKey {
    /// Secret key to sign with.
    #[arg(short = 's', long = "secret-key", value_name = "KEY.key")]
    pub secret: PathBuf,
    /// Read the secret key's password from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

impl SigningKey {
    /// Loads the key, asking for its password only when it is encrypted.
    pub fn load(&self) -> Result<SecretKey> {
        keys::secret(&self.secret, self.password_file.as_deref())
    }
}

/// The secret keys of the role that signs a release document: several meet a
/// threshold above one. Commands say which role with `mut_arg("secret", ...)`.
#[derive(Args, Debug)]
pub struct RoleKeys {
    /// Secret key of the signing role (repeat to meet a threshold above one).
    #[arg(
        short = 's',
        long = "secret-key",
        value_name = "KEY.key",
        required = true
    )]
    pub secret: Vec<PathBuf>,
    /// Read the secret keys' password from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

impl RoleKeys {
    /// Loads the `-s` keys, asking for a password only for encrypted ones.
    pub fn load(&self) -> Result<Vec<SecretKey>> {
        self.load_other(&self.secret)
    }

    /// Loads other secret keys of the same command (another role's) with the same
    /// password file.
    pub fn load_other(&self, paths: &[PathBuf]) -> Result<Vec<SecretKey>> {
        keys::secrets(paths, self.password_file.as_deref())
    }
}

/// Parses a validity such as `7d`, `12h` or `365d`.
pub fn duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s)
        .with_context(|| format!("duration {s:?} (examples: 7d, 12h, 365d)"))
}

/// The time a check runs as of: `at` (RFC 3339) when given, now otherwise.
pub fn time(at: Option<&str>) -> Result<SystemTime> {
    match at {
        Some(t) => humantime::parse_rfc3339(t)
            .with_context(|| format!("time {t:?} (RFC 3339, e.g. 2026-11-28T12:00:00Z)")),
        None => Ok(SystemTime::now()),
    }
}

/// The public keys a verifier trusts.
#[derive(Args, Debug)]
pub struct TrustedKeyFiles {
    /// Trusted public key (repeat for several).
    #[arg(
        short = 'p',
        long = "public-key",
        value_name = "KEY.pub",
        required = true
    )]
    pub public: Vec<PathBuf>,
}

impl TrustedKeyFiles {
    /// Loads the trusted set.
    pub fn load(&self) -> Result<TrustedKeys> {
        keys::trusted(&self.public)
    }
}

/// Diff effort.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LevelArg {
    /// zstd coder first, bsdiff-style where zstd did poorly or alone where the
    /// frame's code looks moved, small windows, no programs' address maps: the
    /// fastest diff.
    Fast,
    /// bsdiff-style and zstd coders, hash-chain matching.
    Default,
    /// Suffix-array matching, zstd 19, larger windows: the smallest patch.
    Best,
}

impl From<LevelArg> for Level {
    fn from(l: LevelArg) -> Self {
        match l {
            LevelArg::Fast => Level::Fast,
            LevelArg::Default => Level::Default,
            LevelArg::Best => Level::Best,
        }
    }
}

/// How hard the diff works and on how many threads.
#[derive(Args, Debug)]
pub struct Effort {
    /// Effort: fast (zstd coder, bsdiff-style where zstd did poorly or code moved), default
    /// (bsdiff-style and zstd coders, hash-chain matching) or best (suffix-array
    /// matching, zstd 19, larger windows).
    #[arg(long, value_enum, default_value = "default")]
    pub level: LevelArg,
    /// Worker threads (default: all cores). Patch manifests are identical whatever
    /// the thread count.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Code delta frames against the plain old image, without a source transform.
    /// By default, when both images hold kernel modules, their BTF type ids, string
    /// offsets and symbol CRCs in the old image are first renumbered the way the new
    /// image numbers them, and when both hold x86-64 programs, their displacements,
    /// relocations and pointers are first moved to the new build's addresses (see
    /// FORMAT.md); appliers built before source transforms refuse such patches.
    #[arg(long)]
    pub no_transform: bool,
}

impl Effort {
    /// The engine's build options for this effort.
    pub fn build_options(&self) -> BuildOptions {
        BuildOptions::default()
            .level(self.level.into())
            .transform(!self.no_transform)
    }

    /// The rayon pool the binary owns for this command.
    pub fn pool(&self) -> Result<rayon::ThreadPool> {
        thread_pool(self.threads)
    }
}

/// Builds the rayon pool: libraries run on whatever pool the binary installs.
pub fn thread_pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        b = b.num_threads(n);
    }
    b.build().context("starting worker threads")
}

/// Whether an existing output may be replaced.
#[derive(Args, Debug)]
pub struct Force {
    /// Replace an existing output file.
    #[arg(short, long)]
    pub force: bool,
}

impl Force {
    /// Refuses an existing `path` unless `--force`, before any work is done.
    pub fn check(&self, path: &Path) -> Result<()> {
        if !self.force && path.symlink_metadata().is_ok() {
            bail!("{} exists; pass --force to replace it", path.display());
        }
        Ok(())
    }
}

/// `--json`: a machine-readable summary on stdout.
#[derive(Args, Debug)]
pub struct Json {
    /// Print the summary as JSON on stdout instead of as text.
    #[arg(long)]
    pub json: bool,
}

impl Json {
    /// Prints a command's summary in the chosen form: JSON on stdout, text on
    /// stderr (for commands whose work is a file they wrote).
    pub fn report(&self, s: &dyn Summary) {
        if self.json {
            println!("{}", s.json());
        } else {
            eprintln!("{}", s.text());
        }
    }

    /// Prints a command's answer in the chosen form, on stdout either way (for
    /// commands whose answer is their output, such as `check-release`).
    pub fn answer(&self, s: &dyn Summary) {
        if self.json {
            println!("{}", s.json());
        } else {
            println!("{}", s.text());
        }
    }
}

/// A command's result, printable as text or JSON.
pub trait Summary {
    /// The JSON form.
    fn json(&self) -> serde_json::Value;
    /// The human form.
    fn text(&self) -> String;
}

/// Parses a size given in MiB into bytes (a clap value parser), refusing one that
/// does not fit in 64 bits instead of wrapping.
pub fn mib(text: &str) -> std::result::Result<u64, String> {
    let n: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of MiB"))?;
    n.checked_mul(1 << 20)
        .ok_or_else(|| format!("{n} MiB does not fit in 64 bits of bytes"))
}

/// Fails unless `path` can be an output file: its directory exists and it is not
/// itself a directory. Checked before any work.
pub fn output_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a directory; name the output file", path.display());
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!("directory {} does not exist", dir.display());
    }
    Ok(())
}

//! Argument groups shared by several commands, flattened into each command's
//! `Args` (signing keys, trusted keys, level, threads, JSON output, overwriting).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use deltaward_engine::{Level, SecretKey, TrustedKeys};

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
    /// zstd coder only, small windows: the fastest diff.
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
    /// Effort: fast (zstd coder only), default (bsdiff-style and zstd coders, hash-chain
    /// matching) or best (suffix-array matching, zstd 19, larger windows).
    #[arg(long, value_enum, default_value = "default")]
    pub level: LevelArg,
    /// Worker threads (default: all cores). Patch manifests are identical whatever
    /// the thread count.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl Effort {
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
    /// Print a JSON summary on stdout (the human summary goes to stderr otherwise).
    #[arg(long)]
    pub json: bool,
}

impl Json {
    /// Prints a command's summary in the chosen form.
    pub fn report(&self, s: &dyn Summary) {
        if self.json {
            println!("{}", s.json());
        } else {
            eprintln!("{}", s.text());
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

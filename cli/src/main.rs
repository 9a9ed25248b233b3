//! `deltaward`: signed delta updates for medical device images.
#![forbid(unsafe_code)]

mod cmd;
mod demo;
mod keys;
mod progress;
mod releasecmd;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes, documented in the README.
pub mod exit {
    /// Anything not listed below (I/O errors, bad arguments to a subcommand).
    pub const FAILURE: u8 = 1;
    /// Command-line usage error (clap).
    pub const USAGE: u8 = 2;
    /// The signature is missing, malformed, legacy, or from an untrusted key.
    pub const SIGNATURE: u8 = 3;
    /// The patch is malformed, truncated or corrupted.
    pub const CORRUPT: u8 = 4;
    /// The old image is not the one the patch was built from.
    pub const WRONG_BASE: u8 = 5;
    /// The patch needs more memory or output space than allowed.
    pub const LIMIT: u8 = 6;
    /// A key could not be read or decrypted.
    pub const KEY: u8 = 7;
    /// check-release: rollback (a lower release counter or channel version).
    pub const ROLLBACK: u8 = 10;
    /// check-release: freeze (an expired channel, release or root).
    pub const FREEZE: u8 = 11;
    /// check-release: the release is not for this hardware.
    pub const WRONG_HARDWARE: u8 = 12;
    /// check-release: the device's image is not the base the release names.
    pub const BASE_MISMATCH: u8 = 13;
    /// check-release: mix-and-match (a file differs from its signed hash).
    pub const MIX_AND_MATCH: u8 = 14;
    /// check-release: signed by a key the trusted root does not list.
    pub const UNKNOWN_KEY: u8 = 15;
    /// check-release: fewer valid signatures than the role's threshold.
    pub const THRESHOLD: u8 = 16;
    /// check-release: a root rotation skips a version or lacks the old keys' signatures.
    pub const ROOT_ROTATION: u8 = 17;
}

#[derive(Parser, Debug)]
#[command(
    name = "deltaward",
    version,
    about = "Signed, verified delta updates for device images",
    long_about = "deltaward builds small signed patches between device images (rootfs, kernel, \
firmware) and applies them in bounded memory, verifying the signature, the old image, every \
frame and the final image before anything replaces the destination.",
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 signature rejected, 4 corrupt patch, \
5 wrong old image, 6 over a memory or size limit, 7 key error; check-release: 10 rollback, \
11 freeze (expired), 12 wrong hardware, 13 base mismatch, 14 mix-and-match, 15 unknown key, \
16 threshold not met, 17 bad root rotation."
)]
struct Cli {
    /// Log verbosity (also RUST_LOG).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LevelArg {
    Fast,
    Default,
    Best,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a new minisign-compatible key pair.
    Keygen {
        /// Secret key file to write.
        #[arg(short = 's', long = "secret-key", value_name = "KEY.key")]
        secret: PathBuf,
        /// Public key file to write.
        #[arg(short = 'p', long = "public-key", value_name = "KEY.pub")]
        public: PathBuf,
        /// Store the secret key without a password (for CI and tests).
        #[arg(long)]
        unencrypted: bool,
        /// Read the password from this file instead of the terminal.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Replace existing key files.
        #[arg(short, long)]
        force: bool,
    },
    /// Build a signed patch that turns OLD into NEW.
    Diff {
        /// The old image (what devices have).
        old: PathBuf,
        /// The new image.
        new: PathBuf,
        /// Patch file to write.
        #[arg(short, long, value_name = "PATCH")]
        output: PathBuf,
        /// Secret key to sign with.
        #[arg(short = 's', long = "secret-key", value_name = "KEY.key")]
        secret: PathBuf,
        /// Read the secret key's password from this file.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Effort: fast (zstd coder only), default (bsdiff-style and zstd coders, hash-chain
        /// matching) or best (suffix-array matching, zstd 19, larger windows).
        #[arg(long, value_enum, default_value = "default")]
        level: LevelArg,
        /// Worker threads (default: all cores).
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
        /// Block size of the old image's index, in bytes.
        #[arg(long, default_value_t = 4096, value_name = "BYTES")]
        block_size: u32,
        /// Largest reference window per frame, in MiB (bounds the applier's memory).
        #[arg(long, value_name = "MIB")]
        max_window: Option<u64>,
        /// Memory for encoders running at once, in MiB.
        #[arg(long, default_value_t = 2048, value_name = "MIB")]
        memory_limit: u64,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the new image from OLD and PATCH, verifying everything.
    Apply {
        /// The old image.
        old: PathBuf,
        /// The patch.
        patch: PathBuf,
        /// Where to write the new image (replaced only after every check passed).
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Trusted public key (repeat for several).
        #[arg(
            short = 'p',
            long = "public-key",
            value_name = "KEY.pub",
            required = true
        )]
        public: Vec<PathBuf>,
        /// Continue an interrupted apply from its last verified frame.
        #[arg(long)]
        resume: bool,
        /// Refuse patches needing more working memory than this, in MiB.
        #[arg(long, default_value_t = 256, value_name = "MIB")]
        memory_limit: u64,
        /// Checkpoint progress for --resume every this many MiB of output.
        #[arg(long, default_value_t = 32, value_name = "MIB")]
        checkpoint_mib: u64,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
        /// Testing aid: abort the process after this many frames (simulates a crash).
        #[arg(long, hide = true)]
        crash_after_frames: Option<u64>,
    },
    /// Check a patch's signature and payloads; with --old, decode it fully.
    Verify {
        /// The patch.
        patch: PathBuf,
        /// Trusted public key (repeat for several).
        #[arg(
            short = 'p',
            long = "public-key",
            value_name = "KEY.pub",
            required = true
        )]
        public: Vec<PathBuf>,
        /// Also check the old image and every frame's output.
        #[arg(long, value_name = "OLD")]
        old: Option<PathBuf>,
    },
    /// Show a patch's manifest (no key needed; nothing here is verified).
    Inspect {
        /// The patch.
        patch: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Write the signed manifest bytes to FILE (verify with minisign -V).
        #[arg(long, value_name = "FILE", requires = "extract_signature")]
        extract_manifest: Option<PathBuf>,
        /// Write the minisign signature to FILE.
        #[arg(long, value_name = "FILE", requires = "extract_manifest")]
        extract_signature: Option<PathBuf>,
    },
    /// Build a signed release: a patch per base, the full image, release.json, channel.json.
    Release(crate::releasecmd::ReleaseArgs),
    /// Manage a product's signed channel.
    #[command(subcommand)]
    Channel(crate::releasecmd::ChannelCmd),
    /// Write a signed root.json (first version, or a rotation).
    Root(crate::releasecmd::RootArgs),
    /// Verify the latest release for this device, as the device does.
    CheckRelease(crate::releasecmd::CheckArgs),
    /// Render the update notice of a release.json for operators.
    Notice(crate::releasecmd::NoticeArgs),
    /// Run the whole pipeline on built-in defaults: keys, images, diff, apply, verify, release.
    Demo {
        /// Work directory (default: a temporary one, removed afterwards).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Size of the generated images, in MiB.
        #[arg(long, default_value_t = 64, value_name = "MIB")]
        size: u64,
        /// Use these images instead of generated ones.
        #[arg(long, value_name = "OLD", requires = "new")]
        old: Option<PathBuf>,
        /// Use these images instead of generated ones.
        #[arg(long, value_name = "NEW", requires = "old")]
        new: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.verbose);
    match cmd::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deltaward: error: {e:#}");
            ExitCode::from(cmd::exit_code(&e))
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}

//! Signed delta patches between device images.
//!
//! `deltaward-engine` builds a patch that turns an old image into a new one, signs
//! its manifest in minisign's format, and applies it in bounded memory, verifying
//! the signature, the old image, every frame and the final image before anything
//! replaces the destination.
//!
//! ```
//! use deltaward_engine::{apply, sign, ApplyOptions, BuildOptions, Patch};
//!
//! let old = vec![7u8; 100_000];
//! let mut new = old.clone();
//! new[5_000..5_100].fill(9);
//!
//! let keys = sign::generate_keypair(None)?;
//! let secret = sign::SecretKey::from_text(&keys.secret, None)?;
//! let mut trusted = sign::TrustedKeys::new();
//! trusted.add_text(&keys.public)?;
//!
//! let patch = Patch::build(&old, &new, &BuildOptions::default())?.sign(&secret)?;
//! let mut bytes = Vec::new();
//! patch.write_to(&mut bytes)?;
//!
//! let mut out = Vec::new();
//! apply::apply(&old.as_slice(), &mut bytes.as_slice(), &mut out, &trusted, &ApplyOptions::default(), &|_| {})?;
//! assert_eq!(out, new);
//! # Ok::<(), deltaward_engine::Error>(())
//! ```
//!
//! # Threads
//! The engine never builds a thread pool: diffing runs on whatever rayon pool the
//! caller installed (`ThreadPool::install`), the global one otherwise. Applying is
//! sequential, so its memory stays bounded by one frame.
//!
//! # What this crate does not do
//! It does not fetch, cache or schedule updates (see the mirror and the CLI), does
//! not manage release metadata or rollback protection, does not read passwords, and
//! never prints: progress is reported through callbacks.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod apply;
pub mod atomic;
mod diff;
pub mod encode;
pub mod error;
pub mod format;
pub mod image;
pub mod index;
pub mod sign;

use std::io::Write;

pub use apply::{apply_to_file, verify_patch, ApplyOptions, ApplyReport};
pub use error::{Error, FormatError, KeyError, Result, SignatureError};
pub use format::{Frame, FrameKind, Manifest};

/// How hard the diff works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Level {
    /// zstd only, small windows: the fastest diff.
    Fast,
    /// zstd and the bsdiff-style coder, whichever is smaller per frame.
    #[default]
    Default,
    /// Both coders at high effort and larger windows: the smallest patch.
    Best,
}

impl Level {
    /// The level's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Default => "default",
            Self::Best => "best",
        }
    }
}

/// Options for [`Patch::build`].
///
/// Defaults: level [`Level::Default`], 4 KiB blocks, a 2 GiB memory limit for the
/// encoders running at once, and the level's window and frame sizes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildOptions {
    /// Effort level.
    pub level: Level,
    /// Block size of the old image's BLAKE3 index (power of two, 512 B to 1 MiB).
    pub block_size: u32,
    /// Upper bound on the memory of frame encoders running at once.
    pub memory_limit: u64,
    /// Largest reference window per frame (also bounds the applier's memory).
    pub max_window: Option<u64>,
    /// Largest output of one delta frame.
    pub frame_len: Option<u64>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            level: Level::Default,
            block_size: 4096,
            memory_limit: 2 << 30,
            max_window: None,
            frame_len: None,
        }
    }
}

impl BuildOptions {
    /// Sets the level.
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }
    /// Sets the block size.
    pub fn block_size(mut self, block_size: u32) -> Self {
        self.block_size = block_size;
        self
    }
    /// Sets the encoders' memory limit.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = bytes;
        self
    }
    /// Caps the reference window per frame.
    pub fn max_window(mut self, bytes: u64) -> Self {
        self.max_window = Some(bytes);
        self
    }
    /// Caps the output length of one delta frame.
    pub fn frame_len(mut self, bytes: u64) -> Self {
        self.frame_len = Some(bytes);
        self
    }

    pub(crate) fn params(&self) -> LevelParams {
        let mut p = match self.level {
            Level::Fast => LevelParams {
                zstd_level: 3,
                long_distance: true,
                bsdiff: false,
                bsdiff_zstd_level: 3,
                match_finder: encode::bsdiff::MatchFinder::HashChain,
                zstd_retry_ratio: 1,
                max_window: 16 << 20,
                frame_len: 4 << 20,
            },
            Level::Default => LevelParams {
                zstd_level: 6,
                long_distance: true,
                bsdiff: true,
                bsdiff_zstd_level: 3,
                match_finder: encode::bsdiff::MatchFinder::HashChain,
                zstd_retry_ratio: 12,
                max_window: 32 << 20,
                frame_len: 4 << 20,
            },
            Level::Best => LevelParams {
                zstd_level: 19,
                long_distance: true,
                bsdiff: true,
                bsdiff_zstd_level: 19,
                match_finder: encode::bsdiff::MatchFinder::SuffixArray,
                zstd_retry_ratio: u64::MAX,
                max_window: 64 << 20,
                frame_len: 8 << 20,
            },
        };
        if let Some(w) = self.max_window {
            p.max_window = w.min(format::MAX_WINDOW);
        }
        if let Some(f) = self.frame_len {
            p.frame_len = f.clamp(self.block_size as u64, format::MAX_FRAME_LEN);
        }
        p
    }

    /// The options as recorded in the manifest.
    pub(crate) fn describe(&self) -> String {
        let p = self.params();
        format!(
            "level={} block={} window={} frame={} zstd={} bsdiff={}",
            self.level.name(),
            self.block_size,
            p.max_window,
            p.frame_len,
            p.zstd_level,
            if p.bsdiff {
                p.bsdiff_zstd_level.to_string()
            } else {
                "off".into()
            }
        )
    }
}

/// Concrete parameters behind a [`Level`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct LevelParams {
    zstd_level: i32,
    long_distance: bool,
    bsdiff: bool,
    bsdiff_zstd_level: i32,
    /// The bsdiff coder's match finder.
    match_finder: encode::bsdiff::MatchFinder,
    /// zstd also runs when bsdiff's payload is above 1/ratio of the frame.
    zstd_retry_ratio: u64,
    max_window: u64,
    frame_len: u64,
}

impl LevelParams {
    /// Rough memory of one frame encoder: zstd's tables over the window, plus the
    /// suffix array and streams of the bsdiff coder.
    fn encode_memory(&self) -> u64 {
        let zstd = 3 * (self.max_window + self.frame_len);
        let bsdiff = if self.bsdiff {
            5 * self.max_window + 3 * self.frame_len
        } else {
            0
        };
        zstd + bsdiff
    }
}

/// A built, unsigned patch.
#[derive(Debug, Clone)]
pub struct Patch {
    manifest: Manifest,
    payloads: Vec<Vec<u8>>,
}

impl Patch {
    /// Diffs `old` against `new`. Runs on the caller's rayon pool.
    pub fn build(old: &[u8], new: &[u8], opts: &BuildOptions) -> Result<Self> {
        Self::build_with_progress(old, new, opts, &|_| {})
    }

    /// Like [`build`](Self::build), calling `progress(bytes)` as parts of the new
    /// image are done (the calls add up to its length).
    pub fn build_with_progress(
        old: &[u8],
        new: &[u8],
        opts: &BuildOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Self> {
        let (manifest, payloads) = diff::build(old, new, opts, progress)?;
        Ok(Self { manifest, payloads })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Signs the manifest.
    pub fn sign(self, key: &sign::SecretKey) -> Result<SignedPatch> {
        let manifest_bytes = self.manifest.to_bytes();
        let signature = key.sign(&manifest_bytes, &self.manifest.trusted_comment())?;
        Ok(SignedPatch {
            patch: self,
            manifest_bytes,
            signature,
        })
    }
}

/// A patch with its signature, ready to write.
#[derive(Debug, Clone)]
pub struct SignedPatch {
    patch: Patch,
    manifest_bytes: Vec<u8>,
    signature: String,
}

impl SignedPatch {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.patch.manifest
    }

    /// Total length of the patch file.
    pub fn len(&self) -> u64 {
        (format::HEADER_LEN + self.manifest_bytes.len() + self.signature.len()) as u64
            + self.patch.manifest.payload_len
    }

    /// Always false: a patch has at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the patch file.
    pub fn write_to<W: Write>(&self, mut w: W) -> Result<()> {
        let header = format::Header {
            manifest_len: self.manifest_bytes.len() as u32,
            signature_len: self.signature.len() as u32,
            payload_len: self.patch.manifest.payload_len,
        };
        let err = |source| Error::Stream {
            action: "writing patch",
            source,
        };
        w.write_all(&header.to_bytes()).map_err(err)?;
        w.write_all(&self.manifest_bytes).map_err(err)?;
        w.write_all(self.signature.as_bytes()).map_err(err)?;
        for p in &self.patch.payloads {
            w.write_all(p).map_err(err)?;
        }
        w.flush().map_err(err)
    }
}

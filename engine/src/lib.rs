//! Signed delta patches between device images.
//!
//! `deltaward-engine` builds a patch that turns an old image into a new one, signs
//! its manifest in minisign's format, and applies it in bounded memory, verifying
//! the signature, the old image, every frame and the final image before anything
//! replaces the destination.
//!
//! ```
//! use deltaward_engine::{apply, generate_keypair, ApplyOptions, BuildOptions, Patch, SecretKey, TrustedKeys};
//!
//! let old = vec![7u8; 100_000];
//! let mut new = old.clone();
//! new[5_000..5_100].fill(9);
//!
//! let keys = generate_keypair(None)?;
//! let secret = SecretKey::from_text(&keys.secret, None)?;
//! let mut trusted = TrustedKeys::new();
//! trusted.add_text(&keys.public)?;
//!
//! let patch = Patch::build(&old, &new, &BuildOptions::default())?.sign(&secret)?;
//! let mut bytes = Vec::new();
//! patch.write_to(&mut bytes)?;
//!
//! let mut out = Vec::new();
//! apply(&old.as_slice(), &mut bytes.as_slice(), &mut out, &trusted, &ApplyOptions::default(), &|_| {})?;
//! assert_eq!(out, new);
//! # Ok::<(), deltaward_engine::Error>(())
//! ```
//!
//! # Threads
//! The engine never builds a thread pool: diffing runs on whatever rayon pool the
//! caller installed (`ThreadPool::install`), the global one otherwise. Applying is
//! sequential, so its memory stays bounded by one frame.
//!
//! # Modules, by pipeline stage
//! Building: `index` (block index and anchors of the old image), `plan` (classifying
//! blocks, cutting frames, choosing windows), `codec` (the zstd and bsdiff coders,
//! encode and decode side by side), `diff` (the build pipeline), `level` (levels
//! and their tuning table), `container` (writing and splitting patch files).
//! Applying: `apply` (preamble and signature, decode loop, output sinks, resume).
//! Shared: [`format`] (the specification: types, parsing and limits; public),
//! `sign` (minisign keys and signatures), `atomic` (the one place that replaces
//! files), `image` (reading images), `error`. Only `format` is public as a module;
//! everything else is re-exported below.
//!
//! # What this crate does not do
//! It does not fetch, cache or schedule updates (see the mirror and the CLI), does
//! not manage release metadata or rollback protection, does not read passwords, and
//! never prints: progress is reported through callbacks.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod apply;
mod atomic;
mod codec;
mod container;
mod diff;
mod error;
pub mod format;
mod grams;
mod image;
mod index;
mod level;
mod plan;
mod sign;
mod sparse;
mod transform;

pub use apply::{
    apply, apply_to_file, read_head, verify_patch, ApplyOptions, ApplyReport, VerifiedHead,
};
pub use atomic::{
    lock_file, open_append, open_regular, sync_dir, try_lock_file, write_file, write_new_file,
    write_private_file, AtomicFile, PartialPaths,
};
pub use container::{read_unverified, Patch, Sections, SignedPatch, UnverifiedHead};
pub use error::{Error, ErrorClass, Hashed, KeyError, KeyKind, Result, SignatureError};
pub use format::{
    AddressMap, Digest, ExactMap, FormatError, Frame, FrameKind, Header, Limit, Manifest, Region,
    RegionKind, Remap, SourceTransform,
};
pub use image::{FileSource, Image, Source};
pub use level::{BuildOptions, Level};
pub use sign::{
    format_key_id, generate_keypair, signature_key_id, KeyPairText, SecretKey, TrustedKeys,
};

/// Entry points for the fuzz targets, tests and benchmarks that exercise the stages
/// directly: the coders below the signature check, the indexes and the block
/// matching. Not part of the stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// Builds the old image's block index and anchor index (the diff's first stage)
    /// with blocks of `block_size` bytes; returns the number of distinct anchors.
    pub fn index(old: &[u8], block_size: usize) -> usize {
        let input = crate::sparse::Input::new(old, &[]);
        let (_blocks, anchors) = rayon::join(
            || crate::index::BlockIndex::build(input, block_size),
            || crate::index::AnchorIndex::build(input),
        );
        anchors.len()
    }

    /// Matches every block of `new` against `old` (indexing `old` first), the
    /// diff's second stage; returns how many blocks changed.
    pub fn match_blocks(old: &[u8], new: &[u8], block_size: usize) -> usize {
        let (o, n) = (
            crate::sparse::Input::new(old, &[]),
            crate::sparse::Input::new(new, &[]),
        );
        let index = crate::index::BlockIndex::build(o, block_size);
        crate::plan::classify(o, n, block_size, &index)
            .iter()
            .filter(|b| matches!(b, crate::plan::Block::Changed))
            .count()
    }

    /// Learns a source transform from `old` and `new` (the diff's parsing of ELF
    /// and BTF in arbitrary images), then checks what it learned: regions sorted,
    /// disjoint and inside `old`, every region rewritable, and the stored form
    /// parsing back to the same transform. Also walks `old` as a BTF blob. Returns
    /// the number of regions kept. Panics if a check fails.
    pub fn transform(old: &[u8], new: &[u8]) -> usize {
        let _ = crate::transform::btf::rewrite(&mut old.to_vec(), |_, v| v.wrapping_add(1));
        let (o, n) = (
            crate::sparse::Input::new(old, &[]),
            crate::sparse::Input::new(new, &[]),
        );
        let Some(t) = crate::transform::learn(o, n, crate::transform::Learning::ALL) else {
            return 0;
        };
        assert!(t.regions.windows(2).all(|w| w[0].0.end <= w[1].0.start));
        assert!(t
            .regions
            .iter()
            .all(|(r, _)| r.start < r.end && r.end <= old.len() as u64));
        let Some(kept) = crate::transform::rewrite_copy(&mut old.to_vec(), old, t) else {
            return 0;
        };
        let parsed = crate::format::SourceTransform::parse(&kept.to_bytes(), old.len() as u64);
        assert_eq!(
            parsed.as_ref(),
            Ok(&kept),
            "the stored transform does not parse back"
        );
        kept.regions.len()
    }

    pub use crate::codec::bsdiff::MatchFinder;
    pub use crate::codec::zstd::ZstdSettings;

    pub use crate::format::FrameKind;

    /// Decodes a payload of a bsdiff kind (`bsdiff` or `bsdiff-runs`) against
    /// `window` into `out` (the frame's length), with the scratch memory the applier
    /// would give it.
    pub fn bsdiff_decode(
        kind: FrameKind,
        window: &[u8],
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(), &'static str> {
        let mut scratch =
            vec![0u8; crate::format::bsdiff_max_decoded_len(out.len() as u64) as usize];
        match kind {
            FrameKind::Bsdiff | FrameKind::BsdiffRuns => {
                crate::codec::decode(kind, window, payload, out, &mut scratch)
            }
            _ => Err("not a bsdiff frame kind"),
        }
    }

    /// Encodes `data` against `window` with the bsdiff coder, returning the frame
    /// kind and payload (`None`: over the control-stream bound, the builder would
    /// use zstd).
    pub fn bsdiff_encode(
        window: &[u8],
        data: &[u8],
        finder: MatchFinder,
        zstd: ZstdSettings,
    ) -> Result<Option<(FrameKind, Vec<u8>)>, &'static str> {
        crate::codec::bsdiff::encode(window, data, finder, zstd)
            .map(|p| p.map(|p| (p.kind, p.bytes)))
    }

    /// Decodes a zstd payload with `window` as prefix into `out` (the frame's length).
    pub fn zstd_decode(window: &[u8], payload: &[u8], out: &mut [u8]) -> Result<(), &'static str> {
        crate::codec::zstd::decode(window, payload, out)
    }

    /// Encodes `data` with `window` as zstd prefix.
    pub fn zstd_encode(
        window: &[u8],
        data: &[u8],
        s: ZstdSettings,
    ) -> Result<Vec<u8>, &'static str> {
        crate::codec::zstd::encode(window, data, s)
    }
}

//! Applying a patch: verify the signature, the old image, each frame's payload and
//! output, and the whole rebuilt image; write through a temporary file; resume an
//! interrupted apply from its last verified frame.
//!
//! Order of checks (each before the next step reads more):
//! 1. header bounds, then the minisign signature over the manifest bytes, against the
//!    trusted keys; only then is the manifest parsed, and its trusted comment matched;
//! 2. the patch's memory and size needs against [`ApplyOptions`];
//! 3. the old image's size and BLAKE3: first in [`apply`] (its sink sees bytes as
//!    frames verify); on a thread of its own beside step 4 (`beside_source_check`)
//!    in [`verify_patch`] and in [`apply_to_file`], except there where a
//!    checkpoint's progress is at stake. Its mismatch is the error reported, and
//!    nothing is kept until it passed;
//! 4. per frame: the payload's BLAKE3 before decoding, the output's BLAKE3 after;
//! 5. the BLAKE3 of the whole output; for a file, of the bytes read back through
//!    its descriptor after fsync, and its length, then the rename (see
//!    [`PartialFile`]).
//!
//! Memory is bounded by [`Manifest::apply_memory`] (one frame's window, payload,
//! decoded streams and output, allocated once) plus the manifest, whatever the
//! image size.

mod decode;
mod head;
mod resume;
mod sink;

use std::{
    fs::File,
    io::{self, BufReader, Read, Seek, SeekFrom, Write},
    path::Path,
};

use crate::{
    atomic::PartialFile,
    container::payload_start,
    error::{Error, Result},
    format::{
        manifest_memory, Digest, FormatError, Limit, Manifest, Region, APPLY_OVERHEAD, COPY_CHUNK,
    },
    image::{FileSource, Source},
    sign::TrustedKeys,
};

use decode::apply_frames;
pub use head::{read_head, VerifiedHead};
use resume::{hash_file, verify_done, Checkpoint};
use sink::{check_target, FileSink, HashingSink};

/// Mode of an applied image (set on the descriptor before the rename; the partial
/// file is 0600 until then).
const OUTPUT_MODE: u32 = 0o644;

/// Options for applying a patch.
///
/// Defaults: a 256 MiB working-memory limit, a 1 TiB output-size limit, no resume.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// Refuse patches whose most demanding frame needs more working memory.
    pub memory_limit: u64,
    /// Refuse patches that claim a larger output.
    pub max_target_size: u64,
    /// Continue an interrupted apply of the same patch to the same destination.
    pub resume: bool,
    /// Write a resume checkpoint (after an fsync) every this many output bytes.
    pub checkpoint_bytes: u64,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            memory_limit: 256 << 20,
            max_target_size: 1 << 40,
            resume: false,
            checkpoint_bytes: 32 << 20,
        }
    }
}

impl ApplyOptions {
    /// Sets the working-memory limit.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = bytes;
        self
    }
    /// Sets the output-size limit.
    pub fn max_target_size(mut self, bytes: u64) -> Self {
        self.max_target_size = bytes;
        self
    }
    /// Enables resuming.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }
    /// Sets how often a resume checkpoint is written.
    pub fn checkpoint_bytes(mut self, bytes: u64) -> Self {
        self.checkpoint_bytes = bytes.max(1);
        self
    }
}

/// What an apply did.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// The verified manifest.
    pub manifest: Manifest,
    /// Id of the key that signed it.
    pub key_id: String,
    /// Frames taken over from an interrupted run.
    pub resumed_frames: u32,
}

/// Refuses a patch that needs more than the options allow.
fn check_limits(head: &VerifiedHead, opts: &ApplyOptions) -> Result<()> {
    let m = &head.manifest;
    if m.target_size > opts.max_target_size {
        return Err(FormatError::LimitExceeded {
            limit: Limit::TargetSize,
            value: m.target_size,
            max: opts.max_target_size,
        }
        .into());
    }
    // The frames' working memory, and the manifest held throughout.
    let needed = m
        .apply_memory()
        .saturating_add(manifest_memory(head.header.manifest_len))
        .saturating_add(APPLY_OVERHEAD);
    if needed > opts.memory_limit {
        return Err(Error::MemoryLimit {
            needed,
            limit: opts.memory_limit,
        });
    }
    Ok(())
}

pub(crate) fn source_err(source: io::Error) -> Error {
    Error::Stream {
        action: "reading old image",
        source,
    }
}

/// Checks the old image's size and BLAKE3 against the manifest.
pub fn check_source<S: Source>(source: &S, m: &Manifest) -> Result<()> {
    check_source_in(source, m, &mut vec![0u8; COPY_CHUNK as usize], true)
}

/// Chunk in which the check beside the frames reads the old image.
const SIDE_CHECK_CHUNK: usize = 64 << 10;

/// Runs `decode` while a thread of its own checks the old image, and gives the
/// check's error first: with a wrong old image the frames fail their own checks
/// too, and the mismatch is what explains them. Hashing the old image costs about
/// as much as decoding the frames of a kernel image, and the two need not wait for
/// each other: the frames are checked against their own hashes, and nothing is
/// kept until both have passed. Where no thread can be started, checks first.
fn beside_source_check<S: Source, T>(
    source: &S,
    m: &Manifest,
    decode: impl FnOnce() -> Result<T>,
) -> Result<T> {
    std::thread::scope(|scope| {
        let checker = std::thread::Builder::new()
            .name("source check".into())
            .spawn_scoped(scope, || {
                // One thread, not the rayon pool: the frames keep the other cores.
                check_source_in(source, m, &mut vec![0u8; SIDE_CHECK_CHUNK], false)
            });
        match checker {
            Ok(handle) => {
                let decoded = decode();
                let checked = handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                // A wrong old image first; then what the frames found (a bad patch
                // outranks an I/O error of the check, which would keep the partial
                // output for a resume); then the check's own failure.
                match (checked, decoded) {
                    (Err(e @ Error::SourceMismatch { .. }), _) | (_, Err(e)) | (Err(e), _) => {
                        Err(e)
                    }
                    (Ok(()), Ok(t)) => Ok(t),
                }
            }
            Err(_) => check_source(source, m).and_then(|()| decode()),
        }
    })
}

/// [`check_source`] reading through `buf`, hashing on the rayon pool or not.
fn check_source_in<S: Source>(source: &S, m: &Manifest, buf: &mut [u8], pool: bool) -> Result<()> {
    let mismatch = |found_hash| Error::SourceMismatch {
        expected_size: m.source_size,
        expected_hash: m.source_hash,
        found_size: source.size(),
        found_hash,
    };
    if source.size() != m.source_size {
        return Err(mismatch(None));
    }
    let mut h = blake3::Hasher::new();
    let feed = |b: &[u8]| {
        if pool {
            h.update_rayon(b);
        } else {
            h.update(b);
        }
    };
    crate::sparse::hash_sparse(feed, m.source_size, &source.holes(), buf, |off, b| {
        source.read_exact_at(b, off).map_err(source_err)
    })?;
    let found = Digest::from(h.finalize());
    if found != m.source_hash {
        return Err(mismatch(Some(found)));
    }
    Ok(())
}

/// Applies a patch read from `patch` to `source`, streaming the new image into
/// `sink`, and returns the verified manifest.
///
/// Every check described in the module docs runs, but `sink` receives bytes as
/// frames are verified, before the final hash is known: write into a temporary
/// place and keep it only when this returns `Ok` ([`apply_to_file`] does that).
pub fn apply<S: Source, R: Read, W: Write>(
    source: &S,
    patch: &mut R,
    sink: &mut W,
    keys: &TrustedKeys,
    opts: &ApplyOptions,
    progress: &dyn Fn(u64),
) -> Result<Manifest> {
    let head = read_head(patch, keys, opts.memory_limit)?;
    check_limits(&head, opts)?;
    // The caller's sink sees bytes as frames verify: the old image first, so that
    // a wrong one gives no output at all.
    check_source(source, &head.manifest)?;
    decode_to(source, &head, patch, sink, progress)?;
    Ok(head.manifest)
}

/// Decodes every frame into `sink`, verifying each frame and the whole output.
/// The caller checks the old image (before, or beside it).
fn decode_to<S: Source, R: Read, W: Write>(
    source: &S,
    head: &VerifiedHead,
    patch: &mut R,
    sink: &mut W,
    progress: &dyn Fn(u64),
) -> Result<()> {
    let mut s = HashingSink {
        hasher: blake3::Hasher::new(),
        out: sink,
    };
    apply_frames(
        source,
        &head.manifest,
        patch,
        0,
        payload_start(&head.header),
        &mut s,
        progress,
    )?;
    check_target(&head.manifest, &s.hasher)
}

/// Verifies a patch without an old image: signature, manifest, every payload hash,
/// and nothing trailing. With `source`, also checks the old image and decodes
/// every frame, verifying each output and the final image hash, writing nothing.
pub fn verify_patch<S: Source, R: Read>(
    patch: &mut R,
    keys: &TrustedKeys,
    source: Option<&S>,
    opts: &ApplyOptions,
) -> Result<VerifiedHead> {
    let head = read_head(patch, keys, opts.memory_limit)?;
    check_limits(&head, opts)?;
    if let Some(source) = source {
        // Nothing is written: the old image can be checked beside the frames.
        beside_source_check(source, &head.manifest, || {
            decode_to(source, &head, patch, &mut io::sink(), &|_| {})
        })?;
        return Ok(head);
    }
    decode::check_payloads(patch, &head.manifest, payload_start(&head.header))?;
    Ok(head)
}

/// Applies the patch file `patch` to the image `old`, writing the new image to `out`
/// atomically. With `opts.resume`, continues a previous interrupted apply of the
/// same patch to the same `out` from its last verified checkpoint (resume).
///
/// On any verification failure nothing is created at `out` and the partial output
/// is removed; on an I/O failure the partial output is kept for a later resume.
pub fn apply_to_file(
    old: &Path,
    patch: &Path,
    out: &Path,
    keys: &TrustedKeys,
    opts: &ApplyOptions,
    progress: &dyn Fn(u64),
) -> Result<ApplyReport> {
    // Fail before any work when OUT cannot be written.
    crate::atomic::existing_parent(out)?;
    let patch_file = File::open(patch).map_err(|source| Error::Io {
        action: "opening",
        path: patch.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(1 << 16, patch_file);
    let head = read_head(&mut reader, keys, opts.memory_limit)?;
    check_limits(&head, opts)?;
    let source = FileSource::open(old)?;
    let (target, done, checked) = open_partial(out, &head, &source, opts)?;
    let mut write = || {
        skip_payloads(&mut reader, &head, done.frames).and_then(|()| {
            write_verified(&source, &head, &mut reader, &target, &done, opts, progress)
        })
    };
    let result = if checked {
        write()
    } else {
        beside_source_check(&source, &head.manifest, write)
    };
    match result {
        Ok(()) => {
            target.commit(OUTPUT_MODE)?;
            Ok(ApplyReport {
                manifest: head.manifest,
                key_id: head.key_id,
                resumed_frames: done.frames as u32,
            })
        }
        Err(e) => {
            // A bad patch leaves nothing worth resuming; an I/O failure, or a patch
            // that ends inside the payloads (a download cut short), does.
            if !e.is_resumable() {
                target.discard();
            }
            Err(e)
        }
    }
}

/// Frames an interrupted apply verified and that this one takes over.
struct Done {
    /// Count of frames.
    frames: usize,
    /// Target offset where they end.
    offset: u64,
}

/// Takes the lock for `out` and opens its partial file, resuming the frames a
/// checkpoint claims only when resume is asked for, the checkpoint names this
/// manifest, the partial file is trustworthy and its frames re-verify.
///
/// Where a checkpoint exists, an earlier run's progress is at stake: the old image
/// is checked first, under the lock, and a wrong one changes nothing on disk.
/// Returns whether it was (else the caller checks it beside the frames).
fn open_partial(
    out: &Path,
    head: &VerifiedHead,
    source: &FileSource,
    opts: &ApplyOptions,
) -> Result<(PartialFile, Done, bool)> {
    let manifest_id = Digest::of(&head.manifest_bytes);
    // The lock is taken before the checkpoint is read or anything is removed; the
    // checkpoint names the manifest, and the manifest names the old image, which
    // was verified: a checkpoint counts only for this patch and this image.
    let mut previous = None;
    let mut checked = false;
    let (target, reused) = PartialFile::open(out, |text| {
        if text.is_some() {
            check_source(source, &head.manifest)?;
            checked = true;
        }
        previous = text
            .filter(|_| opts.resume)
            .and_then(Checkpoint::parse)
            .filter(|cp| cp.manifest == manifest_id);
        Ok(previous.is_some())
    })?;
    let done = previous
        .filter(|_| reused)
        .and_then(|cp| {
            verify_done(target.file(), &head.manifest, &cp).then_some(Done {
                frames: cp.frames,
                offset: cp.offset,
            })
        })
        .unwrap_or(Done {
            frames: 0,
            offset: 0,
        });
    let mut file = target.file();
    file.set_len(done.offset)
        .and_then(|()| file.seek(SeekFrom::Start(done.offset)))
        .map_err(|source| Error::Io {
            action: "truncating",
            path: target.paths().partial.clone(),
            source,
        })?;
    Ok((target, done, checked))
}

/// Skips the payloads of the first `frames` frames (done by an earlier run).
fn skip_payloads<R: Read>(reader: &mut R, head: &VerifiedHead, frames: usize) -> Result<()> {
    let skip: u64 = head
        .manifest
        .frames
        .iter()
        .take(frames)
        .map(|f| f.payload_len)
        .sum();
    let skipped =
        io::copy(&mut reader.take(skip), &mut io::sink()).map_err(|source| Error::Stream {
            action: "reading patch",
            source,
        })?;
    if skipped != skip {
        return Err(FormatError::Truncated {
            region: Region::FramePayload,
            offset: payload_start(&head.header) + skipped,
        }
        .into());
    }
    Ok(())
}

/// Decodes the remaining frames into the partial file with checkpoints (each frame
/// checked before it is written), then checks the whole output: the hash and the
/// length of the bytes read back, after they are synced, through the descriptor
/// that will be renamed (what is renamed must be what was verified).
fn write_verified<R: Read>(
    source: &FileSource,
    head: &VerifiedHead,
    reader: &mut R,
    target: &PartialFile,
    done: &Done,
    opts: &ApplyOptions,
    progress: &dyn Fn(u64),
) -> Result<()> {
    let m = &head.manifest;
    let file_err = |action| {
        move |source| Error::Io {
            action,
            path: target.paths().partial.clone(),
            source,
        }
    };
    progress(done.offset);
    let mut sink = FileSink {
        target,
        manifest: Digest::of(&head.manifest_bytes),
        since_checkpoint: 0,
        checkpoint_bytes: opts.checkpoint_bytes,
        frames: m.frames.len(),
    };
    apply_frames(
        source,
        m,
        reader,
        done.frames,
        payload_start(&head.header),
        &mut sink,
        progress,
    )?;
    target.file().sync_all().map_err(file_err("syncing"))?;
    let on_disk = hash_file(target.file(), m.target_size).map_err(file_err("re-reading"))?;
    if on_disk != m.target_hash {
        return Err(Error::TargetMismatch {
            expected: m.target_hash,
            actual: on_disk,
        });
    }
    // Bytes appended past the target are not in the hash: the length must match too.
    let len = target
        .file()
        .metadata()
        .map_err(file_err("reading metadata of"))?
        .len();
    if len != m.target_size {
        return Err(Error::TargetLength {
            expected: m.target_size,
            found: len,
        });
    }
    Ok(())
}

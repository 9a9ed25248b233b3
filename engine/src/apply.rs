//! Applying a patch: verify the signature, the old image, each frame's payload and
//! output, and the whole rebuilt image; write through a temporary file; resume an
//! interrupted apply from its last verified frame.
//!
//! Order of checks (each before the next step reads more):
//! 1. header bounds, then the minisign signature over the manifest bytes, against the
//!    trusted keys; only then is the manifest parsed, and its trusted comment matched;
//! 2. the patch's memory and size needs against [`ApplyOptions`];
//! 3. the old image's size and BLAKE3;
//! 4. per frame: the payload's BLAKE3 before decoding, the output's BLAKE3 after;
//! 5. the BLAKE3 of the whole output, then fsync and rename.
//!
//! Memory is bounded by [`Manifest::apply_memory`]: one frame's window, payload,
//! decoded streams and output, whatever the image size.

use std::{
    fs::{self, File},
    io::{self, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use crate::{
    atomic::{self, AtomicFile},
    encode,
    error::{hex, Digest, Error, FormatError, Result, SignatureError},
    format::{FrameKind, Header, Manifest, HEADER_LEN},
    image::{FileSource, Source},
    sign::TrustedKeys,
};

/// Chunk size for copy and zero frames, and for hashing the old image.
pub const COPY_BUFFER: usize = 1 << 20;

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

/// The verified start of a patch.
#[derive(Debug, Clone)]
pub struct VerifiedHead {
    /// The header.
    pub header: Header,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The manifest bytes, exactly as signed.
    pub manifest_bytes: Vec<u8>,
    /// The signature text.
    pub signature: String,
    /// The key that signed it.
    pub key_id: String,
}

/// Reads exactly `buf.len()` bytes, reporting a short read as truncation of `region`.
fn read_region<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    region: &'static str,
    offset: u64,
) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::Format(FormatError::Truncated { region, offset }),
        _ => Error::Stream {
            action: "reading patch",
            source: e,
        },
    })
}

/// Reads the header, manifest and signature without trusting anything: the signature
/// is checked against `keys` before the manifest is parsed.
pub fn read_unverified<R: Read>(r: &mut R) -> Result<(Header, Vec<u8>, String)> {
    let mut hb = [0u8; HEADER_LEN];
    read_region(r, &mut hb, "header", 0)?;
    let header = Header::parse(&hb)?;
    if header.signature_len == 0 {
        return Err(SignatureError::Unsigned.into());
    }
    let mut manifest_bytes = vec![0u8; header.manifest_len as usize];
    read_region(r, &mut manifest_bytes, "manifest", HEADER_LEN as u64)?;
    let mut sig = vec![0u8; header.signature_len as usize];
    read_region(
        r,
        &mut sig,
        "signature",
        HEADER_LEN as u64 + u64::from(header.manifest_len),
    )?;
    let signature = String::from_utf8(sig).map_err(|_| SignatureError::Malformed)?;
    Ok((header, manifest_bytes, signature))
}

/// Reads and verifies the start of a patch: signature first, then the manifest.
pub fn read_head<R: Read>(r: &mut R, keys: &TrustedKeys) -> Result<VerifiedHead> {
    let (header, manifest_bytes, signature) = read_unverified(r)?;
    let comment = keys.verify_canonical(&manifest_bytes, &signature)?;
    let manifest = Manifest::parse(&manifest_bytes)?;
    let expected = manifest.trusted_comment();
    if comment != expected {
        return Err(SignatureError::CommentMismatch {
            expected,
            found: comment,
        }
        .into());
    }
    if header.payload_len != manifest.payload_len {
        return Err(FormatError::Inconsistent(
            "header and manifest disagree on the payload length",
        )
        .into());
    }
    let key_id = signature
        .lines()
        .nth(1)
        .and_then(|l| {
            use ct_codecs::Decoder;
            ct_codecs::Base64::decode_to_vec(l.trim(), None).ok()
        })
        .and_then(|raw| raw.get(2..10).map(crate::sign::format_key_id))
        .unwrap_or_default();
    Ok(VerifiedHead {
        header,
        manifest,
        manifest_bytes,
        signature,
        key_id,
    })
}

/// Refuses a patch that needs more than the options allow.
fn check_limits(m: &Manifest, opts: &ApplyOptions) -> Result<()> {
    if m.target_size > opts.max_target_size {
        return Err(FormatError::LimitExceeded {
            field: "target size",
            value: m.target_size,
            limit: opts.max_target_size,
        }
        .into());
    }
    let needed = m.apply_memory();
    if needed > opts.memory_limit {
        return Err(Error::MemoryLimit {
            needed,
            limit: opts.memory_limit,
        });
    }
    Ok(())
}

fn source_err(source: io::Error) -> Error {
    Error::Stream {
        action: "reading old image",
        source,
    }
}

/// Checks the old image's size and BLAKE3 against the manifest.
pub fn check_source<S: Source>(source: &S, m: &Manifest) -> Result<()> {
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
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut off = 0u64;
    while off < m.source_size {
        let n = (m.source_size - off).min(COPY_BUFFER as u64) as usize;
        source
            .read_exact_at(&mut buf[..n], off)
            .map_err(source_err)?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    let found = *h.finalize().as_bytes();
    if found != m.source_hash {
        return Err(mismatch(Some(found)));
    }
    Ok(())
}

/// Where rebuilt frames go.
trait FrameSink {
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
    /// Like `write`, for bytes known to be zero: a file sink leaves a hole.
    fn write_zeros(&mut self, zeros: &[u8]) -> Result<()> {
        self.write(zeros)
    }
    /// Frame `index` is written and verified; `end` is the target offset after it.
    fn frame_done(&mut self, index: usize, end: u64) -> Result<()>;
}

/// Reusable buffers for decoding frames.
#[derive(Default)]
struct Buffers {
    window: Vec<u8>,
    payload: Vec<u8>,
    out: Vec<u8>,
}

fn output_mismatch(frame: usize, expected: Digest, actual: Digest) -> Error {
    Error::FrameHash {
        frame: frame as u32,
        what: "output",
        expected,
        actual,
    }
}

/// Reads frame `i`'s payload into `buf` and checks its hash before anything decodes it.
fn read_payload<R: Read>(
    patch: &mut R,
    f: &crate::format::Frame,
    i: usize,
    start: u64,
    buf: &mut Vec<u8>,
) -> Result<()> {
    buf.resize(f.payload_len as usize, 0);
    read_region(patch, buf, "frame payload", start + f.payload_offset)?;
    let actual = *blake3::hash(buf).as_bytes();
    if actual != f.payload_hash {
        return Err(Error::FrameHash {
            frame: i as u32,
            what: "payload",
            expected: f.payload_hash,
            actual,
        });
    }
    Ok(())
}

/// Decodes frames `first..` from `patch` (positioned at the payload of frame
/// `first`), verifying each, into `sink`.
fn apply_frames<S: Source, R: Read>(
    source: &S,
    m: &Manifest,
    patch: &mut R,
    first: usize,
    payload_start: u64,
    sink: &mut dyn FrameSink,
    progress: &dyn Fn(u64),
) -> Result<()> {
    let mut b = Buffers::default();
    for (i, f) in m.frames.iter().enumerate().skip(first) {
        let len = f.target_len as usize;
        match f.kind {
            FrameKind::Copy | FrameKind::Zero => {
                let mut h = blake3::Hasher::new();
                b.out.resize(len.min(COPY_BUFFER), 0);
                if f.kind == FrameKind::Zero {
                    b.out.fill(0);
                }
                let mut done = 0u64;
                while done < f.target_len {
                    let n = (f.target_len - done).min(COPY_BUFFER as u64) as usize;
                    let chunk = &mut b.out[..n];
                    if f.kind == FrameKind::Copy {
                        source
                            .read_exact_at(chunk, f.source_offset + done)
                            .map_err(source_err)?;
                    }
                    h.update(chunk);
                    if f.kind == FrameKind::Zero {
                        sink.write_zeros(chunk)?;
                    } else {
                        sink.write(chunk)?;
                    }
                    done += n as u64;
                }
                let actual = *h.finalize().as_bytes();
                if actual != f.output_hash {
                    return Err(output_mismatch(i, f.output_hash, actual));
                }
            }
            FrameKind::Zstd | FrameKind::Bsdiff => {
                read_payload(patch, f, i, payload_start, &mut b.payload)?;
                b.window.resize(f.source_len as usize, 0);
                source
                    .read_exact_at(&mut b.window, f.source_offset)
                    .map_err(source_err)?;
                b.out.resize(len, 0);
                let decoded = match f.kind {
                    FrameKind::Zstd => encode::zstd_decode(&b.window, &b.payload, &mut b.out),
                    _ => encode::bsdiff::decode(&b.window, &b.payload, &mut b.out),
                };
                decoded.map_err(|reason| Error::Decode {
                    frame: i as u32,
                    reason,
                })?;
                let actual = *blake3::hash(&b.out).as_bytes();
                if actual != f.output_hash {
                    return Err(output_mismatch(i, f.output_hash, actual));
                }
                sink.write(&b.out)?;
            }
        }
        sink.frame_done(i, f.target_offset + f.target_len)?;
        progress(f.target_len);
    }
    // Nothing may follow the last payload.
    let mut extra = [0u8; 1];
    match patch.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => {
            let rest = io::copy(patch, &mut io::sink()).unwrap_or(0);
            Err(FormatError::TrailingBytes { extra: rest + 1 }.into())
        }
        Err(e) => Err(Error::Stream {
            action: "reading patch",
            source: e,
        }),
    }
}

/// A sink that hashes what it is given and forwards it to a writer.
struct HashingSink<'a, W: Write> {
    hasher: blake3::Hasher,
    out: &'a mut W,
}

impl<W: Write> FrameSink for HashingSink<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes).map_err(|source| Error::Stream {
            action: "writing output",
            source,
        })
    }
    fn frame_done(&mut self, _: usize, _: u64) -> Result<()> {
        Ok(())
    }
}

fn check_target(m: &Manifest, hasher: &blake3::Hasher) -> Result<()> {
    let actual = *hasher.finalize().as_bytes();
    if actual != m.target_hash {
        return Err(Error::TargetMismatch {
            expected: m.target_hash,
            actual,
        });
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
    let head = read_head(patch, keys)?;
    check_limits(&head.manifest, opts)?;
    check_source(source, &head.manifest)?;
    let mut s = HashingSink {
        hasher: blake3::Hasher::new(),
        out: sink,
    };
    let payload_start = payload_start(&head.header);
    apply_frames(
        source,
        &head.manifest,
        patch,
        0,
        payload_start,
        &mut s,
        progress,
    )?;
    check_target(&head.manifest, &s.hasher)?;
    Ok(head.manifest)
}

fn payload_start(h: &Header) -> u64 {
    HEADER_LEN as u64 + u64::from(h.manifest_len) + u64::from(h.signature_len)
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
    let head = read_head(patch, keys)?;
    check_limits(&head.manifest, opts)?;
    if let Some(source) = source {
        check_source(source, &head.manifest)?;
        let mut null = io::sink();
        let mut s = HashingSink {
            hasher: blake3::Hasher::new(),
            out: &mut null,
        };
        apply_frames(
            source,
            &head.manifest,
            patch,
            0,
            payload_start(&head.header),
            &mut s,
            &|_| {},
        )?;
        check_target(&head.manifest, &s.hasher)?;
        return Ok(head);
    }
    let mut buf = Vec::new();
    let start = payload_start(&head.header);
    for (i, f) in head.manifest.frames.iter().enumerate() {
        if !f.kind.has_payload() {
            continue;
        }
        read_payload(patch, f, i, start, &mut buf)?;
    }
    let mut extra = Vec::new();
    let n = patch
        .read_to_end(&mut extra)
        .map_err(|source| Error::Stream {
            action: "reading patch",
            source,
        })?;
    if n > 0 {
        return Err(FormatError::TrailingBytes { extra: n as u64 }.into());
    }
    Ok(head)
}

/// The resume checkpoint of an apply in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checkpoint {
    manifest: Digest,
    frames: usize,
    offset: u64,
}

impl Checkpoint {
    fn to_text(&self) -> String {
        format!(
            "deltaward-resume 1\nmanifest {}\nframes {}\noffset {}\n",
            hex(&self.manifest),
            self.frames,
            self.offset
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != "deltaward-resume 1" {
            return None;
        }
        let manifest_hex = lines.next()?.strip_prefix("manifest ")?;
        let frames = lines.next()?.strip_prefix("frames ")?.parse().ok()?;
        let offset = lines.next()?.strip_prefix("offset ")?.parse().ok()?;
        let mut manifest = [0u8; 32];
        if manifest_hex.len() != 64 {
            return None;
        }
        for (i, byte) in manifest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(manifest_hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self {
            manifest,
            frames,
            offset,
        })
    }
}

/// Writes frames into the partial file and checkpoints them.
struct FileSink<'a> {
    file: io::BufWriter<&'a File>,
    partial: &'a Path,
    state: &'a Path,
    manifest: Digest,
    hasher: blake3::Hasher,
    since_checkpoint: u64,
    checkpoint_bytes: u64,
    frames: usize,
}

impl FileSink<'_> {
    fn io(&self, action: &'static str) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            action,
            path: self.partial.to_path_buf(),
            source,
        }
    }
}

impl FrameSink for FileSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.since_checkpoint += bytes.len() as u64;
        self.file.write_all(bytes).map_err(self.io("writing"))
    }

    fn write_zeros(&mut self, zeros: &[u8]) -> Result<()> {
        // Zero runs become holes: image files are often mostly empty space.
        self.hasher.update(zeros);
        self.since_checkpoint += zeros.len() as u64;
        self.file.flush().map_err(self.io("writing"))?;
        let mut file: &File = self.file.get_ref();
        file.seek(SeekFrom::Current(zeros.len() as i64))
            .map_err(self.io("seeking"))?;
        Ok(())
    }

    fn frame_done(&mut self, index: usize, end: u64) -> Result<()> {
        let last = index + 1 == self.frames;
        if self.since_checkpoint < self.checkpoint_bytes && !last {
            return Ok(());
        }
        self.file.flush().map_err(self.io("writing"))?;
        // After zero frames the file may end before `end` (a hole not yet given its
        // length): extend it, so the output is whole and the checkpoint resumable.
        self.file
            .get_ref()
            .set_len(end)
            .map_err(self.io("extending"))?;
        self.file
            .get_ref()
            .sync_data()
            .map_err(self.io("syncing"))?;
        let cp = Checkpoint {
            manifest: self.manifest,
            frames: index + 1,
            offset: end,
        };
        atomic::write_file(self.state, cp.to_text().as_bytes())?;
        self.since_checkpoint = 0;
        Ok(())
    }
}

/// Paths of the partial output and its resume state for destination `out`.
pub fn resume_paths(out: &Path) -> (PathBuf, PathBuf) {
    (
        atomic::sibling(out, "deltaward-partial"),
        atomic::sibling(out, "deltaward-resume"),
    )
}

/// Re-verifies the frames a checkpoint claims are done, reading them back from the
/// partial file. Returns the hasher over them, or `None` if they do not verify.
fn verify_done(file: &File, m: &Manifest, cp: &Checkpoint) -> Option<blake3::Hasher> {
    let done = m.frames.get(..cp.frames)?;
    let end = done.last().map_or(0, |f| f.target_offset + f.target_len);
    if end != cp.offset || file.metadata().ok()?.len() < end {
        return None;
    }
    let mut reader = BufReader::with_capacity(COPY_BUFFER, file);
    reader.seek(SeekFrom::Start(0)).ok()?;
    let mut total = blake3::Hasher::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    for f in done {
        let mut h = blake3::Hasher::new();
        let mut left = f.target_len;
        while left > 0 {
            let n = left.min(COPY_BUFFER as u64) as usize;
            reader.read_exact(&mut buf[..n]).ok()?;
            h.update(&buf[..n]);
            total.update(&buf[..n]);
            left -= n as u64;
        }
        if *h.finalize().as_bytes() != f.output_hash {
            return None;
        }
    }
    Some(total)
}

/// Applies the patch file `patch` to the image `old`, writing the new image to `out`
/// atomically. With `opts.resume`, continues a previous interrupted apply of the
/// same patch to the same `out` from its last verified checkpoint.
///
/// On any verification failure nothing is created at `out` and the partial output
/// is removed; on an I/O failure the partial output is kept for `--resume`.
pub fn apply_to_file(
    old: &Path,
    patch: &Path,
    out: &Path,
    keys: &TrustedKeys,
    opts: &ApplyOptions,
    progress: &dyn Fn(u64),
) -> Result<ApplyReport> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::Io {
            action: "writing into",
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "directory does not exist"),
        });
    }
    let patch_file = File::open(patch).map_err(|source| Error::Io {
        action: "opening",
        path: patch.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(1 << 16, patch_file);
    let head = read_head(&mut reader, keys)?;
    let m = &head.manifest;
    check_limits(m, opts)?;
    let source = FileSource::open(old)?;
    check_source(&source, m)?;

    let (partial, state) = resume_paths(out);
    let manifest_id = *blake3::hash(&head.manifest_bytes).as_bytes();
    let previous = if opts.resume {
        fs::read_to_string(&state)
            .ok()
            .and_then(|t| Checkpoint::parse(&t))
    } else {
        None
    };
    let mut target = AtomicFile::resumable(out, partial.clone(), previous.is_some())?;
    let mut resumed = None;
    if let Some(cp) = previous.filter(|cp| cp.manifest == manifest_id) {
        if let Some(hasher) = verify_done(target.file(), m, &cp) {
            resumed = Some((cp, hasher));
        }
    }
    let (first, offset, hasher) = match resumed {
        Some((cp, h)) => (cp.frames, cp.offset, h),
        None => (0, 0, blake3::Hasher::new()),
    };
    let file_err = |action| {
        let p = partial.clone();
        move |source| Error::Io {
            action,
            path: p,
            source,
        }
    };
    target
        .file()
        .set_len(offset)
        .map_err(file_err("truncating"))?;
    target
        .file()
        .seek(SeekFrom::Start(offset))
        .map_err(file_err("seeking"))?;
    // Skip the payloads of frames already done.
    let skip: u64 = m.frames[..first].iter().map(|f| f.payload_len).sum();
    let skipped = io::copy(&mut (&mut reader).take(skip), &mut io::sink()).map_err(|source| {
        Error::Stream {
            action: "reading patch",
            source,
        }
    })?;
    if skipped != skip {
        return Err(FormatError::Truncated {
            region: "frame payload",
            offset: payload_start(&head.header) + skipped,
        }
        .into());
    }
    progress(offset);

    let result = {
        let file = target.file();
        let mut sink = FileSink {
            file: io::BufWriter::with_capacity(1 << 20, &*file),
            partial: &partial,
            state: &state,
            manifest: manifest_id,
            hasher,
            since_checkpoint: 0,
            checkpoint_bytes: opts.checkpoint_bytes,
            frames: m.frames.len(),
        };
        apply_frames(
            &source,
            m,
            &mut reader,
            first,
            payload_start(&head.header),
            &mut sink,
            progress,
        )
        .and_then(|()| {
            sink.file.flush().map_err(|source| Error::Io {
                action: "writing",
                path: partial.clone(),
                source,
            })?;
            check_target(m, &sink.hasher)
        })
    };
    match result {
        Ok(()) => {
            target.commit()?;
            let _ = fs::remove_file(&state);
            Ok(ApplyReport {
                manifest: head.manifest,
                key_id: head.key_id,
                resumed_frames: first as u32,
            })
        }
        Err(e) => {
            // A bad patch leaves nothing worth resuming; an I/O failure, or a patch
            // that ends inside the payloads (a download cut short), does.
            let resumable = matches!(
                e,
                Error::Io { .. }
                    | Error::Stream { .. }
                    | Error::Format(FormatError::Truncated {
                        region: "frame payload",
                        ..
                    })
            );
            if !resumable {
                target.discard();
                let _ = fs::remove_file(&state);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_garbage() {
        let cp = Checkpoint {
            manifest: [0xab; 32],
            frames: 12,
            offset: 1 << 33,
        };
        assert_eq!(Checkpoint::parse(&cp.to_text()), Some(cp));
        assert_eq!(Checkpoint::parse("deltaward-resume 1\nmanifest zz\n"), None);
        assert_eq!(Checkpoint::parse(""), None);
    }
}

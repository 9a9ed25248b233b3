//! The decode loop: each frame's payload checked before it is decoded, each output
//! checked before it reaches the sink, and nothing allowed after the last payload.

use std::io::{self, Read};

use crate::{
    codec,
    container::read_region,
    error::{Error, Hashed, Result},
    format::{Digest, FormatError, Frame, FrameKind, Manifest, Region, COPY_CHUNK},
    image::Source,
    transform::TransformError,
};

use super::source_err;

/// Where rebuilt frames go.
pub(super) trait FrameSink {
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
    /// Like `write`, for bytes known to be zero: a file sink leaves a hole.
    fn write_zeros(&mut self, zeros: &[u8]) -> Result<()> {
        self.write(zeros)
    }
    /// Frame `index` is written and verified; `end` is the target offset after it.
    fn frame_done(&mut self, index: usize, end: u64) -> Result<()>;
}

fn output_mismatch(frame: usize, expected: Digest, actual: Digest) -> Error {
    Error::FrameHash {
        frame: frame as u32,
        what: Hashed::Output,
        expected,
        actual,
    }
}

/// Reads frame `i`'s payload into `buf` (exactly its length) and checks its hash
/// before anything decodes it.
fn read_payload<R: Read>(
    patch: &mut R,
    f: &Frame,
    i: usize,
    start: u64,
    buf: &mut [u8],
) -> Result<()> {
    read_region(patch, buf, Region::FramePayload, start + f.payload_offset)?;
    let actual = Digest::of(buf);
    if actual != f.payload_hash {
        return Err(Error::FrameHash {
            frame: i as u32,
            what: Hashed::Payload,
            expected: f.payload_hash,
            actual,
        });
    }
    Ok(())
}

/// The working memory of an apply: one allocation of [`Manifest::working_memory`]
/// bytes, cut per frame into (for delta frames of a manifest with a source
/// transform) the region scratch, window, payload, output and decoder scratch. Peak use
/// is therefore what the manifest declares and the memory limit allowed, whatever
/// the order of large and small frames.
pub(super) struct Arena(Backing);

/// Where the arena's bytes live. Both are zeroed and lazily backed: pages count
/// only once touched.
enum Backing {
    /// Anonymous memory advised for transparent huge pages, used from its first
    /// 2 MiB boundary: one fault per 2 MiB instead of one per 4 KiB page.
    Mapped {
        map: memmap2::MmapMut,
        start: usize,
        len: usize,
    },
    Heap(Vec<u8>),
}

/// The size of a transparent huge page on x86-64 and (with 4 KiB pages) AArch64.
const HUGE_PAGE: usize = 2 << 20;

impl Arena {
    pub(super) fn for_manifest(m: &Manifest) -> Self {
        Self::with_len(m.working_memory() as usize)
    }

    fn with_len(len: usize) -> Self {
        Self(huge_pages(len).unwrap_or_else(|| Backing::Heap(vec![0u8; len])))
    }

    fn bytes(&mut self) -> &mut [u8] {
        match &mut self.0 {
            Backing::Mapped { map, start, len } => {
                map.get_mut(*start..*start + *len).unwrap_or_default()
            }
            Backing::Heap(v) => v,
        }
    }

    /// Cuts the arena into consecutive slices of the given lengths. The manifest
    /// bounds every frame's needs by the arena's size, so this cannot fail for a
    /// parsed manifest; it still refuses rather than panics.
    fn split<const N: usize>(&mut self, lens: [u64; N]) -> Result<[&mut [u8]; N]> {
        let mut rest: &mut [u8] = self.bytes();
        let mut out: [&mut [u8]; N] = std::array::from_fn(|_| <&mut [u8]>::default());
        for (slot, len) in out.iter_mut().zip(lens) {
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= rest.len())
                .ok_or(Error::Format(FormatError::Inconsistent(
                    "a frame needs more memory than the manifest declares",
                )))?;
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
            *slot = head;
            rest = tail;
        }
        Ok(out)
    }
}

/// An arena of `len` bytes in anonymous memory advised for huge pages, where the
/// system has them (Linux) and the arena spans at least one; else `None`. Where the
/// kernel has no huge page free, or transparent huge pages are off, the advice
/// changes nothing and the pages are the usual 4 KiB ones.
fn huge_pages(len: usize) -> Option<Backing> {
    if !cfg!(target_os = "linux") || len < HUGE_PAGE {
        return None;
    }
    let map = memmap2::MmapMut::map_anon(len.checked_add(HUGE_PAGE)?).ok()?;
    let start = map.as_ptr().align_offset(HUGE_PAGE);
    if start >= HUGE_PAGE {
        return None;
    }
    #[cfg(target_os = "linux")]
    map.advise(memmap2::Advice::HugePage).ok()?;
    Some(Backing::Mapped { map, start, len })
}

/// Decodes frames `first..` from `patch` (positioned at the payload of frame
/// `first`), verifying each, into `sink`.
pub(super) fn apply_frames<S: Source, R: Read>(
    source: &S,
    m: &Manifest,
    patch: &mut R,
    first: usize,
    payload_start: u64,
    sink: &mut dyn FrameSink,
    progress: &dyn Fn(u64),
) -> Result<()> {
    let mut arena = Arena::for_manifest(m);
    let mut zero_hashes: Vec<(u64, Digest)> = Vec::new();
    // The transform region that the arena's start holds rewritten, if any.
    let mut cached_region = None;
    let region_len = m.transform_scratch();
    for (i, f) in m.frames.iter().enumerate().skip(first) {
        if !f.kind.has_payload() {
            cached_region = None;
        }
        match f.kind {
            FrameKind::Zero => {
                let [zeros] = arena.split([f.target_len.min(COPY_CHUNK)])?;
                zeros.fill(0);
                // Zero frames are equal pieces of runs: hash each length once.
                let actual = match zero_hashes.iter().find(|(len, _)| *len == f.target_len) {
                    Some((_, h)) => *h,
                    None => {
                        let mut h = blake3::Hasher::new();
                        crate::sparse::feed_zeros(&mut h, f.target_len, zeros);
                        let d = Digest::from(h.finalize());
                        zero_hashes.push((f.target_len, d));
                        d
                    }
                };
                if actual != f.output_hash {
                    return Err(output_mismatch(i, f.output_hash, actual));
                }
                let mut done = 0u64;
                while done < f.target_len {
                    let n = (f.target_len - done).min(COPY_CHUNK) as usize;
                    sink.write_zeros(&zeros[..n])?;
                    done += n as u64;
                }
            }
            FrameKind::Copy => {
                let [chunk_buf] = arena.split([f.target_len.min(COPY_CHUNK)])?;
                copy_through(source, f, i, chunk_buf, sink)?;
            }
            FrameKind::Zstd | FrameKind::Bsdiff | FrameKind::BsdiffRuns => {
                let scratch = f.apply_memory() - f.source_len - f.payload_len - f.target_len;
                // The region scratch comes first, at the same place for every
                // delta frame, so that a region rewritten there serves the next
                // window too.
                let region = Manifest::frame_memory(f, region_len) - f.apply_memory();
                let [region, window, payload, out, scratch] =
                    arena.split([region, f.source_len, f.payload_len, f.target_len, scratch])?;
                read_payload(patch, f, i, payload_start, payload)?;
                source
                    .read_exact_at(window, f.source_offset)
                    .map_err(source_err)?;
                if let Some(t) = &m.transform {
                    t.apply(
                        window,
                        f.source_offset,
                        region,
                        &mut cached_region,
                        |buf, at| source.read_exact_at(buf, at),
                    )
                    .map_err(|e| match e {
                        TransformError::Region(reason) => Error::Decode {
                            frame: i as u32,
                            reason,
                        },
                        TransformError::Read(e) => source_err(e),
                    })?;
                }
                codec::decode(f.kind, window, payload, out, scratch).map_err(|reason| {
                    Error::Decode {
                        frame: i as u32,
                        reason,
                    }
                })?;
                let actual = Digest::of(out);
                if actual != f.output_hash {
                    return Err(output_mismatch(i, f.output_hash, actual));
                }
                sink.write(out)?;
            }
        }
        sink.frame_done(i, f.target_offset + f.target_len)?;
        progress(f.target_len);
    }
    expect_end(patch)
}

/// Copy frame `i` read from `source` in chunks of `buf`, written to `sink` and hashed.
fn copy_through<S: Source>(
    source: &S,
    f: &Frame,
    i: usize,
    buf: &mut [u8],
    sink: &mut dyn FrameSink,
) -> Result<()> {
    let mut h = blake3::Hasher::new();
    let mut done = 0u64;
    while done < f.target_len {
        let n = (f.target_len - done).min(buf.len() as u64) as usize;
        let chunk = &mut buf[..n];
        source
            .read_exact_at(chunk, f.source_offset + done)
            .map_err(source_err)?;
        sink.write(chunk)?;
        h.update_rayon(chunk);
        done += n as u64;
    }
    let actual = Digest::from(h.finalize());
    if actual != f.output_hash {
        return Err(output_mismatch(i, f.output_hash, actual));
    }
    Ok(())
}

/// Reads every payload and checks its hash, decoding nothing (verify without an old
/// image), then requires the end of the patch.
pub(super) fn check_payloads<R: Read>(
    patch: &mut R,
    m: &Manifest,
    payload_start: u64,
) -> Result<()> {
    let mut arena = Arena::for_manifest(m);
    for (i, f) in m.frames.iter().enumerate() {
        if f.kind.has_payload() {
            let [payload] = arena.split([f.payload_len])?;
            read_payload(patch, f, i, payload_start, payload)?;
        }
    }
    expect_end(patch)
}

/// Most trailing bytes counted for the error message: the count is "at least".
const TRAILING_COUNT_CAP: u64 = 1 << 20;

/// Requires that nothing follows the last payload. Trailing bytes are unsigned and
/// may be endless: they are counted up to a bound, never stored.
fn expect_end<R: Read>(patch: &mut R) -> Result<()> {
    let stream_err = |source| Error::Stream {
        action: "reading patch",
        source,
    };
    let extra =
        io::copy(&mut patch.take(TRAILING_COUNT_CAP), &mut io::sink()).map_err(stream_err)?;
    if extra > 0 {
        return Err(FormatError::TrailingBytes { extra }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arenas_are_zeroed_whole_and_keep_what_is_written() {
        for len in [0, 4096, HUGE_PAGE - 1, HUGE_PAGE, 3 * HUGE_PAGE + 12_345] {
            let mut a = Arena::with_len(len);
            let bytes = a.bytes();
            assert_eq!(bytes.len(), len);
            assert!(bytes.iter().all(|&b| b == 0));
            bytes.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
            let [x, y] = a
                .split([len as u64 / 3, len as u64 - len as u64 / 3])
                .expect("the arena holds both");
            assert!(x
                .iter()
                .chain(y.iter())
                .enumerate()
                .all(|(i, &b)| b == i as u8));
            assert!(a.split([len as u64 + 1]).is_err());
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_arenas_start_on_a_huge_page() {
        let mut a = Arena::with_len(HUGE_PAGE + 1);
        assert!(matches!(a.0, Backing::Mapped { .. }));
        assert_eq!(a.bytes().as_ptr().align_offset(HUGE_PAGE), 0);
        assert!(matches!(Arena::with_len(HUGE_PAGE - 1).0, Backing::Heap(_)));
    }
}

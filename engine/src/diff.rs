//! Building a patch: hash and index the images, plan the frames, encode the delta
//! frames in parallel (keeping the smaller coder's result for each) and assemble
//! the manifest.

use std::time::Instant;

use rayon::prelude::*;

use crate::{
    codec::{bsdiff, zstd, ZstdSettings},
    container::Patch,
    error::{Error, Result},
    format::{self, empty_hash, Digest, Frame, FrameKind, Manifest},
    image::Image,
    index::{AnchorIndex, BlockIndex},
    level::{BuildOptions, LevelParams, NEW_DATA_CEILING},
    plan::{classify, plan, select_window, Placement, PlanKind, Planned},
    sparse::{zeros_hash, Input},
    transform::{self, Overlay},
};

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
        build(
            Input::new(old, &[]),
            None,
            Input::new(new, &[]),
            opts,
            progress,
        )
    }

    /// Diffs two image files, skipping their holes (see [`Image::holes`]): the
    /// patch is the one [`build`](Self::build) makes from the same bytes, but holes
    /// cost neither reads nor memory.
    pub fn build_images(
        old: &Image,
        new: &Image,
        opts: &BuildOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Self> {
        build(
            Input::new(old, old.holes()),
            Some(old),
            Input::new(new, new.holes()),
            opts,
            progress,
        )
    }
}

/// Everything one encoded delta frame contributes.
struct Encoded {
    kind: FrameKind,
    source_offset: u64,
    source_len: u64,
    payload: Vec<u8>,
}

fn encode_delta<'v>(
    old: &'v View<'_>,
    new: &[u8],
    anchors: &AnchorIndex,
    p: &Planned,
    params: &LevelParams,
    frame: u32,
    scratch: &mut Scratch<'v>,
) -> Result<Encoded> {
    let started = Instant::now();
    let (t0, t1) = (p.start as usize, (p.start + p.len) as usize);
    let data = &new[t0..t1];
    let placed = select_window(anchors, old.len(), new, t0, t1, params.max_window);
    let order = CoderOrder::of(params, data, &placed);
    let (ws, wl) = (placed.start, placed.len);
    let cow = old.window(ws..ws + wl);
    let window: &[u8] = &cow;
    let settings = ZstdSettings {
        level: order.zstd_level,
        long_distance: params.long_distance,
    };
    let enc_err = |reason| Error::Encode { frame, reason };
    let coded = |kind, payload| Encoded {
        kind,
        source_offset: ws,
        source_len: wl,
        payload,
    };
    let zstd_coder = |scratch: &mut Scratch<'v>| -> Result<Encoded> {
        // A window borrowed from the image can be the prefix of a kept context; a
        // transformed copy lives only as long as this frame.
        match cow {
            std::borrow::Cow::Borrowed(w) => {
                let cctx = scratch.zstd.get_or_insert_with(zstd_safe::CCtx::create);
                zstd::encode_in(cctx, w, data, settings)
            }
            std::borrow::Cow::Owned(ref w) => zstd::encode(w, data, settings),
        }
        .map(|p| coded(FrameKind::Zstd, p))
        .map_err(enc_err)
    };
    let bsdiff_coder = |scratch: &mut Scratch<'v>| -> Result<Option<Encoded>> {
        if !params.bsdiff || window.is_empty() {
            return Ok(None);
        }
        let bs_settings = ZstdSettings {
            level: params.bsdiff_zstd_level,
            long_distance: false,
        };
        let b = bsdiff::encode_with(
            &mut scratch.bsdiff,
            window,
            data,
            params.match_finder,
            bs_settings,
        )
        .map_err(enc_err)?;
        Ok(b.map(|b| coded(b.kind, b.bytes)))
    };
    // bsdiff first where it usually wins (changed executables and file systems),
    // zstd with the window as prefix where bsdiff is off or did poorly (new
    // content); at `fast`, and at the default level on frames that look
    // incompressible (see `CoderOrder`), zstd first (it is cheaper) and bsdiff
    // where zstd did poorly (relocated code). The smaller payload is kept.
    let poor = |e: &Encoded| {
        let len = e.payload.len() as u64;
        match order.retry {
            Retry::Never => false,
            Retry::Poor { ceiling } => {
                len.saturating_mul(params.retry_ratio) >= data.len() as u64
                    && ceiling.is_none_or(|c| len.saturating_mul(c) <= data.len() as u64)
            }
        }
    };
    // The first coder's payload unless the second's is strictly smaller.
    let smaller = |first: Encoded, second: Encoded| {
        if second.payload.len() < first.payload.len() {
            second
        } else {
            first
        }
    };
    let mut best = if order.zstd_first {
        let z = zstd_coder(scratch)?;
        if !poor(&z) {
            z
        } else {
            match bsdiff_coder(scratch)? {
                Some(b) => smaller(z, b),
                None => z,
            }
        }
    } else {
        match bsdiff_coder(scratch)? {
            Some(b) if !poor(&b) => b,
            Some(b) => smaller(b, zstd_coder(scratch)?),
            None => zstd_coder(scratch)?,
        }
    };
    if best.source_len == 0 {
        best.source_offset = 0;
    }
    tracing::trace!(
        frame,
        len = data.len(),
        window = wl,
        anchors = placed.anchors,
        inside = placed.inside,
        kind = ?best.kind,
        dense = order.dense,
        payload = best.payload.len(),
        ms = started.elapsed().as_millis() as u64,
        "frame encoded"
    );
    Ok(best)
}

/// How one frame's coders run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CoderOrder {
    /// Whether the frame's bytes look incompressible, and the level takes note.
    dense: bool,
    zstd_first: bool,
    zstd_level: i32,
    retry: Retry,
}

/// When a frame's second coder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Never: the first coder's payload is kept.
    Never,
    /// Where the first coder's payload is at least 1/`retry_ratio` of the frame
    /// and, where set, at most 1/`ceiling` of it.
    Poor { ceiling: Option<u64> },
}

impl CoderOrder {
    /// The level's order, or for bytes that look incompressible where the level
    /// says so, zstd first at most at its `dense_zstd_level`, and bsdiff only where
    /// zstd left between 1/ratio and a quarter of the frame: approximate matches,
    /// which bsdiff is for, do not occur in compressed data, and above a quarter
    /// zstd found little of the frame in the window. Where the level runs zstd
    /// first, frames that [`looks_moved`] go to bsdiff first, and never to zstd:
    /// on such frames zstd was smaller on 3 of kernel-tar's 52 in the probe that
    /// chose them, and the runs where bsdiff left a sixteenth or more (`fast`'s
    /// retry band) changed kernel-tar's patch by 112 bytes and qemu-x86's and
    /// qemu-arm64's not at all, for 20 % of qemu-arm64's wall time (BENCHMARKS.md,
    /// seventeenth round).
    fn of(params: &LevelParams, data: &[u8], placed: &Placement) -> Self {
        match params.dense_zstd_level {
            Some(level) if looks_incompressible(data) => Self {
                dense: true,
                zstd_first: true,
                zstd_level: params.zstd_level.min(level),
                retry: Retry::Poor {
                    ceiling: Some(NEW_DATA_CEILING),
                },
            },
            _ if params.zstd_first && params.bsdiff && looks_moved(placed) => Self {
                dense: false,
                zstd_first: false,
                zstd_level: params.zstd_level,
                retry: Retry::Never,
            },
            _ => Self {
                dense: false,
                zstd_first: params.zstd_first,
                zstd_level: params.zstd_level,
                retry: Retry::Poor {
                    ceiling: params.retry_ceiling,
                },
            },
        }
    }
}

/// Whether the window holds more than a sixteenth and less than half of the
/// frame's anchors (of at least [`MOVED_MIN_ANCHORS`]): the frame's bytes are in the
/// window, but so changed between its anchors that most of their 64-byte strings
/// are new (relocated code, renumbered tables). A probe that ran both coders on
/// every frame at `fast`: zstd left at least 1/16 of the frame on 38 of kernel-tar's
/// 52 such frames, bsdiff was smaller on 49 and left less than 1/16 on 40 (which
/// then need no zstd run); kernel-ext4 34, 46 and 36 of 47, qemu-arm64 5, 5 and 4
/// of 5. On the other frames zstd left that much on 5 of kernel-tar's 78 and 8 of
/// kernel-ext4's 68. Up to 6/10 instead of a half: kernel-tar's patch 7 % smaller
/// for 6 % more CPU time; 4/10: larger and slower.
fn looks_moved(placed: &Placement) -> bool {
    placed.anchors >= MOVED_MIN_ANCHORS
        && placed.inside * 16 > placed.anchors
        && placed.inside * 2 < placed.anchors
}

/// Fewer anchors than this (a frame of about 16 KiB) say too little to go by.
const MOVED_MIN_ANCHORS: u64 = 64;

/// Whether `data`'s byte frequencies are close to uniform, as in compressed or
/// encrypted data: the chi-square statistic of the byte histogram of a quarter of
/// it (16 KiB of every 64 KiB) against the uniform one is at most an eighth of the
/// bytes counted, which is a relative entropy of about 0.09 bits per byte (an
/// order-0 entropy above about 7.9 bits per byte).
/// Integer arithmetic, so that every machine chooses alike. Frames shorter than
/// 64 KiB are never taken as incompressible: their histograms say too little.
fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < 64 << 10 {
        return false;
    }
    // The first 16 KiB of every 64 KiB: the whole histogram cost 3 % of a
    // default-level diff of kernel-tar. Four tables, so that runs of one byte do
    // not stall on one counter.
    let mut counts = [[0u32; 256]; 4];
    let mut n = 0u128;
    for piece in data.chunks(64 << 10) {
        let sample = &piece[..piece.len().min(16 << 10)];
        n += sample.len() as u128;
        let mut quads = sample.chunks_exact(4);
        for q in &mut quads {
            for (table, &b) in counts.iter_mut().zip(q) {
                table[b as usize] += 1;
            }
        }
        for &b in quads.remainder() {
            counts[0][b as usize] += 1;
        }
    }
    // chi2 = sum((c - n/256)^2 / (n/256)) = sum((256c - n)^2) / (256 n) <= n / 8
    let sum: u128 = (0..256)
        .map(|v| {
            let c: u128 = counts.iter().map(|t| u128::from(t[v])).sum();
            let d = (256 * c).abs_diff(n);
            d * d
        })
        .sum();
    sum <= 32 * n * n
}

/// The old image as delta frames see it: plain, or through a source transform
/// (a private map of the old file with the regions rewritten, or the rewritten
/// regions beside the plain bytes when the image is not a mapped file).
enum View<'a> {
    Plain(&'a [u8]),
    Mapped(memmap2::MmapMut),
    Overlay(&'a [u8], Box<Overlay>),
}

impl View<'_> {
    fn len(&self) -> u64 {
        match self {
            Self::Plain(b) | Self::Overlay(b, _) => b.len() as u64,
            Self::Mapped(m) => m.len() as u64,
        }
    }

    fn window(&self, r: std::ops::Range<u64>) -> std::borrow::Cow<'_, [u8]> {
        let (start, end) = (r.start as usize, r.end as usize);
        match self {
            Self::Plain(b) => b[start..end].into(),
            Self::Mapped(m) => m[start..end].into(),
            Self::Overlay(b, o) => o.view(b, r),
        }
    }
}

/// Runs `f` and logs its wall time at debug level (`deltaward -vv diff`), so that a
/// build farm can see which phase a diff spends its time in, and how each scales
/// with `--threads`.
pub(crate) fn timed<T>(phase: &'static str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let r = f();
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "diff phase: {phase}"
    );
    r
}

/// Builds the manifest and payloads for `old` -> `new`.
fn build(
    old_in: Input<'_>,
    old_image: Option<&Image>,
    new_in: Input<'_>,
    opts: &BuildOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Patch> {
    let bs = opts.block_size as usize;
    if bs == 0 || !bs.is_power_of_two() || !(512..=1 << 20).contains(&bs) {
        return Err(Error::InvalidOption {
            name: "block size",
            reason: "must be a power of two from 512 to 1048576",
        });
    }
    let (old, new) = (old_in.data, new_in.data);
    // The images' hashes are needed only in the manifest: they run beside every
    // other phase, and fill the cores where those leave one idle (a phase's end,
    // the last frames) rather than holding up the first frame.
    let ((source_hash, target_hash), framed) = rayon::join(
        || timed("hash", || rayon::join(|| old_in.hash(), || new_in.hash())),
        || frames(old_in, old_image, new_in, opts, progress),
    );
    let Framed {
        frames,
        payloads,
        payload_len,
        transform,
        stored_transform,
    } = framed?;
    let manifest = Manifest {
        source_size: old.len() as u64,
        source_hash,
        target_size: new.len() as u64,
        target_hash,
        block_size: opts.block_size,
        max_window: frames
            .iter()
            .filter(|f| f.kind.has_payload())
            .map(|f| f.source_len)
            .max()
            .unwrap_or(0),
        max_frame_len: frames.iter().map(|f| f.target_len).max().unwrap_or(0),
        payload_len,
        tool: format!("deltaward {}", env!("CARGO_PKG_VERSION")),
        options: opts.describe(),
        frames,
        transform,
    };
    Ok(Patch {
        manifest,
        payloads,
        stored_transform,
    })
}

/// What [`frames`] makes: the frames of the manifest, their payloads, the
/// transform and its stored form.
struct Framed {
    frames: Vec<Frame>,
    payloads: Vec<Vec<u8>>,
    payload_len: u64,
    transform: Option<format::SourceTransform>,
    stored_transform: Option<Vec<u8>>,
}

/// Everything of [`build`] but the images' hashes: learning, indexing, planning,
/// rewriting the old image and encoding the frames.
fn frames(
    old_in: Input<'_>,
    old_image: Option<&Image>,
    new_in: Input<'_>,
    opts: &BuildOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Framed> {
    let params = opts.params();
    let bs = opts.block_size as usize;
    let (old, new) = (old_in.data, new_in.data);
    let started = Instant::now();
    let (learned, (blocks, mut anchors)) = rayon::join(
        || {
            timed("learn transform", || {
                opts.transform
                    .then(|| transform::learn(old_in, new_in, params.learning))
                    .flatten()
            })
        },
        || {
            let (index, anchors) = rayon::join(
                || timed("block index", || BlockIndex::build(old_in, bs)),
                || timed("anchor index", || AnchorIndex::build(old_in)),
            );
            let blocks = timed("classify", || classify(old_in, new_in, bs, &index));
            (blocks, anchors)
        },
    );
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "diff phase: learn, index and classify (in parallel)"
    );
    let planned = timed("plan", || {
        plan(&blocks, bs as u64, new.len() as u64, params.frame_len)
    });
    drop(blocks);

    // A transform past the format's limits (or one that would not parse back for
    // any other reason) is left out rather than signed into an unreadable patch.
    let learned = timed("check transform", || {
        learned.filter(|t| t.storable(old.len() as u64))
    });
    let (view, transform) = timed("rewrite old image", || match learned {
        None => (View::Plain(old), None),
        Some(t) => match old_image.and_then(Image::private_map) {
            Some(mut map) => match transform::rewrite_copy(&mut map, old, t) {
                Some(t) => (View::Mapped(map), Some(t)),
                None => (View::Plain(old), None),
            },
            None => match transform::overlay(old, t) {
                Some(o) => {
                    let t = o.transform.clone();
                    (View::Overlay(old, Box::new(o)), Some(t))
                }
                None => (View::Plain(old), None),
            },
        },
    });
    // Programs whose addresses the transform moved: their frames find the new
    // bytes in the rewritten code (not so the modules' BTF, whose rewritten
    // anchors cost kernel-ext4 0.2 % and shifted-ext4 0.4 % more bytes).
    if let Some(t) = &transform {
        let programs = t.regions.iter().filter(|r| r.1.space().is_some());
        timed("anchor index of rewritten programs", || {
            anchors.add_rewritten(old_in, programs.map(|r| r.0.clone()), &|r| view.window(r));
        });
    }
    // The transform's stored form (at zstd 19, at `best`: 45 to 80 ms on the kernel
    // pairs) is made beside the frames rather than when the manifest is signed.
    let (results, stored_transform) = rayon::join(
        || {
            timed("encode", || {
                encode_all(&view, new, &anchors, &planned, opts, progress)
            })
        },
        // Empty only if zstd failed (out of memory): then signing tries again.
        || {
            transform
                .as_ref()
                .map(|t| t.to_bytes_at(params.transform_zstd_level))
                .filter(|s| !s.is_empty())
        },
    );
    let results = results?;
    // Unmapping the rewritten view (about 20 ms for 400 MiB, on one thread) and
    // freeing the anchors go beside the output hashes rather than before them.
    let ((), output_hashes) = rayon::join(
        || drop((view, anchors)),
        || timed("output hashes", || output_hashes(new, &planned)),
    );
    let (frames, payloads, payload_len) =
        timed("assemble", || assemble(&planned, results, output_hashes));
    Ok(Framed {
        frames,
        payloads,
        payload_len,
        transform,
        stored_transform,
    })
}

/// Encodes the delta frames in parallel, at most as many at once as the memory
/// limit allows; `None` for copy and zero frames.
///
/// A frame waits for a permit rather than for a batch: with batches, every batch
/// waited for its slowest frame, and on 16 cores the diff ran at 3 frames' pace.
fn encode_all(
    old: &View<'_>,
    new: &[u8],
    anchors: &AnchorIndex,
    planned: &[Planned],
    opts: &BuildOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Option<Encoded>>> {
    let params = opts.params();
    // A transformed window is a copy of the window.
    let per_frame = params.encode_memory()
        + match old {
            View::Overlay(..) => params.frame_window(),
            View::Plain(_) | View::Mapped(_) => 0,
        };
    let permits = Permits::new((opts.memory_limit / per_frame.max(1)).max(1));
    planned
        .par_iter()
        .with_max_len(1)
        .enumerate()
        .map(|(k, p)| {
            let r = match p.kind {
                PlanKind::Delta => {
                    let mut permit = permits.acquire();
                    let scratch = &mut permit.scratch;
                    let r = encode_delta(old, new, anchors, p, &params, k as u32, scratch);
                    if !params.keep_zstd_contexts() {
                        scratch.release_zstd();
                    }
                    r.map(Some)
                }
                PlanKind::Copy(_) | PlanKind::Zero => Ok(None),
            };
            progress(p.len);
            r
        })
        .collect::<Vec<_>>()
        // The first failing frame in frame order, whatever the scheduling.
        .into_iter()
        .collect()
}

/// A counting semaphore for the frames being encoded, each permit with the buffers
/// of a frame encoder (so there are never more of those than permits). Only frame
/// encoders take permits, and they start no rayon work of their own, so a thread
/// waiting for a permit never holds one.
struct Permits<'v> {
    state: std::sync::Mutex<PermitState<'v>>,
    freed: std::sync::Condvar,
}

struct PermitState<'v> {
    free: u64,
    scratch: Vec<Scratch<'v>>,
}

/// What a frame encoder keeps from one frame to the next: the bsdiff coder's
/// buffers, and a zstd context whose prefixes borrow from the old image (`'v`).
#[derive(Default)]
struct Scratch<'v> {
    bsdiff: bsdiff::Scratch,
    zstd: Option<zstd_safe::CCtx<'v>>,
}

impl Scratch<'_> {
    /// Frees the zstd contexts (the bsdiff coder's and the delta coder's).
    fn release_zstd(&mut self) {
        self.zstd = None;
        self.bsdiff.release_zstd();
    }
}

/// One permit and its buffers, given back when dropped.
struct Permit<'p, 'v> {
    permits: &'p Permits<'v>,
    scratch: Scratch<'v>,
}

impl<'v> Permits<'v> {
    fn new(n: u64) -> Self {
        Self {
            state: std::sync::Mutex::new(PermitState {
                free: n,
                scratch: Vec::new(),
            }),
            freed: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PermitState<'v>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn acquire(&self) -> Permit<'_, 'v> {
        let mut state = self.lock();
        while state.free == 0 {
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.free -= 1;
        let scratch = state.scratch.pop().unwrap_or_default();
        Permit {
            permits: self,
            scratch,
        }
    }
}

impl Drop for Permit<'_, '_> {
    fn drop(&mut self) {
        let mut state = self.permits.lock();
        state.free += 1;
        state.scratch.push(std::mem::take(&mut self.scratch));
        self.permits.freed.notify_one();
    }
}

/// BLAKE3 of every planned frame's output; zero frames of one length share theirs
/// (runs are cut into equal pieces), hashed from zeros rather than the image.
fn output_hashes(new: &[u8], planned: &[Planned]) -> Vec<Digest> {
    let mut zero_hashes = std::collections::HashMap::new();
    for p in planned.iter().filter(|p| p.kind == PlanKind::Zero) {
        zero_hashes
            .entry(p.len)
            .or_insert_with(|| zeros_hash(p.len));
    }
    planned
        .par_iter()
        .map(
            |p| match zero_hashes.get(&p.len).filter(|_| p.kind == PlanKind::Zero) {
                Some(h) => *h,
                None => Digest::of(&new[p.start as usize..(p.start + p.len) as usize]),
            },
        )
        .collect()
}

/// The manifest's frames and the payloads in order, and the payloads' total length.
fn assemble(
    planned: &[Planned],
    results: Vec<Option<Encoded>>,
    output_hashes: Vec<Digest>,
) -> (Vec<Frame>, Vec<Vec<u8>>, u64) {
    let mut frames = Vec::with_capacity(planned.len());
    let mut payloads = Vec::new();
    let mut payload_off = 0u64;
    for ((p, enc), output_hash) in planned.iter().zip(results).zip(output_hashes) {
        let mut f = Frame {
            kind: FrameKind::Zero,
            target_offset: p.start,
            target_len: p.len,
            source_offset: 0,
            source_len: 0,
            payload_offset: 0,
            payload_len: 0,
            payload_hash: empty_hash(),
            output_hash,
        };
        match (p.kind, enc) {
            (PlanKind::Copy(src), _) => {
                f.kind = FrameKind::Copy;
                f.source_offset = src;
                f.source_len = p.len;
            }
            (PlanKind::Zero, _) => {}
            (PlanKind::Delta, Some(e)) => {
                f.kind = e.kind;
                f.source_offset = e.source_offset;
                f.source_len = e.source_len;
                f.payload_offset = payload_off;
                f.payload_len = e.payload.len() as u64;
                f.payload_hash = Digest::of(&e.payload);
                payload_off += f.payload_len;
                payloads.push(e.payload);
            }
            (PlanKind::Delta, None) => unreachable!("encode_all encodes every delta frame"),
        }
        frames.push(f);
    }
    (frames, payloads, payload_off)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::level::Level;
    use deltaward_testkit::{noise, table};

    /// Random bytes with two in five of them zero, as in machine code.
    fn code_like(n: usize, seed: u64) -> Vec<u8> {
        noise(n, seed)
            .into_iter()
            .map(|b| if b < 100 { 0 } else { b })
            .collect()
    }

    #[test]
    fn compressed_bytes_look_incompressible_and_others_do_not() {
        let random = noise(1 << 20, 5);
        assert!(looks_incompressible(&random));
        // zstd's own output: what a compressed kernel or firmware blob holds.
        let settings = ZstdSettings {
            level: 3,
            long_distance: false,
        };
        let compressed = zstd::encode(&[], &code_like(1 << 20, 3), settings).expect("compress");
        assert!(compressed.len() >= 64 << 10, "{}", compressed.len());
        assert!(looks_incompressible(&compressed));
        // Too short to judge.
        assert!(!looks_incompressible(&random[..(64 << 10) - 1]));
        assert!(looks_incompressible(&random[..64 << 10]));
        // Structured data, and random data with one byte value in eight overweight.
        assert!(!looks_incompressible(&code_like(1 << 20, 4)));
        assert!(!looks_incompressible(
            b"kernel module ".repeat(1 << 16).as_slice()
        ));
        assert!(!looks_incompressible(&table(1 << 18, 3)));
        assert!(!looks_incompressible(&vec![0u8; 1 << 20]));
        let mut skewed = random.clone();
        skewed.iter_mut().step_by(8).for_each(|b| *b = 0);
        assert!(!looks_incompressible(&skewed));
    }

    #[test]
    fn incompressible_frames_go_to_zstd_first_where_the_level_says_so() {
        let params = |level| BuildOptions::default().level(level).params();
        let random = noise(1 << 20, 9);
        let code = code_like(1 << 20, 11);
        let default = params(Level::Default);
        assert_eq!(
            CoderOrder::of(&default, &random, &placed(0, 0)),
            CoderOrder {
                dense: true,
                zstd_first: true,
                zstd_level: 3,
                retry: Retry::Poor {
                    ceiling: Some(NEW_DATA_CEILING)
                },
            }
        );
        assert_eq!(
            CoderOrder::of(&default, &code, &placed(0, 0)),
            CoderOrder {
                dense: false,
                zstd_first: false,
                zstd_level: default.zstd_level,
                // zstd only where bsdiff left between an eighth and a third.
                retry: Retry::Poor { ceiling: Some(3) },
            }
        );
        // Best keeps its order (bsdiff first, zstd 19) for the smallest patch, and
        // fast runs zstd first on every frame anyway.
        for level in [Level::Best, Level::Fast] {
            let p = params(level);
            let order = CoderOrder::of(&p, &random, &placed(0, 0));
            assert!(!order.dense, "{level:?}");
            assert_eq!(order.zstd_first, p.zstd_first);
            assert_eq!(order.zstd_level, p.zstd_level);
        }
    }

    fn placed(anchors: u64, inside: u64) -> Placement {
        Placement {
            start: 0,
            len: 1 << 20,
            anchors,
            inside,
        }
    }

    #[test]
    fn moved_frames_go_to_bsdiff_first_at_fast() {
        let fast = BuildOptions::default().level(Level::Fast).params();
        let code = code_like(1 << 20, 11);
        let bsdiff_first = CoderOrder {
            dense: false,
            zstd_first: false,
            zstd_level: fast.zstd_level,
            retry: Retry::Never,
        };
        let as_the_level = CoderOrder {
            dense: false,
            zstd_first: true,
            zstd_level: fast.zstd_level,
            retry: Retry::Poor {
                ceiling: fast.retry_ceiling,
            },
        };
        for (anchors, inside, order) in [
            (4096, 257, bsdiff_first),
            (4096, 2047, bsdiff_first),
            // A sixteenth or less: new data.
            (4096, 256, as_the_level),
            (4096, 0, as_the_level),
            // Half or more: zstd finds the frame.
            (4096, 2048, as_the_level),
            (4096, 4096, as_the_level),
            // Too few anchors to tell.
            (63, 20, as_the_level),
            (64, 20, bsdiff_first),
        ] {
            assert_eq!(
                CoderOrder::of(&fast, &code, &placed(anchors, inside)),
                order,
                "{inside} of {anchors}"
            );
        }
        // The other levels run bsdiff first on such frames already.
        let default = BuildOptions::default().params();
        assert_eq!(
            CoderOrder::of(&default, &code, &placed(4096, 1000)),
            CoderOrder::of(&default, &code, &placed(4096, 4096))
        );
    }
}

//! Building a patch: classify the new image's blocks against the old image's
//! index, cut what changed into frames, pick each frame's reference window, encode
//! the frames in parallel and keep the smaller coder's result for each.

use rayon::prelude::*;

use crate::{
    encode::{self, bsdiff, ZstdSettings},
    error::{Error, Result},
    format::{empty_hash, Frame, FrameKind, Manifest},
    index::{scan_anchors, AnchorIndex, BlockIndex},
    BuildOptions,
};

/// Copy and zero runs longer than this are split, so no single frame is huge.
const MAX_RUN: u64 = 64 << 20;
/// Zero and copy runs shorter than this many blocks inside changed data are left to
/// the delta coder (it finds them in the window for a few bytes) rather than becoming
/// frames of their own: fewer, longer frames cost less manifest and window setup.
const ABSORB_BLOCKS: u64 = 16;
/// Margin added around the old data an anchor cluster points at.
const WINDOW_PAD: u64 = 256 << 10;

/// What one block of the new image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Zero,
    Copy(u64),
    Changed,
}

/// A frame before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Planned {
    kind: Planned2,
    start: u64,
    len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Planned2 {
    Copy(u64),
    Zero,
    Delta,
}

/// Classifies every block of `new`.
fn classify(old: &[u8], new: &[u8], bs: usize, index: &BlockIndex) -> Vec<Block> {
    let mut blocks: Vec<Block> = new
        .par_chunks(bs)
        .enumerate()
        .map(|(i, blk)| {
            let at = i * bs;
            if blk.iter().all(|&b| b == 0) {
                Block::Zero
            } else if old.get(at..at + blk.len()) == Some(blk) {
                Block::Copy(at as u64)
            } else if blk.len() == bs {
                match index.lookup(blk) {
                    Some(p) if old.get(p as usize..p as usize + bs) == Some(blk) => Block::Copy(p),
                    _ => Block::Changed,
                }
            } else {
                Block::Changed
            }
        })
        .collect();
    // Prefer continuing the previous copy: duplicate blocks (common in images) then
    // merge into long runs instead of jumping to the first occurrence.
    for i in 1..blocks.len() {
        if let (Block::Copy(prev), Block::Copy(cur)) = (blocks[i - 1], blocks[i]) {
            let want = prev + bs as u64;
            if cur != want {
                let at = i * bs;
                let blk = &new[at..(at + bs).min(new.len())];
                if old.get(want as usize..want as usize + blk.len()) == Some(blk) {
                    blocks[i] = Block::Copy(want);
                }
            }
        }
    }
    blocks
}

/// Turns block classes into frames: copy runs, zero runs and delta frames of at
/// most `frame_len` bytes.
fn plan(blocks: &[Block], bs: u64, new_len: u64, frame_len: u64) -> Vec<Planned> {
    // Runs of identical class (copies contiguous in the old image).
    let mut runs: Vec<Planned> = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let start = i as u64 * bs;
        let len = bs.min(new_len - start);
        let kind = match *b {
            Block::Zero => Planned2::Zero,
            Block::Copy(p) => Planned2::Copy(p),
            Block::Changed => Planned2::Delta,
        };
        if let Some(last) = runs.last_mut() {
            let extends = match (last.kind, kind) {
                (Planned2::Copy(p), Planned2::Copy(q)) => p + last.len == q,
                (a, b) => a == b,
            };
            if extends {
                last.len += len;
                continue;
            }
        }
        runs.push(Planned { kind, start, len });
    }
    // Short runs between changed data join the delta.
    for i in 1..runs.len().saturating_sub(1) {
        if runs[i].kind != Planned2::Delta
            && runs[i].len <= ABSORB_BLOCKS * bs
            && runs[i - 1].kind == Planned2::Delta
            && runs[i + 1].kind == Planned2::Delta
        {
            runs[i].kind = Planned2::Delta;
        }
    }
    let mut merged: Vec<Planned> = Vec::with_capacity(runs.len());
    for r in runs {
        match merged.last_mut() {
            Some(last) if last.kind == Planned2::Delta && r.kind == Planned2::Delta => {
                last.len += r.len
            }
            _ => merged.push(r),
        }
    }
    // Split long runs.
    let mut out = Vec::with_capacity(merged.len());
    for r in merged {
        let cap = if r.kind == Planned2::Delta {
            frame_len
        } else {
            MAX_RUN
        };
        let pieces = r.len.div_ceil(cap).max(1);
        // Equal pieces, rounded up to whole blocks.
        let piece = r.len.div_ceil(pieces).div_ceil(bs) * bs;
        let mut off = 0;
        while off < r.len {
            let len = piece.min(r.len - off);
            let kind = match r.kind {
                Planned2::Copy(p) => Planned2::Copy(p + off),
                k => k,
            };
            out.push(Planned {
                kind,
                start: r.start + off,
                len,
            });
            off += len;
        }
    }
    out
}

/// Picks the old range that the anchors of `new[t0..t1]` point at most densely.
fn select_window(
    anchors: &AnchorIndex,
    old_len: u64,
    new: &[u8],
    t0: usize,
    t1: usize,
    max_window: u64,
) -> (u64, u64) {
    let mut hits: Vec<u64> = Vec::new();
    scan_anchors(new, t0, t1, |_, key| {
        if let Some(p) = anchors.get(key) {
            hits.push(p);
        }
    });
    if hits.is_empty() || max_window == 0 {
        return (0, 0);
    }
    hits.sort_unstable();
    // The data of one frame rarely comes from an old range much longer than the frame:
    // bound the window by the frame's length too, so small frames get small windows.
    let frame = (t1 - t0) as u64;
    let max_window = max_window.min(2 * frame + 2 * WINDOW_PAD);
    let span = max_window.saturating_sub(2 * WINDOW_PAD).max(1);
    let (mut best_i, mut best_j, mut j) = (0usize, 0usize, 0usize);
    for i in 0..hits.len() {
        while j + 1 < hits.len() && hits[j + 1] - hits[i] < span {
            j += 1;
        }
        if j - i > best_j - best_i {
            (best_i, best_j) = (i, j);
        }
    }
    let lo = hits[best_i].saturating_sub(WINDOW_PAD);
    let hi = (hits[best_j] + WINDOW_PAD).min(old_len);
    let len = (hi - lo).min(max_window);
    (lo, len)
}

/// Everything one encoded delta frame contributes.
struct Encoded {
    kind: FrameKind,
    source_offset: u64,
    source_len: u64,
    payload: Vec<u8>,
}

fn encode_delta(
    old: &[u8],
    new: &[u8],
    anchors: &AnchorIndex,
    p: &Planned,
    params: &crate::LevelParams,
    frame: u32,
) -> Result<Encoded> {
    let (t0, t1) = (p.start as usize, (p.start + p.len) as usize);
    let data = &new[t0..t1];
    let (ws, wl) = select_window(anchors, old.len() as u64, new, t0, t1, params.max_window);
    let window = &old[ws as usize..(ws + wl) as usize];
    let settings = ZstdSettings {
        level: params.zstd_level,
        long_distance: params.long_distance,
    };
    let enc_err = |reason| Error::Encode { frame, reason };
    // bsdiff first: on changed executables and file systems it usually wins. zstd with
    // the window as prefix runs when bsdiff is off or did poorly (new content).
    let mut best: Option<Encoded> = None;
    if params.bsdiff && !window.is_empty() {
        let bs_settings = ZstdSettings {
            level: params.bsdiff_zstd_level,
            long_distance: false,
        };
        if let Some(b) =
            bsdiff::encode(window, data, params.match_finder, bs_settings).map_err(enc_err)?
        {
            best = Some(Encoded {
                kind: FrameKind::Bsdiff,
                source_offset: ws,
                source_len: wl,
                payload: b,
            });
        }
    }
    let good_enough = best
        .as_ref()
        .is_some_and(|b| (b.payload.len() as u64) * params.zstd_retry_ratio < data.len() as u64);
    if !good_enough {
        let zstd = encode::zstd_encode(window, data, settings).map_err(enc_err)?;
        if best.as_ref().is_none_or(|b| zstd.len() < b.payload.len()) {
            best = Some(Encoded {
                kind: FrameKind::Zstd,
                source_offset: ws,
                source_len: wl,
                payload: zstd,
            });
        }
    }
    let Some(mut best) = best else {
        unreachable!("the zstd coder always runs when bsdiff gave nothing")
    };
    if best.source_len == 0 {
        best.source_offset = 0;
    }
    Ok(best)
}

/// Builds the manifest and payloads for `old` -> `new`.
pub(crate) fn build(
    old: &[u8],
    new: &[u8],
    opts: &BuildOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Manifest, Vec<Vec<u8>>)> {
    let params = opts.params();
    let bs = opts.block_size as usize;
    if bs == 0 || !bs.is_power_of_two() || !(512..=1 << 20).contains(&bs) {
        return Err(Error::InvalidOption {
            name: "block size",
            reason: "must be a power of two from 512 to 1048576",
        });
    }
    let ((source_hash, target_hash), (blocks, anchors)) = rayon::join(
        || rayon::join(|| hash_all(old), || hash_all(new)),
        || {
            let (index, anchors) =
                rayon::join(|| BlockIndex::build(old, bs), || AnchorIndex::build(old));
            (classify(old, new, bs, &index), anchors)
        },
    );
    let planned = plan(&blocks, bs as u64, new.len() as u64, params.frame_len);
    drop(blocks);

    // Delta frames are encoded in parallel, in batches sized to the memory limit.
    let per_frame = params.encode_memory();
    let concurrent = (opts.memory_limit / per_frame.max(1)).max(1) as usize;
    let chunk_len = if concurrent >= rayon::current_num_threads() {
        planned.len().max(1)
    } else {
        concurrent
    };
    let mut results: Vec<Option<Encoded>> = Vec::with_capacity(planned.len());
    for chunk in planned.chunks(chunk_len) {
        let base = results.len();
        let pool_batch: Vec<Result<Option<Encoded>>> = chunk
            .par_iter()
            .with_max_len(1)
            .enumerate()
            .map(|(k, p)| {
                let r = match p.kind {
                    Planned2::Delta => {
                        encode_delta(old, new, &anchors, p, &params, (base + k) as u32).map(Some)
                    }
                    _ => Ok(None),
                };
                progress(p.len);
                r
            })
            .collect();
        for r in pool_batch {
            results.push(r?);
        }
    }
    drop(anchors);

    // Zero frames of one length share their hash (runs are cut into equal pieces).
    let mut zero_hashes = std::collections::HashMap::new();
    for p in planned.iter().filter(|p| p.kind == Planned2::Zero) {
        zero_hashes.entry(p.len).or_insert_with(|| {
            *blake3::hash(&new[p.start as usize..(p.start + p.len) as usize]).as_bytes()
        });
    }
    let output_hashes: Vec<[u8; 32]> = planned
        .par_iter()
        .map(
            |p| match zero_hashes.get(&p.len).filter(|_| p.kind == Planned2::Zero) {
                Some(h) => *h,
                None => {
                    *blake3::hash(&new[p.start as usize..(p.start + p.len) as usize]).as_bytes()
                }
            },
        )
        .collect();

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
            (Planned2::Copy(src), _) => {
                f.kind = FrameKind::Copy;
                f.source_offset = src;
                f.source_len = p.len;
            }
            (Planned2::Zero, _) => {}
            (Planned2::Delta, Some(e)) => {
                f.kind = e.kind;
                f.source_offset = e.source_offset;
                f.source_len = e.source_len;
                f.payload_offset = payload_off;
                f.payload_len = e.payload.len() as u64;
                f.payload_hash = *blake3::hash(&e.payload).as_bytes();
                payload_off += f.payload_len;
                payloads.push(e.payload);
            }
            (Planned2::Delta, None) => unreachable!("delta frames are always encoded"),
        }
        frames.push(f);
    }
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
        payload_len: payload_off,
        tool: format!("deltaward {}", env!("CARGO_PKG_VERSION")),
        options: opts.describe(),
        frames,
    };
    Ok((manifest, payloads))
}

/// BLAKE3 of a whole image, using the caller's rayon pool.
pub(crate) fn hash_all(data: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update_rayon(data);
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_merges_runs_and_absorbs_short_zero_gaps() {
        use Block::*;
        let blocks = [
            Copy(0),
            Copy(4),
            Changed,
            Zero,
            Changed,
            Zero,
            Zero,
            Zero,
            Zero,
            Zero,
            Copy(100),
        ];
        let p = plan(&blocks, 4, 44, 1 << 20);
        let kinds: Vec<_> = p.iter().map(|f| (f.kind, f.start, f.len)).collect();
        assert_eq!(
            kinds,
            vec![
                (Planned2::Copy(0), 0, 8),
                (Planned2::Delta, 8, 12),
                (Planned2::Zero, 20, 20),
                (Planned2::Copy(100), 40, 4)
            ]
        );
    }

    #[test]
    fn plan_splits_long_delta_into_equal_frames() {
        let blocks = vec![Block::Changed; 10];
        let p = plan(&blocks, 4, 38, 16);
        assert_eq!(p.iter().map(|f| f.len).collect::<Vec<_>>(), vec![16, 16, 6]);
        assert_eq!(p.iter().map(|f| f.len).sum::<u64>(), 38);
    }
}

//! Planning a patch: classify the new image's blocks against the old image's index,
//! cut them into copy, zero and delta frames, and choose each delta frame's
//! reference window in the old image.

use rayon::prelude::*;

use crate::{
    index::{scan_anchors, AnchorIndex, BlockIndex},
    sparse::Input,
};

/// Copy and zero runs longer than this are split, so no single frame is huge.
pub(crate) const MAX_RUN: u64 = 64 << 20;
/// Zero and copy runs shorter than this many blocks inside changed data are left to
/// the delta coder (it finds them in the window for a few bytes) rather than becoming
/// frames of their own: fewer, longer frames cost less manifest and window setup.
const ABSORB_BLOCKS: u64 = 64;
/// Margin added around the old data an anchor cluster points at.
const WINDOW_PAD: u64 = 256 << 10;

/// What one block of the new image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Block {
    Zero,
    Copy(u64),
    Changed,
}

/// A frame before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Planned {
    pub(crate) kind: PlanKind,
    pub(crate) start: u64,
    pub(crate) len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlanKind {
    Copy(u64),
    Zero,
    Delta,
}

/// Classifies every block of `new`. A block inside a hole of `new` is zero
/// without being read; a block is compared with old bytes only outside the holes
/// of `old` (a hole is zeros, and a zero block never gets that far).
pub(crate) fn classify(
    old_in: Input<'_>,
    new_in: Input<'_>,
    bs: usize,
    index: &BlockIndex,
) -> Vec<Block> {
    let (old, new) = (old_in.data, new_in.data);
    let old_has = |at: usize, len: usize| !old_in.in_hole(at as u64, (at + len) as u64);
    let mut blocks: Vec<Block> = new
        .par_chunks(bs)
        .enumerate()
        .map(|(i, blk)| {
            let at = i * bs;
            if new_in.in_hole(at as u64, (at + blk.len()) as u64) || blk.iter().all(|&b| b == 0) {
                Block::Zero
            } else if old_has(at, blk.len()) && old.get(at..at + blk.len()) == Some(blk) {
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
                if old_has(want as usize, blk.len())
                    && old.get(want as usize..want as usize + blk.len()) == Some(blk)
                {
                    blocks[i] = Block::Copy(want);
                }
            }
        }
    }
    blocks
}

/// Turns block classes into frames: copy runs, zero runs and delta frames of at
/// most `frame_len` bytes.
pub(crate) fn plan(blocks: &[Block], bs: u64, new_len: u64, frame_len: u64) -> Vec<Planned> {
    // Runs of identical class (copies contiguous in the old image).
    let mut runs: Vec<Planned> = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let start = i as u64 * bs;
        let len = bs.min(new_len - start);
        let kind = match *b {
            Block::Zero => PlanKind::Zero,
            Block::Copy(p) => PlanKind::Copy(p),
            Block::Changed => PlanKind::Delta,
        };
        if let Some(last) = runs.last_mut() {
            let extends = match (last.kind, kind) {
                (PlanKind::Copy(p), PlanKind::Copy(q)) => p + last.len == q,
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
        if runs[i].kind != PlanKind::Delta
            && runs[i].len <= ABSORB_BLOCKS * bs
            && runs[i - 1].kind == PlanKind::Delta
            && runs[i + 1].kind == PlanKind::Delta
        {
            runs[i].kind = PlanKind::Delta;
        }
    }
    let mut merged: Vec<Planned> = Vec::with_capacity(runs.len());
    for r in runs {
        match merged.last_mut() {
            Some(last) if last.kind == PlanKind::Delta && r.kind == PlanKind::Delta => {
                last.len += r.len
            }
            _ => merged.push(r),
        }
    }
    // Split long runs.
    let mut out = Vec::with_capacity(merged.len());
    for r in merged {
        let cap = if r.kind == PlanKind::Delta {
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
                PlanKind::Copy(p) => PlanKind::Copy(p + off),
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

/// The longest window a frame of `frame_len` bytes gets. The data of one frame
/// rarely comes from an old range much longer than the frame: the window is bound by
/// the frame's length too, so small frames get small windows.
pub(crate) fn window_cap(max_window: u64, frame_len: u64) -> u64 {
    max_window.min(2 * frame_len + 2 * WINDOW_PAD)
}

/// Picks the old range that the anchors of `new[t0..t1]` point at most densely.
/// How much more an anchor the old image has once weighs than a repeated one: on
/// an ext4 image of three qemu programs that share much code, 1 gave 2.39 MB at
/// the default level, 16 gave 1.31 MB and 1000 1.24 MB; the kernel pairs moved
/// by less than 0.2 % either way.
const UNIQUE_WEIGHT: u64 = 1024;

/// The anchors at either end of the chosen range that together weigh at most
/// 1/this of it are left out of the window (where the window stays as long as the
/// frame): an anchor of the new data whose string the old image also has far away,
/// once or at its first copy, stretched windows by up to a frame's length. Default
/// level, 3 alternating rounds, CPU time and bytes against no trim: kernel-tar
/// -8.6 % and -0.08 %, kernel-ext4 -10 % and +0.1 %, shifted-ext4 -9.4 % and
/// +0.15 %; the programs within the noise. 1/100 cost qemu-ext4 2.4 % more bytes;
/// without the frame's length as a floor, qemu-x86 lost the part of a window that
/// held its moved code (242 KB -> 444 KB).
const TRIM_SHARE: u64 = 200;

/// Where a frame's window lies in the old image, and how many of the frame's
/// anchors it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) start: u64,
    pub(crate) len: u64,
    /// Anchors of the frame's new bytes.
    pub(crate) anchors: u64,
    /// Of those, the ones found in the old image inside the window.
    pub(crate) inside: u64,
}

/// Places the window of the frame `new[t0..t1]` where the frame's anchors point
/// most densely in the old image, and counts the anchors and those it holds.
pub(crate) fn select_window(
    anchors: &AnchorIndex,
    old_len: u64,
    new: &[u8],
    t0: usize,
    t1: usize,
    max_window: u64,
) -> Placement {
    // Anchors the old image has more than once point at their first copy, which
    // may be another program built from the same sources: unique anchors weigh
    // more when placing the window.
    let mut hits: Vec<(u64, u64)> = Vec::new();
    let mut count = 0u64;
    scan_anchors(new, t0, t1, |_, key| {
        count += 1;
        if let Some((p, once)) = anchors.lookup(key) {
            hits.push((p, if once { UNIQUE_WEIGHT } else { 1 }));
        }
    });
    if hits.is_empty() || max_window == 0 {
        return Placement {
            start: 0,
            len: 0,
            anchors: count,
            inside: 0,
        };
    }
    hits.sort_unstable();
    let max_window = window_cap(max_window, (t1 - t0) as u64);
    let span = max_window.saturating_sub(2 * WINDOW_PAD).max(1);
    let (mut best_i, mut best_j, mut best, mut j) = (0usize, 0usize, 0u64, 0usize);
    let mut sum = hits[0].1;
    for i in 0..hits.len() {
        while j + 1 < hits.len() && hits[j + 1].0 - hits[i].0 < span {
            j += 1;
            sum += hits[j].1;
        }
        if sum > best {
            (best_i, best_j, best) = (i, j, sum);
        }
        sum -= hits[i].1;
        if j == i && i + 1 < hits.len() {
            j = i + 1;
            sum = hits[j].1;
        }
    }
    // Trim stray anchors at either end, up to 1/TRIM_SHARE of the weight, but not
    // to a window (with its pads) shorter than the frame. The low end is trimmed
    // first, and what it leaves of the budget serves the high end.
    let budget = best / TRIM_SHARE;
    let floor = (t1 - t0) as u64;
    let mut cut = 0;
    while best_i < best_j
        && cut + hits[best_i].1 <= budget
        && hits[best_j].0 - hits[best_i + 1].0 + 2 * WINDOW_PAD >= floor
    {
        cut += hits[best_i].1;
        best_i += 1;
    }
    while best_j > best_i
        && cut + hits[best_j].1 <= budget
        && hits[best_j - 1].0 - hits[best_i].0 + 2 * WINDOW_PAD >= floor
    {
        cut += hits[best_j].1;
        best_j -= 1;
    }
    let lo = hits[best_i].0.saturating_sub(WINDOW_PAD);
    let hi = (hits[best_j].0 + WINDOW_PAD).min(old_len);
    let len = (hi - lo).min(max_window);
    let inside =
        (hits.partition_point(|h| h.0 < lo + len) - hits.partition_point(|h| h.0 < lo)) as u64;
    Placement {
        start: lo,
        len,
        anchors: count,
        inside,
    }
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
                (PlanKind::Copy(0), 0, 8),
                (PlanKind::Delta, 8, 12),
                (PlanKind::Zero, 20, 20),
                (PlanKind::Copy(100), 40, 4)
            ]
        );
    }

    #[test]
    fn the_window_follows_anchors_the_old_image_has_once() {
        // Old: S, P, S again, Q. New: S then Q. The anchors of S point at its
        // first copy and outnumber Q's four to one, but only Q's are unique, and
        // the window cannot hold both copies.
        let (s, p, q) = (
            deltaward_testkit::noise(1 << 20, 10),
            deltaward_testkit::noise(2 << 20, 20),
            deltaward_testkit::noise(256 << 10, 30),
        );
        let old = [&s[..], &p, &s, &q].concat();
        let new = [&s[..], &q].concat();
        let index = AnchorIndex::build(Input::new(&old, &[]));
        let Placement { start: lo, len, .. } =
            select_window(&index, old.len() as u64, &new, 0, new.len(), 2 << 20);
        assert!(lo > 2 << 20, "window at {lo} (+{len}): the first copy");
        assert!(lo + len >= (4 << 20) + (256 << 10) - WINDOW_PAD);
    }

    #[test]
    fn placements_count_the_frames_anchors_and_those_in_the_window() {
        // Old: C, filler, then A. New: A, C, then B, which the old image lacks. The
        // window (2 MiB) holds A, not C, 5 MiB before it.
        let (a, b, c, filler) = (
            deltaward_testkit::noise(1 << 20, 80),
            deltaward_testkit::noise(1 << 20, 90),
            deltaward_testkit::noise(256 << 10, 110),
            deltaward_testkit::noise(4 << 20, 100),
        );
        let old = [&c[..], &filler, &a].concat();
        let new = [&a[..], &c, &b].concat();
        let index = AnchorIndex::build(Input::new(&old, &[]));
        let count = |from: usize, to: usize| {
            let mut n = 0u64;
            scan_anchors(&new, from, to, |_, _| n += 1);
            n
        };
        let whole = select_window(&index, old.len() as u64, &new, 0, new.len(), 2 << 20);
        assert_eq!(whole.anchors, count(0, new.len()));
        assert!(whole.start >= (c.len() + filler.len()) as u64 - WINDOW_PAD);
        // A's anchors, but for those whose 64 bytes reach into C.
        let in_a = count(0, a.len());
        assert!(
            (in_a - 1..=in_a).contains(&whole.inside),
            "{} inside, A has {in_a}",
            whole.inside
        );
        // B alone: anchors, none of them in the old image.
        let b_only = select_window(
            &index,
            old.len() as u64,
            &new,
            a.len() + c.len(),
            new.len(),
            2 << 20,
        );
        assert_eq!(b_only.anchors, count(a.len() + c.len(), new.len()));
        assert_eq!((b_only.inside, b_only.len), (0, 0));
    }

    #[test]
    fn stray_anchors_stretch_no_window() {
        // Old: P, filler, then A, which holds P again. New: A. P's anchors point at
        // its first copy, 1 MiB before A, a few among thousands.
        let a = deltaward_testkit::noise(2 << 20, 40);
        let filler = deltaward_testkit::noise(1 << 20, 50);
        let old = [&a[1 << 20..(1 << 20) + 8192], &filler[..], &a[..]].concat();
        let index = AnchorIndex::build(Input::new(&old, &[]));
        let Placement { start: lo, len, .. } =
            select_window(&index, old.len() as u64, &a, 0, a.len(), 16 << 20);
        let a_at = (1 << 20) + 8192;
        assert!(lo + WINDOW_PAD >= a_at, "window at {lo} (+{len})");
        assert!(
            lo + len >= a_at + (2 << 20) - WINDOW_PAD,
            "window at {lo} (+{len})"
        );
    }

    #[test]
    fn trimmed_windows_are_as_long_as_the_frame() {
        // New and old: a short head, a run without anchors, then A. The head's few
        // anchors weigh little, but the window must reach them.
        let head = deltaward_testkit::noise(2048, 70);
        let run = vec![0x5a; 3 << 19];
        let a = deltaward_testkit::noise(1 << 20, 60);
        let image = [&head[..], &run, &a].concat();
        let index = AnchorIndex::build(Input::new(&image, &[]));
        let n = image.len();
        let Placement { start: lo, len, .. } =
            select_window(&index, n as u64, &image, 0, n, 16 << 20);
        assert_eq!(lo, 0, "window at {lo} (+{len}) of {n}");
    }

    #[test]
    fn plan_splits_long_delta_into_equal_frames() {
        let blocks = vec![Block::Changed; 10];
        let p = plan(&blocks, 4, 38, 16);
        assert_eq!(p.iter().map(|f| f.len).collect::<Vec<_>>(), vec![16, 16, 6]);
        assert_eq!(p.iter().map(|f| f.len).sum::<u64>(), 38);
    }
}

//! Indexes of the old image: a block index (XXH3-128 keys) for exact block matches, and a
//! content-defined anchor index for locating where changed data came from.

use std::{borrow::Cow, collections::HashMap, ops::Range};

use rayon::prelude::*;

use crate::sparse::Input;

/// Segment length for parallel anchor scanning. Fixed, so the anchors (and with them
/// the patch bytes) do not depend on the number of threads.
const ANCHOR_SEGMENT: usize = 4 << 20;
/// Anchors are positions where the rolling hash has these bits clear (one in 256).
const ANCHOR_MASK: u64 = 0xff << 56;
/// Minimum distance between two anchors, so runs of repeated bytes do not flood the index.
const ANCHOR_MIN_GAP: usize = 48;
/// Bytes of history that determine the rolling hash.
const GEAR_HISTORY: usize = 64;

/// The 128-bit key of a block: its XXH3-128. Not a cryptographic hash, and it need
/// not be: a block found by its key is compared byte by byte before it is used, so
/// a collision (even a crafted one) costs a missed match, never a wrong byte. It
/// runs several times faster than BLAKE3 on 4 KiB blocks, and the diff keys every
/// block of both images.
fn block_key(block: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(block)
}

/// Where each distinct full block of the old image first occurs.
#[derive(Debug)]
pub struct BlockIndex {
    block_size: usize,
    first: HashMap<u128, u64>,
}

impl BlockIndex {
    /// Keys every full block of `old`, in parallel.
    pub(crate) fn build(old: Input<'_>, block_size: usize) -> Self {
        // Zero blocks are never looked up (the diff classifies them first): skip them,
        // and the blocks of holes without reading them.
        let bs = block_size as u64;
        let keys: Vec<Option<u128>> = old
            .data
            .par_chunks_exact(block_size)
            .enumerate()
            .map(|(i, b)| {
                let at = i as u64 * bs;
                if old.in_hole(at, at + bs) || b.iter().all(|&x| x == 0) {
                    None
                } else {
                    Some(block_key(b))
                }
            })
            .collect();
        let mut first = HashMap::with_capacity(keys.len());
        for (i, k) in keys.into_iter().enumerate() {
            if let Some(k) = k {
                first.entry(k).or_insert((i * block_size) as u64);
            }
        }
        Self { block_size, first }
    }

    /// An old offset holding a block with the same key as `block`, if any.
    /// The caller confirms the bytes.
    pub fn lookup(&self, block: &[u8]) -> Option<u64> {
        debug_assert_eq!(block.len(), self.block_size);
        self.first.get(&block_key(block)).copied()
    }
}

/// A table of 256 pseudo-random words for the gear rolling hash.
const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut i = 0;
    while i < 256 {
        // splitmix64
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
};

/// One step of the gear rolling hash: `h` after byte `b`.
fn gear_step(h: u64, b: u8) -> u64 {
    (h << 1).wrapping_add(GEAR[b as usize])
}

/// Bytes of one chain per step of [`scan_anchors`]: bounds the candidates held at once.
const LANE: usize = 64 << 10;

/// Calls `f(position, key)` for each anchor of `data[from..to]`, where the rolling
/// hash sees the `GEAR_HISTORY` bytes before each position. Positions are absolute
/// indexes into `data`; the key identifies the 64 bytes ending there.
///
/// Each byte's step depends on the one before, so one chain runs at the latency of
/// a shift and an add: the range is taken in pieces of two lanes, hashed as two
/// chains in one loop, which runs at nearly twice the rate. A key depends only on
/// the 64 bytes ending at its position, so the lanes find what one pass would.
/// Four lanes were no faster in the diff (their loop 8.0 to 8.2 % of kernel-tar's
/// default-level samples, two lanes' 7.5 to 8.0 %).
pub fn scan_anchors(data: &[u8], from: usize, to: usize, mut f: impl FnMut(usize, u64)) {
    let to = to.min(data.len());
    if from >= to {
        return;
    }
    let start = from.saturating_sub(GEAR_HISTORY);
    // Positions before this have fewer than GEAR_HISTORY bytes behind them.
    let mut next_allowed = start + GEAR_HISTORY - 1;
    let warm = |at: usize| {
        let from = at.saturating_sub(GEAR_HISTORY).max(start);
        data[from..at].iter().fold(0u64, |h, &b| gear_step(h, b))
    };
    // Candidates (one position in 256 on most data, but one in two on some
    // periodic data) are kept per lane, then the spacing rule is applied in order.
    let mut cands: [Vec<(usize, u64)>; 2] = Default::default();
    let mut piece = from;
    while piece < to {
        let end = to.min(piece + 2 * LANE);
        let half = (end - piece) / 2;
        let mid = piece + half;
        let mut hb = two_lanes(data, piece, half, [warm(piece), warm(mid)], &mut cands);
        // The second lane is one byte longer when the piece's length is odd.
        for (k, &b) in data[mid + half..end].iter().enumerate() {
            hb = gear_step(hb, b);
            if hb & ANCHOR_MASK == 0 {
                cands[1].push((mid + half + k, hb));
            }
        }
        for lane in &mut cands {
            for (i, h) in lane.drain(..) {
                if i >= next_allowed {
                    f(i, h);
                    next_allowed = i + ANCHOR_MIN_GAP;
                }
            }
        }
        piece = end;
    }
}

/// The gear hashes of the two lanes `data[from..from + half]` and the `half` bytes
/// after it, from hashes `h`, their anchor candidates pushed to `cands`; returns
/// the second lane's hash. Not inlined: inlined into the window placement (whose
/// closure looks each anchor up), the loop kept its pointers on the stack and
/// reloaded them at every byte. The anchor scans took 11.6 % of kernel-tar's
/// default-level samples inlined, 9.4 to 9.9 % with this function (its loop 7.5 to
/// 8.0 %, the window placement's lookups 1.9 %).
#[inline(never)]
fn two_lanes(
    data: &[u8],
    from: usize,
    half: usize,
    h: [u64; 2],
    cands: &mut [Vec<(usize, u64)>; 2],
) -> u64 {
    let [mut ha, mut hb] = h;
    let (lane_a, lane_b) = (
        &data[from..from + half],
        &data[from + half..from + 2 * half],
    );
    for (k, (&a, &b)) in lane_a.iter().zip(lane_b).enumerate() {
        (ha, hb) = (gear_step(ha, a), gear_step(hb, b));
        if ha & ANCHOR_MASK == 0 {
            cands[0].push((from + k, ha));
        }
        if hb & ANCHOR_MASK == 0 {
            cands[1].push((from + half + k, hb));
        }
    }
    hb
}

/// Anchor keys are already uniformly distributed hashes: use them as they are.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = Self::spread(v);
    }
}

impl KeyHasher {
    /// The top byte of a key is the anchor condition's zeros, and a table takes its
    /// tags from the top bits: multiply to spread the low bits up there.
    fn spread(key: u64) -> u64 {
        key.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// Anchors of the old image: the first position of each key.
///
/// The table is split into [`ANCHOR_SHARDS`] maps by bits of the key that the maps'
/// own bucket choice does not use, so that they are filled in parallel: one serial
/// table of the ~2.5 million anchors of a 600 MiB image took a quarter of a second,
/// which on 16 cores was longer than the parallel scan that found them.
#[derive(Debug)]
pub struct AnchorIndex {
    shards: Vec<AnchorMap>,
}

/// One shard of an [`AnchorIndex`]: key to position.
type AnchorMap = HashMap<u64, u64, std::hash::BuildHasherDefault<KeyHasher>>;

/// One segment's anchors `(key, position)` grouped by shard, each group in
/// position order, and where each shard's group starts.
type ShardedAnchors = (Vec<(u64, u64)>, [usize; ANCHOR_SHARDS + 1]);

/// The bit of a stored anchor position that marks a key the old image has more
/// than once (positions stay below 2^63).
const REPEATED: u64 = 1 << 63;

/// Number of maps an [`AnchorIndex`] is split into (a power of two).
const ANCHOR_SHARDS: usize = 64;

/// Which map of an [`AnchorIndex`] holds `key`: bits 40 to 45 of the spread key,
/// below the 7 bits a map takes its tags from and far above the bits that choose
/// its buckets.
fn anchor_shard(key: u64) -> usize {
    (KeyHasher::spread(key) >> 40) as usize & (ANCHOR_SHARDS - 1)
}

impl AnchorIndex {
    /// Scans `old` for anchors in parallel, leaving out its holes (the anchors
    /// there would all be one key, and reading them would fault their pages in).
    pub(crate) fn build(old: Input<'_>) -> Self {
        let data = old.data;
        let segments: Vec<Range<u64>> = (0..data.len().div_ceil(ANCHOR_SEGMENT))
            .map(|seg| {
                let from = seg * ANCHOR_SEGMENT;
                from as u64..(from + ANCHOR_SEGMENT).min(data.len()) as u64
            })
            .collect();
        let segments = scan_segments(old, &segments, &|r| {
            Cow::Borrowed(&data[r.start as usize..r.end as usize])
        });
        // Segments are in order and each group keeps position order, so the first
        // position of each key wins; a key seen again is marked as repeated.
        let shards = (0..ANCHOR_SHARDS)
            .into_par_iter()
            .map(|s| first_positions(&segments, s))
            .collect();
        Self { shards }
    }

    /// Adds the anchors of the parts of the old image that a source transform
    /// rewrote (`rewritten`, in order), as the frames see them (`view(range)`):
    /// where a transform moved a program's addresses to where the new build has
    /// them, the new image's bytes are found in the rewritten ones, not in the
    /// ones on disk. Keys the index has already keep their position. On
    /// qemu-arm64 the default level's patch is 8 % smaller: frames found no
    /// window, or a poor one, from the few anchors left in code whose every
    /// branch changed.
    pub(crate) fn add_rewritten<'v>(
        &mut self,
        old: Input<'_>,
        rewritten: impl Iterator<Item = Range<u64>>,
        view: &(dyn Fn(Range<u64>) -> Cow<'v, [u8]> + Sync),
    ) {
        // The rewritten ranges, joined, each with the positions after it whose
        // history it holds, in pieces of at most a segment.
        let len = old.data.len() as u64;
        let mut joined: Vec<Range<u64>> = Vec::new();
        for r in rewritten {
            let r = r.start.min(len)..r.end.saturating_add(GEAR_HISTORY as u64).min(len);
            match joined.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ if r.start < r.end => joined.push(r),
                _ => {}
            }
        }
        let pieces: Vec<Range<u64>> = joined
            .iter()
            .flat_map(|r| {
                (r.start..r.end)
                    .step_by(ANCHOR_SEGMENT)
                    .map(move |s| s..(s + ANCHOR_SEGMENT as u64).min(r.end))
            })
            .collect();
        let segments = scan_segments(old, &pieces, view);
        self.shards.par_iter_mut().enumerate().for_each(|(s, map)| {
            for (key, pos) in first_positions(&segments, s) {
                map.entry(key).or_insert(pos);
            }
        });
    }

    /// The old position of an anchor with this key, and whether the old image has
    /// it only once.
    pub fn lookup(&self, key: u64) -> Option<(u64, bool)> {
        self.shards
            .get(anchor_shard(key))
            .and_then(|m| m.get(&key))
            .map(|&p| (p & !REPEATED, p & REPEATED == 0))
    }

    /// Number of distinct anchors.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }
}

/// The anchors of each of `segments` (ranges of `old`, in order) in the bytes
/// that `bytes(range)` gives, leaving out `old`'s holes: per segment, the
/// anchors `(key, position)` grouped by shard (a stable counting sort, so each
/// group keeps position order), with where each shard's group starts.
fn scan_segments<'b>(
    old: Input<'_>,
    segments: &[Range<u64>],
    bytes: &(dyn Fn(Range<u64>) -> Cow<'b, [u8]> + Sync),
) -> Vec<ShardedAnchors> {
    segments
        .par_iter()
        .map(|seg| {
            // The segment and the history before it; positions in `data` are
            // offsets from `base`, and the scan finds what it would in the whole
            // image.
            let base = seg.start.saturating_sub(GEAR_HISTORY as u64);
            let data = bytes(base..seg.end);
            let mut found = Vec::with_capacity(ANCHOR_SEGMENT / 200);
            for piece in old.data_pieces(seg.start, seg.end) {
                scan_anchors(
                    &data,
                    (piece.start - base) as usize,
                    (piece.end - base) as usize,
                    |pos, key| found.push((key, pos as u64 + base)),
                );
            }
            let mut starts = [0usize; ANCHOR_SHARDS + 1];
            for &(key, _) in &found {
                starts[anchor_shard(key) + 1] += 1;
            }
            for s in 1..=ANCHOR_SHARDS {
                starts[s] += starts[s - 1];
            }
            let mut next = starts;
            let mut grouped = vec![(0u64, 0u64); found.len()];
            for e in found {
                let s = anchor_shard(e.0);
                grouped[next[s]] = e;
                next[s] += 1;
            }
            (grouped, starts)
        })
        .collect()
}

/// Shard `s` of the anchors of `segments` (in position order): the first position
/// of each key, marked [`REPEATED`] if the key comes again.
fn first_positions(segments: &[ShardedAnchors], s: usize) -> AnchorMap {
    let len = segments.iter().map(|(_, st)| st[s + 1] - st[s]).sum();
    let mut map = HashMap::with_capacity_and_hasher(len, Default::default());
    for (grouped, st) in segments {
        for &(key, pos) in &grouped[st[s]..st[s + 1]] {
            map.entry(key)
                .and_modify(|first| *first |= REPEATED)
                .or_insert(pos);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    use deltaward_testkit::noise;

    /// The one-chain scan that `scan_anchors` must agree with.
    fn scan_reference(data: &[u8], from: usize, to: usize) -> Vec<(usize, u64)> {
        let to = to.min(data.len());
        let start = from.saturating_sub(GEAR_HISTORY);
        let mut out = Vec::new();
        let mut h: u64 = 0;
        let mut last: Option<usize> = None;
        for (i, &b) in data.iter().enumerate().take(to).skip(start) {
            h = (h << 1).wrapping_add(GEAR[b as usize]);
            if i >= from
                && h & ANCHOR_MASK == 0
                && i + 1 - start >= GEAR_HISTORY
                && last.is_none_or(|l| i - l >= ANCHOR_MIN_GAP)
            {
                out.push((i, h));
                last = Some(i);
            }
        }
        out
    }

    #[test]
    fn two_chain_scan_finds_what_one_chain_finds() {
        // Random bytes, and runs that make anchors cluster (the spacing rule).
        let mut x: u64 = 0x1234_5678;
        let mut data: Vec<u8> = (0..600_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        for i in (100_000..140_000).step_by(3) {
            data[i] = (i % 5) as u8;
        }
        // A two-byte period whose every other position is a candidate (the spacing
        // rule then decides), across the lane boundaries of the first two pieces
        // (65,536 and 196,608), the boundaries between pieces (131,072 and
        // 262,144), and elsewhere in the last pieces.
        let steady = |a: u8, b: u8| {
            (0..GEAR_HISTORY).fold(0u64, |h, k| {
                let byte = if k % 2 == 0 { a } else { b };
                (h << 1).wrapping_add(GEAR[byte as usize])
            })
        };
        let (a, b) = (0..=255u8)
            .flat_map(|a| (0..=255u8).map(move |b| (a, b)))
            .find(|&(a, b)| steady(a, b) & ANCHOR_MASK == 0)
            .expect("a periodic pattern that anchors");
        for range in [
            60_000..70_000,
            128_000..135_000,
            196_000..197_000,
            262_000..262_300,
            543_000..543_500,
            581_000..581_100,
        ] {
            for i in range {
                data[i] = if i % 2 == 0 { a } else { b };
            }
        }
        let cases = [
            (0, 300_000),
            (0, 600_000),
            (3, 524_290),
            (524_287, 599_998),
            (0, 10),
            (5, 70),
            (63, 200),
            (64, 1_000),
            (1_000, 1_001),
            (99_990, 140_017),
            (65_000, 66_000),
            (1, 131_073),
            (12_345, 299_999),
            (200_000, 400_000),
            (200_000, 700_000),
            (7, 7),
        ];
        for (from, to) in cases {
            let mut got = Vec::new();
            scan_anchors(&data, from, to, |i, h| got.push((i, h)));
            assert_eq!(got, scan_reference(&data, from, to), "range {from}..{to}");
        }
        // Ranges with an anchor in their last byte, of odd length (the second lane
        // a byte longer) and even.
        for &(p, _) in scan_reference(&data, 0, 600_000)
            .iter()
            .skip(100)
            .step_by(400)
        {
            for len in [1_001, 1_002, 1_003] {
                let (from, to) = (p + 1 - len, p + 1);
                let mut got = Vec::new();
                scan_anchors(&data, from, to, |i, h| got.push((i, h)));
                let want = scan_reference(&data, from, to);
                assert_eq!(want.last().map(|a| a.0), Some(p), "range {from}..{to}");
                assert_eq!(got, want, "range {from}..{to}");
            }
        }
        assert!(scan_reference(&data, 0, 600_000).len() > 1_000);
    }

    #[test]
    fn shifted_data_has_the_same_anchors() {
        let data = noise(1 << 16, 7);
        let mut shifted = vec![0xAAu8; 333];
        shifted.extend_from_slice(&data);
        let idx = AnchorIndex::build(Input::new(&data, &[]));
        assert!(idx.len() > 50, "too few anchors: {}", idx.len());
        let mut hits = 0;
        scan_anchors(&shifted, 0, shifted.len(), |pos, key| {
            if let Some((old, _)) = idx.lookup(key) {
                assert_eq!(old as usize + 333, pos);
                hits += 1;
            }
        });
        assert!(
            hits * 10 >= idx.len() * 9,
            "only {hits} of {} anchors found",
            idx.len()
        );
    }

    /// Anchors of rewritten ranges are found where the view has them, and only
    /// there (and in the history after them); keys the raw image had keep their
    /// position, whatever the view says.
    #[test]
    fn rewritten_ranges_add_the_views_anchors() {
        let raw = noise(1 << 20, 11);
        let mut view = raw.clone();
        let rewritten = [200_000..300_000u64, 290_000..310_000, 700_000..701_000];
        for r in &rewritten {
            for b in &mut view[r.start as usize..r.end as usize] {
                *b ^= 0x5a;
            }
        }
        // The view also holds, in a rewritten range, a copy of raw bytes from
        // elsewhere: their keys are the raw image's already.
        view.copy_within(10_000..12_000, 250_000);
        let input = Input::new(&raw, &[]);
        let mut idx = AnchorIndex::build(input);
        let before = idx.len();
        idx.add_rewritten(input, rewritten.iter().cloned(), &|r| {
            Cow::Borrowed(&view[r.start as usize..r.end as usize])
        });
        let mut in_view = Vec::new();
        scan_anchors(&view, 0, view.len(), |p, k| in_view.push((p, k)));
        let inside = |p: usize| {
            rewritten
                .iter()
                .any(|r| (r.start as usize..r.end as usize + GEAR_HISTORY).contains(&p))
        };
        let mut added = 0;
        for &(p, key) in &in_view {
            let raw_pos = AnchorIndex::build(input).lookup(key);
            match (inside(p), raw_pos) {
                (_, Some((q, _))) => assert_eq!(idx.lookup(key).map(|f| f.0), Some(q)),
                (true, None) => {
                    assert_eq!(idx.lookup(key).map(|f| f.0), Some(p as u64), "at {p}");
                    added += 1;
                }
                (false, None) => assert_eq!(idx.lookup(key), None, "at {p}"),
            }
        }
        assert!(added > 300, "{added} anchors added");
        assert_eq!(idx.len(), before + added);
        // The raw image's anchors in the rewritten ranges stay.
        scan_anchors(&raw, 200_000, 300_000, |p, k| {
            assert_eq!(idx.lookup(k).map(|f| f.0), Some(p as u64));
        });
    }

    #[test]
    fn block_index_finds_moved_blocks() {
        let data = noise(4096 * 8, 3);
        let idx = BlockIndex::build(Input::new(&data, &[]), 4096);
        assert_eq!(idx.lookup(&data[4096 * 5..4096 * 6]), Some(4096 * 5));
        assert_eq!(idx.lookup(&[1u8; 4096]), None);
    }
}

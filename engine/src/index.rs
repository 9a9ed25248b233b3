//! Indexes of the old image: a BLAKE3 block index for exact block matches, and a
//! content-defined anchor index for locating where changed data came from.

use std::collections::HashMap;

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

/// The 128-bit key of a block: the first half of its BLAKE3 hash.
fn block_key(block: &[u8]) -> u128 {
    let h = blake3::hash(block);
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    u128::from_le_bytes(k)
}

/// Where each distinct full block of the old image first occurs.
#[derive(Debug)]
pub struct BlockIndex {
    block_size: usize,
    first: HashMap<u128, u64>,
}

impl BlockIndex {
    /// Hashes every full block of `old` with BLAKE3, in parallel.
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

    /// An old offset holding a block with the same BLAKE3 key as `block`, if any.
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

/// Calls `f(position, key)` for each anchor of `data[from..to]`, where the rolling
/// hash sees the `GEAR_HISTORY` bytes before each position. Positions are absolute
/// indexes into `data`; the key identifies the 64 bytes ending there.
pub fn scan_anchors(data: &[u8], from: usize, to: usize, mut f: impl FnMut(usize, u64)) {
    let to = to.min(data.len());
    let start = from.saturating_sub(GEAR_HISTORY);
    let mut h: u64 = 0;
    let mut last = 0usize;
    let mut have_last = false;
    for (i, &b) in data.iter().enumerate().take(to).skip(start) {
        h = (h << 1).wrapping_add(GEAR[b as usize]);
        if i >= from
            && h & ANCHOR_MASK == 0
            && i + 1 - start >= GEAR_HISTORY
            && (!have_last || i - last >= ANCHOR_MIN_GAP)
        {
            f(i, h);
            last = i;
            have_last = true;
        }
    }
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
        // The low bits of a key are the anchor condition's zeros; fold the high ones in.
        self.0 = v ^ (v >> 29);
    }
}

/// Anchors of the old image: the first position of each key.
#[derive(Debug)]
pub struct AnchorIndex {
    entries: HashMap<u64, u64, std::hash::BuildHasherDefault<KeyHasher>>,
}

impl AnchorIndex {
    /// Scans `old` for anchors in parallel, leaving out its holes (the anchors
    /// there would all be one key, and reading them would fault their pages in).
    pub(crate) fn build(old: Input<'_>) -> Self {
        let data = old.data;
        let mut entries: Vec<(u64, u64)> = (0..data.len().div_ceil(ANCHOR_SEGMENT))
            .into_par_iter()
            .flat_map_iter(|seg| {
                let from = seg * ANCHOR_SEGMENT;
                let to = (from + ANCHOR_SEGMENT).min(data.len());
                let mut v = Vec::with_capacity(ANCHOR_SEGMENT / 200);
                for piece in old.data_pieces(from as u64, to as u64) {
                    scan_anchors(
                        data,
                        piece.start as usize,
                        piece.end as usize,
                        |pos, key| v.push((key, pos as u64)),
                    );
                }
                v
            })
            .collect();
        let mut map = HashMap::with_capacity_and_hasher(entries.len(), Default::default());
        // Segments come back in order, so the first position of each key wins.
        for (key, pos) in entries.drain(..) {
            map.entry(key).or_insert(pos);
        }
        Self { entries: map }
    }

    /// The old position of an anchor with this key.
    pub fn get(&self, key: u64) -> Option<u64> {
        self.entries.get(&key).copied()
    }

    /// Number of distinct anchors.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use deltaward_testkit::noise;

    #[test]
    fn shifted_data_has_the_same_anchors() {
        let data = noise(1 << 16, 7);
        let mut shifted = vec![0xAAu8; 333];
        shifted.extend_from_slice(&data);
        let idx = AnchorIndex::build(Input::new(&data, &[]));
        assert!(idx.len() > 50, "too few anchors: {}", idx.len());
        let mut hits = 0;
        scan_anchors(&shifted, 0, shifted.len(), |pos, key| {
            if let Some(old) = idx.get(key) {
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

    #[test]
    fn block_index_finds_moved_blocks() {
        let data = noise(4096 * 8, 3);
        let idx = BlockIndex::build(Input::new(&data, &[]), 4096);
        assert_eq!(idx.lookup(&data[4096 * 5..4096 * 6]), Some(4096 * 5));
        assert_eq!(idx.lookup(&[1u8; 4096]), None);
    }
}

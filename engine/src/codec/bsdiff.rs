//! A bsdiff-style coder (after Colin Percival's bsdiff 4) on a bounded window.
//!
//! The window is indexed with a suffix array (libsais); the new data is scanned for
//! long approximate matches, and each match becomes an *add* run (new minus old,
//! byte-wise, mostly zeros on relocated code) followed by an *extra* run (literal
//! bytes). Two payload layouts, each its own frame kind:
//!
//! - **`bsdiff-runs`** (kind 4, what the encoder makes): the add bytes, mostly zero,
//!   are split into a stream of zero-run and nonzero-run lengths and a stream of the
//!   nonzero bytes; the controls, the runs, the nonzero add bytes and the extra bytes
//!   are four zstd frames back to back. On qemu-system-x86 at `best` that is 1.5 %
//!   smaller than one zstd 19 frame of the three plain streams and eight times
//!   faster to compress (zstd reads a tenth of the bytes); at zstd 3 (the default
//!   level's) about 29 % smaller.
//! - **`bsdiff`** (kind 3): the three streams laid out one after another in one zstd
//!   frame. The encoder falls back to it where the runs would take more room than the
//!   add bytes (add bytes that are rarely zero), which keeps kind 4's decoded streams
//!   within the same bound.
//!
//! Kind 3's decoded payload (all integers little-endian, varints LEB128):
//!
//! | field | size |
//! |---|---|
//! | control length C | u32 |
//! | add length A | u32 |
//! | extra length E | u32 |
//! | controls | C bytes: (add uvarint, extra uvarint, seek zigzag varint) each |
//! | add bytes | A |
//! | extra bytes | E |
//!
//! A + E equals the frame's output length, C is at most output length + 64.
//!
//! Kind 4's payload is four zstd frames, each declaring its content size, with
//! nothing before, between or after them: controls (C bytes, as above), runs (R
//! bytes: pairs of uvarints, a count of zero add bytes then a count of nonzero add
//! bytes, never both zero), nonzero add bytes (L bytes, in order), extra bytes (E).
//! C is at most output length + 64 and R + L + E at most the output length.

use super::zstd::{self, ZstdSettings};
use crate::{
    format::{bsdiff_max_control_len, bsdiff_max_decoded_len, FrameKind, BSDIFF_HEADER_LEN},
    grams::{self, word, Pick, GRAM},
};

const HEADER: usize = BSDIFF_HEADER_LEN as usize;

fn max_control_len(target_len: usize) -> usize {
    bsdiff_max_control_len(target_len as u64) as usize
}

/// A mask of the eight byte positions that hold equal bytes in `a` and `b`: bit `j`
/// for byte `j` of the little-endian words (the byte at address `at + j`).
fn equal_mask(a: u64, b: u64) -> u8 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = a ^ b;
    // A byte's top bit survives exactly where that byte of x is zero.
    let equal = !(((x & LOW7) + LOW7) | x | LOW7);
    // Gathers bits 7, 15, ..., 63 into bits 0 to 7.
    ((equal >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// Bit `j` set where `old[o + j]` equals `new[n + j]`, for the 64 bytes from there.
fn equal_bits(old: &[u8], o: usize, new: &[u8], n: usize) -> u64 {
    (0..8).fold(0u64, |bits, k| {
        bits | u64::from(equal_mask(word(old, o + 8 * k), word(new, n + 8 * k))) << (8 * k)
    })
}

/// Adds 64 compared bytes to an extension's `score` (`bits`: bit `j` set where the
/// `j`-th byte compared is equal), raising `peak` where the score passes it; returns
/// how many of the bytes reach the new peak first (1 to 64), if there is one. Where
/// all are equal the peak is at their end; where none is the score only falls (it
/// is never above the peak); else eight [`STRIDES`] lookups.
fn score_64(bits: u64, score: &mut i64, peak: &mut i64) -> Option<i64> {
    match bits {
        u64::MAX => {
            *score += 64;
            (*score > *peak).then(|| {
                *peak = *score;
                64
            })
        }
        0 => {
            *score -= 64;
            None
        }
        _ => {
            let mut at = None;
            for k in 0..8 {
                let st = &STRIDES[usize::from((bits >> (8 * k)) as u8)];
                if let Some(a) = st.add_to(score, peak) {
                    at = Some(8 * k + a);
                }
            }
            at
        }
    }
}

/// What up to eight compared bytes do to a score, in the order compared (for the
/// extensions +1 for an equal byte and -1 for a different one; for their overlap,
/// see [`OVERLAP_STRIDES`]): the sum, the highest prefix sum (of one byte or more)
/// and the first prefix length that reaches it.
#[derive(Clone, Copy)]
struct Stride {
    sum: i8,
    peak: i8,
    at: u8,
}

impl Stride {
    /// Adds the stride to `score`, raising `peak` where the score passes it on the
    /// way; returns how many of its bytes reach the new peak first, if there is
    /// one. The one step of the extensions, their overlap and [`score_64`].
    fn add_to(&self, score: &mut i64, peak: &mut i64) -> Option<i64> {
        let raised = *score + i64::from(self.peak) > *peak;
        if raised {
            *peak = *score + i64::from(self.peak);
        }
        *score += i64::from(self.sum);
        raised.then_some(i64::from(self.at))
    }
}

/// [`Stride`] for every mask of equal bytes, bit 0 compared first.
static STRIDES: [Stride; 256] = strides(8);

/// [`Stride`] for four bytes of the overlap of two extensions, where a byte scores
/// +1 if the first alignment holds it, -1 if the second does (0 for both or
/// neither): index `first << 4 | second`, each a four-bit mask of equal bytes.
static OVERLAP_STRIDES: [Stride; 256] = strides(4);

/// The stride table for masks of `width` bits (8: one mask, 4: two masks of four).
const fn strides(width: u32) -> [Stride; 256] {
    let mut t = [Stride {
        sum: 0,
        peak: 0,
        at: 0,
    }; 256];
    let mut m = 0;
    while m < 256 {
        let (mut sum, mut peak, mut at) = (0i8, i8::MIN, 0u8);
        let mut j = 0;
        while j < width {
            sum += if width == 8 {
                if (m >> j) & 1 == 1 {
                    1
                } else {
                    -1
                }
            } else {
                ((m >> (4 + j)) & 1) as i8 - ((m >> j) & 1) as i8
            };
            if sum > peak {
                peak = sum;
                at = j as u8 + 1;
            }
            j += 1;
        }
        t[m] = Stride { sum, peak, at };
        m += 1;
    }
    t
}

/// How many positions hold equal bytes in `a` and `b` (of equal length).
///
/// In blocks of 128 bytes counted in a byte (at most 128, no overflow), which the
/// compiler turns into byte-wise compares and subtractions: 5.5 times the speed of
/// a filtered count, whose every byte widened to a 64-bit sum (100 MB against
/// 100 MB, 4 runs: 212 ms against 38 ms).
fn equal_count(a: &[u8], b: &[u8]) -> i64 {
    const BLOCK: usize = 128;
    let (blocks_a, blocks_b) = (a.chunks_exact(BLOCK), b.chunks_exact(BLOCK));
    let tail = blocks_a
        .remainder()
        .iter()
        .zip(blocks_b.remainder())
        .filter(|(x, y)| x == y)
        .count() as i64;
    blocks_a.zip(blocks_b).fold(tail, |n, (x, y)| {
        let block = x.iter().zip(y).fold(0u8, |c, (p, q)| c + u8::from(p == q));
        n + i64::from(block)
    })
}

/// Length of the common prefix of `a` and `b`, eight bytes at a time.
fn matchlen(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let d = word(x, 0) ^ word(y, 0);
        if d != 0 {
            return i + (d.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + a[i..]
        .iter()
        .zip(&b[i..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// How the scan finds long matches in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchFinder {
    /// A suffix array (libsais): the longest match at every position, as bsdiff.
    SuffixArray,
    /// Hash chains over a sample of the window's 8-byte strings (one in eight,
    /// chosen by their bytes), searched only where the new data starts a sampled
    /// string: several times
    /// faster to build and query, a little less thorough.
    HashChain,
    /// [`MatchFinder::HashChain`] over one string in sixteen: faster again, and a
    /// little less thorough again.
    SparseHashChain,
}

/// A finder of long matches of a new-data suffix in the window.
trait Finder {
    /// A long match of `new` in the window: (window position, length). A length
    /// below 8 means nothing useful was found.
    fn search(&self, old: &[u8], new: &[u8]) -> (usize, usize);
    /// How many bytes longer than the current alignment's agreement a match must be
    /// for the scan to take it (bsdiff's 8). The suffix array finds the longest
    /// match, and there a lower bar pays: on kernel-ext4 at `best`, 6 gives a 0.6 %
    /// smaller patch than 8; with the hash chains' shorter candidates 6 is worse.
    fn min_gain(&self) -> i64 {
        8
    }
    /// Whether every search the scan does not take counts as a miss for its
    /// acceleration, or only those that found less than [`MIN_USEFUL`] bytes. The
    /// hash chains find short matches all over code (two equal instructions make a
    /// gram), and counted as hits they kept the scan searching at every byte where
    /// it took none of them. Counting them as misses, patch bytes at the default
    /// level: qemu-arm64 1,188,634 -> 845,805, qemu-ext4 1,183,423 -> 1,012,607,
    /// kernel-ext4 -0.6 %, shifted-ext4 -0.4 %, kernel-tar -0.06 %, qemu-x86
    /// 236,581 -> 254,840 (+7.7 %); at `fast` likewise (qemu-arm64 -28 %, qemu-x86
    /// +6.5 %). With the suffix array (`best`) it made the programs 1 to 4 % larger.
    /// Where this is true, taking a match ends the drought (the miss count starts
    /// again from zero).
    fn untaken_is_miss(&self) -> bool {
        true
    }
    /// Whether no search starts at `new` (the finder indexes only some grams).
    fn skips(&self, _new: &[u8]) -> bool {
        false
    }
}

/// Bytes compared per step of the binary search. Capping the comparison keeps a
/// search cheap on long matches; suffixes equal over this prefix are treated as
/// equal, so the match found may fall short of the longest by a little.
const SEARCH_PREFIX: usize = 96;

struct SuffixArray<'a> {
    sa: &'a [i32],
    old: &'a [u8],
}

impl Finder for SuffixArray<'_> {
    fn min_gain(&self) -> i64 {
        6
    }

    fn untaken_is_miss(&self) -> bool {
        false
    }

    fn search(&self, old: &[u8], new: &[u8]) -> (usize, usize) {
        debug_assert!(std::ptr::eq(old, self.old));
        let sa = self.sa;
        let (mut st, mut en) = (0usize, sa.len() - 1);
        while en - st >= 2 {
            let x = st + (en - st) / 2;
            let p = sa[x] as usize;
            let n = (old.len() - p).min(new.len()).min(SEARCH_PREFIX);
            if old[p..p + n] < new[..n] {
                st = x;
            } else {
                en = x;
            }
        }
        let (a, b) = (sa[st] as usize, sa[en] as usize);
        let (x, y) = (matchlen(&old[a..], new), matchlen(&old[b..], new));
        if x > y {
            (a, x)
        } else {
            (b, y)
        }
    }
}

/// Candidates examined per search. With one gram in eight indexed, 16 against 8
/// made the default level's patches smaller (kernel-tar -1.25 %, kernel-ext4
/// -1.1 %, qemu-x86 -0.2 %) for no measurable time (5 alternating rounds, CPU time
/// within 1 %).
const CHAIN_DEPTH: usize = 16;
/// Matches are measured up to this length; the scan extends them anyway.
const MAX_MEASURE: usize = 1 << 12;
/// A candidate at least this long ends the chain walk.
const GOOD_ENOUGH: usize = 256;
/// Largest head table: 2^18 entries (1 MiB of [`Packed`] heads), whatever the
/// window. Filling a head table is a cache miss per window position when it
/// outgrows the caches: at 2^22 entries (16 MiB, an 8.5 MiB window) that was most
/// of the bsdiff coder's time.
/// Measured on kernel-tar at the default level, 3 alternating rounds, CPU time:
/// 2^22 8.3 to 9.2 s, 2^20 7.0 to 8.1 s, 2^18 6.0 to 7.5 s, 2^16 6.3 to 7.6 s; patch
/// bytes at 2^18 against 2^22: kernel-ext4 +0.10 %, kernel-tar +0.04 %, qemu-x86
/// -0.28 % (longer chains, walked to the same depth, find other candidates).
const MAX_HEAD_BITS: u32 = 18;

/// A gram indexed at more window positions than this starts no search: its
/// candidates are the last few of thousands and say nothing about which alignment
/// is right, yet the scan takes one when it beats the current alignment (a
/// relocation table's entries all carry the same `info` word). The scan searches
/// again a byte later. Default level, patch bytes: qemu-x86 402,350 -> 236,581,
/// qemu-arm64 1,337,696 -> 1,188,634, qemu-ext4 1,238,794 -> 1,183,423; kernel-ext4,
/// kernel-tar and shifted-ext4 +0.07 to +0.15 %. Limits of 64 to 4,096 gave
/// qemu-x86 236 to 238 KB. 510 (the most a [`Packed`] head counts, less one)
/// against 1,024, default level: kernel-ext4 -0.10 %, kernel-tar -0.06 %, the
/// qemu pairs -0.03 to -0.05 %.
const COMMON_GRAM: usize = 510;

/// A head table entry: a hash's newest chain entry (0 for none) and how many window
/// positions have the hash, saturating at `COMMON_GRAM + 1`. One table, one cache
/// line per sampled gram rather than two (measured: the same time as two tables,
/// 3 alternating rounds).
trait Head: Copy {
    const EMPTY: Self;
    /// The most chain entries the head can name.
    const MAX_ENTRIES: usize;
    fn get(self) -> (u32, u32);
    fn set(newest: u32, count: u32) -> Self;
}

/// Bits of a [`Packed`] head's count.
const COUNT_BITS: u32 = 9;
const _: () = assert!(COMMON_GRAM < (1 << COUNT_BITS) - 1);

/// A head in 4 bytes: the count in the low [`COUNT_BITS`], the newest entry above.
/// Half of [`Wide`]'s table, 1 MiB for 2^18 heads: filling the table is a cache miss
/// per sampled gram, and this machine's L2 holds 1 MiB per core. Default level,
/// 5 alternating rounds against `Wide`: CPU time kernel-ext4 -5.4 %, kernel-tar
/// -2.6 %, qemu-ext4 -2.5 %, the programs within the noise.
type Packed = u32;

impl Head for Packed {
    const EMPTY: Self = 0;
    const MAX_ENTRIES: usize = (1 << (32 - COUNT_BITS)) - 1;
    fn get(self) -> (u32, u32) {
        (self >> COUNT_BITS, self & ((1 << COUNT_BITS) - 1))
    }
    fn set(newest: u32, count: u32) -> Self {
        newest << COUNT_BITS | count
    }
}

/// A head in 8 bytes, for windows with more sampled grams than a [`Packed`] head
/// can name (over about 64 MiB: larger windows than the levels' own).
type Wide = [u32; 2];

impl Head for Wide {
    const EMPTY: Self = [0, 0];
    const MAX_ENTRIES: usize = u32::MAX as usize;
    fn get(self) -> (u32, u32) {
        (self[0], self[1])
    }
    fn set(newest: u32, count: u32) -> Self {
        [newest, count]
    }
}

struct HashChain<'s, H, const RATE: u64> {
    bits: u32,
    /// Per hash, its [`Head`].
    heads: &'s [H],
    /// Each chain entry's window position and the next entry.
    links: &'s [[u32; 2]],
}

/// One in about this many grams is sampled (see [`sampled`]) by
/// [`MatchFinder::HashChain`].
const SAMPLE_RATE: u64 = 8;

/// And by [`MatchFinder::SparseHashChain`].
const SPARSE_SAMPLE_RATE: u64 = 16;

/// Most chain entries for a window of `grams` grams sampled one in `rate`: twice
/// the sampled grams' share. Data whose grams are sampled more often than that (a
/// pattern repeated with a sampled gram at every position) is indexed up to here, so
/// that the links take at most two bytes per window byte.
fn link_cap(grams: usize, rate: u64) -> usize {
    grams / rate as usize * 2 + 1
}

/// Whether [`Packed`] heads can name every chain entry of a window of `len` bytes.
fn packed_heads_suffice(len: usize, rate: u64) -> bool {
    link_cap(len.saturating_sub(GRAM - 1), rate) <= Packed::MAX_ENTRIES
}

/// Whether the gram `w` (the little-endian word of its eight bytes) is one of the
/// sampled ones, about one in `RATE`: the chains index only those, and the scan
/// searches only where the new data starts one. A match of `l` bytes holds `l - 7`
/// grams, so a long one holds a sampled gram near its start, on both sides. The
/// grams one in 16 picks are among those one in 8 picks.
#[inline(always)]
fn sampled<const RATE: u64>(w: u64) -> bool {
    w.wrapping_mul(0xff51_afd7_ed55_8ccd) > u64::MAX - u64::MAX / RATE
}

/// The rule of [`sampled`], for [`grams::mask`].
struct Sampled<const RATE: u64>;

impl<const RATE: u64> Pick for Sampled<RATE> {
    #[inline(always)]
    fn picks(w: u64) -> bool {
        sampled::<RATE>(w)
    }
}

/// Bit `j` set where the gram at `block[j..]` is sampled, for the `block.len() - 7`
/// (at most 64) grams of `block`.
fn sampled_mask<const RATE: u64>(block: &[u8]) -> u64 {
    grams::mask::<Sampled<RATE>>(block)
}

/// The `bits`-bit hash of the gram that `g` starts with.
fn gram_hash(g: &[u8], bits: u32) -> usize {
    (word(g, 0).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
}

impl<H: Head, const RATE: u64> HashChain<'_, H, RATE> {
    fn hash(&self, g: &[u8]) -> usize {
        gram_hash(g, self.bits)
    }

    /// Indexes the sampled grams of `old` in the scratch's tables, at most
    /// [`link_cap`] of them.
    fn build<'s>(
        old: &[u8],
        heads: &'s mut Vec<H>,
        links: &'s mut Vec<[u32; 2]>,
    ) -> HashChain<'s, H, RATE> {
        let grams = old.len().saturating_sub(GRAM - 1);
        let slots = (grams / RATE as usize).max(1);
        let bits = (usize::BITS - slots.leading_zeros()).clamp(10, MAX_HEAD_BITS);
        heads.clear();
        heads.resize(1 << bits, H::EMPTY);
        links.clear();
        let cap = link_cap(grams, RATE).min(H::MAX_ENTRIES);
        let mut i = 0;
        'blocks: while i < grams {
            // The sampled grams of the next 64 positions, as a mask: no branch per
            // position.
            let n = (grams - i).min(64);
            let mut mask = sampled_mask::<RATE>(&old[i..i + n + GRAM - 1]);
            while mask != 0 {
                if links.len() >= cap {
                    break 'blocks;
                }
                let p = i + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let h = gram_hash(&old[p..], bits);
                let head = &mut heads[h];
                let (newest, count) = head.get();
                if count as usize >= COMMON_GRAM {
                    // No search walks this chain: the count stops one past the limit.
                    *head = H::set(newest, COMMON_GRAM as u32 + 1);
                    continue;
                }
                links.push([p as u32, newest]);
                // Entry e stands for links[e - 1]; 0 means none.
                *head = H::set(links.len() as u32, count + 1);
            }
            i += n;
        }
        HashChain { bits, heads, links }
    }
}

impl<H: Head, const RATE: u64> Finder for HashChain<'_, H, RATE> {
    fn skips(&self, new: &[u8]) -> bool {
        new.len() < GRAM || !sampled::<RATE>(word(new, 0))
    }

    fn search(&self, old: &[u8], new: &[u8]) -> (usize, usize) {
        if new.len() < GRAM {
            return (0, 0);
        }
        let mut best = (0usize, 0usize);
        let h = self.hash(new);
        let (mut entry, count) = self.heads[h].get();
        if count as usize > COMMON_GRAM {
            return best;
        }
        for _ in 0..CHAIN_DEPTH {
            if entry == 0 {
                break;
            }
            let [at, next] = self.links[entry as usize - 1];
            let p = at as usize;
            let l = matchlen(&old[p..(p + MAX_MEASURE).min(old.len())], new);
            if l > best.1 {
                best = (p, l);
                if l >= GOOD_ENOUGH {
                    break;
                }
            }
            entry = next;
        }
        best
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_uvarint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Buffers that a frame encoder keeps from one frame to the next. Fresh buffers of
/// tens of MiB cost a page fault per 4 KiB, and the faults of many threads queue on
/// the process's memory map: on 16 cores that was most of the diff's system time.
#[derive(Default)]
pub struct Scratch {
    sa: Vec<i32>,
    heads: Vec<Packed>,
    wide_heads: Vec<Wide>,
    links: Vec<[u32; 2]>,
    add: Vec<u8>,
    runs: Vec<u8>,
    lits: Vec<u8>,
    blob: Vec<u8>,
    cctx: Option<zstd_safe::CCtx<'static>>,
}

impl Scratch {
    /// Frees the kept zstd context (at level 19 its tables are about 80 MiB).
    pub fn release_zstd(&mut self) {
        self.cctx = None;
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("sa", &self.sa.capacity())
            .field("heads", &self.heads.capacity())
            .field("wide_heads", &self.wide_heads.capacity())
            .field("links", &self.links.capacity())
            .field("add", &self.add.capacity())
            .field("runs", &self.runs.capacity())
            .field("lits", &self.lits.capacity())
            .field("blob", &self.blob.capacity())
            .finish_non_exhaustive()
    }
}

/// An encoded frame payload and the kind of frame that decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// [`FrameKind::BsdiffRuns`], or [`FrameKind::Bsdiff`] where runs would not pay.
    pub kind: FrameKind,
    /// The payload bytes.
    pub bytes: Vec<u8>,
}

/// Encodes `new` against `old`. Returns `None` when the control stream would exceed
/// the format's bound (the caller then keeps the plain zstd coder's result).
pub fn encode(
    old: &[u8],
    new: &[u8],
    finder: MatchFinder,
    zstd: ZstdSettings,
) -> Result<Option<Payload>, &'static str> {
    encode_with(&mut Scratch::default(), old, new, finder, zstd)
}

/// [`encode`] with buffers kept from earlier frames.
pub fn encode_with(
    scratch: &mut Scratch,
    old: &[u8],
    new: &[u8],
    finder: MatchFinder,
    zstd: ZstdSettings,
) -> Result<Option<Payload>, &'static str> {
    let mut add = std::mem::take(&mut scratch.add);
    add.clear();
    let (ctrl, extra) = if old.len() < 2 {
        let mut ctrl = Vec::new();
        if !new.is_empty() {
            put_uvarint(&mut ctrl, 0);
            put_uvarint(&mut ctrl, new.len() as u64);
            put_uvarint(&mut ctrl, 0);
        }
        (ctrl, new.to_vec())
    } else {
        if old.len() > i32::MAX as usize {
            return Err("window too large for the match finder");
        }
        match finder {
            MatchFinder::SuffixArray => {
                // Grown, never shrunk nor cleared: the construction writes every entry.
                if scratch.sa.len() < old.len() {
                    scratch.sa.resize(old.len(), 0);
                }
                let sa = &mut scratch.sa[..old.len()];
                libsais::SuffixArrayConstruction::for_text(old)
                    .in_borrowed_buffer(&mut *sa)
                    .single_threaded()
                    .run()
                    .map_err(|_| "suffix array construction failed")?;
                diff(&SuffixArray { sa, old }, old, new, &mut add)
            }
            MatchFinder::HashChain => hash_chain_diff::<SAMPLE_RATE>(scratch, old, new, &mut add),
            MatchFinder::SparseHashChain => {
                hash_chain_diff::<SPARSE_SAMPLE_RATE>(scratch, old, new, &mut add)
            }
        }
    };
    let out = if ctrl.len() <= max_control_len(new.len()) {
        compress_streams(scratch, &ctrl, &add, &extra, zstd).map(Some)
    } else {
        Ok(None)
    };
    scratch.add = add;
    out
}

/// The scan over hash chains of one gram in `RATE`, with packed heads where they
/// can name every entry.
fn hash_chain_diff<const RATE: u64>(
    scratch: &mut Scratch,
    old: &[u8],
    new: &[u8],
    add: &mut Vec<u8>,
) -> (Vec<u8>, Vec<u8>) {
    if packed_heads_suffice(old.len(), RATE) {
        let finder = HashChain::<_, RATE>::build(old, &mut scratch.heads, &mut scratch.links);
        diff(&finder, old, new, add)
    } else {
        let finder = HashChain::<_, RATE>::build(old, &mut scratch.wide_heads, &mut scratch.links);
        diff(&finder, old, new, add)
    }
}

/// Lays out and compresses the three streams: as kind 4 where the add bytes' runs
/// take less room than the add bytes, else as kind 3.
fn compress_streams(
    scratch: &mut Scratch,
    ctrl: &[u8],
    add: &[u8],
    extra: &[u8],
    zstd: ZstdSettings,
) -> Result<Payload, &'static str> {
    let cctx = scratch.cctx.get_or_insert_with(zstd_safe::CCtx::create);
    let (runs, lits) = (&mut scratch.runs, &mut scratch.lits);
    if split_runs(add, runs, lits) {
        let mut bytes = Vec::new();
        for stream in [ctrl, runs, lits, extra] {
            bytes.extend_from_slice(&zstd::encode_in(cctx, &[], stream, zstd)?);
        }
        return Ok(Payload {
            kind: FrameKind::BsdiffRuns,
            bytes,
        });
    }
    let blob = &mut scratch.blob;
    blob.clear();
    for n in [ctrl.len(), add.len(), extra.len()] {
        blob.extend_from_slice(&(n as u32).to_le_bytes());
    }
    blob.extend_from_slice(ctrl);
    blob.extend_from_slice(add);
    blob.extend_from_slice(extra);
    Ok(Payload {
        kind: FrameKind::Bsdiff,
        bytes: zstd::encode_in(cctx, &[], blob, zstd)?,
    })
}

/// Count of leading zero bytes of `b`, eight at a time.
fn zero_prefix(b: &[u8]) -> usize {
    let mut i = 0;
    for c in b.chunks_exact(8) {
        let w = word(c, 0);
        if w != 0 {
            return i + (w.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + b[i..].iter().take_while(|&&x| x == 0).count()
}

/// Count of leading nonzero bytes of `b`, eight at a time.
fn nonzero_prefix(b: &[u8]) -> usize {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    for c in b.chunks_exact(8) {
        let w = word(c, 0);
        // The lowest flagged byte is the first zero byte (a borrow can only flag
        // bytes above a zero one).
        let zero = w.wrapping_sub(LOW) & !w & HIGH;
        if zero != 0 {
            return i + (zero.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + b[i..].iter().take_while(|&&x| x != 0).count()
}

/// Splits the add bytes into kind 4's runs and nonzero bytes (`runs` and `lits`,
/// emptied first). Returns false, leaving them unfinished, once they take more
/// room than `add`.
fn split_runs(add: &[u8], runs: &mut Vec<u8>, lits: &mut Vec<u8>) -> bool {
    runs.clear();
    lits.clear();
    let mut rest = add;
    while !rest.is_empty() {
        let zeros = zero_prefix(rest);
        let nonzero = nonzero_prefix(&rest[zeros..]);
        put_uvarint(runs, zeros as u64);
        put_uvarint(runs, nonzero as u64);
        lits.extend_from_slice(&rest[zeros..zeros + nonzero]);
        rest = &rest[zeros + nonzero..];
        if runs.len() + lits.len() > add.len() {
            return false;
        }
    }
    true
}

/// How far ahead the scan looks for the current alignment to resume before searching.
const REPEAT_LOOKAHEAD: usize = 16;
/// Matches shorter than this count as misses for the scan's acceleration (see
/// [`Finder::untaken_is_miss`]).
const MIN_USEFUL: i64 = 8;
/// Most positions skipped between two searches in a stretch without matches.
const MAX_SKIP: i64 = 15;

/// The bsdiff scan: returns (controls, add bytes, extra bytes).
/// The add bytes go to `add`, which the caller has emptied.
fn diff(finder: &dyn Finder, old: &[u8], new: &[u8], add: &mut Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    scan::<false>(finder, old, new, add)
}

/// [`diff`], or with `BYTEWISE` the same scan without its eight-byte steps (the
/// skips over equal bytes and the stride tables), byte by byte: the tests hold the
/// two to the same output.
fn scan<const BYTEWISE: bool>(
    finder: &dyn Finder,
    old: &[u8],
    new: &[u8],
    add: &mut Vec<u8>,
) -> (Vec<u8>, Vec<u8>) {
    let (oldsize, newsize) = (old.len() as i64, new.len() as i64);
    let min_gain = finder.min_gain();
    let untaken_is_miss = finder.untaken_is_miss();
    let at_old = |i: i64| old[i as usize];
    let at_new = |i: i64| new[i as usize];
    let mut ctrl = Vec::new();
    add.reserve(new.len());
    let mut extra = Vec::new();
    let (mut scan, mut len, mut pos) = (0i64, 0i64, 0i64);
    let (mut lastscan, mut lastpos, mut lastoffset) = (0i64, 0i64, 0i64);
    let mut misses = 0i64;
    while scan < newsize {
        let mut oldscore = 0i64;
        scan += len;
        let mut scsc = scan;
        while scan < newsize {
            // Repeat offset first: where the current alignment still matches, take it
            // without a search (relocated code matches along one alignment between
            // small differences); where it resumes within a few bytes, wait for it.
            // Otherwise ask the match finder.
            let cur = scan + lastoffset;
            let (s_us, c_us) = (scan as usize, cur as usize);
            let repeat_at = |k: usize| -> bool {
                cur >= 0
                    && c_us + k + GRAM <= old.len()
                    && s_us + k + GRAM <= new.len()
                    && old[c_us + k..c_us + k + GRAM] == new[s_us + k..s_us + k + GRAM]
            };
            let mut resume = None;
            let mut skipped = false;
            let (p, l) = if repeat_at(0) {
                (c_us, matchlen(&old[c_us..], &new[s_us..]))
            } else if finder.skips(&new[s_us..]) {
                skipped = true;
                (0, 0)
            } else if let Some(k) = (1..=REPEAT_LOOKAHEAD).find(|&k| repeat_at(k)) {
                resume = Some(k as i64);
                (0, 0)
            } else {
                finder.search(old, &new[s_us..])
            };
            pos = p as i64;
            len = l as i64;
            if pos - scan == lastoffset && scsc >= scan {
                // The match lies on the current alignment: every byte counts.
                oldscore += (scan + len - scsc).max(0);
                scsc = scsc.max(scan + len);
            }
            if !BYTEWISE && scsc < scan + len {
                // The bytes equal on the current alignment, where it lies in the
                // window, counted in one vectorised pass.
                let (lo, hi) = (
                    scsc.max(-lastoffset),
                    (scan + len).min(oldsize - lastoffset),
                );
                if lo < hi {
                    oldscore += equal_count(
                        &old[(lo + lastoffset) as usize..(hi + lastoffset) as usize],
                        &new[lo as usize..hi as usize],
                    );
                }
                scsc = scan + len;
            }
            while scsc < scan + len {
                if scsc + lastoffset < oldsize && at_old(scsc + lastoffset) == at_new(scsc) {
                    oldscore += 1;
                }
                scsc += 1;
            }
            if (len == oldscore && len != 0) || len > oldscore + min_gain {
                if untaken_is_miss {
                    misses = 0;
                }
                break;
            }
            // Where the alignment resumes, step to it: it is no miss. Counted as
            // misses, waits would speed the steps up until they jumped over the
            // resume points, and the scan would stay on a poor alignment without
            // searching (measured on qemu-x86's relocation table; stepping to them
            // made the default level's patches 0.3 to 0.7 % smaller on the kernel
            // pairs, and its CPU time 3 to 5 % lower).
            // Where no search is taken, search less often the longer the drought
            // lasts (as LZ4's acceleration does); a match found late is extended
            // backwards.
            let step = match resume {
                Some(k) => k,
                None if skipped => 1,
                None => {
                    misses = if untaken_is_miss || len < MIN_USEFUL {
                        misses + 1
                    } else {
                        0
                    };
                    1 + (misses >> 3).min(MAX_SKIP)
                }
            };
            for _ in 0..step {
                if scan >= newsize {
                    break;
                }
                if scan + lastoffset < oldsize && at_old(scan + lastoffset) == at_new(scan) {
                    oldscore -= 1;
                }
                scan += 1;
            }
        }
        if len != oldscore || scan == newsize {
            // bsdiff's extensions: the prefix of the stretch since the last match,
            // and the suffix before this match, where the score (equal bytes less
            // different ones) peaks first. Eight bytes at a time through
            // [`STRIDES`], the same result as byte by byte.
            let mut lenf = 0i64;
            let (mut score, mut peak) = (0i64, 0i64);
            let mut i = 0i64;
            while lastscan + i < scan && lastpos + i < oldsize {
                if !BYTEWISE && lastscan + i + 64 <= scan && lastpos + i + 64 <= oldsize {
                    let (o, n) = ((lastpos + i) as usize, (lastscan + i) as usize);
                    let bits = equal_bits(old, o, new, n);
                    if let Some(at) = score_64(bits, &mut score, &mut peak) {
                        lenf = i + at;
                    }
                    i += 64;
                    continue;
                }
                if !BYTEWISE && lastscan + i + 8 <= scan && lastpos + i + 8 <= oldsize {
                    let (o, n) = ((lastpos + i) as usize, (lastscan + i) as usize);
                    let st = &STRIDES[usize::from(equal_mask(word(old, o), word(new, n)))];
                    if let Some(at) = st.add_to(&mut score, &mut peak) {
                        lenf = i + at;
                    }
                    i += 8;
                    continue;
                }
                score += if at_old(lastpos + i) == at_new(lastscan + i) {
                    1
                } else {
                    -1
                };
                i += 1;
                if score > peak {
                    peak = score;
                    lenf = i;
                }
            }
            let mut lenb = 0i64;
            if scan < newsize {
                let (mut score, mut peak) = (0i64, 0i64);
                let mut i = 1i64;
                while scan >= lastscan + i && pos >= i {
                    if !BYTEWISE && scan >= lastscan + i + 63 && pos >= i + 63 {
                        // 64 bytes at a time, as in the forward extension; bit 0 of
                        // `bits` is the top byte.
                        let (o, n) = ((pos - i - 63) as usize, (scan - i - 63) as usize);
                        let bits = equal_bits(old, o, new, n).reverse_bits();
                        if let Some(at) = score_64(bits, &mut score, &mut peak) {
                            lenb = i - 1 + at;
                        }
                        i += 64;
                        continue;
                    }
                    if !BYTEWISE && scan >= lastscan + i + 7 && pos >= i + 7 {
                        // Compared from the top address down: byte 7 first.
                        let (o, n) = ((pos - i - 7) as usize, (scan - i - 7) as usize);
                        let mask = equal_mask(word(old, o), word(new, n)).reverse_bits();
                        if let Some(at) = STRIDES[usize::from(mask)].add_to(&mut score, &mut peak) {
                            lenb = i - 1 + at;
                        }
                        i += 8;
                        continue;
                    }
                    score += if at_old(pos - i) == at_new(scan - i) {
                        1
                    } else {
                        -1
                    };
                    if score > peak {
                        peak = score;
                        lenb = i;
                    }
                    i += 1;
                }
            }
            if lastscan + lenf > scan - lenb {
                let overlap = (lastscan + lenf) - (scan - lenb);
                // Where to cut between the two: the first peak of the bytes the
                // first alignment holds less those the second holds, eight bytes at
                // a time as in the extensions.
                let (nf, of, ob) = (scan - lenb, lastpos + lenf - overlap, pos - lenb);
                let (mut score, mut peak, mut lens) = (0i64, 0i64, 0i64);
                let mut i = 0i64;
                while i < overlap {
                    if !BYTEWISE && i + 8 <= overlap {
                        let n = word(new, (nf + i) as usize);
                        let first = equal_mask(word(old, (of + i) as usize), n);
                        let second = equal_mask(word(old, (ob + i) as usize), n);
                        for half in [0, 4] {
                            let m = ((first >> half) & 15) << 4 | ((second >> half) & 15);
                            let st = &OVERLAP_STRIDES[usize::from(m)];
                            if let Some(at) = st.add_to(&mut score, &mut peak) {
                                lens = i + half + at;
                            }
                        }
                        i += 8;
                        continue;
                    }
                    if at_new(nf + i) == at_old(of + i) {
                        score += 1;
                    }
                    if at_new(nf + i) == at_old(ob + i) {
                        score -= 1;
                    }
                    i += 1;
                    if score > peak {
                        peak = score;
                        lens = i;
                    }
                }
                lenf += lens - overlap;
                lenb -= lens;
            }
            let (ns, os) = (lastscan as usize, lastpos as usize);
            let lf = lenf as usize;
            add.extend(
                new[ns..ns + lf]
                    .iter()
                    .zip(&old[os..os + lf])
                    .map(|(n, o)| n.wrapping_sub(*o)),
            );
            let extra_len = (scan - lenb) - (lastscan + lenf);
            extra.extend_from_slice(&new[(lastscan + lenf) as usize..(scan - lenb) as usize]);
            let seek = (pos - lenb) - (lastpos + lenf);
            if lenf + extra_len > 0 || seek != 0 {
                put_uvarint(&mut ctrl, lenf as u64);
                put_uvarint(&mut ctrl, extra_len as u64);
                put_uvarint(&mut ctrl, ((seek << 1) ^ (seek >> 63)) as u64);
            }
            lastscan = scan - lenb;
            lastpos = pos - lenb;
            lastoffset = pos - scan;
        }
    }
    (ctrl, extra)
}

/// Decodes a kind 3 payload (`bsdiff`) against `old` into `out` (exactly the frame's
/// output length), using `scratch` (at least `bsdiff_max_decoded_len(out.len())`
/// bytes) for the decoded streams. Every length and position is checked.
pub fn decode(
    old: &[u8],
    payload: &[u8],
    out: &mut [u8],
    scratch: &mut [u8],
) -> Result<(), &'static str> {
    let cap = bsdiff_max_decoded_len(out.len() as u64);
    let declared = match zstd_safe::get_frame_content_size(payload) {
        Ok(Some(n)) if n <= cap => n as usize,
        Ok(Some(_)) => return Err("decoded streams larger than the frame allows"),
        _ => return Err("zstd frame header is missing or unreadable"),
    };
    let blob = scratch
        .get_mut(..declared)
        .ok_or("decoder scratch memory is smaller than the frame allows")?;
    zstd::decode(&[], payload, blob)?;
    let blob = &*blob;
    let field = |i: usize| -> Result<usize, &'static str> {
        let b = blob
            .get(i * 4..i * 4 + 4)
            .ok_or("stream header truncated")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (clen, alen, elen) = (field(0)?, field(1)?, field(2)?);
    if clen > max_control_len(out.len())
        || alen.checked_add(elen) != Some(out.len())
        || HEADER + clen + alen + elen != blob.len()
    {
        return Err("stream lengths disagree with the frame");
    }
    let ctrl = &blob[HEADER..HEADER + clen];
    let add = &blob[HEADER + clen..HEADER + clen + alen];
    let extra = &blob[HEADER + clen + alen..];
    run_controls(old, ctrl, extra, out, &mut PlainAdd { add, pos: 0 })
}

/// Decodes a kind 4 payload (`bsdiff-runs`), as [`decode`] does kind 3, with the
/// same scratch memory.
pub fn decode_runs(
    old: &[u8],
    payload: &[u8],
    out: &mut [u8],
    scratch: &mut [u8],
) -> Result<(), &'static str> {
    const STREAMS: usize = 4;
    let mut frames: [&[u8]; STREAMS] = [&[]; STREAMS];
    let mut lens = [0u64; STREAMS];
    let mut rest = payload;
    for (frame, len) in frames.iter_mut().zip(&mut lens) {
        let n = zstd_safe::find_frame_compressed_size(rest)
            .map_err(|_| "a stream's zstd frame is missing or unreadable")?;
        let (head, tail) = rest
            .split_at_checked(n)
            .ok_or("a stream's zstd frame is truncated")?;
        *len = match zstd_safe::get_frame_content_size(head) {
            Ok(Some(n)) => n,
            _ => return Err("a stream's zstd frame does not declare its length"),
        };
        (*frame, rest) = (head, tail);
    }
    if !rest.is_empty() {
        return Err("bytes follow the last stream");
    }
    let [clen, rlen, llen, elen] = lens;
    let t = out.len() as u64;
    let add_and_extra = rlen.checked_add(llen).and_then(|n| n.checked_add(elen));
    if clen > bsdiff_max_control_len(t) || add_and_extra.is_none_or(|n| n > t) {
        return Err("stream lengths disagree with the frame");
    }
    // Both at most the frame's bounds: within the scratch, which is at least
    // `bsdiff_max_decoded_len(t)` = the control bound + 2t + the header.
    let mut free: &mut [u8] = scratch;
    let mut streams: [&[u8]; STREAMS] = [&[]; STREAMS];
    for ((stream, frame), len) in streams.iter_mut().zip(frames).zip(lens) {
        let (buf, tail) = std::mem::take(&mut free)
            .split_at_mut_checked(len as usize)
            .ok_or("decoder scratch memory is smaller than the frame allows")?;
        zstd::decode(&[], frame, buf)?;
        *stream = buf;
        free = tail;
    }
    let [ctrl, runs, lits, extra] = streams;
    let mut add = RunAdd {
        runs,
        lits,
        zeros: 0,
        nonzero: 0,
    };
    run_controls(old, ctrl, extra, out, &mut add)
}

/// Where an add run's differences come from.
trait AddBytes {
    /// Writes `src` plus the next `dst.len()` add bytes into `dst` (as long as `src`).
    fn add(&mut self, dst: &mut [u8], src: &[u8]) -> Result<(), &'static str>;
    /// Whether every add byte was used.
    fn used_up(&self) -> bool;
}

/// Kind 3: the add bytes as they are.
struct PlainAdd<'a> {
    add: &'a [u8],
    pos: usize,
}

impl AddBytes for PlainAdd<'_> {
    fn add(&mut self, dst: &mut [u8], src: &[u8]) -> Result<(), &'static str> {
        let diff = self
            .pos
            .checked_add(dst.len())
            .and_then(|end| self.add.get(self.pos..end))
            .ok_or("add stream exhausted")?;
        for ((d, s), x) in dst.iter_mut().zip(src).zip(diff) {
            *d = s.wrapping_add(*x);
        }
        self.pos += dst.len();
        Ok(())
    }
    fn used_up(&self) -> bool {
        self.pos == self.add.len()
    }
}

/// Kind 4: runs of zero add bytes (a copy) and of nonzero ones.
struct RunAdd<'a> {
    /// Run lengths not yet read.
    runs: &'a [u8],
    /// Nonzero add bytes not yet used.
    lits: &'a [u8],
    /// What is left of the current zero run, then of the current nonzero run.
    zeros: u64,
    nonzero: u64,
}

impl AddBytes for RunAdd<'_> {
    fn add(&mut self, mut dst: &mut [u8], mut src: &[u8]) -> Result<(), &'static str> {
        while !dst.is_empty() {
            if self.zeros == 0 && self.nonzero == 0 {
                let mut pos = 0;
                let zeros = get_uvarint(self.runs, &mut pos).ok_or("run stream exhausted")?;
                let nonzero = get_uvarint(self.runs, &mut pos).ok_or("run stream exhausted")?;
                if zeros == 0 && nonzero == 0 {
                    return Err("empty run in the run stream");
                }
                (self.runs, self.zeros, self.nonzero) = (&self.runs[pos..], zeros, nonzero);
            }
            let (n, zero) = if self.zeros > 0 {
                (self.zeros.min(dst.len() as u64) as usize, true)
            } else {
                (self.nonzero.min(dst.len() as u64) as usize, false)
            };
            let (d, dst_rest) = std::mem::take(&mut dst).split_at_mut(n);
            let (s, src_rest) = src.split_at_checked(n).ok_or("add run leaves the window")?;
            if zero {
                d.copy_from_slice(s);
                self.zeros -= n as u64;
            } else {
                let (lit, lits_rest) = self
                    .lits
                    .split_at_checked(n)
                    .ok_or("nonzero add stream exhausted")?;
                for ((d, s), x) in d.iter_mut().zip(s).zip(lit) {
                    *d = s.wrapping_add(*x);
                }
                self.lits = lits_rest;
                self.nonzero -= n as u64;
            }
            (dst, src) = (dst_rest, src_rest);
        }
        Ok(())
    }
    fn used_up(&self) -> bool {
        self.runs.is_empty() && self.lits.is_empty() && self.zeros == 0 && self.nonzero == 0
    }
}

/// Runs the control stream: each control's add run (from the window at the current
/// position, plus `add`'s bytes), then its extra run, then the seek.
fn run_controls(
    old: &[u8],
    ctrl: &[u8],
    extra: &[u8],
    out: &mut [u8],
    add: &mut dyn AddBytes,
) -> Result<(), &'static str> {
    let (mut cpos, mut epos, mut npos) = (0usize, 0usize, 0usize);
    let mut opos: i64 = 0;
    while cpos < ctrl.len() {
        let a = get_uvarint(ctrl, &mut cpos).ok_or("control truncated")?;
        let e = get_uvarint(ctrl, &mut cpos).ok_or("control truncated")?;
        let z = get_uvarint(ctrl, &mut cpos).ok_or("control truncated")?;
        let seek = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let a = usize::try_from(a).map_err(|_| "add run too long")?;
        let e = usize::try_from(e).map_err(|_| "extra run too long")?;
        let o = usize::try_from(opos).map_err(|_| "add run starts before the window")?;
        let src = old
            .get(o..o.checked_add(a).ok_or("add run overflows")?)
            .ok_or("add run leaves the window")?;
        let dst = out
            .get_mut(npos..npos.checked_add(a).ok_or("add run overflows")?)
            .ok_or("add run past the frame end")?;
        add.add(dst, src)?;
        npos += a;
        let lit = epos
            .checked_add(e)
            .and_then(|end| extra.get(epos..end))
            .ok_or("extra stream exhausted")?;
        // e <= extra.len() here, so npos + e cannot overflow.
        out.get_mut(npos..npos + e)
            .ok_or("extra run past the frame end")?
            .copy_from_slice(lit);
        epos += e;
        npos += e;
        opos = opos
            .checked_add(a as i64)
            .and_then(|p| p.checked_add(seek))
            .ok_or("seek overflows")?;
    }
    if npos != out.len() || !add.used_up() || epos != extra.len() {
        return Err("streams do not fill the frame exactly");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_for(len: usize) -> Vec<u8> {
        vec![0; bsdiff_max_decoded_len(len as u64) as usize]
    }

    /// Decodes `p` with its kind's decoder and the applier's scratch size.
    fn decode_as(p: &Payload, old: &[u8], out: &mut [u8]) -> Result<(), &'static str> {
        let mut scratch = scratch_for(out.len());
        crate::codec::decode(p.kind, old, &p.bytes, out, &mut scratch)
    }

    const Z: ZstdSettings = ZstdSettings {
        level: 3,
        long_distance: false,
    };

    /// Buffers kept from earlier frames (longer, shorter, of the other finder)
    /// change nothing in what a frame encodes to.
    #[test]
    fn kept_buffers_encode_as_fresh_ones() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut bytes = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|i| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    if i % 3 == 0 {
                        (state >> 56) as u8
                    } else {
                        (i / 7) as u8
                    }
                })
                .collect()
        };
        let mut scratch = Scratch::default();
        for (len, finder) in [
            (300_000, MatchFinder::SuffixArray),
            (40_000, MatchFinder::SuffixArray),
            (200_000, MatchFinder::HashChain),
            (5_000, MatchFinder::HashChain),
            (120_000, MatchFinder::SuffixArray),
            (200_000, MatchFinder::SparseHashChain),
        ] {
            let old = bytes(len);
            let mut new = old.clone();
            new[len / 3..len / 3 + 100].copy_from_slice(&bytes(100));
            new.rotate_left(len / 5);
            let kept = encode_with(&mut scratch, &old, &new, finder, Z).expect("kept");
            let fresh = encode(&old, &new, finder, Z).expect("fresh");
            assert_eq!(kept, fresh, "{len} bytes, {finder:?}");
            let p = kept.expect("fits");
            let mut out = vec![0; new.len()];
            decode_as(&p, &old, &mut out).expect("decode");
            assert_eq!(out, new);
        }
    }

    fn round_trip(old: &[u8], new: &[u8]) -> usize {
        let mut sizes = [0; 3];
        for (i, finder) in [
            MatchFinder::SuffixArray,
            MatchFinder::HashChain,
            MatchFinder::SparseHashChain,
        ]
        .into_iter()
        .enumerate()
        {
            let payload = encode(old, new, finder, Z)
                .expect("encode")
                .expect("within bounds");
            let mut out = vec![0u8; new.len()];
            decode_as(&payload, old, &mut out).expect("decode");
            assert_eq!(out, new, "{finder:?}");
            sizes[i] = payload.bytes.len();
        }
        sizes.into_iter().max().unwrap_or(0)
    }

    /// The controls of the hash-chain scan of `new` against `old`, after checking
    /// that the scan gives what it gives byte by byte.
    fn controls_checked(old: &[u8], new: &[u8]) -> Vec<u8> {
        let (mut heads, mut links) = (Vec::<Packed>::new(), Vec::new());
        let chains = HashChain::<_, SAMPLE_RATE>::build(old, &mut heads, &mut links);
        let (mut add_fast, mut add_slow) = (Vec::new(), Vec::new());
        let fast = scan::<false>(&chains, old, new, &mut add_fast);
        let slow = scan::<true>(&chains, old, new, &mut add_slow);
        assert_eq!(fast, slow);
        assert_eq!(add_fast, add_slow);
        fast.0
    }

    #[test]
    fn the_extensions_tie_as_byte_steps_do() {
        // On one alignment: 128 equal bytes, 64 of which none is equal, 64 equal
        // again, then data from elsewhere in the window. The forward extension's
        // score comes back to its first peak exactly, and a tie keeps the first:
        // the add run ends at 128, as the byte loop has it.
        let old = deltaward_testkit::noise(8192, 0x51);
        let mut new = old[..256].to_vec();
        for b in &mut new[128..192] {
            *b = b.wrapping_add(1);
        }
        new.extend_from_slice(&old[4096..6144]);
        let controls = controls_checked(&old, &new);
        // The first control: 128 add bytes, then the 128 after them as extra.
        let mut at = 0;
        let mut control = || get_uvarint(&controls, &mut at).expect("a control");
        assert_eq!((control(), control()), (128, 128));
    }

    #[test]
    fn the_backward_extension_and_overlap_agree_with_byte_steps() {
        // The window holds the new data's first 256 bytes twice: at 0, and before
        // X with 64 of them changed. The scan follows the copy at 0, then searches
        // at 256 (a sampled gram) and finds X; the backward extension on X's
        // alignment and the overlap of the two extensions decide where the first
        // add run ends and X's begins.
        let controls = |changed: std::ops::Range<usize>| {
            let mut old = deltaward_testkit::noise(16_384, 0x77);
            let x = (4096..12_000)
                .find(|&x| sampled::<SAMPLE_RATE>(word(&old, x)))
                .expect("a sampled gram");
            let mut copy = old[..256].to_vec();
            for b in &mut copy[changed] {
                *b = b.wrapping_add(1);
            }
            old[x - 256..x].copy_from_slice(&copy);
            let new = [&old[..256], &old[x..x + 2048]].concat();
            let controls = controls_checked(&old, &new);
            let mut at = 0;
            let mut control = || get_uvarint(&controls, &mut at).expect("a control");
            ((control(), control(), control()), 2 * (x as u64 - 256))
        };
        // Back from 256: 128 equal bytes (two 64-byte steps), 64 of which none is
        // equal, 64 equal: the score ties its peak, and the first (128 back)
        // stands. Both alignments hold the overlap: 128 add bytes, then X - 128.
        let (got, seek) = controls(64..128);
        assert_eq!(got, (128, 0, seek));
        // Back from 256: 64 equal, 64 not, 128 equal: the extension reaches 0.
        // Over that overlap the copy at 0 alone holds 128..192: 192 add bytes.
        let (got, seek) = controls(128..192);
        assert_eq!(got, (192, 0, seek));
    }

    /// The scan with its eight-byte skips gives what it gives byte by byte, on
    /// data where the skips are taken often: relocated tables, sparse edits,
    /// unrelated bytes, runs, and rotated images.
    #[test]
    fn the_scan_skips_change_nothing() {
        let mut rand = deltaward_testkit::xorshift(0x0123_4567_89ab_cdef);
        let mut cases = 0;
        for round in 0..24 {
            let len = 2_000 + (rand() % 60_000) as usize;
            let old: Vec<u8> = match round % 3 {
                0 => (0..len).map(|_| rand() as u8).collect(),
                1 => (0..len as u32 / 4)
                    .flat_map(|i| (i * 40 + 0x1000).to_le_bytes())
                    .collect(),
                _ => (0..len)
                    .map(|i| if i % 64 < 40 { 0 } else { rand() as u8 })
                    .collect(),
            };
            let mut new = old.clone();
            // Edits: changed bytes, inserted and deleted runs, relocations, bursts.
            for _ in 0..(1 + rand() % 40) {
                let at = (rand() as usize) % new.len();
                match rand() % 5 {
                    0 => new[at] = rand() as u8,
                    // Bursts of two to five changed bytes a few bytes apart: the
                    // extensions' best positions fall inside eight-byte blocks.
                    4 => {
                        let mut k = at;
                        while k < (at + 3000).min(new.len()) {
                            let burst = 2 + (rand() % 4) as usize;
                            for b in new.iter_mut().skip(k).take(burst) {
                                *b = b.wrapping_add(1);
                            }
                            k += burst + 1 + (rand() % 24) as usize;
                        }
                    }
                    1 => {
                        let n = (rand() % 300) as usize;
                        let junk: Vec<u8> = (0..n).map(|_| rand() as u8).collect();
                        new.splice(at..at, junk);
                    }
                    2 => {
                        let end = (at + (rand() % 300) as usize).min(new.len());
                        new.drain(at..end);
                    }
                    _ => {
                        let end = (at + 400).min(new.len());
                        new[at..end]
                            .iter_mut()
                            .step_by(4)
                            .for_each(|b| *b = b.wrapping_add(3));
                    }
                }
            }
            if round % 5 == 4 {
                let third = new.len() / 3;
                new.rotate_left(third);
            }
            let (mut heads, mut links) = (Vec::<Packed>::new(), Vec::new());
            let chains = HashChain::<_, SAMPLE_RATE>::build(&old, &mut heads, &mut links);
            let mut sa = vec![0i32; old.len()];
            libsais::SuffixArrayConstruction::for_text(&old)
                .in_borrowed_buffer(&mut sa)
                .single_threaded()
                .run()
                .expect("suffix array");
            let suffixes = SuffixArray { sa: &sa, old: &old };
            for finder in [&chains as &dyn Finder, &suffixes] {
                let (mut add_fast, mut add_slow) = (Vec::new(), Vec::new());
                let fast = scan::<false>(finder, &old, &new, &mut add_fast);
                let slow = scan::<true>(finder, &old, &new, &mut add_slow);
                assert_eq!(fast, slow, "round {round}");
                assert_eq!(add_fast, add_slow, "round {round}");
                cases += 1;
            }
        }
        assert_eq!(cases, 48);
    }

    /// The grams of `block` that `sampled` picks, one by one, as a mask.
    fn picked<const RATE: u64>(block: &[u8]) -> u64 {
        (0..block.len().saturating_sub(GRAM - 1))
            .filter(|&j| sampled::<RATE>(word(block, j)))
            .fold(0u64, |m, j| m | 1 << j)
    }

    /// A block's mask marks exactly the grams that `sampled` picks, in whole blocks
    /// and in the short last one, at both rates; the sparse rate's grams are among
    /// the other's.
    #[test]
    fn sampled_masks_mark_what_sampled_picks() {
        let bytes = deltaward_testkit::noise(4096, 0x9e37_79b9_7f4a_7c15);
        let starts = (bytes.len() - 71).div_ceil(67) as u32;
        let (mut marked, mut sparse) = (0, 0);
        for start in (0..bytes.len() - 71).step_by(67) {
            for len in [0, 7, 8, 9, 40, 70, 71] {
                let block = &bytes[start..start + len];
                let (every_8th, every_16th) = (
                    picked::<SAMPLE_RATE>(block),
                    picked::<SPARSE_SAMPLE_RATE>(block),
                );
                assert_eq!(
                    sampled_mask::<SAMPLE_RATE>(block),
                    every_8th,
                    "at {start}, {len} bytes"
                );
                assert_eq!(
                    sampled_mask::<SPARSE_SAMPLE_RATE>(block),
                    every_16th,
                    "at {start}, {len} bytes"
                );
                assert_eq!(every_16th & !every_8th, 0, "at {start}, {len} bytes");
                marked += every_8th.count_ones();
                sparse += every_16th.count_ones();
            }
        }
        // About one gram in eight (and in sixteen) of the 163 grams per start.
        assert!((starts * 20..starts * 40).contains(&marked), "{marked}");
        assert!((starts * 8..starts * 16).contains(&sparse), "{sparse}");
    }

    /// The chains hold every sampled gram of the window, and a search from one finds
    /// the stretch it starts; the scan searches nowhere else.
    #[test]
    fn chains_find_every_sampled_gram() {
        chains_find_every_sampled_gram_with::<Packed>();
        chains_find_every_sampled_gram_with::<Wide>();
    }

    fn chains_find_every_sampled_gram_with<H: Head>() {
        let old = deltaward_testkit::noise(100_000, 0x2545_f491_4f6c_dd1d);
        let (mut heads, mut links) = (Vec::<H>::new(), Vec::new());
        let chains = HashChain::<_, SAMPLE_RATE>::build(&old, &mut heads, &mut links);
        let grams: Vec<usize> = (0..old.len() - GRAM + 1)
            .filter(|&p| sampled::<SAMPLE_RATE>(word(&old, p)))
            .collect();
        assert_eq!(chains.links.len(), grams.len());
        for &p in &grams {
            let new = &old[p..(p + 64).min(old.len())];
            assert!(!chains.skips(new));
            assert_eq!(chains.search(&old, new), (p, new.len()), "at {p}");
        }
        let unsampled = (0..old.len() - GRAM).find(|&p| !sampled::<SAMPLE_RATE>(word(&old, p)));
        assert!(chains.skips(&old[unsampled.expect("an unsampled gram")..]));
    }

    /// One gram repeated keeps [`COMMON_GRAM`] chain entries and starts no match;
    /// data with a sampled gram at every position is indexed up to the cap.
    #[test]
    fn dense_windows_are_indexed_within_bounds() {
        dense_windows_are_indexed_within_bounds_with::<Packed>();
        dense_windows_are_indexed_within_bounds_with::<Wide>();
    }

    fn dense_windows_are_indexed_within_bounds_with<H: Head>() {
        let b = (0..=255u8)
            .find(|&b| sampled::<SAMPLE_RATE>(u64::from_le_bytes([b; 8])))
            .expect("a sampled run");
        let old = vec![b; 50_000];
        let (mut heads, mut links) = (Vec::<H>::new(), Vec::new());
        let chains = HashChain::<_, SAMPLE_RATE>::build(&old, &mut heads, &mut links);
        assert_eq!(chains.links.len(), COMMON_GRAM);
        assert_eq!(chains.search(&old, &old[..100]).1, 0);

        // Every gram sampled: each next byte is one that makes a sampled gram.
        let mut old = deltaward_testkit::noise(GRAM - 1, 7);
        let mut pick = 0u8;
        while old.len() < 40_000 {
            let at = old.len() + 1 - GRAM;
            old.push(pick);
            while !sampled::<SAMPLE_RATE>(word(&old, at)) {
                pick = pick.wrapping_add(97);
                if let Some(last) = old.last_mut() {
                    *last = pick;
                }
            }
        }
        let (mut heads, mut links) = (Vec::<H>::new(), Vec::new());
        let chains = HashChain::<_, SAMPLE_RATE>::build(&old, &mut heads, &mut links);
        let grams = old.len() - GRAM + 1;
        assert_eq!(chains.links.len(), link_cap(grams, SAMPLE_RATE));
        assert!(chains.links.len() < grams / 3);
    }

    /// Packed heads give the chains that wide ones give, on data whose grams repeat
    /// past [`COMMON_GRAM`] and others that repeat a few times; each kind names its
    /// entries up to its limit, and the encoder picks packed heads where they can.
    #[test]
    fn packed_heads_chain_as_wide_ones_do() {
        let mut old = deltaward_testkit::noise(200_000, 0x5851_f42d_4c95_7f2d);
        // A sampled 64-byte stretch repeated 1,000 times, another 3 times.
        let at = (0..old.len() - GRAM)
            .find(|&p| sampled::<SAMPLE_RATE>(word(&old, p)))
            .expect("a sampled gram");
        let unit = old[at..at + 64].to_vec();
        for (copies, from) in [(1_000, 10_000), (3, 150_000)] {
            for k in 0..copies {
                old[from + k * 64..from + (k + 1) * 64].copy_from_slice(&unit);
            }
        }
        let (mut packed, mut wide, mut links_p, mut links_w) = (
            Vec::<Packed>::new(),
            Vec::<Wide>::new(),
            Vec::new(),
            Vec::new(),
        );
        let p = HashChain::<_, SAMPLE_RATE>::build(&old, &mut packed, &mut links_p);
        let w = HashChain::<_, SAMPLE_RATE>::build(&old, &mut wide, &mut links_w);
        assert_eq!(p.links, w.links);
        assert_eq!(p.heads.len(), w.heads.len());
        for (h, (a, b)) in p.heads.iter().zip(w.heads).enumerate() {
            assert_eq!(a.get(), b.get(), "head {h}");
        }
        let common = p.heads[p.hash(&unit)].get();
        assert_eq!(common.1 as usize, COMMON_GRAM + 1);
        for start in (0..old.len() - 100).step_by(37) {
            let new = &old[start..start + 100];
            assert_eq!(p.search(&old, new), w.search(&old, new), "at {start}");
        }

        for (entry, count) in [(0, 0), (1, 1), (Packed::MAX_ENTRIES as u32, 511)] {
            assert_eq!(Packed::set(entry, count).get(), (entry, count));
        }
        for rate in [SAMPLE_RATE, SPARSE_SAMPLE_RATE] {
            let window = (Packed::MAX_ENTRIES - 1) / 2 * rate as usize + GRAM - 1;
            assert!(packed_heads_suffice(window, rate));
            assert!(!packed_heads_suffice(window + rate as usize, rate));
        }
    }

    /// Every entry of the stride tables is what scoring its bytes one by one gives.
    #[test]
    fn stride_tables_score_as_a_byte_loop_would() {
        let first_peak = |scores: &[i8]| {
            let (mut sum, mut peak, mut at) = (0i8, i8::MIN, 0u8);
            for (j, s) in scores.iter().enumerate() {
                sum += s;
                if sum > peak {
                    (peak, at) = (sum, j as u8 + 1);
                }
            }
            (sum, peak, at)
        };
        for m in 0..256usize {
            let eight: Vec<i8> = (0..8)
                .map(|j| if m >> j & 1 == 1 { 1 } else { -1 })
                .collect();
            let st = STRIDES[m];
            assert_eq!((st.sum, st.peak, st.at), first_peak(&eight), "mask {m:08b}");
            // High nibble: bytes the first alignment holds (+1); low: the second (-1).
            let four: Vec<i8> = (0..4)
                .map(|j| (m >> (4 + j) & 1) as i8 - (m >> j & 1) as i8)
                .collect();
            let st = OVERLAP_STRIDES[m];
            assert_eq!((st.sum, st.peak, st.at), first_peak(&four), "masks {m:08b}");
        }
        assert_eq!((STRIDES[0xff].sum, STRIDES[0xff].at), (8, 8));
        assert_eq!(
            (OVERLAP_STRIDES[0x10].peak, OVERLAP_STRIDES[0x10].at),
            (1, 1)
        );
    }

    #[test]
    fn equal_count_counts_what_a_byte_loop_counts() {
        // Lengths around the 128-byte blocks, all equal, none equal, and random
        // agreement; a and b unaligned to each other.
        let a = deltaward_testkit::noise(5_000, 11);
        let mut b = a.clone();
        for (i, x) in b.iter_mut().enumerate() {
            if i % 3 == 0 || i % 7 == 0 {
                *x = x.wrapping_add(1);
            }
        }
        let naive = |a: &[u8], b: &[u8]| a.iter().zip(b).filter(|(x, y)| x == y).count() as i64;
        for len in [0, 1, 127, 128, 129, 255, 256, 257, 1_000, 4_095] {
            for (x, y) in [(&a, &a), (&a, &b), (&b, &a)] {
                for off in [0, 1, 5] {
                    let (x, y) = (&x[off..off + len], &y[3..3 + len]);
                    assert_eq!(equal_count(x, y), naive(x, y), "len {len} off {off}");
                }
            }
            assert_eq!(equal_count(&a[..len], &a[..len]), len as i64);
        }
    }

    #[test]
    fn equal_mask_marks_what_a_byte_loop_would() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let a = x;
            // Flip a random subset of bytes, some by their top bit only.
            let mask = (0..8).fold(0u64, |m, k| {
                let pick = (x >> (k * 8 + 3)) & 3;
                m | match pick {
                    0 => 0,
                    1 => 0x80,
                    2 => 0x01,
                    _ => 0xff,
                } << (k * 8)
            });
            let b = a ^ mask;
            let expect = (0..8)
                .filter(|k| (a >> (k * 8)) as u8 == (b >> (k * 8)) as u8)
                .fold(0u8, |m, k| m | 1 << k);
            assert_eq!(equal_mask(a, b), expect, "{a:x} {b:x}");
        }
        assert_eq!(equal_mask(0, 0), 0xff);
        assert_eq!(equal_mask(0, u64::MAX), 0);
        assert_eq!(equal_mask(0x00ff, 0x0000), 0xfe);
        assert_eq!(equal_count(b"abcdef", b"abXdeY"), 4);
    }

    #[test]
    fn relocated_words_compress_well() {
        // A table of little-endian offsets, all shifted by 0x40: bsdiff's home ground.
        let old: Vec<u8> = (0..20_000u32)
            .flat_map(|i| (i * 37 + 0x1000).to_le_bytes())
            .collect();
        let new: Vec<u8> = (0..20_000u32)
            .flat_map(|i| (i * 37 + 0x1040).to_le_bytes())
            .collect();
        let n = round_trip(&old, &new);
        assert!(
            n < 2_000,
            "bsdiff payload {n} bytes for 80 KB of shifted offsets"
        );
    }

    #[test]
    fn edge_cases_round_trip() {
        round_trip(b"", b"");
        round_trip(b"", b"abc");
        round_trip(b"abc", b"");
        round_trip(b"a", b"aaaa");
        round_trip(&[0u8; 5000], &[0u8; 7000]);
        round_trip(b"hello world, hello world", b"hello there world");
    }

    /// The word-at-a-time run finders agree with a byte loop, at every alignment.
    #[test]
    fn runs_split_as_a_byte_loop_would() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 1000] {
            for density in [0u64, 1, 8, 64, 200, 256] {
                let add: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        if state % 256 < density {
                            (state >> 40) as u8 | 1
                        } else {
                            0
                        }
                    })
                    .collect();
                let (mut runs, mut lits) = (Vec::new(), Vec::new());
                let fits = split_runs(&add, &mut runs, &mut lits);
                // The same split by a byte loop.
                let (mut want_runs, mut want_lits, mut i) = (Vec::new(), Vec::new(), 0);
                while i < add.len() {
                    let z = add[i..].iter().take_while(|&&b| b == 0).count();
                    let n = add[i + z..].iter().take_while(|&&b| b != 0).count();
                    put_uvarint(&mut want_runs, z as u64);
                    put_uvarint(&mut want_runs, n as u64);
                    want_lits.extend_from_slice(&add[i + z..i + z + n]);
                    i += z + n;
                }
                assert_eq!(fits, want_runs.len() + want_lits.len() <= add.len());
                if fits {
                    assert_eq!((runs, lits), (want_runs, want_lits), "{len} {density}");
                }
            }
        }
    }

    /// Add bytes whose zero runs are short keep the plain layout (kind 3), so that
    /// kind 4's decoded streams stay within the frame's bound; mostly zero ones get
    /// runs. (The scan's add runs are mostly zero: kind 3 is made by hand here.)
    #[test]
    fn dense_add_bytes_keep_the_plain_layout() {
        let old = [10u8; 100];
        let ctrl = [100, 0, 0];
        let mut sparse = [0u8; 100];
        sparse[40] = 1;
        for (add, kind) in [
            ([1u8; 100], FrameKind::Bsdiff),
            (sparse, FrameKind::BsdiffRuns),
        ] {
            let p = compress_streams(&mut Scratch::default(), &ctrl, &add, &[], Z).expect("zstd");
            assert_eq!(p.kind, kind);
            let mut out = vec![0u8; 100];
            decode_as(&p, &old, &mut out).expect("decode");
            let want: Vec<u8> = add.iter().map(|a| a + 10).collect();
            assert_eq!(out, want);
        }
    }

    /// Kind 4 payloads made by hand: one that decodes, and each way of breaking it
    /// refused with an error (never a panic, never a partly written success).
    #[test]
    fn broken_run_payloads_are_refused() {
        let frame = |s: &[u8]| zstd::encode(&[], s, Z).expect("zstd");
        let payload =
            |streams: &[&[u8]]| -> Vec<u8> { streams.iter().flat_map(|s| frame(s)).collect() };
        let old = vec![10u8; 100];
        let mut want = old.clone();
        want[50] = 11;
        want[51] = 12;
        // One control: add 100 bytes, no extra, no seek; runs: 50 zeros then 2
        // nonzero, 48 zeros then none.
        let ctrl = [100, 0, 0];
        let runs = [50, 2, 48, 0];
        let good = payload(&[&ctrl, &runs, &[1, 2], &[]]);
        let decode = |p: &[u8], len: usize| {
            let mut out = vec![0u8; len];
            decode_runs(&old, p, &mut out, &mut scratch_for(len)).map(|()| out)
        };
        assert_eq!(decode(&good, 100), Ok(want));
        let mut trailing = good.clone();
        trailing.push(0);
        let skippable = {
            let mut p = payload(&[&ctrl, &runs, &[1, 2]]);
            p.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0]);
            p
        };
        let bad: [(&str, Vec<u8>, usize); 12] = [
            (
                "runs past the add run",
                payload(&[&ctrl, &[50, 2, 49, 0], &[1, 2], &[]]),
                100,
            ),
            (
                "runs short of the add run",
                payload(&[&ctrl, &[50, 2, 47, 0], &[1, 2], &[]]),
                100,
            ),
            (
                "an empty run",
                payload(&[&ctrl, &[50, 2, 0, 0, 48, 0], &[1, 2], &[]]),
                100,
            ),
            (
                "nonzero bytes left over",
                payload(&[&ctrl, &runs, &[1, 2, 3], &[]]),
                100,
            ),
            (
                "nonzero bytes missing",
                payload(&[&ctrl, &runs, &[1], &[]]),
                100,
            ),
            (
                "extra bytes left over",
                payload(&[&ctrl, &runs, &[1, 2], &[9]]),
                100,
            ),
            ("three streams", payload(&[&ctrl, &runs, &[1, 2]]), 100),
            ("a skippable frame as the fourth", skippable, 100),
            ("trailing byte", trailing, 100),
            ("output longer", good.clone(), 101),
            (
                "streams over the frame",
                payload(&[&ctrl, &runs, &[1, 2], &[0; 97]]),
                100,
            ),
            (
                "a truncated varint",
                payload(&[&ctrl, &[50, 2, 0x80], &[1, 2], &[]]),
                100,
            ),
        ];
        for (what, p, len) in bad {
            assert!(decode(&p, len).is_err(), "{what} was accepted");
        }
        // Each layout's payload fails in the other's decoder.
        let mut out = vec![0u8; 100];
        let kind3 =
            compress_streams(&mut Scratch::default(), &ctrl, &[1; 100], &[], Z).expect("zstd");
        assert_eq!(kind3.kind, FrameKind::Bsdiff);
        assert!(decode_runs(&old, &kind3.bytes, &mut out, &mut scratch_for(100)).is_err());
        assert!(super::decode(&old, &good, &mut out, &mut scratch_for(100)).is_err());
    }

    #[test]
    fn corrupt_control_is_rejected_not_panicking() {
        let old = vec![7u8; 1000];
        let payload = encode(&old, &[8u8; 900], MatchFinder::SuffixArray, Z)
            .expect("encode")
            .expect("bounds");
        let mut out = vec![0u8; 901];
        assert!(decode_as(&payload, &old, &mut out).is_err());
    }
}

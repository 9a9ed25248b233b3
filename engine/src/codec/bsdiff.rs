//! A bsdiff-style coder (after Colin Percival's bsdiff 4) on a bounded window.
//!
//! The window is indexed with a suffix array (libsais); the new data is scanned for
//! long approximate matches, and each match becomes an *add* run (new minus old,
//! byte-wise, mostly zeros on relocated code) followed by an *extra* run (literal
//! bytes). The three streams (controls, add bytes, extra bytes) are laid out one
//! after another and compressed with zstd.
//!
//! Decoded payload layout (all integers little-endian, varints LEB128):
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

use super::zstd::{self, ZstdSettings};
use crate::format::{bsdiff_max_control_len, bsdiff_max_decoded_len, BSDIFF_HEADER_LEN};

const HEADER: usize = BSDIFF_HEADER_LEN as usize;

fn max_control_len(target_len: usize) -> usize {
    bsdiff_max_control_len(target_len as u64) as usize
}

/// Length of the common prefix of `a` and `b`, eight bytes at a time.
fn matchlen(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let d = u64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]])
            ^ u64::from_le_bytes([y[0], y[1], y[2], y[3], y[4], y[5], y[6], y[7]]);
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
    /// Hash chains over 8-byte strings at every 4th window position: several times
    /// faster to build and query, a little less thorough.
    HashChain,
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

/// Length of the strings the hash chains index.
const GRAM: usize = 8;
/// Window positions indexed: every STEP-th. A match starting elsewhere is found a
/// few scan positions later and extended backwards by the scan.
const STEP: usize = 4;
/// Candidates examined per search.
const CHAIN_DEPTH: usize = 8;
/// Matches are measured up to this length; the scan extends them anyway.
const MAX_MEASURE: usize = 1 << 12;
/// A candidate at least this long ends the chain walk.
const GOOD_ENOUGH: usize = 256;

struct HashChain<'s> {
    bits: u32,
    head: &'s [u32],
    chain: &'s [u32],
}

/// The `bits`-bit hash of the gram that `g` starts with.
fn gram_hash(g: &[u8], bits: u32) -> usize {
    let mut w = [0u8; 8];
    w.copy_from_slice(&g[..GRAM]);
    (u64::from_le_bytes(w).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
}

impl HashChain<'_> {
    fn hash(&self, g: &[u8]) -> usize {
        gram_hash(g, self.bits)
    }

    /// Indexes `old` in the scratch's tables.
    fn build<'s>(old: &[u8], head: &'s mut Vec<u32>, chain: &'s mut Vec<u32>) -> HashChain<'s> {
        let slots = (old.len() / STEP).max(1);
        let bits = (usize::BITS - slots.leading_zeros()).clamp(10, 24);
        head.clear();
        head.resize(1 << bits, 0);
        chain.clear();
        chain.resize(slots + 1, 0);
        // Entry k stands for window position k * STEP; 0 means none, so store k + 1.
        for k in 0..old.len().saturating_sub(GRAM - 1).div_ceil(STEP) {
            let h = gram_hash(&old[k * STEP..], bits);
            chain[k] = head[h];
            head[h] = k as u32 + 1;
        }
        HashChain { bits, head, chain }
    }
}

impl Finder for HashChain<'_> {
    fn search(&self, old: &[u8], new: &[u8]) -> (usize, usize) {
        if new.len() < GRAM {
            return (0, 0);
        }
        let mut best = (0usize, 0usize);
        let mut entry = self.head[self.hash(new)];
        for _ in 0..CHAIN_DEPTH {
            if entry == 0 {
                break;
            }
            let p = (entry as usize - 1) * STEP;
            let l = matchlen(&old[p..(p + MAX_MEASURE).min(old.len())], new);
            if l > best.1 {
                best = (p, l);
                if l >= GOOD_ENOUGH {
                    break;
                }
            }
            entry = self.chain[entry as usize - 1];
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
    head: Vec<u32>,
    chain: Vec<u32>,
    add: Vec<u8>,
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
            .field("head", &self.head.capacity())
            .field("chain", &self.chain.capacity())
            .field("add", &self.add.capacity())
            .field("blob", &self.blob.capacity())
            .finish_non_exhaustive()
    }
}

/// Encodes `new` against `old`. Returns `None` when the control stream would exceed
/// the format's bound (the caller then keeps the plain zstd coder's result).
pub fn encode(
    old: &[u8],
    new: &[u8],
    finder: MatchFinder,
    zstd: ZstdSettings,
) -> Result<Option<Vec<u8>>, &'static str> {
    encode_with(&mut Scratch::default(), old, new, finder, zstd)
}

/// [`encode`] with buffers kept from earlier frames.
pub fn encode_with(
    scratch: &mut Scratch,
    old: &[u8],
    new: &[u8],
    finder: MatchFinder,
    zstd: ZstdSettings,
) -> Result<Option<Vec<u8>>, &'static str> {
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
            MatchFinder::HashChain => {
                let finder = HashChain::build(old, &mut scratch.head, &mut scratch.chain);
                diff(&finder, old, new, &mut add)
            }
        }
    };
    let mut blob = std::mem::take(&mut scratch.blob);
    blob.clear();
    let fits = ctrl.len() <= max_control_len(new.len());
    if fits {
        for n in [ctrl.len(), add.len(), extra.len()] {
            blob.extend_from_slice(&(n as u32).to_le_bytes());
        }
        blob.extend_from_slice(&ctrl);
        blob.extend_from_slice(&add);
        blob.extend_from_slice(&extra);
    }
    scratch.add = add;
    let out = if fits {
        let cctx = scratch.cctx.get_or_insert_with(zstd_safe::CCtx::create);
        zstd::encode_in(cctx, &[], &blob, zstd).map(Some)
    } else {
        Ok(None)
    };
    scratch.blob = blob;
    out
}

/// How far ahead the scan looks for the current alignment to resume before searching.
const REPEAT_LOOKAHEAD: usize = 16;
/// Matches shorter than this count as misses for the scan's acceleration.
const MIN_USEFUL: i64 = 8;
/// Most positions skipped between two searches in a stretch without matches.
const MAX_SKIP: i64 = 15;

/// The bsdiff scan: returns (controls, add bytes, extra bytes).
/// The add bytes go to `add`, which the caller has emptied.
fn diff(finder: &dyn Finder, old: &[u8], new: &[u8], add: &mut Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let (oldsize, newsize) = (old.len() as i64, new.len() as i64);
    let min_gain = finder.min_gain();
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
            let (p, l) = if repeat_at(0) {
                (c_us, matchlen(&old[c_us..], &new[s_us..]))
            } else if (1..=REPEAT_LOOKAHEAD).any(repeat_at) {
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
            while scsc < scan + len {
                if scsc + lastoffset < oldsize && at_old(scsc + lastoffset) == at_new(scsc) {
                    oldscore += 1;
                }
                scsc += 1;
            }
            if (len == oldscore && len != 0) || len > oldscore + min_gain {
                break;
            }
            // Where nothing matches, search less often the longer the drought lasts
            // (as LZ4's acceleration does); a match found late is extended backwards.
            misses = if len < MIN_USEFUL { misses + 1 } else { 0 };
            let step = 1 + (misses >> 3).min(MAX_SKIP);
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
            let (mut s, mut sf, mut lenf) = (0i64, 0i64, 0i64);
            let mut i = 0i64;
            while lastscan + i < scan && lastpos + i < oldsize {
                // Eight equal bytes at once: the score rises at every one of them, so
                // only the last can be a new best (same result as byte by byte).
                if lastscan + i + 8 <= scan && lastpos + i + 8 <= oldsize {
                    let (o, n) = ((lastpos + i) as usize, (lastscan + i) as usize);
                    if old[o..o + 8] == new[n..n + 8] {
                        s += 8;
                        i += 8;
                        if s * 2 - i > sf * 2 - lenf {
                            sf = s;
                            lenf = i;
                        }
                        continue;
                    }
                }
                if at_old(lastpos + i) == at_new(lastscan + i) {
                    s += 1;
                }
                i += 1;
                if s * 2 - i > sf * 2 - lenf {
                    sf = s;
                    lenf = i;
                }
            }
            let mut lenb = 0i64;
            if scan < newsize {
                let (mut s, mut sb) = (0i64, 0i64);
                let mut i = 1i64;
                while scan >= lastscan + i && pos >= i {
                    // Eight equal bytes at once, as in the forward extension.
                    if scan >= lastscan + i + 7 && pos >= i + 7 {
                        let (o, n) = ((pos - i - 7) as usize, (scan - i - 7) as usize);
                        if old[o..o + 8] == new[n..n + 8] {
                            s += 8;
                            let last = i + 7;
                            if s * 2 - last > sb * 2 - lenb {
                                sb = s;
                                lenb = last;
                            }
                            i += 8;
                            continue;
                        }
                    }
                    if at_old(pos - i) == at_new(scan - i) {
                        s += 1;
                    }
                    if s * 2 - i > sb * 2 - lenb {
                        sb = s;
                        lenb = i;
                    }
                    i += 1;
                }
            }
            if lastscan + lenf > scan - lenb {
                let overlap = (lastscan + lenf) - (scan - lenb);
                let (mut s, mut ss, mut lens) = (0i64, 0i64, 0i64);
                for i in 0..overlap {
                    if at_new(lastscan + lenf - overlap + i) == at_old(lastpos + lenf - overlap + i)
                    {
                        s += 1;
                    }
                    if at_new(scan - lenb + i) == at_old(pos - lenb + i) {
                        s -= 1;
                    }
                    if s > ss {
                        ss = s;
                        lens = i + 1;
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

/// Decodes a payload made by [`encode`] against `old` into `out` (exactly the
/// frame's output length), using `scratch` (at least
/// `bsdiff_max_decoded_len(out.len())` bytes) for the decoded streams. Every
/// length and position is checked.
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
    let (mut cpos, mut apos, mut epos, mut npos) = (0usize, 0usize, 0usize, 0usize);
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
        let diff = apos
            .checked_add(a)
            .and_then(|end| add.get(apos..end))
            .ok_or("add stream exhausted")?;
        let dst = out
            .get_mut(npos..npos.checked_add(a).ok_or("add run overflows")?)
            .ok_or("add run past the frame end")?;
        for ((d, s), x) in dst.iter_mut().zip(src).zip(diff) {
            *d = s.wrapping_add(*x);
        }
        apos += a;
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
    if npos != out.len() || apos != add.len() || epos != extra.len() {
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
        ] {
            let old = bytes(len);
            let mut new = old.clone();
            new[len / 3..len / 3 + 100].copy_from_slice(&bytes(100));
            new.rotate_left(len / 5);
            let kept = encode_with(&mut scratch, &old, &new, finder, Z).expect("kept");
            let fresh = encode(&old, &new, finder, Z).expect("fresh");
            assert_eq!(kept, fresh, "{len} bytes, {finder:?}");
            let blob = kept.expect("fits");
            let mut out = vec![0; new.len()];
            decode(&old, &blob, &mut out, &mut scratch_for(new.len())).expect("decode");
            assert_eq!(out, new);
        }
    }

    fn round_trip(old: &[u8], new: &[u8]) -> usize {
        let mut sizes = [0; 2];
        for (i, finder) in [MatchFinder::SuffixArray, MatchFinder::HashChain]
            .into_iter()
            .enumerate()
        {
            let payload = encode(old, new, finder, Z)
                .expect("encode")
                .expect("within bounds");
            let mut out = vec![0u8; new.len()];
            let mut scratch = scratch_for(out.len());
            decode(old, &payload, &mut out, &mut scratch).expect("decode");
            assert_eq!(out, new, "{finder:?}");
            sizes[i] = payload.len();
        }
        sizes[0].max(sizes[1])
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

    #[test]
    fn corrupt_control_is_rejected_not_panicking() {
        let old = vec![7u8; 1000];
        let payload = encode(&old, &[8u8; 900], MatchFinder::SuffixArray, Z)
            .expect("encode")
            .expect("bounds");
        let mut out = vec![0u8; 901];
        let mut scratch = scratch_for(out.len());
        assert!(decode(&old, &payload, &mut out, &mut scratch).is_err());
    }
}

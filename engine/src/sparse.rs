//! An image's bytes with the ranges known to read as zeros (the holes of a sparse
//! file), so that the diff skips them instead of faulting in their pages: hashing
//! feeds zeros from one small buffer, the block and anchor indexes leave holes out,
//! and a new block inside a hole is a zero block without being read.

use std::ops::Range;

use crate::format::Digest;

/// Zeros fed to the hasher for holes (allocated zeroed: untouched pages cost
/// nothing until read, and reading them maps the shared zero page).
const ZERO_CHUNK: usize = 4 << 20;

/// An image for the diff: its bytes and its holes (sorted, disjoint, inside it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Input<'a> {
    pub(crate) data: &'a [u8],
    holes: &'a [Range<u64>],
}

impl<'a> Input<'a> {
    /// `data` with `holes`; holes that are out of order, overlapping or past the end
    /// are ignored (then the bytes are read: always correct, only slower).
    pub(crate) fn new(data: &'a [u8], holes: &'a [Range<u64>]) -> Self {
        let len = data.len() as u64;
        let valid = holes.windows(2).all(|w| w[0].end <= w[1].start)
            && holes.iter().all(|h| h.start < h.end && h.end <= len);
        Self {
            data,
            holes: if valid { holes } else { &[] },
        }
    }

    /// Whether `start..end` lies inside one hole (so it reads as zeros).
    pub(crate) fn in_hole(&self, start: u64, end: u64) -> bool {
        let i = self.holes.partition_point(|h| h.end <= start);
        self.holes
            .get(i)
            .is_some_and(|h| h.start <= start && end <= h.end)
    }

    /// The parts of `from..to` outside the holes, in order.
    pub(crate) fn data_pieces(&self, from: u64, to: u64) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut pos = from;
        let first = self.holes.partition_point(|h| h.end <= from);
        for h in self.holes.iter().skip(first) {
            if h.start >= to {
                break;
            }
            if h.start > pos {
                out.push(pos..h.start);
            }
            pos = pos.max(h.end);
        }
        if pos < to {
            out.push(pos..to);
        }
        out
    }

    /// BLAKE3 of the whole image on the caller's rayon pool, holes hashed from a
    /// buffer of zeros.
    pub(crate) fn hash(&self) -> Digest {
        let mut h = blake3::Hasher::new();
        let mut pos = 0u64;
        let zeros = if self.holes.is_empty() {
            Vec::new()
        } else {
            vec![0u8; ZERO_CHUNK]
        };
        for hole in self.holes {
            h.update_rayon(&self.data[pos as usize..hole.start as usize]);
            feed_zeros(&mut h, hole.end - hole.start, &zeros);
            pos = hole.end;
        }
        h.update_rayon(&self.data[pos as usize..]);
        h.finalize().into()
    }
}

/// Feeds `read(offset, buf)` for the data and zeros for the holes of `0..len` to
/// `feed` (a hasher's update), in order, in chunks of `buf.len()`. Holes are never
/// read: reading a hole makes the kernel fill page cache with zeros, which for a
/// mostly empty 8 GiB image dominates the time.
pub(crate) fn hash_sparse<E>(
    mut feed: impl FnMut(&[u8]),
    len: u64,
    holes: &[Range<u64>],
    buf: &mut [u8],
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut pos = 0u64;
    let chunk = buf.len().max(1) as u64;
    let mut holes = holes
        .iter()
        .filter(|h| h.start < h.end && h.end <= len)
        .peekable();
    while pos < len {
        match holes.peek() {
            Some(hole) if hole.start <= pos => {
                if hole.end > pos {
                    let n = (hole.end - pos).min(chunk) as usize;
                    buf[..n].fill(0);
                    feed(&buf[..n]);
                    pos += n as u64;
                } else {
                    holes.next();
                }
            }
            next => {
                let end = next.map_or(len, |h| h.start.min(len));
                let n = (end - pos).min(chunk) as usize;
                read(pos, &mut buf[..n])?;
                feed(&buf[..n]);
                pos += n as u64;
            }
        }
    }
    Ok(())
}

/// Feeds `len` zero bytes into `h` from `zeros` (a non-empty buffer of zeros), in
/// pieces of its length, on the rayon pool.
pub(crate) fn feed_zeros(h: &mut blake3::Hasher, len: u64, zeros: &[u8]) {
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len().max(1) as u64) as usize;
        h.update_rayon(&zeros[..n]);
        left -= n as u64;
    }
}

/// BLAKE3 of `len` zero bytes, without reading any image.
pub(crate) fn zeros_hash(len: u64) -> Digest {
    let zeros = vec![0u8; (len as usize).clamp(1, ZERO_CHUNK)];
    let mut h = blake3::Hasher::new();
    feed_zeros(&mut h, len, &zeros);
    h.finalize().into()
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)] // reason: lists of one hole, and a reversed hole, are the point
mod tests {
    use super::*;

    #[test]
    fn holes_are_found_and_hashed_as_zeros() {
        let mut data = vec![7u8; 1 << 20];
        data[1000..300_000].fill(0);
        let holes = [1000..300_000];
        let i = Input::new(&data, &holes);
        assert!(i.in_hole(1000, 300_000));
        assert!(i.in_hole(2000, 3000));
        assert!(!i.in_hole(999, 3000));
        assert!(!i.in_hole(299_999, 300_001));
        assert_eq!(i.data_pieces(0, 1 << 20), vec![0..1000, 300_000..(1 << 20)]);
        assert_eq!(i.data_pieces(2000, 3000), Vec::<Range<u64>>::new());
        assert_eq!(i.hash(), Digest::of(&data));
        assert_eq!(Input::new(&data, &[]).hash(), Digest::of(&data));
        assert_eq!(zeros_hash(299_000), Digest::of(&data[1000..300_000]));
    }

    #[test]
    fn sparse_hashing_reads_only_the_data() {
        let mut data = vec![9u8; 3 << 20];
        data[(1 << 20) + 5..(2 << 20) + 7].fill(0);
        let holes = [(1 << 20) + 5..(2 << 20) + 7];
        let mut read_bytes = 0u64;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 64 << 10];
        let feed = |b: &[u8]| {
            h.update(b);
        };
        hash_sparse::<()>(feed, data.len() as u64, &holes, &mut buf, |off, b| {
            let o = off as usize;
            assert!(o + b.len() <= holes[0].start as usize || o >= holes[0].end as usize);
            b.copy_from_slice(&data[o..o + b.len()]);
            read_bytes += b.len() as u64;
            Ok(())
        })
        .expect("hash");
        assert_eq!(Digest::from(h.finalize()), Digest::of(&data));
        assert_eq!(read_bytes, (data.len() as u64) - ((1 << 20) + 2));
    }

    #[test]
    fn invalid_holes_are_ignored() {
        let data = vec![1u8; 100];
        for holes in [vec![50..200], vec![10..20, 15..30], vec![30..20]] {
            let i = Input::new(&data, &holes);
            assert!(!i.in_hole(10, 11));
            assert_eq!(i.hash(), Digest::of(&data));
        }
    }
}

//! Grams picked by a multiplicative hash, 64 positions at a time: the bsdiff coder's
//! sampled grams, which its hash chains index.
//!
//! A gram is eight bytes, read as a little-endian word `w`; a [`Pick`] says whether
//! a gram is picked from a product of `w` alone, so every position is independent
//! of the others. On x86-64 processors with AVX-512 (F and DQ, checked at run time)
//! the 64-bit multiplies run eight at a time (`vpmullq`): a block of 64 grams takes
//! about 35 instructions instead of about 350. Elsewhere the same code runs as
//! scalar multiplies. (Anchors picked this way were tried and not taken: see
//! docs/BENCHMARKS.md, fifteenth round.)

/// Bytes in a gram.
pub(crate) const GRAM: usize = 8;

/// Bytes of a whole block of [`block_mask`]: the 64 grams starting at its first 64
/// bytes.
pub(crate) const BLOCK: usize = 64 + GRAM - 1;

/// A rule for picking grams.
pub(crate) trait Pick {
    /// Whether the gram whose little-endian word is `w` is picked. Inlined into the
    /// AVX-512 path, so it must be cheap and branch-free.
    fn picks(w: u64) -> bool;
}

/// The little-endian word of `b[at..at + 8]`.
#[inline(always)]
pub(crate) fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; GRAM];
    w.copy_from_slice(&b[at..at + GRAM]);
    u64::from_le_bytes(w)
}

/// Bit `j` set where `P` picks the gram at `block[j..]`.
pub(crate) fn block_mask<P: Pick>(block: &[u8; BLOCK]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512dq") {
        // SAFETY: the processor has AVX-512F and AVX-512DQ, checked just above (DQ
        // implies F): the only features `block_mask_avx512` is compiled for.
        #[allow(unsafe_code)]
        return unsafe { block_mask_avx512::<P>(block) };
    }
    block_mask_portable::<P>(block)
}

/// [`block_mask`] for any processor: eight grams at a time, with no branch and no
/// bounds check per gram.
#[inline(always)]
fn block_mask_portable<P: Pick>(block: &[u8; BLOCK]) -> u64 {
    let mut mask = 0u64;
    for j in (0..64).step_by(8) {
        let mut byte = 0u64;
        for k in 0..8 {
            byte |= u64::from(P::picks(word(block, j + k))) << k;
        }
        mask |= byte << j;
    }
    mask
}

/// [`block_mask_portable`] compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn block_mask_avx512<P: Pick>(block: &[u8; BLOCK]) -> u64 {
    block_mask_portable::<P>(block)
}

/// Bit `j` set where `P` picks the gram at `data[j..]`, for the grams that start in
/// the first 64 bytes of `data` and end inside it.
pub(crate) fn mask<P: Pick>(data: &[u8]) -> u64 {
    if let Some(block) = data.first_chunk::<BLOCK>() {
        return block_mask::<P>(block);
    }
    let mut mask = 0u64;
    for j in 0..data.len().saturating_sub(GRAM - 1).min(64) {
        mask |= u64::from(P::picks(word(data, j))) << j;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Eighth;
    impl Pick for Eighth {
        fn picks(w: u64) -> bool {
            (w ^ 0x5555).wrapping_mul(0xff51_afd7_ed55_8ccd) > u64::MAX - u64::MAX / 8
        }
    }

    /// A mask marks exactly the grams that the rule picks, in whole blocks (where
    /// the processor may take the AVX-512 path) and in short ones, and the portable
    /// path agrees with whichever ran.
    #[test]
    fn masks_mark_what_the_rule_picks() {
        let bytes = deltaward_testkit::noise(8192, 0x9e37_79b9_7f4a_7c15);
        let mut marked = 0;
        let mut cases = 0;
        for start in (0..bytes.len() - 200).step_by(67) {
            for len in [0, 7, 8, 9, 40, 70, 71, 72, 200] {
                let data = &bytes[start..start + len];
                let expected = (0..len.saturating_sub(GRAM - 1).min(64))
                    .filter(|&j| Eighth::picks(word(data, j)))
                    .fold(0u64, |m, j| m | 1 << j);
                assert_eq!(mask::<Eighth>(data), expected, "at {start}, {len} bytes");
                if let Some(block) = data.first_chunk::<BLOCK>() {
                    assert_eq!(block_mask_portable::<Eighth>(block), expected);
                }
                marked += expected.count_ones();
                cases += 1;
            }
        }
        // About one gram in eight.
        let grams: u32 = [0, 0, 1, 2, 33, 63, 64, 64, 64].iter().sum::<u32>() * cases / 9;
        assert!(
            (grams / 12..grams / 5).contains(&marked),
            "{marked} of {grams}"
        );
    }
}

//! Inputs for deltaward's benchmarks. The side-by-side comparison with other tools
//! is `scripts/compare.sh`; criterion benchmarks are in `benches/`.
#![forbid(unsafe_code)]

/// A synthetic image pair of `n` bytes: structured code-like data where the new
/// version relocates every 64th word and inserts a few bytes in the middle.
pub fn synthetic_pair(n: usize) -> (Vec<u8>, Vec<u8>) {
    let words = n / 4;
    let old: Vec<u8> = (0..words as u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 8).to_le_bytes())
        .collect();
    let mut new: Vec<u8> = (0..words as u32)
        .flat_map(|i| {
            let w = i.wrapping_mul(2_654_435_761) >> 8;
            if i % 64 == 0 { w + 0x40 } else { w }.to_le_bytes()
        })
        .collect();
    let mid = new.len() / 2;
    new.splice(mid..mid, *b"0123456789");
    (old, new)
}

//! The bsdiff and zstd frame decoders on arbitrary payloads and windows: never a
//! panic, and a successful decode fills exactly the output length.
#![no_main]

use deltaward_engine::encode::{bsdiff, zstd_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[w, o], rest)) = data.split_first_chunk::<2>() else { return };
    let split = (w as usize * 16).min(rest.len());
    let (window, payload) = rest.split_at(split);
    let mut out = vec![0u8; o as usize * 64];
    let _ = bsdiff::decode(window, payload, &mut out);
    let _ = zstd_decode(window, payload, &mut out);
});

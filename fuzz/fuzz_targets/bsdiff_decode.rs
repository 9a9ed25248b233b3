//! The bsdiff frame decoder, directly: on any window, payload and output length it
//! never panics, and either fails with its error or writes the whole output; and a
//! payload that the bsdiff encoder made from fuzzer-chosen window and data decodes
//! back to that data. Input layout: `frame_input.rs`.
#![no_main]

mod frame_input;

use deltaward_engine::fuzzing::{bsdiff_decode, bsdiff_encode, MatchFinder};
use frame_input::{check_round_trip, decode_fully, FrameInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = FrameInput::parse(data) else {
        return;
    };
    let _ = decode_fully(input.out_len, |out| {
        bsdiff_decode(input.window, input.payload, out)
    });

    let data = input.data();
    if data.is_empty() {
        return; // frames are never empty
    }
    let finder = if input.flags & 8 != 0 {
        MatchFinder::SuffixArray
    } else {
        MatchFinder::HashChain
    };
    // None: over the control-stream bound (the builder would keep zstd's payload).
    if let Ok(Some(payload)) = bsdiff_encode(input.window, data, finder, input.zstd_settings()) {
        check_round_trip(data, &payload, |p, out| bsdiff_decode(input.window, p, out));
    }
});

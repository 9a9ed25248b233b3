//! The bsdiff frame decoders (kind 3, bsdiff, and kind 4, bsdiff-runs), directly:
//! on any window, payload and output length neither panics, and each either fails
//! with its error or writes the whole output; and a payload that the bsdiff encoder
//! made from fuzzer-chosen window and data decodes back to that data with its
//! kind's decoder. Input layout: `frame_input.rs`.
#![no_main]

mod frame_input;

use deltaward_engine::fuzzing::{bsdiff_decode, bsdiff_encode, FrameKind, MatchFinder};
use frame_input::{check_round_trip, decode_fully, FrameInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = FrameInput::parse(data) else {
        return;
    };
    for kind in [FrameKind::Bsdiff, FrameKind::BsdiffRuns] {
        let _ = decode_fully(input.out_len, |out| {
            bsdiff_decode(kind, input.window, input.payload, out)
        });
    }

    let data = input.data();
    if data.is_empty() {
        return; // frames are never empty
    }
    let finder = match (input.flags & 8 != 0, input.flags & 16 != 0) {
        (true, _) => MatchFinder::SuffixArray,
        (false, false) => MatchFinder::HashChain,
        (false, true) => MatchFinder::SparseHashChain,
    };
    // None: over the control-stream bound (the builder would keep zstd's payload).
    if let Ok(Some((kind, payload))) =
        bsdiff_encode(input.window, data, finder, input.zstd_settings())
    {
        check_round_trip(data, &payload, |p, out| {
            bsdiff_decode(kind, input.window, p, out)
        });
    }
});

//! The zstd frame decoder, directly, with a reference window: on any window,
//! payload and output length it never panics, and either fails with its error or
//! writes the whole output; and a payload that the zstd encoder made from
//! fuzzer-chosen window and data decodes back to that data. Input layout:
//! `frame_input.rs`.
#![no_main]

mod frame_input;

use deltaward_engine::fuzzing::{zstd_decode, zstd_encode};
use frame_input::{check_round_trip, decode_fully, FrameInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = FrameInput::parse(data) else {
        return;
    };
    let _ = decode_fully(input.out_len, |out| {
        zstd_decode(input.window, input.payload, out)
    });

    let data = input.data();
    if data.is_empty() {
        return; // frames are never empty
    }
    if let Ok(payload) = zstd_encode(input.window, data, input.zstd_settings()) {
        check_round_trip(data, &payload, |p, out| zstd_decode(input.window, p, out));
    }
});

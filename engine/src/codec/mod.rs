//! Frame coders, encode and decode side by side: zstd with the reference window as
//! prefix ([`zstd`]), and a bsdiff-style add/extra transform against the window,
//! followed by zstd ([`bsdiff`]).
//!
//! Each delta frame is encoded by the coders the level enables; the smallest payload
//! wins. The applier decodes with [`decode`], which dispatches on the frame kind.

pub(crate) mod bsdiff;
pub(crate) mod zstd;

pub(crate) use zstd::ZstdSettings;

use crate::format::FrameKind;

/// Decodes a delta frame's `payload` against `window` into `out` (exactly the
/// frame's output length). `scratch` is the decoder's working memory: for bsdiff
/// frames at least [`bsdiff_max_decoded_len`](crate::format::bsdiff_max_decoded_len)
/// of the output length, unused by zstd frames. Copy and zero frames carry no
/// payload and are not decoded here.
pub(crate) fn decode(
    kind: FrameKind,
    window: &[u8],
    payload: &[u8],
    out: &mut [u8],
    scratch: &mut [u8],
) -> Result<(), &'static str> {
    match kind {
        FrameKind::Zstd => zstd::decode(window, payload, out),
        FrameKind::Bsdiff => bsdiff::decode(window, payload, out, scratch),
        FrameKind::BsdiffRuns => bsdiff::decode_runs(window, payload, out, scratch),
        FrameKind::Copy | FrameKind::Zero => Err("copy and zero frames have no payload to decode"),
    }
}

//! The zstd coder: a zstd frame with the frame's reference window as prefix.

use zstd_safe::{CCtx, CParameter, DCtx, DParameter};

/// zstd's smallest and largest window logs we use.
const MIN_WINDOW_LOG: u32 = 10;
const MAX_WINDOW_LOG: u32 = 31;

/// The zstd window log that covers a reference window followed by the frame's output.
/// Encoder and decoder both derive it from the manifest, so a payload that asks for a
/// larger window is refused by the decoder.
pub fn window_log(window_len: u64, target_len: u64) -> u32 {
    let need = window_len.saturating_add(target_len).max(1);
    let log = 64 - (need - 1).leading_zeros();
    log.clamp(MIN_WINDOW_LOG, MAX_WINDOW_LOG)
}

/// Compression settings for one frame.
#[derive(Debug, Clone, Copy)]
pub struct ZstdSettings {
    /// zstd level.
    pub level: i32,
    /// Long-distance matching (finds matches far back in large windows).
    pub long_distance: bool,
}

fn code_name(code: usize) -> &'static str {
    zstd_safe::get_error_name(code)
}

/// Compresses `data` with `window` as zstd reference prefix.
pub fn encode(window: &[u8], data: &[u8], s: ZstdSettings) -> Result<Vec<u8>, &'static str> {
    let mut cctx = CCtx::create();
    let wlog = window_log(window.len() as u64, data.len() as u64);
    cctx.set_parameter(CParameter::CompressionLevel(s.level))
        .map_err(code_name)?;
    cctx.set_parameter(CParameter::WindowLog(wlog))
        .map_err(code_name)?;
    cctx.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(code_name)?;
    cctx.set_parameter(CParameter::ChecksumFlag(false))
        .map_err(code_name)?;
    if s.long_distance {
        cctx.set_parameter(CParameter::EnableLongDistanceMatching(true))
            .map_err(code_name)?;
    }
    if !window.is_empty() {
        cctx.ref_prefix(window).map_err(code_name)?;
    }
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
    cctx.compress2(&mut out, data).map_err(code_name)?;
    Ok(out)
}

/// Decompresses a zstd frame made by [`encode`] into `out`, which must be
/// exactly the frame's output length.
pub fn decode(window: &[u8], payload: &[u8], out: &mut [u8]) -> Result<(), &'static str> {
    let mut dctx = DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(window_log(
        window.len() as u64,
        out.len() as u64,
    )))
    .map_err(code_name)?;
    if !window.is_empty() {
        dctx.ref_prefix(window).map_err(code_name)?;
    }
    match zstd_safe::get_frame_content_size(payload) {
        Ok(Some(n)) if n == out.len() as u64 => {}
        Ok(Some(_)) => return Err("declared content size differs from the frame length"),
        _ => return Err("zstd frame header is missing or unreadable"),
    }
    let written = dctx.decompress(out, payload).map_err(code_name)?;
    if written != out.len() {
        return Err("decoded length differs from the frame length");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_log_covers_window_and_output() {
        assert_eq!(window_log(0, 1), MIN_WINDOW_LOG);
        assert_eq!(window_log(1 << 20, 1 << 20), 21);
        assert_eq!(window_log((1 << 20) + 1, 1 << 20), 22);
        assert_eq!(window_log(u64::MAX, 1), MAX_WINDOW_LOG);
    }

    #[test]
    fn zstd_prefix_round_trip_and_wrong_window_fails() {
        let window: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut data = window[1000..150_000].to_vec();
        data[500] ^= 0xff;
        let s = ZstdSettings {
            level: 3,
            long_distance: false,
        };
        let payload = encode(&window, &data, s).expect("encode");
        assert!(
            payload.len() < data.len() / 50,
            "prefix not used: {}",
            payload.len()
        );
        let mut out = vec![0u8; data.len()];
        decode(&window, &payload, &mut out).expect("decode");
        assert_eq!(out, data);
        let mut short = vec![0u8; data.len() - 1];
        assert!(decode(&window, &payload, &mut short).is_err());
    }
}

//! The zstd coder: a zstd frame with the frame's reference window as prefix.

use zstd_safe::{CCtx, CParameter, DCtx, DParameter};

/// The magic number that starts a zstd frame (RFC 8878, 3.1.1), little-endian.
const ZSTD_MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();

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
    encode_in(&mut CCtx::create(), window, data, s)
}

/// [`encode`] in a context that may have compressed before: its parameters are
/// reset, and its tables, already in memory, are reused.
pub fn encode_in<'a>(
    cctx: &mut CCtx<'a>,
    window: &'a [u8],
    data: &[u8],
    s: ZstdSettings,
) -> Result<Vec<u8>, &'static str> {
    cctx.reset(zstd_safe::ResetDirective::SessionAndParameters)
        .map_err(code_name)?;
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
    check_frame(payload, window_log(window.len() as u64, out.len() as u64))?;
    let written = dctx.decompress(out, payload).map_err(code_name)?;
    if written != out.len() {
        return Err("decoded length differs from the frame length");
    }
    Ok(())
}

/// Requires the payload to be exactly one zstd frame (nothing after it, not even a
/// skippable frame), without a dictionary id, declaring a window no larger than
/// `1 << window_log` (the format derives the window log from the manifest).
fn check_frame(payload: &[u8], window_log: u32) -> Result<(), &'static str> {
    // A skippable frame would pass for an empty one.
    if payload.get(..4) != Some(&ZSTD_MAGIC[..]) {
        return Err("zstd frame header is missing or unreadable");
    }
    match zstd_safe::find_frame_compressed_size(payload) {
        Ok(n) if n == payload.len() => {}
        Ok(_) => return Err("bytes follow the zstd frame"),
        Err(code) => return Err(code_name(code)),
    }
    // Frame header: magic (4 bytes), frame header descriptor, then the window
    // descriptor unless the frame is a single segment (RFC 8878, 3.1.1.1).
    let fhd = *payload
        .get(4)
        .ok_or("zstd frame header is missing or unreadable")?;
    if fhd & 0b11 != 0 {
        return Err("zstd frame names a dictionary");
    }
    let single_segment = fhd & 0b10_0000 != 0;
    if !single_segment {
        let wd = *payload
            .get(5)
            .ok_or("zstd frame header is missing or unreadable")?;
        let log = 10 + u64::from(wd >> 3);
        let base = 1u64 << log;
        let size = base + (base / 8) * u64::from(wd & 7);
        if size > 1u64 << window_log {
            return Err("zstd frame declares a window larger than the format allows");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context that compressed before (other windows, levels, long-distance
    /// matching on or off) makes the same frame as a fresh one.
    #[test]
    fn kept_context_encodes_as_a_fresh_one() {
        let text = |n: usize, k: usize| -> Vec<u8> {
            (0..n)
                .map(|i| ((i * k) ^ (i >> 9) ^ (i / 13)) as u8)
                .collect()
        };
        let windows: Vec<Vec<u8>> = vec![
            text(900_000, 7),
            text(20_000, 3),
            Vec::new(),
            text(300_000, 5),
        ];
        let mut cctx = CCtx::create();
        for (i, window) in windows.iter().enumerate() {
            let mut data = window.clone();
            data.extend_from_slice(&text(50_000 + i * 10_000, 11));
            let third = data.len() / 3;
            data.rotate_left(third);
            let s = ZstdSettings {
                level: [3, 19, 6, 1][i],
                long_distance: i % 2 == 0,
            };
            let kept = encode_in(&mut cctx, window, &data, s).expect("kept");
            let fresh = encode(window, &data, s).expect("fresh");
            assert_eq!(kept, fresh, "window {i}");
            let mut out = vec![0; data.len()];
            decode(window, &kept, &mut out).expect("decode");
            assert_eq!(out, data);
        }
    }

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

    /// Issue 7, apply defect 8: a payload is one frame, nothing more.
    #[test]
    fn a_payload_followed_by_a_skippable_or_empty_frame_is_refused() {
        let s = ZstdSettings {
            level: 3,
            long_distance: false,
        };
        let data = vec![5u8; 10_000];
        let payload = encode(&[], &data, s).expect("encode");
        let mut out = vec![0u8; data.len()];
        decode(&[], &payload, &mut out).expect("clean payload");
        let mut skippable = payload.clone();
        skippable.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]);
        assert!(decode(&[], &skippable, &mut out).is_err());
        let mut empty = payload.clone();
        empty.extend(encode(&[], &[], s).expect("empty frame"));
        assert!(decode(&[], &empty, &mut out).is_err());
    }

    /// Issue 7, apply defect 8: a frame may declare no larger window than the
    /// format derives from the manifest.
    #[test]
    fn a_payload_declaring_a_larger_window_is_refused() {
        let data = vec![5u8; 4096];
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::WindowLog(30)).expect("wlog");
        cctx.set_parameter(CParameter::ContentSizeFlag(true))
            .expect("size");
        let mut payload = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
        // Streaming compression keeps the declared window (no single segment).
        let mut out_buf = zstd_safe::OutBuffer::around(&mut payload);
        let mut in_buf = zstd_safe::InBuffer::around(&data);
        cctx.compress_stream2(
            &mut out_buf,
            &mut in_buf,
            zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue,
        )
        .expect("compress");
        while cctx
            .compress_stream2(
                &mut out_buf,
                &mut in_buf,
                zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end,
            )
            .expect("end")
            != 0
        {}
        // No content size was pledged, so the frame has a window descriptor and no
        // content size: declare a 1 GiB window (descriptor 160) and add a 4-byte
        // content size field (FHD bits 7-6 = 2), as a hostile builder could.
        assert_eq!(payload.get(4).map(|fhd| fhd & 0b1110_0000), Some(0));
        payload[4] |= 0b1000_0000;
        payload[5] = 160;
        let size = (data.len() as u32).to_le_bytes();
        payload.splice(6..6, size);
        assert!(matches!(
            zstd_safe::get_frame_content_size(&payload),
            Ok(Some(n)) if n == data.len() as u64
        ));
        let mut out = vec![0u8; data.len()];
        assert_eq!(
            decode(&[], &payload, &mut out),
            Err("zstd frame declares a window larger than the format allows")
        );
    }
}

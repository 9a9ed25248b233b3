//! Installing a release's full image (when no patch fits the device): the verified
//! compressed object decoded into OUT atomically, its length and BLAKE3 checked
//! against the release's target before OUT is replaced.

use std::{
    io::{Read, Write},
    path::Path,
};

use deltaward_engine::{AtomicFile, Digest};

use crate::{
    error::{invalid, io_err, Error, InvalidError, Mismatch, Result},
    model::{FullImage, Target},
};

/// Largest zstd window a device decodes a full image with (256 MiB of memory at most;
/// `release` writes window log 23, 8 MiB).
pub const FULL_IMAGE_MAX_WINDOW_LOG: u32 = 28;

/// Decodes the full-image `object` (already verified against its signed hash) into
/// `out`, checking the result against `target`; OUT is untouched unless every byte
/// matched. `progress` gets the bytes written so far.
pub fn install_full_image(
    object: &Path,
    full: &FullImage,
    target: &Target,
    out: &Path,
    progress: &dyn Fn(u64),
) -> Result<()> {
    if full.compression != "zstd" || full.window_log > FULL_IMAGE_MAX_WINDOW_LOG {
        return Err(invalid(
            "release.json",
            InvalidError::Compression {
                compression: full.compression.clone(),
                window_log: full.window_log,
                max: FULL_IMAGE_MAX_WINDOW_LOG,
            },
        ));
    }
    let f = deltaward_engine::open_regular(object).map_err(io_err("opening", object))?;
    let mut dec = zstd::stream::read::Decoder::new(f).map_err(io_err("decoding", object))?;
    dec.window_log_max(full.window_log)
        .map_err(io_err("decoding", object))?;
    let mut dest = AtomicFile::create_with_mode(out, 0o644)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = dec.read(&mut buf).map_err(io_err("decoding", object))?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        written += n as u64;
        if written > target.length {
            return Err(mismatch(Mismatch::TooLong {
                expected: target.length,
            }));
        }
        h.update(chunk);
        dest.write_all(chunk).map_err(io_err("writing", out))?;
        progress(written);
    }
    if written != target.length {
        return Err(mismatch(Mismatch::TooShort {
            expected: target.length,
            found: written,
        }));
    }
    let found = Digest::from(h.finalize());
    if found != target.blake3 {
        return Err(mismatch(Mismatch::Blake3 {
            expected: target.blake3,
            found,
        }));
    }
    dest.commit()?;
    Ok(())
}

fn mismatch(m: Mismatch) -> Error {
    Error::MixAndMatch {
        what: "full image".into(),
        mismatch: m,
    }
}

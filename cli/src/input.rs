//! Reading the small local files the commands take (keys, password files, release
//! notes, a release.json to render): only regular files, never through a link, never
//! blocking on a FIFO, and no more than a bound, so that a key "file" linked to
//! /dev/zero or a named pipe fails at once with a clear error.

use std::{io::Read, path::Path};

use anyhow::{bail, Context, Result};

/// Largest key or password file read (a minisign key file is about 350 bytes).
pub const KEY_FILE_MAX: u64 = 16 << 10;
/// Largest release-notes file read.
pub const NOTES_MAX: u64 = 1 << 20;

/// Reads at most `max` bytes of the regular file `path`, refusing a longer one.
pub fn read_bytes(path: &Path, what: &str, max: u64) -> Result<Vec<u8>> {
    let file = deltaward_engine::open_regular(path)
        .with_context(|| format!("opening {what} {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!(
            "{what} {} is larger than {max} bytes; is it the right file?",
            path.display()
        );
    }
    Ok(bytes)
}

/// Like [`read_bytes`], for UTF-8 text.
pub fn read_text(path: &Path, what: &str, max: u64) -> Result<String> {
    String::from_utf8(read_bytes(path, what, max)?)
        .with_context(|| format!("{what} {} is not UTF-8 text", path.display()))
}

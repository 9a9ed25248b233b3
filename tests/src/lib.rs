//! End-to-end tests for deltaward live in `tests/`; this library only locates the
//! real image pairs that `scripts/make-pairs.sh` builds.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// Directory of the image pairs: `$DELTAWARD_PAIRS`, else `~/.cache/deltaward-pairs`.
pub fn pairs_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DELTAWARD_PAIRS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/deltaward-pairs")
}

/// Whether the pairs are built (the script writes `DONE` last).
pub fn pairs_ready() -> bool {
    pairs_dir().join("DONE").is_file()
}

//! Every limit of the release checks, in one place. `docs/LIMITS.md` lists
//! each with the test at its edge; none can be changed by a flag.
//!
//! Documents are read through [`crate::repo::Repo`], which stops reading one byte past
//! the cap, so a hostile file costs at most its cap in memory, however long it is.

use std::time::Duration;

/// Largest `root.json` (repository, `roots/N.root.json`, or the device's trusted copy).
pub const ROOT_JSON_MAX_BYTES: u64 = 256 << 10;
/// Largest `channel.json`.
pub const CHANNEL_JSON_MAX_BYTES: u64 = 4 << 20;
/// Largest `release.json`; a device reads at most the length its channel entry signs
/// (plus one byte, to notice a longer file), and refuses an entry above this cap.
pub const RELEASE_JSON_MAX_BYTES: u64 = 1 << 20;
/// Largest `state.json` on the device.
pub const STATE_JSON_MAX_BYTES: u64 = 4 << 10;
/// Largest `.minisig` file of a document.
pub const SIGNATURE_FILE_MAX_BYTES: u64 = 16 << 10;
/// Most signature blocks in one `.minisig` file; also the highest threshold a root may
/// set, so that every threshold can be met.
pub const MAX_SIGNATURE_BLOCKS: usize = 16;
/// Longest validity of a signed document (root, channel, release); longer requests are
/// refused, not shortened.
pub const MAX_VALIDITY: Duration = Duration::from_secs(100 * 365 * 86_400);
/// Longest path inside the repository (bytes).
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest product name or release version (they are path components).
pub const MAX_NAME_BYTES: usize = 128;

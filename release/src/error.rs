//! Errors of release handling: each refusal a device can make has its own variant.

use std::{io, path::PathBuf};

/// Why a release operation failed or a device refused an update.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Rollback: a release counter or channel version below the highest the device
    /// accepted.
    #[error("rollback refused: {what} {offered} is below the highest accepted {what} {highest}")]
    Rollback {
        /// "release counter" or "channel version".
        what: &'static str,
        /// Counter offered.
        offered: u64,
        /// Highest counter accepted before.
        highest: u64,
    },
    /// Freeze: a signed document has expired.
    #[error("freeze refused: {file} expired at {expires} (now {now})")]
    Expired {
        /// Which document.
        file: String,
        /// Its expiry.
        expires: String,
        /// The time of the check.
        now: String,
    },
    /// The release is not for this hardware.
    #[error("release is for hardware {supported:?}, not {hardware}")]
    WrongHardware {
        /// This device's hardware id.
        hardware: String,
        /// Hardware ids the release names.
        supported: Vec<String>,
    },
    /// The device's image is not the base the release names for its version.
    #[error("base mismatch: the release expects version {version} to be {expected}, the device has {found}")]
    BaseMismatch {
        /// Device version.
        version: String,
        /// BLAKE3 the release names.
        expected: String,
        /// BLAKE3 of the device's image.
        found: String,
    },
    /// Mix-and-match: a file does not hash to what the signed metadata says.
    #[error(
        "mix-and-match refused: {what} has BLAKE3 {found}, the signed metadata says {expected}"
    )]
    MixAndMatch {
        /// Which file.
        what: String,
        /// Expected hash.
        expected: String,
        /// Found hash.
        found: String,
    },
    /// Signed by a key the trusted root does not list for the role.
    #[error(
        "{file} is signed by key {key_id}, which the trusted root does not list for role {role}"
    )]
    UnknownKey {
        /// Document.
        file: String,
        /// Role.
        role: &'static str,
        /// The unknown key.
        key_id: String,
    },
    /// Fewer valid signatures than the role's threshold.
    #[error("{file}: {valid} valid signature(s) from distinct {role} keys, {needed} needed")]
    Threshold {
        /// Document.
        file: String,
        /// Role.
        role: &'static str,
        /// Valid signatures from distinct trusted keys.
        valid: usize,
        /// Threshold.
        needed: u32,
    },
    /// A root rotation is not signed or numbered as it must be.
    #[error("root rotation refused: {0}")]
    RootRotation(String),
    /// A signature is malformed, legacy, or its trusted comment does not match.
    #[error("{file}: signature rejected")]
    Signature {
        /// Document.
        file: String,
        /// Why.
        source: deltaward_engine::SignatureError,
    },
    /// A trusted comment names another role, file or version.
    #[error("{file}: trusted comment {found:?} does not match {expected:?}")]
    Comment {
        /// Document.
        file: String,
        /// Expected.
        expected: String,
        /// Found.
        found: String,
    },
    /// A document does not parse or breaks a rule of docs/RELEASE.md.
    #[error("{file}: {reason}")]
    Invalid {
        /// Document.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The release would break a rule (counter not above the channel's, missing
    /// mitigations, bad notes).
    #[error("refusing to release: {0}")]
    Refused(String),
    /// A file could not be read or written.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The engine failed (building a patch, writing a file).
    #[error(transparent)]
    Engine(#[from] deltaward_engine::Error),
}

/// What kind of failure an [`Error`] is, for callers that act on it (the CLI maps
/// classes to exit codes) without matching on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// A counter or version below the highest accepted.
    Rollback,
    /// An expired document.
    Freeze,
    /// Not for this hardware.
    WrongHardware,
    /// The device's image is not the base the release names.
    BaseMismatch,
    /// A file differs from its signed hash.
    MixAndMatch,
    /// Signed by a key the root does not list for the role.
    UnknownKey,
    /// Fewer valid signatures than the threshold.
    Threshold,
    /// A bad root rotation.
    RootRotation,
    /// A malformed, legacy or mismatched signature.
    Signature,
    /// An engine failure, with the engine's own class.
    Engine(deltaward_engine::ErrorClass),
    /// Anything else.
    Other,
}

impl Error {
    /// The class of this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Rollback { .. } => ErrorClass::Rollback,
            Self::Expired { .. } => ErrorClass::Freeze,
            Self::WrongHardware { .. } => ErrorClass::WrongHardware,
            Self::BaseMismatch { .. } => ErrorClass::BaseMismatch,
            Self::MixAndMatch { .. } => ErrorClass::MixAndMatch,
            Self::UnknownKey { .. } => ErrorClass::UnknownKey,
            Self::Threshold { .. } => ErrorClass::Threshold,
            Self::RootRotation(_) => ErrorClass::RootRotation,
            Self::Signature { .. } | Self::Comment { .. } => ErrorClass::Signature,
            Self::Engine(e) => ErrorClass::Engine(e.class()),
            _ => ErrorClass::Other,
        }
    }
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

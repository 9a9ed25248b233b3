//! The engine's error types: one enum per boundary, each variant saying what is
//! wrong and where.

use std::{fmt, io, path::PathBuf};

use crate::format::{Digest, FormatError, Region};

/// Everything that can go wrong while building, verifying or applying a patch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened, read, written, synced or renamed.
    #[error("{action} {}", path.display())]
    Io {
        /// What the engine was doing ("reading", "creating", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A stream (not a named file) failed.
    #[error("{action}")]
    Stream {
        /// What the engine was doing.
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The patch bytes are malformed.
    #[error("malformed patch")]
    Format(#[from] FormatError),
    /// The patch's signature is missing, malformed or made by an untrusted key.
    #[error("signature rejected")]
    Signature(#[from] SignatureError),
    /// A key could not be read or used.
    #[error("key error")]
    Key(#[from] KeyError),
    /// The old image is not the one the patch was built from.
    #[error(
        "old image does not match the patch: expected {expected_size} bytes with BLAKE3 {expected_hash}, found {found_size} bytes{}",
        found_hash.map(|h| format!(" with BLAKE3 {h}")).unwrap_or_default()
    )]
    SourceMismatch {
        /// Size the patch expects.
        expected_size: u64,
        /// BLAKE3 the patch expects.
        expected_hash: Digest,
        /// Size found.
        found_size: u64,
        /// BLAKE3 found (absent when the size already differs).
        found_hash: Option<Digest>,
    },
    /// A frame's payload or output does not hash to what the manifest says.
    #[error("frame {frame}: {what} hash mismatch: expected {expected}, found {actual}")]
    FrameHash {
        /// Index of the frame in the manifest.
        frame: u32,
        /// Which hash.
        what: Hashed,
        /// Hash from the manifest.
        expected: Digest,
        /// Hash computed.
        actual: Digest,
    },
    /// A frame's payload passed its hash check but does not decode.
    #[error("frame {frame}: payload does not decode: {reason}")]
    Decode {
        /// Index of the frame in the manifest.
        frame: u32,
        /// Why.
        reason: &'static str,
    },
    /// The rebuilt image does not hash to the manifest's target hash.
    #[error("rebuilt image does not match: expected BLAKE3 {expected}, found {actual}")]
    TargetMismatch {
        /// Target hash from the manifest.
        expected: Digest,
        /// Hash of what was rebuilt.
        actual: Digest,
    },
    /// The rebuilt file is longer or shorter than the manifest's target size when
    /// read back (bytes were written to it behind the applier's back).
    #[error("rebuilt image is {found} bytes long, expected {expected}")]
    TargetLength {
        /// Target size from the manifest.
        expected: u64,
        /// Length of the file.
        found: u64,
    },
    /// Applying would need more memory than allowed.
    #[error("patch needs {needed} bytes of working memory, above the limit of {limit} bytes")]
    MemoryLimit {
        /// Bytes the patch needs.
        needed: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The output replaced the destination, but the directory could not be synced,
    /// so the rename may not survive a power cut.
    #[error("{} was replaced, but its directory could not be synced: the change may not survive a power cut", path.display())]
    NotDurable {
        /// The destination.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Another apply is writing this destination.
    #[error("another deltaward apply is writing {}", dest.display())]
    OutputBusy {
        /// The destination.
        dest: PathBuf,
    },
    /// The private directory beside the destination is not one only this user can
    /// write (a link, another owner, or access for others).
    #[error("{} is not a private directory of this user (mode 0700, not a link); remove it or check who made it", path.display())]
    NotPrivate {
        /// The directory.
        path: PathBuf,
    },
    /// After the rename, the destination was not the file that was written and
    /// verified: something replaced it.
    #[error("{} was replaced by another file right after the verified image was renamed there", dest.display())]
    OutputReplaced {
        /// The destination.
        dest: PathBuf,
    },
    /// The options given cannot work.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// Option name.
        name: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// Compression failed (out of memory or a zstd limit).
    #[error("encoding frame {frame} failed: {reason}")]
    Encode {
        /// Index of the frame.
        frame: u32,
        /// zstd's message.
        reason: &'static str,
    },
}

/// Ways a signature can be rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// The patch has no signature.
    #[error("patch is not signed")]
    Unsigned,
    /// The signature text is not a minisign signature.
    #[error("signature is not valid minisign text")]
    Malformed,
    /// A legacy (non-prehashed `Ed`) signature, which deltaward refuses.
    #[error("legacy minisign signature (algorithm Ed) refused; sign with a current minisign (prehashed ED)")]
    Legacy,
    /// Made by a key that is not among the trusted ones.
    #[error("signed by key {key_id}, which is not trusted")]
    UntrustedKey {
        /// Key id, as minisign prints it.
        key_id: String,
    },
    /// The Ed25519 check failed: the manifest or trusted comment was altered.
    #[error("signature does not match the manifest (altered patch or wrong key)")]
    Invalid,
    /// The signature verifies but its text was altered outside the signed parts
    /// (untrusted comment, encoding or line layout).
    #[error(
        "signature text is not in the form deltaward writes (altered outside its signed parts)"
    )]
    NotCanonical,
    /// The trusted comment does not describe this manifest.
    #[error("trusted comment {found:?} does not match the manifest (expected {expected:?})")]
    CommentMismatch {
        /// Expected comment.
        expected: String,
        /// Comment found.
        found: String,
    },
}

/// Ways a key file can be unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key text is not a minisign key.
    #[error("not a minisign {0} key")]
    Malformed(KeyKind),
    /// A key of the other kind was given: a public key where a secret key is
    /// needed, or the reverse.
    #[error("a {} key was given where a {wanted} key is needed", wanted.other())]
    WrongKind {
        /// The kind needed.
        wanted: KeyKind,
    },
    /// The password does not decrypt the secret key.
    #[error("wrong password for the secret key (or the key file is damaged)")]
    WrongPassword,
    /// The secret key is encrypted but no password was given.
    #[error("the secret key is encrypted and needs a password")]
    PasswordRequired,
    /// Generating or encoding a key pair failed.
    #[error("key generation failed")]
    Generate(#[source] minisign::PError),
    /// Signing failed (the signer's own check of its signature, or no randomness).
    #[error("signing failed")]
    Sign(#[source] minisign::PError),
}

/// The two halves of a key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A secret (signing) key.
    Secret,
    /// A public (verifying) key.
    Public,
}

impl KeyKind {
    /// The other half.
    pub fn other(self) -> Self {
        match self {
            Self::Secret => Self::Public,
            Self::Public => Self::Secret,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Secret => "secret",
            Self::Public => "public",
        })
    }
}

/// Which of a frame's two hashes failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashed {
    /// The payload bytes, checked before decoding.
    Payload,
    /// The decoded output.
    Output,
}

impl fmt::Display for Hashed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Payload => "payload",
            Self::Output => "output",
        })
    }
}

/// What kind of failure an [`Error`] is, for callers that act on it (the CLI maps
/// classes to exit codes) without matching on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The signature is missing, malformed, legacy or from an untrusted key.
    Signature,
    /// The patch is malformed, truncated or corrupted.
    Corrupt,
    /// The old image is not the one the patch was built from.
    WrongBase,
    /// The patch needs more memory or output space than the options allow.
    Limit,
    /// A key could not be read, decrypted or used.
    Key,
    /// Anything else: I/O, invalid options, resume state, encoding.
    Other,
}

impl Error {
    /// The class of this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Signature(_) => ErrorClass::Signature,
            Self::Format(FormatError::LimitExceeded { limit, .. }) if limit.is_configurable() => {
                ErrorClass::Limit
            }
            Self::Format(_)
            | Self::FrameHash { .. }
            | Self::Decode { .. }
            | Self::TargetMismatch { .. }
            | Self::TargetLength { .. } => ErrorClass::Corrupt,
            Self::SourceMismatch { .. } => ErrorClass::WrongBase,
            Self::MemoryLimit { .. } => ErrorClass::Limit,
            Self::Key(_) => ErrorClass::Key,
            Self::Io { .. }
            | Self::Stream { .. }
            | Self::NotDurable { .. }
            | Self::OutputBusy { .. }
            | Self::NotPrivate { .. }
            | Self::OutputReplaced { .. }
            | Self::InvalidOption { .. }
            | Self::Encode { .. } => ErrorClass::Other,
        }
    }

    /// Whether an apply that failed this way can be continued with resume: an I/O
    /// failure, or a patch that ends inside its payloads (a download cut short).
    /// Anything else means the patch, the image or a frame is bad, and nothing
    /// written so far is worth keeping.
    pub fn is_resumable(&self) -> bool {
        matches!(
            self,
            Self::Io { .. }
                | Self::Stream { .. }
                | Self::Format(FormatError::Truncated {
                    region: Region::FramePayload,
                    ..
                })
        )
    }
}

/// Shorthand for the engine's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

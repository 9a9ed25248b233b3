//! The engine's error types: one enum per boundary, each variant saying what is
//! wrong and where.

use std::{io, path::PathBuf};

/// A hex-printed BLAKE3 digest, for error messages.
pub type Digest = [u8; 32];

/// Everything that can go wrong while building, verifying or applying a patch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened, read, written, synced or renamed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What the engine was doing ("reading", "creating", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A stream (not a named file) failed.
    #[error("{action}: {source}")]
    Stream {
        /// What the engine was doing.
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The patch bytes are malformed.
    #[error("malformed patch: {0}")]
    Format(#[from] FormatError),
    /// The patch's signature is missing, malformed or made by an untrusted key.
    #[error("signature rejected: {0}")]
    Signature(#[from] SignatureError),
    /// A key file could not be read or used.
    #[error("key error: {0}")]
    Key(#[from] KeyError),
    /// The old image is not the one the patch was built from.
    #[error(
        "old image does not match the patch: expected {expected_size} bytes with BLAKE3 {}, found {found_size} bytes{}",
        hex(expected_hash),
        found_hash.map(|h| format!(" with BLAKE3 {}", hex(&h))).unwrap_or_default()
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
    #[error(
        "frame {frame}: {what} hash mismatch: expected {}, found {}",
        hex(expected),
        hex(actual)
    )]
    FrameHash {
        /// Index of the frame in the manifest.
        frame: u32,
        /// Which hash: "payload" or "output".
        what: &'static str,
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
    #[error(
        "rebuilt image does not match: expected BLAKE3 {}, found {}",
        hex(expected),
        hex(actual)
    )]
    TargetMismatch {
        /// Target hash from the manifest.
        expected: Digest,
        /// Hash of what was rebuilt.
        actual: Digest,
    },
    /// Applying would need more memory than allowed.
    #[error("patch needs {needed} bytes of working memory, above the limit of {limit} bytes")]
    MemoryLimit {
        /// Bytes the patch needs.
        needed: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A resume state file belongs to another patch or is damaged.
    #[error("resume state {}: {reason}", path.display())]
    ResumeState {
        /// The state file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: &'static str,
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

/// Ways the patch container or manifest can be malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The file does not start with the deltaward magic.
    #[error("not a deltaward patch (bad magic)")]
    BadMagic,
    /// The format version is not one this build reads.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
        /// Version supported.
        supported: u16,
    },
    /// The input ended before a region was complete.
    #[error("truncated in {region} at byte {offset}")]
    Truncated {
        /// Region being read.
        region: &'static str,
        /// Byte offset where data ran out.
        offset: u64,
    },
    /// A length or count exceeds what the format or the caller allows.
    #[error("{field} is {value}, above the limit of {limit}")]
    LimitExceeded {
        /// Field name.
        field: &'static str,
        /// Value found.
        value: u64,
        /// Limit.
        limit: u64,
    },
    /// A reserved field or flag is not zero.
    #[error("reserved field {field} is not zero")]
    Reserved {
        /// Field name.
        field: &'static str,
    },
    /// A frame kind byte is unknown.
    #[error("frame {frame}: unknown kind {kind}")]
    UnknownFrameKind {
        /// Frame index.
        frame: u32,
        /// Kind byte.
        kind: u8,
    },
    /// A frame's fields contradict each other or the manifest.
    #[error("frame {frame}: {problem}")]
    BadFrame {
        /// Frame index.
        frame: u32,
        /// What is inconsistent.
        problem: &'static str,
    },
    /// A manifest-level field contradicts the others.
    #[error("manifest: {0}")]
    Inconsistent(&'static str),
    /// A text field is not valid UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// Bytes follow the last frame payload.
    #[error("{extra} unexpected bytes after the last frame")]
    TrailingBytes {
        /// Count of extra bytes.
        extra: u64,
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
    Malformed(&'static str),
    /// The password does not decrypt the secret key.
    #[error("wrong password for the secret key (or the key file is damaged)")]
    WrongPassword,
    /// The secret key is encrypted but no password was given.
    #[error("the secret key is encrypted and needs a password")]
    PasswordRequired,
    /// Generating or encoding a key failed.
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Shorthand for the engine's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

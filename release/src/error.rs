//! Errors of release handling: each refusal a device can make has its own variant,
//! and each variant that needs more detail has its own sub-enum (in the manner of
//! rustls' `InvalidMessage`), so that callers match on values, never on text.

use deltaward_engine::Digest;
use std::{io, path::PathBuf, time::Duration};

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
    /// A network source could not give a file; the transport's error is inside
    /// (the mirror crate's `UpstreamError` for HTTP).
    #[error("fetching {path}: {source}")]
    Fetch {
        /// The file.
        path: String,
        /// The transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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
        expected: Digest,
        /// BLAKE3 of the device's image.
        found: Digest,
    },
    /// Mix-and-match: a file is not what the signed metadata says it is.
    #[error("mix-and-match refused: {what} {mismatch}")]
    MixAndMatch {
        /// Which file.
        what: String,
        /// How it differs.
        mismatch: Mismatch,
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
        /// Valid signatures from distinct trusted Ed25519 keys.
        valid: usize,
        /// Threshold.
        needed: u32,
    },
    /// A root rotation is not signed or numbered as it must be.
    #[error("root rotation refused")]
    RootRotation(#[source] RootRotationError),
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
        reason: InvalidError,
    },
    /// A file is over one of the limits of [`crate::limits`].
    #[error("{file}: {limit}")]
    Limit {
        /// The file.
        file: String,
        /// Which limit.
        limit: LimitError,
    },
    /// A path named by signed metadata, or a name used as a path component, is not
    /// confined to the repository.
    #[error("path {path:?}: {reason}")]
    Path {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: PathError,
    },
    /// The device's state directory is not as provisioning left it.
    #[error("device state")]
    State(#[source] StateError),
    /// The release or channel would break a rule of docs/RELEASE.md.
    #[error("refusing to release")]
    Refused(#[source] RefusedError),
    /// `publish` refused the repository.
    #[error(transparent)]
    Unpublishable(UnpublishableError),
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
    /// A document or object over a size or count limit.
    Limit,
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
            Self::Limit { .. } => ErrorClass::Limit,
            Self::Engine(e) => ErrorClass::Engine(e.class()),
            Self::Unpublishable(u) => u.source.class(),
            _ => ErrorClass::Other,
        }
    }
}

/// How a file differs from what the signed metadata says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// Another BLAKE3.
    #[error("has BLAKE3 {found}, the signed metadata says {expected}")]
    Blake3 {
        /// Expected hash.
        expected: Digest,
        /// Found hash.
        found: Digest,
    },
    /// Longer than its signed length (reading stopped one byte past it).
    #[error("is longer than its signed length {expected}")]
    TooLong {
        /// The signed length.
        expected: u64,
    },
    /// Shorter than its signed length.
    #[error("has {found} bytes, the signed metadata says {expected}")]
    TooShort {
        /// The signed length.
        expected: u64,
        /// Bytes found.
        found: u64,
    },
    /// A channel for another product.
    #[error("is for product {found:?}, not {expected:?}")]
    Product {
        /// The product checked.
        expected: String,
        /// The product the document names.
        found: String,
    },
    /// A release that is not the one its channel entry names.
    #[error("is {found}, the channel lists {expected}")]
    Release {
        /// What the channel entry (and the product checked) name.
        expected: Box<ReleaseId>,
        /// What the release says.
        found: Box<ReleaseId>,
    },
}

/// Product, version and counter of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseId {
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Release counter.
    pub counter: u64,
}

impl std::fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} counter {}",
            self.product, self.version, self.counter
        )
    }
}

/// Why a root rotation (or a second provisioning) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootRotationError {
    /// The offered root is not a `deltaward-root` of this spec version.
    #[error(
        "the offered root is {kind} version {spec_version}, not deltaward-root version {}",
        crate::model::SPEC_VERSION
    )]
    WrongKind {
        /// Its `_type`.
        kind: String,
        /// Its `spec_version`.
        spec_version: u32,
    },
    /// The offered root is not numbered trusted + 1.
    #[error("trusted root is version {trusted}, the offered root is version {offered} (versions may not be skipped)")]
    VersionNotNext {
        /// Trusted version.
        trusted: u64,
        /// Offered version.
        offered: u64,
    },
    /// Not signed by the threshold of the trusted root's root keys.
    #[error("not signed by the old root's keys")]
    NotSignedByOld(#[source] Box<Error>),
    /// Not signed by the threshold of its own root keys.
    #[error("not signed by the new root's own keys")]
    NotSignedByNew(#[source] Box<Error>),
    /// The repository's current root is newer than the chain in `roots/` reaches.
    #[error("the repository's root is version {current} but no signed version {} follows the trusted version {trusted}", trusted.saturating_add(1))]
    ChainBroken {
        /// The repository's `root.json` version.
        current: u64,
        /// The version reached.
        trusted: u64,
    },
    /// Provisioning again with another root.
    #[error("{} already holds a trusted root; a new root must come as a signed rotation", dir.display())]
    AlreadyProvisioned {
        /// The state directory.
        dir: PathBuf,
    },
}

/// How a document breaks the rules of docs/RELEASE.md.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidError {
    /// Not valid JSON for its type (including unknown fields).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A full image compressed in a way this version cannot decode, or with a window
    /// above the cap.
    #[error("full image compression {compression:?} with window log {window_log} (this version decodes zstd up to window log {max})")]
    Compression {
        /// The compression named.
        compression: String,
        /// Its window log.
        window_log: u32,
        /// The largest window log decoded.
        max: u32,
    },
    /// Not valid TOML for release notes.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// Another `_type` or `spec_version`.
    #[error(
        "is {kind} version {spec_version}, expected {expected} version {}",
        crate::model::SPEC_VERSION
    )]
    WrongKind {
        /// Its `_type`.
        kind: String,
        /// Its `spec_version`.
        spec_version: u32,
        /// The expected `_type`.
        expected: &'static str,
    },
    /// A time that is not RFC 3339.
    #[error("time {value:?}: {error}")]
    Time {
        /// The text.
        value: String,
        /// Why.
        error: humantime::TimestampError,
    },
    /// The channel lists no release.
    #[error("lists no release")]
    NoReleases,
    /// `root.json` is not the newest root of `roots/`.
    #[error("is not roots/{version}.root.json, the newest root")]
    NotNewestRoot {
        /// The newest root's version.
        version: u64,
    },
    /// A key of the root is not a minisign public key.
    #[error("key {key_id}: {error}")]
    Key {
        /// Key id.
        key_id: String,
        /// Why.
        error: deltaward_engine::KeyError,
    },
    /// A key is listed under an id other than its own key number.
    #[error("key listed as {listed} carries key number {actual}")]
    KeyIdMismatch {
        /// The id the root lists it under.
        listed: String,
        /// The key number inside the key.
        actual: String,
    },
    /// One Ed25519 key listed under two ids (the key id is not signed, so one key
    /// would count twice toward a threshold).
    #[error("one Ed25519 key is listed under two ids, {first} and {second}")]
    DuplicateKey {
        /// First id.
        first: String,
        /// Second id.
        second: String,
    },
    /// A role names a key id the root does not list.
    #[error("role {role} names key {key_id}, which the root does not list")]
    MissingKey {
        /// Role.
        role: &'static str,
        /// Key id.
        key_id: String,
    },
    /// A role's threshold is 0, above its number of keys, or above the signature
    /// block cap.
    #[error("role {role} has threshold {threshold} with {keys} key(s) (allowed: 1 to the number of keys, at most {})", crate::limits::MAX_SIGNATURE_BLOCKS)]
    BadThreshold {
        /// Role.
        role: &'static str,
        /// Threshold.
        threshold: u32,
        /// Distinct keys listed.
        keys: usize,
    },
}

/// Which limit of [`crate::limits`] a file is over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// Larger than its cap (reading stopped one byte past it).
    #[error("larger than the {max}-byte limit")]
    TooLarge {
        /// The cap.
        max: u64,
    },
    /// More signature blocks than allowed.
    #[error("more than {max} signature blocks")]
    TooManySignatures {
        /// The cap.
        max: usize,
    },
}

/// Why a path (or a name used as a path component) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Empty, absolute, or longer than the limit.
    #[error(
        "is not a relative path of 1 to {} bytes",
        crate::limits::MAX_PATH_BYTES
    )]
    NotRelative,
    /// Has an empty, `.` or `..` component, a backslash or a control character.
    #[error(
        "is not normalised (empty, `.` or `..` components, backslashes or control characters)"
    )]
    NotNormal,
    /// Resolves (through a directory link) outside the repository.
    #[error("resolves outside the repository")]
    OutsideRepository,
    /// A link, device, FIFO or directory rather than a regular file.
    #[error("is not a regular file")]
    NotRegularFile,
    /// An object path that is not `objects/` followed by its own 64-digit BLAKE3.
    #[error("is not objects/<the object's 64 hex digit BLAKE3>")]
    ObjectName,
    /// A product or version that is not a safe path component.
    #[error("is not a safe name (1 to {} bytes of letters, digits, `.`, `_`, `+`, `-`, not starting with `.`)", crate::limits::MAX_NAME_BYTES)]
    UnsafeName,
}

/// Why the device's state directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// No trusted root: the device was never provisioned.
    #[error("{} holds no trusted root.json; provision the device first", dir.display())]
    NotProvisioned {
        /// The state directory.
        dir: PathBuf,
    },
    /// Provisioned (a trusted root is there) but `state.json` is gone: refusing,
    /// since zero counters would accept any older release again.
    #[error("{} holds a trusted root but no state.json; refusing (fail closed): restore state.json or re-provision the device", dir.display())]
    Missing {
        /// The state directory.
        dir: PathBuf,
    },
}

/// Why `release`, `channel refresh` or `root` refused to write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefusedError {
    /// The notes list no hardware id.
    #[error("the notes list no hardware_ids")]
    NoHardwareIds,
    /// Not approved and no mitigations.
    #[error("the release is not approved by the manufacturer and the notes give no mitigations (IEC 81001-5-1 6.3.1): add [approval] mitigations")]
    NoMitigations,
    /// No compatibility statement.
    #[error("the notes give no compatibility statement")]
    NoCompatibilityStatement,
    /// No key of the release role.
    #[error("no release-role secret key given")]
    NoReleaseKey,
    /// No key of the channel role.
    #[error("no channel-role secret key given")]
    NoChannelKey,
    /// No base image to build a patch from.
    #[error("no base image given to build a patch from")]
    NoBases,
    /// The counter is not above the channel's highest.
    #[error("counter {counter} is not above the channel's highest counter {highest}")]
    CounterNotAbove {
        /// Counter requested.
        counter: u64,
        /// Highest in the channel.
        highest: u64,
    },
    /// The product has no channel to refresh.
    #[error("product {product} has no channel in {}", dir.display())]
    NoChannel {
        /// Product.
        product: String,
        /// Repository.
        dir: PathBuf,
    },
    /// The channel's version cannot go up any more.
    #[error("the channel is at version {version}, the highest there is; rotate the channel keys and start again")]
    ChannelVersionExhausted {
        /// Its version.
        version: u64,
    },
    /// The existing channel does not verify, so it is not re-signed.
    #[error("the existing channel.json does not verify under the repository's roots")]
    ChannelNotVerified(#[source] Box<Error>),
    /// A duration that does not parse.
    #[error("{what} {value:?}: {error}")]
    Duration {
        /// Which setting.
        what: &'static str,
        /// Its text.
        value: String,
        /// Why.
        error: humantime::DurationError,
    },
    /// A validity above [`crate::limits::MAX_VALIDITY`]: refused, not shortened.
    #[error("validity {} is longer than the limit of {}", humantime::format_duration(*validity), humantime::format_duration(crate::limits::MAX_VALIDITY))]
    ValidityTooLong {
        /// The validity asked for.
        validity: Duration,
    },
    /// The expiry time is past what RFC 3339 can write.
    #[error("the expiry time is past the year 9999")]
    ExpiryTooLate,
    /// Two bases (images or patches) for the same version.
    #[error("two bases for version {version}")]
    DuplicateBase {
        /// The version.
        version: String,
    },
    /// A patch given with `--patch` was refused.
    #[error("patch {}", patch.display())]
    Patch {
        /// The patch file.
        patch: PathBuf,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A patch given with `--patch` builds another image than the release's.
    #[error("patch {} builds the image {found} ({found_len} bytes), not the release's image {expected} ({expected_len} bytes)", patch.display())]
    PatchTarget {
        /// The patch file.
        patch: PathBuf,
        /// BLAKE3 of the release's image.
        expected: Digest,
        /// Its length.
        expected_len: u64,
        /// BLAKE3 of the image the patch builds.
        found: Digest,
        /// Its length.
        found_len: u64,
    },
    /// A patch given without a version whose base no release of the channel has.
    #[error("patch {} starts from the image {source_hash}, which no release in the channel has as its image; give its version as VERSION=PATCH", patch.display())]
    PatchBaseUnknown {
        /// The patch file.
        patch: PathBuf,
        /// BLAKE3 of its base image.
        source_hash: Digest,
    },
}

/// Why `publish` refused a repository: a file a device would refuse.
#[derive(Debug, thiserror::Error)]
#[error("refusing to publish: {file} would be refused by a device")]
pub struct UnpublishableError {
    /// The file.
    pub file: String,
    /// Why.
    #[source]
    pub source: Box<Error>,
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

pub(crate) fn invalid(file: &str, reason: impl Into<InvalidError>) -> Error {
    Error::Invalid {
        file: file.to_owned(),
        reason: reason.into(),
    }
}

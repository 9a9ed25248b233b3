//! The mirror's errors: one enum for what stops a command, sub-enums for the
//! upstream link and for verification, each variant saying what and where.

use std::{io, path::PathBuf};

use deltaward_engine::Digest;

/// Result with the mirror's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What stops the mirror, a sync or a fetch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be used.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The listening socket.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A setting is wrong.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The upstream could not give what was asked.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Something the upstream gave failed verification.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Publishing to a bucket failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The signed metadata was refused.
    #[error(transparent)]
    Release(#[from] deltaward_release::Error),
    /// A file operation of the engine (atomic writes, locks, maps).
    #[error(transparent)]
    Engine(#[from] deltaward_engine::Error),
    /// No mirror could be reached (or none had the object whole).
    #[error("no mirror reachable: {}", tried.join("; "))]
    NoMirror {
        /// Each mirror and what went wrong.
        tried: Vec<String>,
    },
    /// The site approves a release the maker did not approve without accepting the
    /// maker's mitigations.
    #[error("{product} {version} is not approved by the maker; approve it with --accept-mitigations only if the site applies its mitigations: {}", mitigations.join("; "))]
    MakerNotApproved {
        /// Product.
        product: String,
        /// Version.
        version: String,
        /// The maker's mitigations.
        mitigations: Vec<String>,
    },
    /// The mirror serves the release only after the site approves it.
    #[error("waiting for site approval: {mirror} answered 403 for {what}")]
    WaitingForApproval {
        /// The mirror.
        mirror: String,
        /// What it refused.
        what: String,
    },
    /// A delivery report that is not one.
    #[error("not a delivery report: {0}")]
    Report(String),
    /// Another process writes the delivery log.
    #[error("the delivery log {} is written by another deltaward process (its lock is held)", dir.display())]
    LogBusy {
        /// The log directory.
        dir: PathBuf,
    },
    /// Another process holds the cache directory.
    #[error("the cache {} is in use by another deltaward process (its lock {} is held)", dir.display(), lock.display())]
    CacheBusy {
        /// The cache directory.
        dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
}

/// A wrong setting, from a flag or the `--config` file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML file could not be parsed.
    #[error("{}: {source}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A mode needs a setting that is missing.
    #[error("{mode} needs {setting}")]
    Missing {
        /// The mode (origin, mirror, sync).
        mode: &'static str,
        /// The missing setting.
        setting: &'static str,
    },
    /// Two settings that exclude each other.
    #[error("{0} and {1} exclude each other")]
    Conflict(&'static str, &'static str),
    /// A setting has a value it cannot take.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// A certificate or key file.
    #[error("{}: {reason}", file.display())]
    Pem {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificates or keys.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The upstream link failed or answered wrongly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No connection, or the connection broke before a response.
    #[error("upstream {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The response body broke off.
    #[error("upstream {url}: the body broke off after {received} bytes: {source}")]
    Body {
        /// The URL.
        url: String,
        /// Bytes received before it broke.
        received: u64,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// No progress within the timeout.
    #[error("upstream {url}: no response within {seconds} s")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        seconds: u64,
    },
    /// A status other than the expected ones.
    #[error("upstream {url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The upstream has no such file (404).
    #[error("upstream {url}: not found")]
    NotFound {
        /// The URL.
        url: String,
    },
    /// More bytes than allowed.
    #[error("upstream {url}: more than {max} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap.
        max: u64,
    },
    /// A resumed download answered with the wrong range.
    #[error("upstream {url}: asked for bytes from {asked}, got Content-Range {got:?}")]
    BadRange {
        /// The URL.
        url: String,
        /// The first byte asked for.
        asked: u64,
        /// The Content-Range answered.
        got: Option<String>,
    },
    /// The URL could not be formed.
    #[error("upstream URL {url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Every try failed; the last error.
    #[error("upstream: {tries} tries failed; the last: {last}")]
    Exhausted {
        /// Tries made.
        tries: u32,
        /// The last error.
        #[source]
        last: Box<UpstreamError>,
    },
}

impl UpstreamError {
    /// Whether another try may succeed (a broken link, a timeout, a 5xx), as opposed
    /// to an answer that will not change (404, 4xx, too large).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Body { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::NotFound { .. }
            | Self::TooLarge { .. }
            | Self::BadRange { .. }
            | Self::Url { .. }
            | Self::Exhausted { .. } => false,
        }
    }

    /// Whether the upstream could not be reached at all (as opposed to answering).
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } => true,
            Self::Exhausted { last, .. } => last.is_unreachable(),
            _ => false,
        }
    }
}

/// An upload to a bucket failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// No credentials to sign with.
    #[error("publishing needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones)")]
    NoCredentials,
    /// The store refused a request.
    #[error("{url}: HTTP {status}{}{message}{}", if message.is_empty() { "" } else { ": " }, store_hint(*status))]
    Store {
        /// The object (or part).
        url: String,
        /// The status.
        status: u16,
        /// The store's error code and message.
        message: String,
    },
    /// The store answered with another checksum than the bytes sent.
    #[error("{url}: the store answered ETag {found:?} for bytes whose MD5 is {expected}")]
    Checksum {
        /// The object (or part).
        url: String,
        /// MD5 of the bytes sent.
        expected: String,
        /// The ETag answered.
        found: Option<String>,
    },
    /// A completed upload has another length than the file.
    #[error("{url}: the store holds {found:?} bytes after the upload, the file has {expected}")]
    Length {
        /// The object.
        url: String,
        /// The file's length.
        expected: u64,
        /// The stored length.
        found: Option<u64>,
    },
    /// A file changed on disk after the repository was verified.
    #[error("{path} changed after the repository was verified; publish again")]
    Changed {
        /// The repository path.
        path: String,
    },
    /// The bucket holds a newer channel or root than the repository.
    #[error("{url}: the bucket holds version {stored}, the repository version {local}; publish from the newest repository (devices would refuse an older one)")]
    Rollback {
        /// The document.
        url: String,
        /// The stored version.
        stored: u64,
        /// The local version.
        local: u64,
    },
    /// An answer that is not what S3 answers.
    #[error("{url}: {reason}")]
    Answer {
        /// The object.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The request could not be made or answered.
    #[error(transparent)]
    Link(#[from] UpstreamError),
}

/// What a store's refusal usually means.
fn store_hint(status: u16) -> &'static str {
    match status {
        403 => " (check the credentials, the key's permissions (s3:GetObject, s3:PutObject, s3:ListBucket), the region and the clock)",
        301 | 307 => " (the bucket is in another region: give --region)",
        _ => "",
    }
}

impl PublishError {
    /// Whether another try may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::Link(e) => e.is_transient(),
            Self::NoCredentials
            | Self::Checksum { .. }
            | Self::Length { .. }
            | Self::Changed { .. }
            | Self::Rollback { .. }
            | Self::Answer { .. } => false,
        }
    }
}

/// What the upstream gave is not what the signed metadata says.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// An object's BLAKE3 is not its name.
    #[error("object {name}: its BLAKE3 is {found}")]
    ObjectHash {
        /// The name (the expected hash).
        name: Digest,
        /// What the bytes hash to.
        found: Digest,
    },
    /// An object is longer or shorter than its signed length.
    #[error("object {name}: {found} bytes where the release signs {expected}")]
    ObjectLength {
        /// The object.
        name: Digest,
        /// The signed length.
        expected: u64,
        /// Bytes received (counting up to one past the signed length).
        found: u64,
    },
    /// The upstream offered an older channel than the one cached.
    #[error(
        "products/{product}/channel.json: version {offered} is older than the cached {cached}"
    )]
    ChannelRollback {
        /// The product.
        product: String,
        /// The version offered.
        offered: u64,
        /// The version cached.
        cached: u64,
    },
    /// An older root does not chain to the trusted one.
    #[error("roots/{version}.root.json does not chain to the trusted root")]
    RootChain {
        /// The version.
        version: u64,
    },
}

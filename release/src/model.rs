//! The JSON documents of a release repository: `root.json`, `channel.json` and
//! `release.json` (specified in `docs/RELEASE.md`, schema in `docs/release.schema.json`),
//! and the release notes (`NOTES.toml`) a maker writes.

use std::collections::BTreeMap;

use deltaward_engine::Digest;
use serde::{Deserialize, Serialize};

use crate::{
    error::{invalid, Error, InvalidError, LimitError, Result},
    limits::{CHANNEL_JSON_MAX_BYTES, RELEASE_JSON_MAX_BYTES, ROOT_JSON_MAX_BYTES},
};

/// Digests in the documents: exactly 64 lower-case hex digits.
mod hex {
    use deltaward_engine::Digest;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let text = <&str>::deserialize(d)?;
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(D::Error::custom("a digest is 64 lower-case hex digits"));
        }
        Digest::from_hex(text)
            .ok_or_else(|| D::Error::custom("a digest is 64 lower-case hex digits"))
    }
}

/// Version of these documents' layout.
pub const SPEC_VERSION: u32 = 1;

/// A reference to a content-addressed object of the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Object {
    /// Path relative to the repository root: `objects/<blake3>`.
    pub path: String,
    /// BLAKE3 of the object's bytes (64 lower-case hex digits in JSON).
    #[serde(with = "hex")]
    pub blake3: Digest,
    /// Length in bytes.
    pub length: u64,
}

/// The image a release installs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Length in bytes.
    pub length: u64,
    /// BLAKE3 (hex in JSON).
    #[serde(with = "hex")]
    pub blake3: Digest,
    /// SHA-256 (hex in JSON), for tools that know only SHA-256.
    #[serde(with = "hex")]
    pub sha256: Digest,
}

/// A version the release can be reached from by a patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// The base's version.
    pub version: String,
    /// The base image's length.
    pub length: u64,
    /// The base image's BLAKE3 (hex in JSON).
    #[serde(with = "hex")]
    pub blake3: Digest,
    /// The patch object.
    pub patch: Object,
    /// Largest reference window of the patch (bytes).
    pub window: u64,
    /// Working memory the apply needs (bytes).
    pub apply_memory: u64,
}

/// The compressed full image, for devices on a version without a patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullImage {
    /// The object.
    pub object: Object,
    /// Compression: `zstd`.
    pub compression: String,
    /// zstd window log the decoder needs.
    pub window_log: u32,
}

/// The compatibility statement (IEC 81001-5-1, 6.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Compatibility {
    /// Free text for the operator.
    pub statement: String,
    /// Versions the release applies from.
    #[serde(default)]
    pub applies_from: Vec<String>,
    /// Hardware it is compatible with (names or ids).
    #[serde(default)]
    pub hardware: Vec<String>,
    /// What it requires (bootloader versions, other components).
    #[serde(default)]
    pub requires: Vec<String>,
    /// What it is known to be incompatible with.
    #[serde(default)]
    pub incompatible_with: Vec<String>,
}

/// Severity of a fixed vulnerability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

/// A security fix carried by the release (6.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityFix {
    /// CVE id (or the maker's advisory id).
    pub id: String,
    /// Severity.
    pub severity: Severity,
    /// CVSS vector, when scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvss_vector: Option<String>,
    /// One-line summary.
    pub summary: String,
}

/// Support class of the software.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SupportClass {
    /// Actively maintained: features and fixes.
    Maintained,
    /// Supported: security and safety fixes only.
    Supported,
    /// Required: the maker requires devices to install it.
    Required,
}

/// Support class and end of support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Support {
    /// Class.
    pub class: SupportClass,
    /// End of support (YYYY-MM-DD).
    pub end_of_support: String,
}

/// Manufacturer approval, with mitigations when not approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Whether the manufacturer approved the release.
    pub approved: bool,
    /// Mitigations for users (mandatory when not approved).
    #[serde(default)]
    pub mitigations: Vec<String>,
}

/// Where the installation instructions are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Installation {
    /// A document reference or URL.
    pub instructions: String,
}

/// `release.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Always `deltaward-release`.
    #[serde(rename = "_type")]
    pub kind: String,
    /// [`SPEC_VERSION`].
    pub spec_version: u32,
    /// Product name.
    pub product: String,
    /// Hardware ids the release may be installed on.
    pub hardware_ids: Vec<String>,
    /// Version.
    pub version: String,
    /// Release counter: only ever goes up. Devices refuse lower ones.
    pub counter: u64,
    /// Issue time (RFC 3339).
    pub issued: String,
    /// Expiry time (RFC 3339).
    pub expires: String,
    /// The image it installs.
    pub target: Target,
    /// Versions it can be patched from.
    pub bases: Vec<Base>,
    /// The full image fallback.
    pub full_image: FullImage,
    /// Compatibility statement.
    pub compatibility: Compatibility,
    /// Security fixes.
    pub security_fixes: Vec<SecurityFix>,
    /// Support class.
    pub support: Support,
    /// Manufacturer approval.
    pub approval: Approval,
    /// Installation instructions.
    pub installation: Installation,
}

/// One release listed by a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelEntry {
    /// Version.
    pub version: String,
    /// Release counter.
    pub counter: u64,
    /// Path of its `release.json`, relative to the repository root.
    pub path: String,
    /// BLAKE3 of the `release.json` bytes (hex in JSON).
    #[serde(with = "hex")]
    pub blake3: Digest,
    /// Length of `release.json`.
    pub length: u64,
}

/// `channel.json`: the releases of one product, re-signed often with a short expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// Always `deltaward-channel`.
    #[serde(rename = "_type")]
    pub kind: String,
    /// [`SPEC_VERSION`].
    pub spec_version: u32,
    /// Product name.
    pub product: String,
    /// Version of this channel document (goes up on every signing).
    pub version: u64,
    /// Issue time (RFC 3339).
    pub issued: String,
    /// Expiry time (RFC 3339).
    pub expires: String,
    /// Releases, lowest counter first.
    pub releases: Vec<ChannelEntry>,
}

/// Keys and threshold of one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Key ids: the 8-byte minisign key number as 16 upper-case hex digits (minisign
    /// prints the same number without leading zeros).
    pub keyids: Vec<String>,
    /// Signatures from distinct keys needed.
    pub threshold: u32,
}

/// The three roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    /// Signs `root.json`.
    pub root: Role,
    /// Signs `release.json`.
    pub release: Role,
    /// Signs `channel.json`.
    pub channel: Role,
}

/// `root.json`: the keys trusted for each role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// Always `deltaward-root`.
    #[serde(rename = "_type")]
    pub kind: String,
    /// [`SPEC_VERSION`].
    pub spec_version: u32,
    /// Root version: 1, then one more per rotation.
    pub version: u64,
    /// Expiry time (RFC 3339).
    pub expires: String,
    /// Public keys by key id (the base64 line of a minisign public key).
    pub keys: BTreeMap<String, String>,
    /// Roles.
    pub roles: Roles,
}

/// The release notes a maker writes (`NOTES.toml`), merged into `release.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notes {
    /// Hardware ids the release may be installed on.
    pub hardware_ids: Vec<String>,
    /// How long the release stays valid, e.g. `365d` (default 365 days).
    #[serde(default)]
    pub expires_in: Option<String>,
    /// Compatibility statement.
    pub compatibility: Compatibility,
    /// Security fixes.
    #[serde(default)]
    pub security_fixes: Vec<SecurityFix>,
    /// Support class.
    pub support: Support,
    /// Manufacturer approval.
    pub approval: Approval,
    /// Installation instructions.
    pub installation: Installation,
}

/// Parses a signed document: refuses it above `max` bytes before parsing, refuses
/// unknown fields, and checks `_type` and `spec_version`.
fn from_json<T: serde::de::DeserializeOwned>(
    file: &str,
    bytes: &[u8],
    max: u64,
    expected: &'static str,
    kind: impl Fn(&T) -> (&str, u32),
) -> Result<T> {
    if bytes.len() as u64 > max {
        return Err(Error::Limit {
            file: file.to_owned(),
            limit: LimitError::TooLarge { max },
        });
    }
    let v: T = serde_json::from_slice(bytes).map_err(|e| invalid(file, e))?;
    let (found, spec_version) = kind(&v);
    if found != expected || spec_version != SPEC_VERSION {
        return Err(invalid(
            file,
            InvalidError::WrongKind {
                kind: found.to_owned(),
                spec_version,
                expected,
            },
        ));
    }
    Ok(v)
}

impl Root {
    /// Parses `root.json` (at most [`ROOT_JSON_MAX_BYTES`]), checking its type.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        from_json(
            "root.json",
            bytes,
            ROOT_JSON_MAX_BYTES,
            "deltaward-root",
            |r: &Self| (&r.kind, r.spec_version),
        )
    }
}

impl Channel {
    /// Parses `channel.json` (at most [`CHANNEL_JSON_MAX_BYTES`]), checking its type.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        from_json(
            "channel.json",
            bytes,
            CHANNEL_JSON_MAX_BYTES,
            "deltaward-channel",
            |c: &Self| (&c.kind, c.spec_version),
        )
    }
}

impl Release {
    /// Parses `release.json` (at most [`RELEASE_JSON_MAX_BYTES`]), checking its type.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        from_json(
            "release.json",
            bytes,
            RELEASE_JSON_MAX_BYTES,
            "deltaward-release",
            |r: &Self| (&r.kind, r.spec_version),
        )
    }
}

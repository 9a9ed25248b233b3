//! Writing a release repository: content-addressed objects, `release.json`, the
//! product's `channel.json`, and `root.json`. The layout is plain files that any
//! static HTTP server can serve:
//!
//! ```text
//! root.json, root.json.minisig            the current trusted root
//! roots/N.root.json(.minisig)             every root version, for rotation
//! objects/<blake3>                        patches and compressed full images
//! products/P/channel.json(.minisig)       the product's releases, short expiry
//! products/P/releases/V/release.json(.minisig)
//! ```

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use deltaward_engine::{write_file, BuildOptions, Digest, Image, Patch, SecretKey};
use rayon::prelude::*;
use sha2::Digest as _;

use crate::{
    error::{io_err, Error, Result},
    model::*,
    trust::{sign_document, RoleName},
};

/// zstd window log of the full-image fallback: 8 MiB of decoder memory.
pub const FULL_IMAGE_WINDOW_LOG: u32 = 23;
/// zstd level of the full-image fallback.
const FULL_IMAGE_LEVEL: i32 = 9;
/// Default validity of a channel document.
pub const CHANNEL_VALIDITY: Duration = Duration::from_secs(7 * 86_400);
/// Default validity of a release.
pub const RELEASE_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// Formats a time as RFC 3339 (UTC, seconds).
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses an RFC 3339 time.
pub fn parse_time(file: &str, s: &str) -> Result<SystemTime> {
    humantime::parse_rfc3339(s).map_err(|e| Error::Invalid {
        file: file.to_owned(),
        reason: format!("time {s:?}: {e}"),
    })
}

/// Parses a duration such as `7d` or `12h`.
pub fn parse_duration(what: &str, s: &str) -> Result<Duration> {
    let d =
        humantime::parse_duration(s).map_err(|e| Error::Refused(format!("{what} {s:?}: {e}")))?;
    if d > MAX_VALIDITY {
        return Err(Error::Refused(format!(
            "{what} {s:?} is longer than 100 years"
        )));
    }
    Ok(d)
}

/// Longest validity accepted: keeps expiry times representable.
pub const MAX_VALIDITY: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `now + validity`, refused when it cannot be written as an RFC 3339 time.
pub fn expiry(now: SystemTime, validity: Duration) -> Result<String> {
    let t = now
        .checked_add(validity.min(MAX_VALIDITY))
        .ok_or_else(|| Error::Refused("expiry time overflows".into()))?;
    let year_9999 = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    if t > year_9999 {
        return Err(Error::Refused("expiry time is past the year 9999".into()));
    }
    Ok(timestamp(t))
}

/// A base image to patch from.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Its version.
    pub version: String,
    /// Its file.
    pub path: PathBuf,
}

/// What `deltaward release` is asked to do.
#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Release counter.
    pub counter: u64,
    /// The new image.
    pub image: PathBuf,
    /// Bases to build patches from.
    pub bases: Vec<BaseImage>,
    /// Release notes.
    pub notes: Notes,
    /// Patch build options.
    pub build: BuildOptions,
    /// Memory available for building patches at once.
    pub memory_limit: u64,
    /// Validity of the channel document.
    pub channel_validity: Duration,
    /// The time to record as issue time.
    pub now: SystemTime,
}

/// Paths of a repository.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
}

impl Repo {
    /// A repository rooted at `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            root: dir.to_path_buf(),
        }
    }
    /// The repository root.
    pub fn dir(&self) -> &Path {
        &self.root
    }
    /// A repository-relative path made absolute.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    /// `products/P/channel.json`.
    pub fn channel_rel(product: &str) -> String {
        format!("products/{product}/channel.json")
    }
    /// `products/P/releases/V/release.json`.
    pub fn release_rel(product: &str, version: &str) -> String {
        format!("products/{product}/releases/{version}/release.json")
    }
    /// `roots/N.root.json`.
    pub fn root_rel(version: u64) -> String {
        format!("roots/{version}.root.json")
    }

    fn mkdirs(&self, rel: &str) -> Result<()> {
        let p = self.path(rel);
        let dir = p.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))
    }

    /// Stores bytes as a content-addressed object, returning its reference.
    pub fn put_object(&self, bytes: &[u8]) -> Result<Object> {
        let h = Digest::of(bytes).to_string();
        let rel = format!("objects/{h}");
        let path = self.path(&rel);
        if !path.exists() {
            self.mkdirs(&rel)?;
            write_file(&path, bytes)?;
        }
        Ok(Object {
            path: rel,
            blake3: h,
            length: bytes.len() as u64,
        })
    }

    /// Writes a signed document and its signatures.
    pub fn put_signed(&self, rel: &str, bytes: &[u8], sigs: &str) -> Result<()> {
        self.mkdirs(rel)?;
        let path = self.path(rel);
        // Signatures first: a reader that sees the new document also sees its signatures.
        write_file(
            &PathBuf::from(format!("{}.minisig", path.display())),
            sigs.as_bytes(),
        )?;
        write_file(&path, bytes)?;
        Ok(())
    }

    /// Reads a document and its signatures.
    pub fn get_signed(&self, rel: &str) -> Result<(Vec<u8>, String)> {
        let path = self.path(rel);
        let bytes = std::fs::read(&path).map_err(io_err("reading", &path))?;
        let sig_path = PathBuf::from(format!("{}.minisig", path.display()));
        let sigs = std::fs::read_to_string(&sig_path).map_err(io_err("reading", &sig_path))?;
        Ok((bytes, sigs))
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
    b.push(b'\n');
    b
}

/// Checks the notes against the rules `release` enforces.
pub fn check_notes(notes: &Notes) -> Result<()> {
    if notes.hardware_ids.is_empty() {
        return Err(Error::Refused("notes list no hardware_ids".into()));
    }
    if !notes.approval.approved
        && notes
            .approval
            .mitigations
            .iter()
            .all(|m| m.trim().is_empty())
    {
        return Err(Error::Refused(
            "the release is not approved by the manufacturer and the notes give no mitigations \
             (IEC 81001-5-1 6.3.1): add [approval] mitigations"
                .into(),
        ));
    }
    if notes.compatibility.statement.trim().is_empty() {
        return Err(Error::Refused(
            "notes give no compatibility statement".into(),
        ));
    }
    Ok(())
}

/// Builds a release: one patch per base (in parallel while memory allows), the
/// compressed full image, `release.json` signed by every key of `release_keys`
/// (the patches by the first), and the product's `channel.json` updated and signed
/// by every key of `channel_keys`, so that thresholds above one can be met.
pub fn build_release(
    repo: &Repo,
    req: &ReleaseRequest,
    release_keys: &[&SecretKey],
    channel_keys: &[&SecretKey],
) -> Result<Release> {
    check_notes(&req.notes)?;
    let Some(release_key) = release_keys.first().copied() else {
        return Err(Error::Refused("no release key given".into()));
    };
    if channel_keys.is_empty() {
        return Err(Error::Refused("no channel key given".into()));
    }
    if req.bases.is_empty() {
        return Err(Error::Refused("no --base images given".into()));
    }
    // The counter must go up: check the channel before doing the work.
    let channel = load_channel(repo, &req.product)?;
    if let Some(last) = channel
        .as_ref()
        .and_then(|c| c.releases.iter().map(|r| r.counter).max())
    {
        if req.counter <= last {
            return Err(Error::Refused(format!(
                "counter {} is not above the channel's highest counter {last}",
                req.counter
            )));
        }
    }
    let new = Image::open(&req.image)?;
    let target = Target {
        length: new.len() as u64,
        blake3: Digest::from(blake3::Hasher::new().update_rayon(&new).finalize()).to_string(),
        sha256: Digest(sha2::Sha256::digest(&*new).into()).to_string(),
    };

    // Patches: as many at once as the memory limit allows (each build is parallel too).
    let per_build = (new.len() as u64 / 2).max(256 << 20);
    let at_once = ((req.memory_limit / per_build).max(1) as usize).min(req.bases.len());
    let mut bases = Vec::with_capacity(req.bases.len());
    for group in req.bases.chunks(at_once) {
        let built: Vec<Result<Base>> = group
            .par_iter()
            .map(|b| {
                let old = Image::open(&b.path)?;
                let patch = Patch::build(&old, &new, &req.build)?.sign(release_key)?;
                let mut bytes = Vec::with_capacity(patch.len() as usize);
                patch.write_to(&mut bytes)?;
                let m = patch.manifest();
                Ok(Base {
                    version: b.version.clone(),
                    length: m.source_size,
                    blake3: m.source_hash.to_string(),
                    patch: repo.put_object(&bytes)?,
                    window: m.max_window,
                    apply_memory: m.apply_memory(),
                })
            })
            .collect();
        for b in built {
            bases.push(b?);
        }
    }

    let mut enc = zstd::stream::Encoder::new(Vec::new(), FULL_IMAGE_LEVEL)
        .map_err(io_err("compressing", &req.image))?;
    enc.window_log(FULL_IMAGE_WINDOW_LOG)
        .map_err(io_err("compressing", &req.image))?;
    enc.include_contentsize(true)
        .map_err(io_err("compressing", &req.image))?;
    enc.set_pledged_src_size(Some(new.len() as u64))
        .map_err(io_err("compressing", &req.image))?;
    enc.write_all(&new)
        .map_err(io_err("compressing", &req.image))?;
    let full = enc.finish().map_err(io_err("compressing", &req.image))?;
    let full_image = FullImage {
        object: repo.put_object(&full)?,
        compression: "zstd".into(),
        window_log: FULL_IMAGE_WINDOW_LOG,
    };

    let validity = match &req.notes.expires_in {
        Some(s) => parse_duration("expires_in", s)?,
        None => RELEASE_VALIDITY,
    };
    let n = &req.notes;
    let release = Release {
        kind: "deltaward-release".into(),
        spec_version: SPEC_VERSION,
        product: req.product.clone(),
        hardware_ids: n.hardware_ids.clone(),
        version: req.version.clone(),
        counter: req.counter,
        issued: timestamp(req.now),
        expires: expiry(req.now, validity)?,
        target,
        bases,
        full_image,
        compatibility: n.compatibility.clone(),
        security_fixes: n.security_fixes.clone(),
        support: n.support.clone(),
        approval: n.approval.clone(),
        installation: n.installation.clone(),
    };
    let bytes = json(&release);
    let sigs = sign_document(
        &bytes,
        release_keys,
        RoleName::Release,
        "release.json",
        release.counter,
    )?;
    let rel = Repo::release_rel(&req.product, &req.version);
    repo.put_signed(&rel, &bytes, &sigs)?;

    let mut channel = channel.unwrap_or(Channel {
        kind: "deltaward-channel".into(),
        spec_version: SPEC_VERSION,
        product: req.product.clone(),
        version: 0,
        issued: String::new(),
        expires: String::new(),
        releases: Vec::new(),
    });
    channel.releases.retain(|r| r.version != req.version);
    channel.releases.push(ChannelEntry {
        version: req.version.clone(),
        counter: req.counter,
        path: rel,
        blake3: Digest::of(&bytes).to_string(),
        length: bytes.len() as u64,
    });
    channel.releases.sort_by_key(|r| r.counter);
    sign_channel(repo, channel, channel_keys, req.now, req.channel_validity)?;
    Ok(release)
}

/// Reads the product's channel document, if there is one (unverified: the maker's
/// own repository).
pub fn load_channel(repo: &Repo, product: &str) -> Result<Option<Channel>> {
    let path = repo.path(&Repo::channel_rel(product));
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(io_err("reading", &path))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Invalid {
            file: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// Bumps the channel's version, sets a fresh expiry and signs it.
pub fn sign_channel(
    repo: &Repo,
    mut channel: Channel,
    keys: &[&SecretKey],
    now: SystemTime,
    validity: Duration,
) -> Result<Channel> {
    channel.version += 1;
    channel.issued = timestamp(now);
    channel.expires = expiry(now, validity)?;
    let bytes = json(&channel);
    let sigs = sign_document(
        &bytes,
        keys,
        RoleName::Channel,
        "channel.json",
        channel.version,
    )?;
    repo.put_signed(&Repo::channel_rel(&channel.product), &bytes, &sigs)?;
    Ok(channel)
}

/// `deltaward channel refresh`: re-signs the product's channel with a new expiry,
/// rebuilding nothing.
pub fn refresh_channel(
    repo: &Repo,
    product: &str,
    keys: &[&SecretKey],
    now: SystemTime,
    validity: Duration,
) -> Result<Channel> {
    let channel = load_channel(repo, product)?.ok_or_else(|| {
        Error::Refused(format!(
            "product {product} has no channel in {}",
            repo.dir().display()
        ))
    })?;
    sign_channel(repo, channel, keys, now, validity)
}

/// Writes `root.json` version `root.version`, signed by `keys`, as the current root
/// and into `roots/`.
pub fn write_root(repo: &Repo, root: &Root, keys: &[&SecretKey]) -> Result<()> {
    let bytes = json(root);
    let sigs = sign_document(&bytes, keys, RoleName::Root, "root.json", root.version)?;
    repo.put_signed(&Repo::root_rel(root.version), &bytes, &sigs)?;
    repo.put_signed("root.json", &bytes, &sigs)
}

/// Parses `NOTES.toml`.
pub fn parse_notes(text: &str) -> Result<Notes> {
    toml::from_str(text).map_err(|e| Error::Invalid {
        file: "notes".into(),
        reason: e.to_string(),
    })
}

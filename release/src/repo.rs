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
    fs::File,
    io::{Read, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use deltaward_engine::{
    verify_patch, write_file, ApplyOptions, BuildOptions, Digest, Image, Patch, SecretKey,
    TrustedKeys,
};
use rayon::prelude::*;
use sha2::Digest as _;

pub use crate::limits::MAX_VALIDITY;
use crate::{
    error::{invalid, io_err, Error, InvalidError, LimitError, PathError, RefusedError, Result},
    limits::{
        CHANNEL_JSON_MAX_BYTES, MAX_NAME_BYTES, MAX_PATH_BYTES, ROOT_JSON_MAX_BYTES,
        SIGNATURE_FILE_MAX_BYTES,
    },
    model::*,
    trust::{
        sign_document, trusted_keys, validate_root, verify_document, verify_rotation, RoleName,
    },
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
    humantime::parse_rfc3339(s).map_err(|source| {
        invalid(
            file,
            InvalidError::Time {
                value: s.to_owned(),
                error: source,
            },
        )
    })
}

/// Parses a duration such as `7d` or `12h`; one above [`MAX_VALIDITY`] is refused.
pub fn parse_duration(what: &'static str, s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s).map_err(|source| {
        Error::Refused(RefusedError::Duration {
            what,
            value: s.to_owned(),
            error: source,
        })
    })?;
    check_validity(d)?;
    Ok(d)
}

fn check_validity(validity: Duration) -> Result<()> {
    if validity > MAX_VALIDITY {
        return Err(Error::Refused(RefusedError::ValidityTooLong { validity }));
    }
    Ok(())
}

/// `now + validity`, refused when the validity is above [`MAX_VALIDITY`] (never
/// shortened) or the time cannot be written as an RFC 3339 time.
pub fn expiry(now: SystemTime, validity: Duration) -> Result<String> {
    check_validity(validity)?;
    let year_9999 = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    match now.checked_add(validity) {
        Some(t) if t <= year_9999 => Ok(timestamp(t)),
        _ => Err(Error::Refused(RefusedError::ExpiryTooLate)),
    }
}

/// Checks that a product name or release version is a safe path component: 1 to
/// [`MAX_NAME_BYTES`] bytes of ASCII letters, digits, `.`, `_`, `+` and `-`, not
/// starting with `.` (so neither `.` nor `..`).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Path {
            path: name.to_owned(),
            reason: PathError::UnsafeName,
        })
    }
}

/// Checks that a path named by signed metadata is relative and normalised: 1 to
/// [`MAX_PATH_BYTES`] bytes, `/`-separated, no empty, `.` or `..` component, no
/// backslash or control character.
pub fn check_rel(rel: &str) -> Result<()> {
    let err = |reason| Error::Path {
        path: rel.to_owned(),
        reason,
    };
    if rel.is_empty() || rel.len() > MAX_PATH_BYTES || rel.starts_with('/') {
        return Err(err(PathError::NotRelative));
    }
    if rel.chars().any(|c| c == '\\' || c.is_control())
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(err(PathError::NotNormal));
    }
    Ok(())
}

/// Checks that an object is named `objects/<its BLAKE3>`, 64 lower-case hex digits.
pub fn check_object_path(object: &Object) -> Result<()> {
    if object.path.strip_prefix("objects/") == Some(object.blake3.to_string().as_str()) {
        Ok(())
    } else {
        Err(Error::Path {
            path: object.path.clone(),
            reason: PathError::ObjectName,
        })
    }
}

/// Opens a file for reading only if it is a regular file: a final link is not
/// followed and a FIFO does not block the open; a device, FIFO or directory is refused.
pub(crate) fn open_regular(path: &Path, shown: &str) -> Result<File> {
    let not_regular = || Error::Path {
        path: shown.to_owned(),
        reason: PathError::NotRegularFile,
    };
    match deltaward_engine::open_regular(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(not_regular()),
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(not_regular()),
        Err(e) => Err(io_err("opening", path)(e)),
    }
}

/// Reads at most `max + 1` bytes: enough to tell a file longer than `max`.
pub(crate) fn read_up_to(f: File, path: &Path, max: u64) -> Result<Vec<u8>> {
    let mut b = Vec::new();
    f.take(max.saturating_add(1))
        .read_to_end(&mut b)
        .map_err(io_err("reading", path))?;
    Ok(b)
}

/// Reads a regular file of at most `max` bytes, refusing a longer one after reading
/// one byte past the cap.
pub(crate) fn read_capped(path: &Path, shown: &str, max: u64) -> Result<Vec<u8>> {
    let b = read_up_to(open_regular(path, shown)?, path, max)?;
    if b.len() as u64 > max {
        return Err(Error::Limit {
            file: shown.to_owned(),
            limit: LimitError::TooLarge { max },
        });
    }
    Ok(b)
}

/// A base image to patch from.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Its version.
    pub version: String,
    /// Its file.
    pub path: PathBuf,
}

/// A patch built elsewhere (by `deltaward diff`, on another machine) to list as a
/// base of the release.
#[derive(Debug, Clone)]
pub struct PatchFile {
    /// The version of its base image; `None`: the release in the channel whose
    /// image is the patch's base.
    pub version: Option<String>,
    /// The patch file.
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
    /// Patches built elsewhere, listed as they are.
    pub patches: Vec<PatchFile>,
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
        let h = Digest::of(bytes);
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

    /// Opens a repository file named by (possibly signed) metadata: the path must be
    /// relative and normalised ([`check_rel`]), its directory must not resolve outside
    /// the repository, and only a regular file is opened.
    pub fn open(&self, rel: &str) -> Result<File> {
        check_rel(rel)?;
        let path = self.path(rel);
        // Fail closed: a directory that cannot be resolved is not known to be inside.
        let root = self
            .root
            .canonicalize()
            .map_err(io_err("resolving", &self.root))?;
        let dir = path.parent().unwrap_or(&self.root);
        let dir = dir.canonicalize().map_err(io_err("resolving", dir))?;
        if !dir.starts_with(&root) {
            return Err(Error::Path {
                path: rel.to_owned(),
                reason: PathError::OutsideRepository,
            });
        }
        open_regular(&path, rel)
    }

    /// Whether the repository has an entry (of any kind) at `rel`.
    pub fn has(&self, rel: &str) -> bool {
        check_rel(rel).is_ok() && std::fs::symlink_metadata(self.path(rel)).is_ok()
    }

    /// Reads a repository file of at most `max` bytes (reading stops one byte past it).
    pub fn read(&self, rel: &str, max: u64) -> Result<Vec<u8>> {
        let path = self.path(rel);
        let b = read_up_to(self.open(rel)?, &path, max)?;
        if b.len() as u64 > max {
            return Err(Error::Limit {
                file: rel.to_owned(),
                limit: LimitError::TooLarge { max },
            });
        }
        Ok(b)
    }

    /// Reads a document of at most `max` bytes and its signatures (at most
    /// [`SIGNATURE_FILE_MAX_BYTES`]).
    pub fn get_signed(&self, rel: &str, max: u64) -> Result<(Vec<u8>, String)> {
        let bytes = self.read(rel, max)?;
        let sigs = self.get_signatures(rel)?;
        Ok((bytes, sigs))
    }

    /// Reads the signatures of a document (at most [`SIGNATURE_FILE_MAX_BYTES`]).
    pub fn get_signatures(&self, rel: &str) -> Result<String> {
        let sig_rel = format!("{rel}.minisig");
        let b = self.read(&sig_rel, SIGNATURE_FILE_MAX_BYTES)?;
        String::from_utf8(b).map_err(|e| {
            io_err("reading", &self.path(&sig_rel))(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.utf8_error(),
            ))
        })
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
        return Err(Error::Refused(RefusedError::NoHardwareIds));
    }
    if !notes.approval.approved
        && notes
            .approval
            .mitigations
            .iter()
            .all(|m| m.trim().is_empty())
    {
        return Err(Error::Refused(RefusedError::NoMitigations));
    }
    if notes.compatibility.statement.trim().is_empty() {
        return Err(Error::Refused(RefusedError::NoCompatibilityStatement));
    }
    Ok(())
}

/// Builds a release: one patch per base (in parallel while memory allows), the
/// patches built elsewhere (each checked first: its signature under the release
/// keys, its payloads, its target), the compressed full image, `release.json`
/// signed by every key of `release_keys` (the patches by the first), and the
/// product's `channel.json` updated and signed by every key of `channel_keys`, so
/// that thresholds above one can be met.
pub fn build_release(
    repo: &Repo,
    req: &ReleaseRequest,
    release_keys: &[&SecretKey],
    channel_keys: &[&SecretKey],
) -> Result<Release> {
    check_notes(&req.notes)?;
    check_name(&req.product)?;
    check_name(&req.version)?;
    let Some(release_key) = release_keys.first().copied() else {
        return Err(Error::Refused(RefusedError::NoReleaseKey));
    };
    if channel_keys.is_empty() {
        return Err(Error::Refused(RefusedError::NoChannelKey));
    }
    if req.bases.is_empty() && req.patches.is_empty() {
        return Err(Error::Refused(RefusedError::NoBases));
    }
    // The counter must go up: check the (verified) channel before doing the work.
    let channel = load_channel(repo, &req.product)?;
    if let Some(highest) = channel
        .as_ref()
        .and_then(|c| c.releases.iter().map(|r| r.counter).max())
    {
        if req.counter <= highest {
            return Err(Error::Refused(RefusedError::CounterNotAbove {
                counter: req.counter,
                highest,
            }));
        }
    }
    let new = Image::open(&req.image)?;
    let target = Target {
        length: new.len() as u64,
        blake3: Digest::from(blake3::Hasher::new().update_rayon(&new).finalize()),
        sha256: Digest(sha2::Sha256::digest(&*new).into()),
    };

    // Patches made elsewhere: checked before any patch is built here.
    let mut bases = Vec::with_capacity(req.bases.len() + req.patches.len());
    if !req.patches.is_empty() {
        let keys = patch_keys(repo, release_keys)?;
        let known = channel_images(repo, channel.as_ref())?;
        for p in &req.patches {
            let base = adopt_patch(repo, p, &target, &keys, &known).map_err(|e| match e {
                Error::Refused(
                    e @ (RefusedError::PatchTarget { .. } | RefusedError::PatchBaseUnknown { .. }),
                ) => Error::Refused(e),
                e => Error::Refused(RefusedError::Patch {
                    patch: p.path.clone(),
                    source: Box::new(e),
                }),
            })?;
            bases.push(base);
        }
    }
    let mut versions: Vec<&str> = req
        .bases
        .iter()
        .map(|b| b.version.as_str())
        .chain(bases.iter().map(|b| b.version.as_str()))
        .collect();
    versions.sort_unstable();
    if let Some(w) = versions.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Refused(RefusedError::DuplicateBase {
            version: w[0].to_owned(),
        }));
    }

    // Patches: as many at once as the memory limit allows (each build is parallel too).
    let per_build = (new.len() as u64 / 2).max(256 << 20);
    let at_once = ((req.memory_limit / per_build).max(1) as usize).min(req.bases.len().max(1));
    for group in req.bases.chunks(at_once) {
        let built: Vec<Result<Base>> = group
            .par_iter()
            .map(|b| {
                let old = Image::open(&b.path)?;
                let patch =
                    Patch::build_images(&old, &new, &req.build, &|_| {})?.sign(release_key)?;
                let mut bytes = Vec::with_capacity(patch.len() as usize);
                patch.write_to(&mut bytes)?;
                let m = patch.manifest();
                Ok(Base {
                    version: b.version.clone(),
                    length: m.source_size,
                    blake3: m.source_hash,
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
        blake3: Digest::of(&bytes),
        length: bytes.len() as u64,
    });
    channel.releases.sort_by_key(|r| r.counter);
    sign_channel(repo, channel, channel_keys, req.now, req.channel_validity)?;
    Ok(release)
}

/// The keys a patch made elsewhere may be signed by: the release role of the
/// repository's newest root, which is what devices check a patch against (a given
/// release key outside that role would make a patch every device refuses); only a
/// repository without a root yet trusts the given release keys.
fn patch_keys(repo: &Repo, release_keys: &[&SecretKey]) -> Result<TrustedKeys> {
    if repo.has(&Repo::root_rel(1)) {
        return trusted_keys(&root_chain(repo)?.0, RoleName::Release);
    }
    let mut keys = TrustedKeys::new();
    for line in release_keys.iter().filter_map(|k| k.public_base64()) {
        keys.add_text(&line)
            .map_err(deltaward_engine::Error::from)?;
    }
    Ok(keys)
}

/// The image (BLAKE3 and length) of each release the (verified) channel lists,
/// each `release.json` checked against the hash and length the channel signs.
fn channel_images(repo: &Repo, channel: Option<&Channel>) -> Result<Vec<(String, Digest, u64)>> {
    let Some(channel) = channel else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(channel.releases.len());
    for e in &channel.releases {
        let bytes = repo.read(&e.path, e.length)?;
        if bytes.len() as u64 != e.length || Digest::of(&bytes) != e.blake3 {
            return Err(Error::MixAndMatch {
                what: e.path.clone(),
                mismatch: crate::error::Mismatch::Blake3 {
                    expected: e.blake3,
                    found: Digest::of(&bytes),
                },
            });
        }
        let r = Release::from_json(&bytes)?;
        out.push((e.version.clone(), r.target.blake3, r.target.length));
    }
    Ok(out)
}

/// Checks a patch made elsewhere (signature under `keys`, every payload, the
/// target it builds) and stores it as an object; its manifest's source becomes the
/// base entry.
fn adopt_patch(
    repo: &Repo,
    p: &PatchFile,
    target: &Target,
    keys: &TrustedKeys,
    known: &[(String, Digest, u64)],
) -> Result<Base> {
    // A regular file only: a FIFO or device given as a patch fails at once rather
    // than blocking the open or reading without end.
    let shown = p.path.display().to_string();
    let bytes = Image::from_file(&open_regular(&p.path, &shown)?, &p.path)?;
    let head = verify_patch(
        &mut &bytes[..],
        keys,
        None::<&&[u8]>,
        &ApplyOptions::default(),
    )?;
    let m = &head.manifest;
    if m.target_hash != target.blake3 || m.target_size != target.length {
        return Err(Error::Refused(RefusedError::PatchTarget {
            patch: p.path.clone(),
            expected: target.blake3,
            expected_len: target.length,
            found: m.target_hash,
            found_len: m.target_size,
        }));
    }
    let version = match &p.version {
        Some(v) => {
            check_name(v)?;
            // A version the channel knows must be the patch's base: a wrong label
            // would make every device on that version refuse the patch.
            if let Some((_, h, len)) = known.iter().find(|(kv, _, _)| kv == v) {
                if (*h, *len) != (m.source_hash, m.source_size) {
                    return Err(Error::BaseMismatch {
                        version: v.clone(),
                        expected: *h,
                        found: m.source_hash,
                    });
                }
            }
            v.clone()
        }
        None => known
            .iter()
            .find(|(_, h, len)| *h == m.source_hash && *len == m.source_size)
            .map(|(v, _, _)| v.clone())
            .ok_or_else(|| {
                Error::Refused(RefusedError::PatchBaseUnknown {
                    patch: p.path.clone(),
                    source_hash: m.source_hash,
                })
            })?,
    };
    Ok(Base {
        version,
        length: m.source_size,
        blake3: m.source_hash,
        patch: repo.put_object(&bytes)?,
        window: m.max_window,
        apply_memory: m.apply_memory(),
    })
}

/// The verified chain of roots of a repository: `roots/1.root.json` signed by its own
/// root keys, then each `roots/N.root.json` as a rotation of the one before. Returns
/// the newest root and the older ones.
pub(crate) fn root_chain(repo: &Repo) -> Result<(Root, Vec<Root>)> {
    let (bytes, sigs) = repo.get_signed(&Repo::root_rel(1), ROOT_JSON_MAX_BYTES)?;
    let mut current = Root::from_json(&bytes)?;
    verify_document(&current, RoleName::Root, "root.json", 1, &bytes, &sigs)?;
    let mut older = Vec::new();
    while let Some(next) = current.version.checked_add(1) {
        let rel = Repo::root_rel(next);
        if !repo.has(&rel) {
            break;
        }
        let (bytes, sigs) = repo.get_signed(&rel, ROOT_JSON_MAX_BYTES)?;
        let root = verify_rotation(&current, &bytes, &sigs)?;
        older.push(std::mem::replace(&mut current, root));
    }
    Ok((current, older))
}

/// Reads the product's channel document, if there is one, and verifies it before it
/// is built on: it must be a channel of this product whose signatures meet the
/// channel role's threshold under one of the repository's roots (the chain in
/// `roots/`, newest first; a root that rotated the channel keys out still vouches for
/// the channel its keys signed, so that the maker can re-sign it with the new keys).
/// Its expiry is not checked: refreshing an expired channel is the point.
pub fn load_channel(repo: &Repo, product: &str) -> Result<Option<Channel>> {
    let rel = Repo::channel_rel(product);
    if !repo.has(&rel) {
        return Ok(None);
    }
    let refused = |e: Error| Error::Refused(RefusedError::ChannelNotVerified(Box::new(e)));
    let (bytes, sigs) = repo
        .get_signed(&rel, CHANNEL_JSON_MAX_BYTES)
        .map_err(refused)?;
    let channel = Channel::from_json(&bytes).map_err(refused)?;
    if channel.product != product {
        return Err(refused(Error::MixAndMatch {
            what: rel,
            mismatch: crate::error::Mismatch::Product {
                expected: product.to_owned(),
                found: channel.product,
            },
        }));
    }
    let (newest, older) = root_chain(repo).map_err(refused)?;
    let verify = |root: &Root| {
        verify_document(
            root,
            RoleName::Channel,
            "channel.json",
            channel.version,
            &bytes,
            &sigs,
        )
    };
    match verify(&newest) {
        Ok(_) => Ok(Some(channel)),
        Err(_) if older.iter().rev().any(|r| verify(r).is_ok()) => Ok(Some(channel)),
        Err(e) => Err(refused(e)),
    }
}

/// Bumps the channel's version, sets a fresh expiry and signs it.
pub fn sign_channel(
    repo: &Repo,
    mut channel: Channel,
    keys: &[&SecretKey],
    now: SystemTime,
    validity: Duration,
) -> Result<Channel> {
    channel.version = channel.version.checked_add(1).ok_or(Error::Refused(
        RefusedError::ChannelVersionExhausted {
            version: channel.version,
        },
    ))?;
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
    check_name(product)?;
    let channel = load_channel(repo, product)?.ok_or_else(|| {
        Error::Refused(RefusedError::NoChannel {
            product: product.to_owned(),
            dir: repo.dir().to_path_buf(),
        })
    })?;
    sign_channel(repo, channel, keys, now, validity)
}

/// Writes `root.json` version `root.version`, signed by `keys`, as the current root
/// and into `roots/`.
pub fn write_root(repo: &Repo, root: &Root, keys: &[&SecretKey]) -> Result<()> {
    validate_root(root)?;
    let bytes = json(root);
    let sigs = sign_document(&bytes, keys, RoleName::Root, "root.json", root.version)?;
    repo.put_signed(&Repo::root_rel(root.version), &bytes, &sigs)?;
    repo.put_signed("root.json", &bytes, &sigs)
}

/// Parses `NOTES.toml`.
pub fn parse_notes(text: &str) -> Result<Notes> {
    toml::from_str(text).map_err(|e| invalid("notes", e))
}

//! Device-side verification of a release (`deltaward check-release`).
//!
//! The device keeps a state directory with the root it trusts (`root.json`, put
//! there at provisioning) and `state.json`, the highest release counter and channel
//! version it accepted. A check walks the chain of trust from that root:
//! rotations of the root, the channel, the release, the device's own image, and
//! refuses rollback, freeze, wrong hardware, a mismatched base, mix-and-match,
//! unknown keys and unmet thresholds, each with its own error.
//!
//! Provisioning writes both files; a provisioned device whose `state.json` is gone
//! refuses (fail closed). A check holds the directory's lock from reading the state
//! to writing it. A root rotation that revokes the channel or release keys resets the
//! number that role vouched for, so that a fast-forward made with a stolen key is
//! undone by rotating that key out.

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::SystemTime,
};

use deltaward_engine::{write_file, Digest};
use serde::{Deserialize, Serialize};

use crate::{
    error::{
        invalid, io_err, Error, InvalidError, LimitError, Mismatch, ReleaseId, Result,
        RootRotationError, StateError,
    },
    limits::{
        CHANNEL_JSON_MAX_BYTES, RELEASE_JSON_MAX_BYTES, ROOT_JSON_MAX_BYTES, STATE_JSON_MAX_BYTES,
    },
    model::*,
    repo::{check_name, check_object_path, check_rel, parse_time, read_capped, timestamp, Repo},
    source::{read_optional, read_signatures, read_signed, Source},
    trust::{rotation_revokes, verify_document, verify_rotation, RoleName},
};

/// What the device remembers between checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Highest release counter accepted.
    pub highest_counter: u64,
    /// Highest channel version accepted.
    pub channel_version: u64,
}

/// The device being updated.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its hardware id.
    pub hardware_id: String,
    /// The version it runs.
    pub version: String,
    /// Length of its current image.
    pub image_length: u64,
    /// BLAKE3 of its current image.
    pub image_blake3: Digest,
}

impl Device {
    /// Describes a device by its image file.
    pub fn from_image(hardware_id: &str, version: &str, image: &Path) -> Result<Self> {
        let (image_blake3, image_length) = hash_file(image)?;
        Ok(Self {
            hardware_id: hardware_id.to_owned(),
            version: version.to_owned(),
            image_length,
            image_blake3,
        })
    }
}

/// BLAKE3 and length of a file, read as a stream.
fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let f = std::fs::File::open(path).map_err(io_err("opening", path))?;
    let mut h = blake3::Hasher::new();
    h.update_reader(f).map_err(io_err("reading", path))?;
    Ok((Digest::from(h.finalize()), h.count()))
}

/// What the device should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// It already runs the release's image.
    UpToDate,
    /// Apply this base's patch.
    Patch(Base),
    /// No patch fits its version: install the full image.
    Full,
}

/// A verified release and the plan for this device.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The release.
    pub release: Release,
    /// What to do.
    pub plan: Plan,
    /// Version of the root trusted after the check (after any rotation).
    pub root_version: u64,
    /// Version of the channel that listed the release.
    pub channel_version: u64,
    /// The trusted root after the check.
    pub root: Root,
    /// Ids of the keys whose signatures on channel.json verified.
    pub channel_signers: Vec<String>,
    /// Ids of the keys whose signatures on release.json verified.
    pub release_signers: Vec<String>,
}

/// The lock file of a state directory (see [`StateDir::lock`]).
pub const STATE_LOCK: &str = "state.lock";

/// An exclusive lock on a state directory, released when dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
    dir: PathBuf,
}

/// The device's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// A state directory (it must hold the trusted `root.json`).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the directory's exclusive lock (the file [`STATE_LOCK`] in it), waiting
    /// for another holder. [`check_release`] and [`init`](Self::init) hold it from
    /// reading the state to writing it back, so that overlapping checks cannot write
    /// older numbers over newer ones.
    pub fn lock(&self) -> Result<StateLock> {
        let p = self.dir.join(STATE_LOCK);
        let file = deltaward_engine::lock_file(&p).map_err(io_err("locking", &p))?;
        Ok(StateLock {
            _file: file,
            dir: self.dir.clone(),
        })
    }

    /// Installs a trusted root and a zero state (provisioning). A device that already
    /// trusts a root keeps it, and keeps its state: later roots arrive only through
    /// signed rotations, so provisioning again cannot undo one, and a missing
    /// `state.json` is not recreated (checks then refuse: fail closed).
    pub fn init(&self, root_json: &[u8]) -> Result<()> {
        Root::from_json(root_json)?;
        std::fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        let _lock = self.lock()?;
        let existing = self.dir.join("root.json");
        if std::fs::symlink_metadata(&existing).is_ok() {
            if read_capped(&existing, "root.json", ROOT_JSON_MAX_BYTES)? == root_json {
                return Ok(());
            }
            return Err(Error::RootRotation(RootRotationError::AlreadyProvisioned {
                dir: self.dir.clone(),
            }));
        }
        // The state first: a root.json on disk always has its state.json beside it.
        if std::fs::symlink_metadata(self.dir.join("state.json")).is_err() {
            self.save(&State::default())?;
        }
        write_file(&existing, root_json)?;
        Ok(())
    }

    fn provisioned(&self) -> Result<PathBuf> {
        let p = self.dir.join("root.json");
        if std::fs::symlink_metadata(&p).is_err() {
            return Err(Error::State(StateError::NotProvisioned {
                dir: self.dir.clone(),
            }));
        }
        Ok(p)
    }

    fn root(&self) -> Result<Root> {
        let p = self.provisioned()?;
        Root::from_json(&read_capped(&p, "root.json", ROOT_JSON_MAX_BYTES)?)
    }

    /// The remembered state. A provisioned device without `state.json` refuses
    /// ([`StateError::Missing`]) rather than start again from zero.
    pub fn state(&self) -> Result<State> {
        self.provisioned()?;
        let p = self.dir.join("state.json");
        if std::fs::symlink_metadata(&p).is_err() {
            return Err(Error::State(StateError::Missing {
                dir: self.dir.clone(),
            }));
        }
        let b = read_capped(&p, "state.json", STATE_JSON_MAX_BYTES)?;
        serde_json::from_slice(&b).map_err(|e| invalid("state.json", e))
    }

    fn save(&self, s: &State) -> Result<()> {
        let b = serde_json::to_vec_pretty(s).map_err(|e| invalid("state.json", e))?;
        write_file(&self.dir.join("state.json"), &b)?;
        Ok(())
    }
}

fn not_expired(file: &str, expires: &str, now: SystemTime) -> Result<()> {
    if parse_time(file, expires)? <= now {
        return Err(Error::Expired {
            file: file.to_owned(),
            expires: expires.to_owned(),
            now: timestamp(now),
        });
    }
    Ok(())
}

/// Walks root rotations published in the repository from the trusted root. A
/// rotation that revokes keys of the channel or release role (or raises its
/// threshold) resets the version that role vouched for (TUF 5.3.11): the reset is
/// saved before the new root, so that a crash in between repeats the rotation and the
/// reset instead of keeping the new root with the old numbers.
fn update_root(
    repo: &dyn Source,
    state_dir: &StateDir,
    state: &mut State,
    now: SystemTime,
) -> Result<Root> {
    let mut trusted = state_dir.root()?;
    while let Some(next) = trusted.version.checked_add(1) {
        let rel = Repo::root_rel(next);
        let Some(bytes) = read_optional(repo, &rel, ROOT_JSON_MAX_BYTES)? else {
            break;
        };
        let sigs = read_signatures(repo, &rel)?;
        let new = verify_rotation(&trusted, &bytes, &sigs)?;
        let mut reset = false;
        if rotation_revokes(&trusted, &new, RoleName::Channel) {
            state.channel_version = 0;
            reset = true;
        }
        if rotation_revokes(&trusted, &new, RoleName::Release) {
            state.highest_counter = 0;
            reset = true;
        }
        if reset {
            state_dir.save(state)?;
        }
        write_file(&state_dir.dir.join("root.json"), &bytes)?;
        trusted = new;
    }
    // The repository's current root may not be newer than the chain we could follow.
    if let Some(current) = read_optional(repo, "root.json", ROOT_JSON_MAX_BYTES)? {
        let current = Root::from_json(&current)?;
        if current.version > trusted.version {
            return Err(Error::RootRotation(RootRotationError::ChainBroken {
                current: current.version,
                trusted: trusted.version,
            }));
        }
    }
    not_expired("root.json", &trusted.expires, now)?;
    Ok(trusted)
}

/// Verifies the latest release of `product` for `device`, and records its counter.
/// The state directory's lock is held from reading the state to writing it.
pub fn check_release(
    repo: &Repo,
    product: &str,
    state_dir: &StateDir,
    device: &Device,
    now: SystemTime,
) -> Result<Checked> {
    let lock = state_dir.lock()?;
    let checked = verify_latest(repo, product, state_dir, &lock, device, now)?;
    accept(state_dir, &lock, &checked)?;
    Ok(checked)
}

/// Verifies the latest release of `product` for `device`, read from `repo`, with
/// every check of [`check_release`], but without raising the stored counters: an
/// updater calls [`accept`] once the new image is installed. Root rotations are
/// stored as they are followed. The caller holds the state directory's lock.
pub fn verify_latest(
    repo: &dyn Source,
    product: &str,
    state_dir: &StateDir,
    lock: &StateLock,
    device: &Device,
    now: SystemTime,
) -> Result<Checked> {
    check_name(product)?;
    debug_assert_eq!(lock.dir, state_dir.dir);
    let mut state = state_dir.state()?;
    let root = update_root(repo, state_dir, &mut state, now)?;
    let (channel, entry, channel_signers) = load_channel(repo, &root, product, &state, now)?;
    let (release, release_signers) = load_release(repo, &root, product, entry, now)?;
    if !release.hardware_ids.contains(&device.hardware_id) {
        return Err(Error::WrongHardware {
            hardware: device.hardware_id.clone(),
            supported: release.hardware_ids,
        });
    }
    let plan = plan_for(&release, device)?;
    Ok(Checked {
        release,
        plan,
        root_version: root.version,
        channel_version: channel.version,
        root,
        channel_signers,
        release_signers,
    })
}

/// Raises the stored release counter and channel version to those of a verified
/// release (never lowers them). The caller holds the state directory's lock.
pub fn accept(state_dir: &StateDir, lock: &StateLock, checked: &Checked) -> Result<()> {
    debug_assert_eq!(lock.dir, state_dir.dir);
    let mut state = state_dir.state()?;
    state.highest_counter = state.highest_counter.max(checked.release.counter);
    state.channel_version = state.channel_version.max(checked.channel_version);
    state_dir.save(&state)
}

/// The product's channel, verified under `root`, not expired and not older than the
/// state; and its newest entry, not below the highest counter accepted.
fn load_channel(
    repo: &dyn Source,
    root: &Root,
    product: &str,
    state: &State,
    now: SystemTime,
) -> Result<(Channel, ChannelEntry, Vec<String>)> {
    let (cbytes, csigs) = read_signed(repo, &Repo::channel_rel(product), CHANNEL_JSON_MAX_BYTES)?;
    let (channel, signers) = verify_channel(root, product, &cbytes, &csigs, now)?;
    if channel.version < state.channel_version {
        return Err(Error::Rollback {
            what: "channel version",
            offered: channel.version,
            highest: state.channel_version,
        });
    }
    let entry = newest(&channel)?.clone();
    if entry.counter < state.highest_counter {
        return Err(Error::Rollback {
            what: "release counter",
            offered: entry.counter,
            highest: state.highest_counter,
        });
    }
    Ok((channel, entry, signers))
}

/// Verifies `channel.json` of `product` (its bytes and `.minisig` text) under `root`:
/// the channel role's signatures and threshold, the product it names, its expiry.
/// Rollback against a remembered version is the caller's check. Returns the channel
/// and the ids of the keys whose signatures verified.
pub fn verify_channel(
    root: &Root,
    product: &str,
    bytes: &[u8],
    sigs: &str,
    now: SystemTime,
) -> Result<(Channel, Vec<String>)> {
    let channel = Channel::from_json(bytes)?;
    let signers = verify_document(
        root,
        RoleName::Channel,
        "channel.json",
        channel.version,
        bytes,
        sigs,
    )?;
    if channel.product != product {
        return Err(Error::MixAndMatch {
            what: "channel.json".into(),
            mismatch: Mismatch::Product {
                expected: product.into(),
                found: channel.product,
            },
        });
    }
    not_expired("channel.json", &channel.expires, now)?;
    Ok((channel, signers))
}

/// The channel's newest entry (highest counter).
pub fn newest(channel: &Channel) -> Result<&ChannelEntry> {
    channel
        .releases
        .iter()
        .max_by_key(|r| r.counter)
        .ok_or_else(|| invalid("channel.json", InvalidError::NoReleases))
}

/// Requires `found` bytes (counted up to one past the signed length) to be exactly
/// the signed `expected`.
fn check_length(what: &str, expected: u64, found: u64) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    Err(Error::MixAndMatch {
        what: what.to_owned(),
        mismatch: if found > expected {
            Mismatch::TooLong { expected }
        } else {
            Mismatch::TooShort { expected, found }
        },
    })
}

/// Requires a file's hash to be the signed one.
fn check_hash(what: &str, expected: Digest, found: Digest) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    Err(Error::MixAndMatch {
        what: what.to_owned(),
        mismatch: Mismatch::Blake3 { expected, found },
    })
}

/// The release a channel entry names: read no further than the channel signs (and
/// one byte, to notice more), then [`verify_release`] against the entry.
pub(crate) fn load_release(
    repo: &dyn Source,
    root: &Root,
    product: &str,
    entry: ChannelEntry,
    now: SystemTime,
) -> Result<(Release, Vec<String>)> {
    if entry.length > RELEASE_JSON_MAX_BYTES {
        return Err(Error::Limit {
            file: entry.path,
            limit: LimitError::TooLarge {
                max: RELEASE_JSON_MAX_BYTES,
            },
        });
    }
    check_rel(&entry.path)?;
    let rbytes = repo
        .read_up_to(&entry.path, entry.length)?
        .ok_or_else(|| missing_file(&entry.path))?;
    let rsigs = read_signatures(repo, &entry.path)?;
    let id = ReleaseId {
        product: product.into(),
        version: entry.version.clone(),
        counter: entry.counter,
    };
    verify_release(root, &id, Some(&entry), &rbytes, &rsigs, now)
}

/// Verifies `release.json` (its bytes and `.minisig` text) under `root`: the length
/// and hash its channel entry signs (when the caller has the entry), the release
/// role's signatures and threshold, that it is the release `id` names (a `counter`
/// of 0 in `id` matches any counter), its expiry, and that its objects are named
/// `objects/<blake3>`. Returns the release and the ids of the keys whose signatures
/// verified.
pub fn verify_release(
    root: &Root,
    id: &ReleaseId,
    entry: Option<&ChannelEntry>,
    bytes: &[u8],
    sigs: &str,
    now: SystemTime,
) -> Result<(Release, Vec<String>)> {
    if let Some(entry) = entry {
        check_length(&entry.path, entry.length, bytes.len() as u64)?;
        check_hash(&entry.path, entry.blake3, Digest::of(bytes))?;
    }
    let release = Release::from_json(bytes)?;
    let signers = verify_document(
        root,
        RoleName::Release,
        "release.json",
        release.counter,
        bytes,
        sigs,
    )?;
    if (id.counter != 0 && release.counter != id.counter)
        || release.version != id.version
        || release.product != id.product
    {
        return Err(Error::MixAndMatch {
            what: "release.json".into(),
            mismatch: Mismatch::Release {
                expected: Box::new(id.clone()),
                found: Box::new(ReleaseId {
                    product: release.product,
                    version: release.version,
                    counter: release.counter,
                }),
            },
        });
    }
    not_expired("release.json", &release.expires, now)?;
    for object in release
        .bases
        .iter()
        .map(|b| &b.patch)
        .chain([&release.full_image.object])
    {
        check_object_path(object)?;
    }
    Ok((release, signers))
}

/// What the device should install: nothing when it runs the target, the patch for
/// its version (whose base must be its image), the patch whose base is its image,
/// or else the full image.
fn plan_for(release: &Release, device: &Device) -> Result<Plan> {
    if device.image_blake3 == release.target.blake3 && device.image_length == release.target.length
    {
        return Ok(Plan::UpToDate);
    }
    if let Some(base) = release.bases.iter().find(|b| b.version == device.version) {
        if base.blake3 != device.image_blake3 || base.length != device.image_length {
            return Err(Error::BaseMismatch {
                version: device.version.clone(),
                expected: base.blake3,
                found: device.image_blake3,
            });
        }
        return Ok(Plan::Patch(base.clone()));
    }
    Ok(release
        .bases
        .iter()
        .find(|b| b.blake3 == device.image_blake3)
        .map_or(Plan::Full, |base| Plan::Patch(base.clone())))
}

pub(crate) fn missing_file(rel: &str) -> Error {
    io_err("reading", Path::new(rel))(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "the repository has no such file",
    ))
}

/// A verified release and the ids of the keys whose signatures on it verified.
pub type SignedRelease = (Release, Vec<String>);

/// Every release the channel of `product` lists, for an audit: each document
/// verified under the repository's own `root.json` (self-signed by its root role), as
/// of its own issue time, so that a release that has expired since is still shown as
/// verified. Returns the root and each release with the ids of the keys whose
/// signatures verified.
pub fn releases_of(src: &dyn Source, product: &str) -> Result<(Root, Vec<SignedRelease>)> {
    check_name(product)?;
    let (rbytes, rsigs) = read_signed(src, "root.json", ROOT_JSON_MAX_BYTES)?;
    let root = Root::from_json(&rbytes)?;
    verify_document(
        &root,
        RoleName::Root,
        "root.json",
        root.version,
        &rbytes,
        &rsigs,
    )?;
    let (cbytes, csigs) = read_signed(src, &Repo::channel_rel(product), CHANNEL_JSON_MAX_BYTES)?;
    let at = |file: &str, issued: &str| -> Result<SystemTime> {
        Ok(parse_time(file, issued)? + std::time::Duration::from_secs(1))
    };
    let unverified = Channel::from_json(&cbytes)?;
    let (channel, _) = verify_channel(
        &root,
        product,
        &cbytes,
        &csigs,
        at("channel.json", &unverified.issued)?,
    )?;
    let mut out = Vec::new();
    for entry in &channel.releases {
        check_rel(&entry.path)?;
        let bytes = src
            .read_up_to(&entry.path, entry.length)?
            .ok_or_else(|| missing_file(&entry.path))?;
        let sigs = read_signatures(src, &entry.path)?;
        let issued = Release::from_json(&bytes)?.issued;
        let id = ReleaseId {
            product: product.to_owned(),
            version: entry.version.clone(),
            counter: entry.counter,
        };
        out.push(verify_release(
            &root,
            &id,
            Some(entry),
            &bytes,
            &sigs,
            at("release.json", &issued)?,
        )?);
    }
    Ok((root, out))
}

/// Checks that an object file is the one the signed metadata names: its path must be
/// `objects/<blake3>` inside the repository, a regular file, and no more than its
/// signed length is read (plus one byte, to notice a longer file).
pub fn verify_object(repo: &Repo, object: &Object) -> Result<PathBuf> {
    check_object_path(object)?;
    let path = repo.path(&object.path);
    let f = repo.open(&object.path)?;
    let mut h = blake3::Hasher::new();
    h.update_reader(f.take(object.length.saturating_add(1)))
        .map_err(io_err("reading", &path))?;
    check_length(&object.path, object.length, h.count())?;
    check_hash(&object.path, object.blake3, Digest::from(h.finalize()))?;
    Ok(path)
}

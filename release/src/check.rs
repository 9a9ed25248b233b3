//! Device-side verification of a release (`deltaward check-release`).
//!
//! The device keeps a state directory with the root it trusts (`root.json`, put
//! there at provisioning) and `state.json`, the highest release counter and channel
//! version it accepted. A check walks the chain of trust from that root:
//! rotations of the root, the channel, the release, the device's own image, and
//! refuses rollback, freeze, wrong hardware, a mismatched base, mix-and-match,
//! unknown keys and unmet thresholds, each with its own error.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use deltaward_engine::{write_file, Digest};
use serde::{Deserialize, Serialize};

use crate::{
    error::{io_err, Error, Result},
    model::*,
    repo::{parse_time, timestamp, Repo},
    trust::{verify_document, verify_rotation, RoleName},
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
    pub image_blake3: String,
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

/// BLAKE3 (hex) and length of a file, read as a stream.
fn hash_file(path: &Path) -> Result<(String, u64)> {
    let f = std::fs::File::open(path).map_err(io_err("opening", path))?;
    let mut h = blake3::Hasher::new();
    h.update_reader(f).map_err(io_err("reading", path))?;
    Ok((Digest::from(h.finalize()).to_string(), h.count()))
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

    /// Installs a trusted root (provisioning). A device that already trusts a root
    /// keeps it: later roots arrive only through signed rotations, so provisioning
    /// again cannot undo one.
    pub fn init(&self, root_json: &[u8]) -> Result<()> {
        let root = parse::<Root>("root.json", root_json)?;
        check_kind("root.json", &root.kind, "deltaward-root", root.spec_version)?;
        let existing = self.dir.join("root.json");
        if let Ok(current) = std::fs::read(&existing) {
            if current == root_json {
                return Ok(());
            }
            return Err(Error::RootRotation(format!(
                "{} already holds a trusted root; a new root must come as a signed rotation",
                existing.display()
            )));
        }
        std::fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        write_file(&self.dir.join("root.json"), root_json)?;
        Ok(())
    }

    fn root(&self) -> Result<Root> {
        let p = self.dir.join("root.json");
        let b = std::fs::read(&p).map_err(io_err("reading trusted root", &p))?;
        parse("root.json", &b)
    }

    /// The remembered state.
    pub fn state(&self) -> Result<State> {
        let p = self.dir.join("state.json");
        match std::fs::read(&p) {
            Ok(b) => parse("state.json", &b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io_err("reading", &p)(e)),
        }
    }

    fn save(&self, s: &State) -> Result<()> {
        let b = serde_json::to_vec_pretty(s).unwrap_or_default();
        write_file(&self.dir.join("state.json"), &b)?;
        Ok(())
    }
}

fn parse<T: serde::de::DeserializeOwned>(file: &str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Invalid {
        file: file.to_owned(),
        reason: e.to_string(),
    })
}

/// Checks a document's `_type` and `spec_version`.
fn check_kind(file: &str, kind: &str, expected: &str, spec: u32) -> Result<()> {
    if kind != expected || spec != SPEC_VERSION {
        return Err(Error::Invalid {
            file: file.to_owned(),
            reason: format!("is {kind} version {spec}, expected {expected} version {SPEC_VERSION}"),
        });
    }
    Ok(())
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

/// Walks root rotations published in the repository from the trusted root.
fn update_root(repo: &Repo, state: &StateDir, now: SystemTime) -> Result<Root> {
    let mut trusted = state.root()?;
    while let Some(next) = trusted.version.checked_add(1) {
        let rel = Repo::root_rel(next);
        if !repo.path(&rel).exists() {
            break;
        }
        let (bytes, sigs) = repo.get_signed(&rel)?;
        trusted = verify_rotation(&trusted, &bytes, &sigs)?;
        write_file(&state.dir.join("root.json"), &bytes)?;
    }
    // The repository's current root may not be newer than the chain we could follow.
    if let Ok((bytes, _)) = repo.get_signed("root.json") {
        let current: Root = parse("root.json", &bytes)?;
        if current.version > trusted.version {
            return Err(Error::RootRotation(format!(
                "the repository's root is version {} but no signed version {} follows the trusted version {}",
                current.version,
                trusted.version.saturating_add(1),
                trusted.version
            )));
        }
    }
    not_expired("root.json", &trusted.expires, now)?;
    Ok(trusted)
}

/// Verifies the latest release of `product` for `device`, and records its counter.
pub fn check_release(
    repo: &Repo,
    product: &str,
    state_dir: &StateDir,
    device: &Device,
    now: SystemTime,
) -> Result<Checked> {
    let mut state = state_dir.state()?;
    let root = update_root(repo, state_dir, now)?;

    let (cbytes, csigs) = repo.get_signed(&Repo::channel_rel(product))?;
    let channel: Channel = parse("channel.json", &cbytes)?;
    check_kind(
        "channel.json",
        &channel.kind,
        "deltaward-channel",
        channel.spec_version,
    )?;
    verify_document(
        &root,
        RoleName::Channel,
        "channel.json",
        channel.version,
        &cbytes,
        &csigs,
    )?;
    if channel.product != product {
        return Err(Error::MixAndMatch {
            what: "channel.json".into(),
            expected: product.into(),
            found: channel.product,
        });
    }
    not_expired("channel.json", &channel.expires, now)?;
    if channel.version < state.channel_version {
        return Err(Error::Rollback {
            what: "channel version",
            offered: channel.version,
            highest: state.channel_version,
        });
    }
    let entry = channel
        .releases
        .iter()
        .max_by_key(|r| r.counter)
        .ok_or_else(|| Error::Invalid {
            file: "channel.json".into(),
            reason: "lists no release".into(),
        })?
        .clone();
    if entry.counter < state.highest_counter {
        return Err(Error::Rollback {
            what: "release counter",
            offered: entry.counter,
            highest: state.highest_counter,
        });
    }

    let (rbytes, rsigs) = repo.get_signed(&entry.path)?;
    let found = Digest::of(&rbytes).to_string();
    if found != entry.blake3 || rbytes.len() as u64 != entry.length {
        return Err(Error::MixAndMatch {
            what: entry.path.clone(),
            expected: entry.blake3,
            found,
        });
    }
    let release: Release = parse("release.json", &rbytes)?;
    check_kind(
        "release.json",
        &release.kind,
        "deltaward-release",
        release.spec_version,
    )?;
    verify_document(
        &root,
        RoleName::Release,
        "release.json",
        release.counter,
        &rbytes,
        &rsigs,
    )?;
    if release.counter != entry.counter
        || release.version != entry.version
        || release.product != product
    {
        return Err(Error::MixAndMatch {
            what: "release.json".into(),
            expected: format!("{product} {} counter {}", entry.version, entry.counter),
            found: format!(
                "{} {} counter {}",
                release.product, release.version, release.counter
            ),
        });
    }
    not_expired("release.json", &release.expires, now)?;
    if !release.hardware_ids.contains(&device.hardware_id) {
        return Err(Error::WrongHardware {
            hardware: device.hardware_id.clone(),
            supported: release.hardware_ids,
        });
    }

    let plan = if device.image_blake3 == release.target.blake3
        && device.image_length == release.target.length
    {
        Plan::UpToDate
    } else if let Some(base) = release.bases.iter().find(|b| b.version == device.version) {
        if base.blake3 != device.image_blake3 || base.length != device.image_length {
            return Err(Error::BaseMismatch {
                version: device.version.clone(),
                expected: base.blake3.clone(),
                found: device.image_blake3.clone(),
            });
        }
        Plan::Patch(base.clone())
    } else if let Some(base) = release
        .bases
        .iter()
        .find(|b| b.blake3 == device.image_blake3)
    {
        Plan::Patch(base.clone())
    } else {
        Plan::Full
    };

    state.highest_counter = state.highest_counter.max(release.counter);
    state.channel_version = state.channel_version.max(channel.version);
    state_dir.save(&state)?;
    Ok(Checked {
        release,
        plan,
        root_version: root.version,
    })
}

/// Checks that an object file is the one the signed metadata names.
pub fn verify_object(repo: &Repo, object: &Object) -> Result<PathBuf> {
    let path = repo.path(&object.path);
    let (found, _) = hash_file(&path)?;
    if found != object.blake3 || format!("objects/{found}") != object.path {
        return Err(Error::MixAndMatch {
            what: object.path.clone(),
            expected: object.blake3.clone(),
            found,
        });
    }
    Ok(path)
}

//! Fixtures shared by the release tests: keys, roots, notes, images and a repository
//! with its device state directories.
#![allow(dead_code)] // reason: each test binary uses a different part of the shared world
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use deltaward_engine::{generate_keypair, BuildOptions, Level, SecretKey};
use deltaward_release::{
    check::{check_release, Device, StateDir},
    model::*,
    repo::{build_release, write_root, BaseImage, ReleaseRequest, Repo, CHANNEL_VALIDITY},
    trust::{sign_document, RoleName},
    Error,
};

pub struct Key {
    pub secret: SecretKey,
    pub public: String,
    pub b64: String,
    pub id: String,
}

pub fn key() -> Key {
    let kp = generate_keypair(None).expect("keygen");
    let b64 = kp.public.lines().nth(1).expect("key line").to_owned();
    Key {
        secret: SecretKey::from_text(&kp.secret, None).expect("secret"),
        public: kp.public,
        b64,
        id: kp.key_id,
    }
}

pub fn root(
    version: u64,
    root_keys: &[&Key],
    release: &[&Key],
    release_threshold: u32,
    channel: &Key,
) -> Root {
    let mut keys = BTreeMap::new();
    for k in root_keys.iter().chain(release).chain([&channel]) {
        keys.insert(k.id.clone(), k.b64.clone());
    }
    Root {
        kind: "deltaward-root".into(),
        spec_version: SPEC_VERSION,
        version,
        expires: "2099-01-01T00:00:00Z".into(),
        keys,
        roles: Roles {
            root: Role {
                keyids: root_keys.iter().map(|k| k.id.clone()).collect(),
                threshold: 1,
            },
            release: Role {
                keyids: release.iter().map(|k| k.id.clone()).collect(),
                threshold: release_threshold,
            },
            channel: Role {
                keyids: vec![channel.id.clone()],
                threshold: 1,
            },
        },
    }
}

pub fn notes() -> Notes {
    toml::from_str(
        r#"
hardware_ids = ["pump-a1", "pump-a2"]
[compatibility]
statement = "For infusion pumps A1 and A2 running 1.x."
applies_from = ["1.0", "1.1"]
hardware = ["Pump A1", "Pump A2"]
requires = ["bootloader >= 3.2"]
incompatible_with = ["docking station firmware < 2.0"]
[[security_fixes]]
id = "CVE-2026-0001"
severity = "high"
cvss_vector = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
summary = "Remote code execution in the network stack."
[support]
class = "supported"
end_of_support = "2030-12-31"
[approval]
approved = true
[installation]
instructions = "IFU-2041 section 7"
"#,
    )
    .expect("notes")
}

/// Images 1.0, 1.1 (bases) and 2.0, 2.1 (releases).
pub struct World {
    pub dir: tempfile::TempDir,
    pub repo: Repo,
    pub root_key: Key,
    pub release_key: Key,
    pub channel_key: Key,
    pub now: SystemTime,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = deltaward_testkit::noise(256 << 10, 1);
        for (name, edit) in [("1.0", 0u8), ("1.1", 1), ("2.0", 2), ("2.1", 3)] {
            let mut img = base.clone();
            img[1000 + edit as usize * 5000..1100 + edit as usize * 5000].fill(edit + 1);
            std::fs::write(dir.path().join(format!("{name}.img")), img).expect("write");
        }
        let repo = Repo::new(&dir.path().join("repo"));
        let (root_key, release_key, channel_key) = (key(), key(), key());
        write_root(
            &repo,
            &root(1, &[&root_key], &[&release_key], 1, &channel_key),
            &[&root_key.secret],
        )
        .expect("root");
        Self {
            dir,
            repo,
            root_key,
            release_key,
            channel_key,
            now: humantime::parse_rfc3339("2026-11-28T12:00:00Z").expect("time"),
        }
    }

    pub fn img(&self, v: &str) -> PathBuf {
        self.dir.path().join(format!("{v}.img"))
    }

    pub fn release(&self, version: &str, counter: u64) -> Result<Release, Error> {
        self.release_with(version, counter, notes(), &self.release_key.secret)
    }

    pub fn release_with(
        &self,
        version: &str,
        counter: u64,
        notes: Notes,
        key: &SecretKey,
    ) -> Result<Release, Error> {
        let mut req = self.request(version, counter);
        req.notes = notes;
        build_release(&self.repo, &req, &[key], &[&self.channel_key.secret])
    }

    /// The request for release `version` from bases 1.0 and 1.1.
    pub fn request(&self, version: &str, counter: u64) -> ReleaseRequest {
        ReleaseRequest {
            product: "pump".into(),
            version: version.into(),
            counter,
            image: self.img(version),
            bases: ["1.0", "1.1"]
                .iter()
                .map(|v| BaseImage {
                    version: (*v).into(),
                    path: self.img(v),
                })
                .collect(),
            patches: Vec::new(),
            notes: notes(),
            build: BuildOptions::default().level(Level::Fast),
            memory_limit: 1 << 30,
            channel_validity: CHANNEL_VALIDITY,
            now: self.now,
        }
    }

    /// The product's channel as the repository `repo` holds it.
    pub fn channel(&self, repo: &Repo) -> Channel {
        serde_json::from_slice(
            &std::fs::read(repo.path("products/pump/channel.json")).expect("channel"),
        )
        .expect("channel json")
    }

    /// Writes `channel` into `repo`, signed by `key` (for example a stolen one).
    pub fn put_channel(&self, repo: &Repo, channel: &Channel, key: &Key) {
        let mut bytes = serde_json::to_vec_pretty(channel).expect("json");
        bytes.push(b'\n');
        self.put_signed_channel(repo, &bytes, channel.version, key);
    }

    /// Writes channel bytes into `repo`, signed by `key` for `version`.
    pub fn put_signed_channel(&self, repo: &Repo, bytes: &[u8], version: u64, key: &Key) {
        let sigs = sign_document(
            bytes,
            &[&key.secret],
            RoleName::Channel,
            "channel.json",
            version,
        )
        .expect("sign");
        repo.put_signed("products/pump/channel.json", bytes, &sigs)
            .expect("write");
    }

    /// A copy of the repository, as a hostile mirror would serve it.
    pub fn mirror(&self, name: &str) -> Repo {
        let dir = self.dir.path().join(name);
        copy_dir(self.repo.dir(), &dir);
        Repo::new(&dir)
    }

    pub fn state(&self, name: &str) -> StateDir {
        let s = StateDir::new(&self.dir.path().join(name));
        if !self.dir.path().join(name).join("root.json").exists() {
            s.init(&std::fs::read(self.repo.path("roots/1.root.json")).expect("root"))
                .expect("init");
        }
        s
    }

    pub fn device(&self, hw: &str, version: &str) -> Device {
        Device::from_image(hw, version, &self.img(version)).expect("device")
    }

    pub fn check(
        &self,
        state: &StateDir,
        device: &Device,
    ) -> Result<deltaward_release::check::Checked, Error> {
        check_release(&self.repo, "pump", state, device, self.now)
    }

    /// A fresh device ("dev", hardware pump-a1, version 1.0) checks the release and
    /// must be refused; the error.
    pub fn refused(&self) -> Error {
        self.check(&self.state("dev"), &self.device("pump-a1", "1.0"))
            .expect_err("accepted")
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

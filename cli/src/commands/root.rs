//! `deltaward root`: a signed root.json (the first version, or a rotation).

use std::{collections::BTreeMap, path::PathBuf, time::SystemTime};

use anyhow::{bail, Context, Result};
use clap::Args;
use deltaward_release::{
    model::{Role, Roles, Root, SPEC_VERSION},
    repo::{self, Repo},
};
use serde_json::json;

use crate::args::{duration, Json, RoleKeys, Summary};

/// Write a signed root.json (first version, or a rotation).
#[derive(Args, Debug)]
#[command(mut_arg("secret", |a| a.help(
    "Secret keys that sign root.json: the new root keys, and for a rotation also the \
     old ones (repeat)"
)))]
pub struct RootArgs {
    /// Repository directory.
    #[arg(long, short = 'o', visible_alias = "output", value_name = "REPO")]
    repo: PathBuf,
    /// Root version: 1 for a new repository, the trusted version + 1 for a rotation.
    #[arg(long, default_value_t = 1)]
    version: u64,
    /// Public keys of the root role (repeat).
    #[arg(long = "root-pub", value_name = "KEY.pub", required = true)]
    root_pub: Vec<PathBuf>,
    /// Public keys of the release role (repeat).
    #[arg(long = "release-pub", value_name = "KEY.pub", required = true)]
    release_pub: Vec<PathBuf>,
    /// Public keys of the channel role (repeat).
    #[arg(long = "channel-pub", value_name = "KEY.pub", required = true)]
    channel_pub: Vec<PathBuf>,
    /// Signatures needed for root, release, channel.
    #[arg(long, num_args = 3, value_names = ["ROOT", "RELEASE", "CHANNEL"], default_values_t = [1, 1, 1])]
    thresholds: Vec<u32>,
    #[command(flatten)]
    keys: RoleKeys,
    /// Validity.
    #[arg(long, default_value = "365d")]
    expires_in: String,
    #[command(flatten)]
    json: Json,
}

/// Collects the role keys of a root: each public key file's id and key line.
#[derive(Debug, Default)]
struct KeyTable(BTreeMap<String, String>);

impl KeyTable {
    /// Reads the public key files of one role and lists them in the table.
    fn role(&mut self, paths: &[PathBuf], threshold: u32) -> Result<Role> {
        let mut ids = Vec::new();
        for p in paths {
            let text = crate::input::read_text(p, "public key", crate::input::KEY_FILE_MAX)?;
            let mut t = deltaward_engine::TrustedKeys::new();
            let id = t
                .add_text(&text)
                .with_context(|| format!("public key {}", p.display()))?;
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty() && !l.starts_with("untrusted comment:"))
                .context("empty public key")?;
            self.0.insert(id.clone(), line.trim().to_owned());
            ids.push(id);
        }
        if threshold == 0 || threshold as usize > ids.len() {
            bail!(
                "threshold {threshold} needs between 1 and {} keys",
                ids.len()
            );
        }
        Ok(Role {
            keyids: ids,
            threshold,
        })
    }
}

pub fn run(a: RootArgs) -> Result<()> {
    let mut keys = KeyTable::default();
    let roles = Roles {
        root: keys.role(&a.root_pub, a.thresholds[0])?,
        release: keys.role(&a.release_pub, a.thresholds[1])?,
        channel: keys.role(&a.channel_pub, a.thresholds[2])?,
    };
    let root = Root {
        kind: "deltaward-root".into(),
        spec_version: SPEC_VERSION,
        version: a.version,
        expires: repo::expiry(SystemTime::now(), duration(&a.expires_in)?)?,
        keys: keys.0,
        roles,
    };
    let secrets = a.keys.load()?;
    let refs: Vec<_> = secrets.iter().collect();
    tracing::info!(
        version = root.version,
        keys = root.keys.len(),
        signers = refs.len(),
        repo = %a.repo.display(),
        "signing root.json"
    );
    repo::write_root(&Repo::new(&a.repo), &root, &refs)?;
    tracing::info!(expires = %root.expires, "root.json written");
    a.json.report(&RootSummary {
        repo: &a.repo,
        root: &root,
    });
    Ok(())
}

/// The root as written.
#[derive(Debug)]
struct RootSummary<'a> {
    repo: &'a std::path::Path,
    root: &'a Root,
}

impl Summary for RootSummary<'_> {
    fn json(&self) -> serde_json::Value {
        json!({"repo": self.repo, "version": self.root.version, "expires": self.root.expires})
    }

    fn text(&self) -> String {
        format!(
            "root.json version {} written to {}",
            self.root.version,
            self.repo.display()
        )
    }
}

//! `deltaward check-release`: verify the latest release for this device, as the
//! device does.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use deltaward_release::{
    check::{check_release, verify_object, Device, Plan, StateDir},
    repo::Repo,
};
use serde_json::json;

use crate::args::{time, Json, Summary};

/// Verify the latest release for this device, as the device does.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Repository directory (as served by the origin or the mirror).
    #[arg(long, value_name = "REPO")]
    repo: PathBuf,
    /// Product.
    #[arg(long)]
    product: String,
    /// The device's state directory (trusted root.json, highest counter).
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Install this root.json as the trusted root first (provisioning).
    #[arg(long, value_name = "root.json")]
    init_root: Option<PathBuf>,
    /// The device's hardware id.
    #[arg(long)]
    hardware: String,
    /// The version the device runs.
    #[arg(long = "current-version")]
    current_version: String,
    /// The device's current image.
    #[arg(long, value_name = "IMG")]
    image: PathBuf,
    /// Check as of this time (RFC 3339) instead of now.
    #[arg(long)]
    at: Option<String>,
    #[command(flatten)]
    json: Json,
}

pub fn run(a: CheckArgs) -> Result<()> {
    let state = StateDir::new(&a.state);
    if let Some(r) = &a.init_root {
        tracing::info!(root = %r.display(), state = %a.state.display(), "installing the trusted root");
        state.init(&std::fs::read(r).with_context(|| format!("reading {}", r.display()))?)?;
    }
    tracing::info!(
        hardware = %a.hardware,
        version = %a.current_version,
        image = %a.image.display(),
        "hashing the device's image"
    );
    let device = Device::from_image(&a.hardware, &a.current_version, &a.image)?;
    let repo = Repo::new(&a.repo);
    tracing::info!(product = %a.product, repo = %a.repo.display(), "checking root, channel and release");
    let c = check_release(&repo, &a.product, &state, &device, time(a.at.as_deref())?)
        .context("the release was refused")?;
    let (plan, object) = match &c.plan {
        Plan::UpToDate => ("up-to-date".to_owned(), None),
        Plan::Patch(b) => (format!("patch from {}", b.version), Some(&b.patch)),
        Plan::Full => ("full image".to_owned(), Some(&c.release.full_image.object)),
    };
    // The object the device would fetch must be the one the signed release names.
    if let Some(o) = object {
        tracing::info!(object = %o.path, length = o.length, "verifying the object to fetch");
        verify_object(&repo, o).context("the release's object was refused")?;
    }
    a.json.answer(&CheckSummary {
        product: &c.release.product,
        version: &c.release.version,
        counter: c.release.counter,
        root_version: c.root_version,
        plan,
        object: object.map(|o| o.path.clone()),
    });
    Ok(())
}

/// The verified release and what the device would fetch.
#[derive(Debug)]
struct CheckSummary<'a> {
    product: &'a str,
    version: &'a str,
    counter: u64,
    root_version: u64,
    plan: String,
    object: Option<String>,
}

impl Summary for CheckSummary<'_> {
    fn json(&self) -> serde_json::Value {
        json!({"product": self.product, "version": self.version, "counter": self.counter,
            "plan": self.plan, "object": self.object, "root_version": self.root_version})
    }

    fn text(&self) -> String {
        format!(
            "ok: {} {} (counter {}) verified under root version {}; plan: {}{}",
            self.product,
            self.version,
            self.counter,
            self.root_version,
            self.plan,
            self.object
                .as_ref()
                .map(|o| format!(" ({o})"))
                .unwrap_or_default()
        )
    }
}

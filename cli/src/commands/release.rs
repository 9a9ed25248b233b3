//! `deltaward release`: a signed release: a patch per base, the full image,
//! release.json and the product's channel.json.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context, Result};
use clap::Args;
use deltaward_release::{
    model::Release,
    repo::{self, BaseImage, PatchFile, ReleaseRequest, Repo},
};
use serde_json::json;

use crate::args::{duration, Effort, Force, Json, RoleKeys, Summary};

/// Build a signed release: a patch per base, the full image, release.json, channel.json.
#[derive(Args, Debug)]
#[command(
    mut_arg("secret", |a| a.help(
        "Release-role secret key (signs release.json, the first one also the patches). \
         Repeat to meet a threshold above one"
    )),
    mut_arg("force", |a| a.help(
        "Replace the repository's release.json of this version (refused otherwise, before \
         any patch is built)"
    ))
)]
pub struct ReleaseArgs {
    /// Product name.
    #[arg(long)]
    product: String,
    /// Version of the new image.
    #[arg(long)]
    version: String,
    /// Release counter; must be above every earlier release of the product.
    #[arg(long)]
    counter: u64,
    /// The new image.
    #[arg(long, value_name = "NEW.img")]
    image: PathBuf,
    /// A base image to build a patch from, as VERSION=PATH (or PATH: the file stem is the version). Repeat.
    #[arg(
        long = "base",
        value_name = "[VERSION=]OLD.img",
        required_unless_present = "patches"
    )]
    bases: Vec<String>,
    /// A patch made elsewhere by `deltaward diff` from a base to --image, listed as it
    /// is: its signature must verify under the release role of the repository's
    /// root (as devices check it), and it must build --image. Without VERSION=, the
    /// version is the release in the channel whose image is the patch's base; a
    /// VERSION= the channel knows must be its base. Repeat; combines with --base.
    #[arg(long = "patch", value_name = "[VERSION=]PATCH.dwp")]
    patches: Vec<String>,
    /// Release notes: compatibility, security fixes, support, approval, installation.
    #[arg(long, value_name = "NOTES.toml")]
    notes: PathBuf,
    #[command(flatten)]
    keys: RoleKeys,
    /// Channel-role secret key (signs channel.json; default: the release keys). Repeat
    /// to meet a threshold above one.
    #[arg(long, value_name = "KEY.key")]
    channel_key: Vec<PathBuf>,
    /// Repository directory to write into.
    #[arg(long, short = 'o', visible_alias = "output", value_name = "REPO")]
    repo: PathBuf,
    #[command(flatten)]
    effort: Effort,
    /// Memory for building patches at once, in MiB.
    #[arg(long, default_value = "4096", value_name = "MIB", value_parser = crate::args::mib)]
    memory_limit: u64,
    /// Validity of the channel document.
    #[arg(long, default_value = "7d")]
    channel_expires_in: String,
    #[command(flatten)]
    force: Force,
    #[command(flatten)]
    json: Json,
}

fn parse_patch(s: &str) -> PatchFile {
    match s.split_once('=') {
        Some((v, p)) => PatchFile {
            version: Some(v.to_owned()),
            path: PathBuf::from(p),
        },
        None => PatchFile {
            version: None,
            path: PathBuf::from(s),
        },
    }
}

fn parse_base(s: &str) -> Result<BaseImage> {
    let (version, path) = match s.split_once('=') {
        Some((v, p)) => (v.to_owned(), PathBuf::from(p)),
        None => {
            let p = PathBuf::from(s);
            let v = p
                .file_stem()
                .map(|x| x.to_string_lossy().into_owned())
                .with_context(|| format!("base {s:?} has no file name to take a version from"))?;
            (v, p)
        }
    };
    Ok(BaseImage { version, path })
}

pub fn run(a: ReleaseArgs) -> Result<()> {
    let repo = Repo::new(&a.repo);
    // As zstd does: an existing output is refused before any work.
    a.force
        .check(&repo.path(&Repo::release_rel(&a.product, &a.version)))?;
    tracing::info!(keys = a.keys.secret.len(), "loading release keys");
    let release_keys = a.keys.load()?;
    // Without --channel-key the release keys sign the channel too (read once).
    let channel_keys = a.keys.load_other(&a.channel_key)?;
    let release_refs: Vec<_> = release_keys.iter().collect();
    let channel_refs: Vec<_> = if channel_keys.is_empty() {
        release_refs.clone()
    } else {
        channel_keys.iter().collect()
    };
    let text = crate::input::read_text(&a.notes, "release notes", crate::input::NOTES_MAX)?;
    let notes = repo::parse_notes(&text)?;
    let req = ReleaseRequest {
        product: a.product,
        version: a.version,
        counter: a.counter,
        image: a.image,
        bases: a
            .bases
            .iter()
            .map(|b| parse_base(b))
            .collect::<Result<_>>()?,
        patches: a.patches.iter().map(|p| parse_patch(p)).collect(),
        notes,
        build: a.effort.build_options(),
        memory_limit: a.memory_limit,
        channel_validity: duration(&a.channel_expires_in)?,
        now: SystemTime::now(),
    };
    tracing::info!(
        product = %req.product,
        version = %req.version,
        counter = req.counter,
        bases = req.bases.len(),
        patches = req.patches.len(),
        level = req.build.level.name(),
        repo = %a.repo.display(),
        "building release"
    );
    let release = a
        .effort
        .pool()?
        .install(|| repo::build_release(&repo, &req, &release_refs, &channel_refs))
        .context("building the release")?;
    tracing::info!(
        patches = release.bases.len(),
        full_image = release.full_image.object.length,
        "release.json and channel.json signed"
    );
    a.json.report(&ReleaseSummary {
        repo: &a.repo,
        release: &release,
    });
    Ok(())
}

/// What a release wrote.
#[derive(Debug)]
struct ReleaseSummary<'a> {
    repo: &'a Path,
    release: &'a Release,
}

impl Summary for ReleaseSummary<'_> {
    fn json(&self) -> serde_json::Value {
        let r = self.release;
        json!({
            "product": r.product,
            "version": r.version,
            "counter": r.counter,
            "repo": self.repo,
            "release": Repo::release_rel(&r.product, &r.version),
            "full_image": {"path": r.full_image.object.path, "length": r.full_image.object.length},
            "patches": r.bases.iter().map(|b| json!({
                "from": b.version, "path": b.patch.path, "length": b.patch.length,
            })).collect::<Vec<_>>(),
        })
    }

    fn text(&self) -> String {
        let r = self.release;
        let mut s = format!(
            "release {} {} (counter {}) written to {}: {} patch(es), full image {} bytes",
            r.product,
            r.version,
            r.counter,
            self.repo.display(),
            r.bases.len(),
            r.full_image.object.length
        );
        for b in &r.bases {
            s += &format!(
                "\n  from {}: patch {} bytes ({})",
                b.version, b.patch.length, b.patch.path
            );
        }
        s
    }
}

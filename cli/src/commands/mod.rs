//! One module per command, each holding its clap `Args` and its `run()`.

pub mod apply;
pub mod audit;
pub mod channel;
pub mod check_release;
pub mod demo;
pub mod diff;
pub mod inspect;
pub mod keygen;
pub mod mirror;
pub mod notice;
pub mod publish;
pub mod release;
pub mod root;
pub mod update;
pub mod verify;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a new minisign-compatible key pair.
    Keygen(keygen::KeygenArgs),
    /// Build a signed patch that turns OLD into NEW.
    Diff(diff::DiffArgs),
    /// Rebuild the new image from OLD and PATCH, verifying everything.
    Apply(apply::ApplyArgs),
    /// Check a patch's signature and payloads; with --old, decode it fully.
    Verify(verify::VerifyArgs),
    /// Show a patch's manifest (no key needed; nothing here is verified).
    Inspect(inspect::InspectArgs),
    /// Build a signed release: a patch per base, the full image, release.json, channel.json.
    Release(release::ReleaseArgs),
    /// Manage a product's signed channel.
    #[command(subcommand)]
    Channel(channel::ChannelCmd),
    /// Write a signed root.json (first version, or a rotation).
    Root(root::RootArgs),
    /// Verify the latest release for this device, as the device does.
    CheckRelease(check_release::CheckArgs),
    /// Render the update notice of a release.json for operators.
    Notice(notice::NoticeArgs),
    /// Update this device's image through the site's mirrors, and report the delivery.
    Update(update::UpdateArgs),
    /// Serve a repository or a verified caching mirror of one; prefetch with `sync`.
    #[command(subcommand)]
    Mirror(mirror::MirrorCmd),
    /// Upload a repository to S3-compatible object storage, verified first.
    Publish(publish::PublishArgs),
    /// Check delivery evidence: a mirror's tamper-evident delivery log.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Run the whole pipeline on built-in defaults: keys, images, diff, apply, verify, release.
    Demo(demo::DemoArgs),
}

impl Command {
    pub fn run(self) -> Result<()> {
        match self {
            Self::Keygen(a) => keygen::run(a),
            Self::Diff(a) => diff::run(a),
            Self::Apply(a) => apply::run(a),
            Self::Verify(a) => verify::run(a),
            Self::Inspect(a) => inspect::run(a),
            Self::Release(a) => release::run(a),
            Self::Channel(c) => channel::run(c),
            Self::Root(a) => root::run(a),
            Self::CheckRelease(a) => check_release::run(a),
            Self::Notice(a) => notice::run(a),
            Self::Mirror(c) => mirror::run(c),
            Self::Update(a) => update::run(a),
            Self::Publish(a) => publish::run(a),
            Self::Audit(c) => audit::run(c),
            Self::Demo(a) => demo::run(a),
        }
    }
}

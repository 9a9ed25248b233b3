//! `release`, `channel`, `root`, `check-release` and `notice`.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use deltaward_engine::{BuildOptions, Level};
use deltaward_release::{
    check::{check_release, verify_object, Device, Plan, StateDir},
    model::{Release, Role, Roles, Root, SPEC_VERSION},
    notice::{self, Format},
    repo::{self, BaseImage, ReleaseRequest, Repo},
};

use crate::{args::LevelArg, keys};

fn level(l: LevelArg) -> Level {
    l.into()
}

fn duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s)
        .with_context(|| format!("duration {s:?} (examples: 7d, 12h, 365d)"))
}

fn now(at: Option<&str>) -> Result<SystemTime> {
    match at {
        Some(t) => humantime::parse_rfc3339(t)
            .with_context(|| format!("time {t:?} (RFC 3339, e.g. 2026-11-28T12:00:00Z)")),
        None => Ok(SystemTime::now()),
    }
}

#[derive(Args, Debug)]
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
    #[arg(long = "base", value_name = "[VERSION=]OLD.img", required = true)]
    bases: Vec<String>,
    /// Release notes: compatibility, security fixes, support, approval, installation.
    #[arg(long, value_name = "NOTES.toml")]
    notes: PathBuf,
    /// Release-role secret key (signs release.json, the first one also the patches).
    /// Repeat to meet a threshold above one.
    #[arg(
        short = 's',
        long = "secret-key",
        value_name = "KEY.key",
        required = true
    )]
    secret: Vec<PathBuf>,
    /// Channel-role secret key (signs channel.json; default: the release keys). Repeat
    /// to meet a threshold above one.
    #[arg(long, value_name = "KEY.key")]
    channel_key: Vec<PathBuf>,
    /// Password file for the secret keys.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Repository directory to write into.
    #[arg(short, long, value_name = "OUTDIR")]
    output: PathBuf,
    /// Diff level.
    #[arg(long, value_enum, default_value = "default")]
    level: LevelArg,
    /// Worker threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Memory for building patches at once, in MiB.
    #[arg(long, default_value_t = 4096, value_name = "MIB")]
    memory_limit: u64,
    /// Validity of the channel document.
    #[arg(long, default_value = "7d")]
    channel_expires_in: String,
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

pub fn release(a: ReleaseArgs) -> Result<()> {
    let pw = a.password_file.as_deref();
    let release_keys = keys::secrets(&a.secret, pw)?;
    // Without --channel-key the release keys sign the channel too (read once).
    let channel_keys = if a.channel_key.is_empty() {
        Vec::new()
    } else {
        keys::secrets(&a.channel_key, pw)?
    };
    let release_refs: Vec<_> = release_keys.iter().collect();
    let channel_refs: Vec<_> = if channel_keys.is_empty() {
        release_refs.clone()
    } else {
        channel_keys.iter().collect()
    };
    let text = std::fs::read_to_string(&a.notes)
        .with_context(|| format!("reading {}", a.notes.display()))?;
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
        notes,
        build: BuildOptions::default().level(level(a.level)),
        memory_limit: a.memory_limit << 20,
        channel_validity: duration(&a.channel_expires_in)?,
        now: SystemTime::now(),
    };
    let repo = Repo::new(&a.output);
    let r = crate::args::thread_pool(a.threads)?
        .install(|| repo::build_release(&repo, &req, &release_refs, &channel_refs))
        .context("building the release")?;
    eprintln!(
        "release {} {} (counter {}) written to {}: {} patch(es), full image {} bytes",
        r.product,
        r.version,
        r.counter,
        a.output.display(),
        r.bases.len(),
        r.full_image.object.length
    );
    for b in &r.bases {
        eprintln!(
            "  from {}: patch {} bytes ({})",
            b.version, b.patch.length, b.patch.path
        );
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ChannelCmd {
    /// Re-sign the product's channel.json with a fresh expiry, rebuilding nothing.
    Refresh {
        /// Product.
        #[arg(long)]
        product: String,
        /// Channel-role secret key (repeat to meet a threshold above one).
        #[arg(
            short = 's',
            long = "secret-key",
            value_name = "KEY.key",
            required = true
        )]
        secret: Vec<PathBuf>,
        /// Password file.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Repository directory.
        #[arg(short, long, value_name = "OUTDIR")]
        output: PathBuf,
        /// Validity.
        #[arg(long, default_value = "7d")]
        expires_in: String,
    },
}

pub fn channel(c: ChannelCmd) -> Result<()> {
    match c {
        ChannelCmd::Refresh {
            product,
            secret,
            password_file,
            output,
            expires_in,
        } => {
            let signers = keys::secrets(&secret, password_file.as_deref())?;
            let refs: Vec<_> = signers.iter().collect();
            let ch = repo::refresh_channel(
                &Repo::new(&output),
                &product,
                &refs,
                SystemTime::now(),
                duration(&expires_in)?,
            )?;
            eprintln!(
                "channel {product} version {} signed, expires {}",
                ch.version, ch.expires
            );
            Ok(())
        }
    }
}

#[derive(Args, Debug)]
pub struct RootArgs {
    /// Repository directory.
    #[arg(short, long, value_name = "OUTDIR")]
    output: PathBuf,
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
    /// Secret keys that sign root.json: the new root keys, and for a rotation also the
    /// old ones (repeat).
    #[arg(
        short = 's',
        long = "secret-key",
        value_name = "KEY.key",
        required = true
    )]
    secret: Vec<PathBuf>,
    /// Password file for the secret keys.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Validity.
    #[arg(long, default_value = "365d")]
    expires_in: String,
}

pub fn root(a: RootArgs) -> Result<()> {
    let mut keymap = BTreeMap::new();
    let mut role = |paths: &[PathBuf], threshold: u32| -> Result<Role> {
        let mut ids = Vec::new();
        for p in paths {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let mut t = deltaward_engine::TrustedKeys::new();
            let id = t
                .add_text(&text)
                .with_context(|| format!("public key {}", p.display()))?;
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty() && !l.starts_with("untrusted comment:"))
                .context("empty public key")?;
            keymap.insert(id.clone(), line.trim().to_owned());
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
    };
    let roles = Roles {
        root: role(&a.root_pub, a.thresholds[0])?,
        release: role(&a.release_pub, a.thresholds[1])?,
        channel: role(&a.channel_pub, a.thresholds[2])?,
    };
    let root = Root {
        kind: "deltaward-root".into(),
        spec_version: SPEC_VERSION,
        version: a.version,
        expires: repo::expiry(SystemTime::now(), duration(&a.expires_in)?)?,
        keys: keymap,
        roles,
    };
    let secrets = keys::secrets(&a.secret, a.password_file.as_deref())?;
    let refs: Vec<_> = secrets.iter().collect();
    repo::write_root(&Repo::new(&a.output), &root, &refs)?;
    eprintln!(
        "root.json version {} written to {}",
        root.version,
        a.output.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Repository directory (as served by the origin or the mirror).
    #[arg(long, value_name = "DIR")]
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
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn check(a: CheckArgs) -> Result<()> {
    let state = StateDir::new(&a.state);
    if let Some(r) = &a.init_root {
        state.init(&std::fs::read(r).with_context(|| format!("reading {}", r.display()))?)?;
    }
    let device = Device::from_image(&a.hardware, &a.current_version, &a.image)?;
    let repo = Repo::new(&a.repo);
    let c = check_release(&repo, &a.product, &state, &device, now(a.at.as_deref())?)
        .context("the release was refused")?;
    let (plan, object) = match &c.plan {
        Plan::UpToDate => ("up-to-date".to_owned(), None),
        Plan::Patch(b) => (format!("patch from {}", b.version), Some(&b.patch)),
        Plan::Full => ("full image".to_owned(), Some(&c.release.full_image.object)),
    };
    // The object the device would fetch must be the one the signed release names.
    if let Some(o) = object {
        verify_object(&repo, o).context("the release's object was refused")?;
    }
    let object = object.map(|o| o.path.clone());
    if a.json {
        println!(
            "{}",
            serde_json::json!({"product": c.release.product, "version": c.release.version, "counter": c.release.counter,
                "plan": plan, "object": object, "root_version": c.root_version})
        );
    } else {
        println!(
            "ok: {} {} (counter {}) verified under root version {}; plan: {plan}{}",
            c.release.product,
            c.release.version,
            c.release.counter,
            c.root_version,
            object.map(|o| format!(" ({o})")).unwrap_or_default()
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Markdown,
    Html,
    Json,
}

#[derive(Args, Debug)]
pub struct NoticeArgs {
    /// The release.json to render.
    release: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
}

pub fn notice(a: NoticeArgs) -> Result<()> {
    let bytes =
        std::fs::read(&a.release).with_context(|| format!("reading {}", a.release.display()))?;
    let r: Release = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing {}", a.release.display()))?;
    let f = match a.format {
        FormatArg::Text => Format::Text,
        FormatArg::Markdown => Format::Markdown,
        FormatArg::Html => Format::Html,
        FormatArg::Json => Format::Json,
    };
    print!("{}", notice::render(&r, f));
    Ok(())
}

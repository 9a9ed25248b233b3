//! The subcommands.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Write},
    path::Path,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use deltaward_engine::{
    apply::{self, ApplyOptions},
    atomic::{self, AtomicFile},
    error::hex,
    image::{FileSource, Image},
    sign, BuildOptions, Error, Level, Manifest, Patch,
};
use serde_json::json;

use crate::{exit, keys, progress, Command, LevelArg};

/// Maps an error chain to the documented exit code.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(err) = cause.downcast_ref::<deltaward_release::Error>() {
            use deltaward_release::Error as R;
            return match err {
                R::Rollback { .. } => exit::ROLLBACK,
                R::Expired { .. } => exit::FREEZE,
                R::WrongHardware { .. } => exit::WRONG_HARDWARE,
                R::BaseMismatch { .. } => exit::BASE_MISMATCH,
                R::MixAndMatch { .. } => exit::MIX_AND_MATCH,
                R::UnknownKey { .. } => exit::UNKNOWN_KEY,
                R::Threshold { .. } => exit::THRESHOLD,
                R::RootRotation(_) => exit::ROOT_ROTATION,
                R::Limit { .. } => exit::LIMIT,
                R::Signature { .. } | R::Comment { .. } => exit::SIGNATURE,
                _ => exit::FAILURE,
            };
        }
        if let Some(err) = cause.downcast_ref::<Error>() {
            return match err {
                Error::Signature(_) => exit::SIGNATURE,
                Error::Format(_)
                | Error::FrameHash { .. }
                | Error::Decode { .. }
                | Error::TargetMismatch { .. } => match err {
                    Error::Format(deltaward_engine::FormatError::LimitExceeded {
                        field: "target size",
                        ..
                    }) => exit::LIMIT,
                    _ => exit::CORRUPT,
                },
                Error::SourceMismatch { .. } => exit::WRONG_BASE,
                Error::MemoryLimit { .. } => exit::LIMIT,
                Error::Key(_) => exit::KEY,
                _ => exit::FAILURE,
            };
        }
        if cause.downcast_ref::<deltaward_engine::KeyError>().is_some() {
            return exit::KEY;
        }
    }
    exit::FAILURE
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Keygen {
            secret,
            public,
            unencrypted,
            password_file,
            force,
        } => keygen(
            &secret,
            &public,
            unencrypted,
            password_file.as_deref(),
            force,
        ),
        Command::Diff {
            old,
            new,
            output,
            secret,
            password_file,
            level,
            threads,
            block_size,
            max_window,
            memory_limit,
            json,
        } => {
            let key = keys::secret(&secret, password_file.as_deref())?;
            let mut opts = BuildOptions::default()
                .level(match level {
                    LevelArg::Fast => Level::Fast,
                    LevelArg::Default => Level::Default,
                    LevelArg::Best => Level::Best,
                })
                .block_size(block_size)
                .memory_limit(memory_limit << 20);
            if let Some(w) = max_window {
                opts = opts.max_window(w << 20);
            }
            let pool = thread_pool(threads)?;
            let summary = pool.install(|| diff(&old, &new, &output, &key, &opts))?;
            report(json, &summary);
            Ok(())
        }
        Command::Apply {
            old,
            patch,
            output,
            public,
            resume,
            memory_limit,
            checkpoint_mib,
            json,
            crash_after_frames,
        } => {
            let trusted = keys::trusted(&public)?;
            let opts = ApplyOptions::default()
                .memory_limit(memory_limit << 20)
                .resume(resume)
                .checkpoint_bytes(checkpoint_mib << 20);
            let summary = apply_cmd(&old, &patch, &output, &trusted, &opts, crash_after_frames)?;
            report(json, &summary);
            Ok(())
        }
        Command::Verify { patch, public, old } => {
            let trusted = keys::trusted(&public)?;
            let mut reader = open_patch(&patch)?;
            let source = old.as_deref().map(FileSource::open).transpose()?;
            let head = apply::verify_patch(
                &mut reader,
                &trusted,
                source.as_ref(),
                &ApplyOptions::default(),
            )
            .with_context(|| format!("verifying {}", patch.display()))?;
            println!(
                "ok: {} signed by key {}; target {} bytes, BLAKE3 {}{}",
                patch.display(),
                head.key_id,
                head.manifest.target_size,
                hex(&head.manifest.target_hash),
                if old.is_some() {
                    "; old image and every frame verified"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Command::Inspect {
            patch,
            json,
            extract_manifest,
            extract_signature,
        } => inspect(
            &patch,
            json,
            extract_manifest.as_deref(),
            extract_signature.as_deref(),
        ),
        Command::Release(a) => crate::releasecmd::release(a),
        Command::Channel(c) => crate::releasecmd::channel(c),
        Command::Root(a) => crate::releasecmd::root(a),
        Command::CheckRelease(a) => crate::releasecmd::check(a),
        Command::Notice(a) => crate::releasecmd::notice(a),
        Command::Demo {
            dir,
            size,
            old,
            new,
        } => crate::demo::run(dir.as_deref(), size, old.as_deref(), new.as_deref()),
    }
}

pub fn thread_pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        b = b.num_threads(n);
    }
    b.build().context("starting worker threads")
}

fn open_patch(path: &Path) -> Result<BufReader<File>> {
    let f = File::open(path).with_context(|| format!("opening patch {}", path.display()))?;
    Ok(BufReader::with_capacity(1 << 16, f))
}

fn keygen(
    secret: &Path,
    public: &Path,
    unencrypted: bool,
    password_file: Option<&Path>,
    force: bool,
) -> Result<()> {
    if !force {
        for p in [secret, public] {
            if p.exists() {
                bail!("{} exists; pass --force to replace it", p.display());
            }
        }
    }
    let pw = if unencrypted {
        None
    } else {
        Some(keys::password(
            password_file,
            "Password for the new secret key: ",
            true,
        )?)
    };
    let kp = sign::generate_keypair(pw.as_deref())?;
    atomic::write_private_file(secret, kp.secret.as_bytes()).context("writing secret key")?;
    atomic::write_file(public, kp.public.as_bytes()).context("writing public key")?;
    eprintln!(
        "key {} written: secret {} ({}), public {}",
        kp.key_id,
        secret.display(),
        if unencrypted {
            "unencrypted"
        } else {
            "password-protected"
        },
        public.display()
    );
    Ok(())
}

/// What a diff did, for the summary.
pub struct DiffSummary {
    pub patch: std::path::PathBuf,
    pub old_size: u64,
    pub new_size: u64,
    pub patch_size: u64,
    pub seconds: f64,
    pub manifest: Manifest,
}

pub fn diff(
    old: &Path,
    new: &Path,
    output: &Path,
    key: &sign::SecretKey,
    opts: &BuildOptions,
) -> Result<DiffSummary> {
    let start = Instant::now();
    let old_img = Image::open(old)?;
    let new_img = Image::open(new)?;
    // Fail early, before the work, if the output cannot be created.
    let mut out = AtomicFile::create(output)?;
    let bar = progress::bytes(new_img.len() as u64, "diff");
    let patch = Patch::build_with_progress(&old_img, &new_img, opts, &|n| bar.inc(n))
        .with_context(|| format!("diffing {} -> {}", old.display(), new.display()))?
        .sign(key)?;
    bar.finish_and_clear();
    patch.write_to(BufWriter::with_capacity(1 << 20, out.file()))?;
    out.commit()?;
    Ok(DiffSummary {
        patch: output.to_path_buf(),
        old_size: old_img.len() as u64,
        new_size: new_img.len() as u64,
        patch_size: patch.len(),
        seconds: start.elapsed().as_secs_f64(),
        manifest: patch.manifest().clone(),
    })
}

fn report(json: bool, s: &dyn Summary) {
    if json {
        println!("{}", s.json());
    } else {
        eprintln!("{}", s.text());
    }
}

trait Summary {
    fn json(&self) -> serde_json::Value;
    fn text(&self) -> String;
}

impl Summary for DiffSummary {
    fn json(&self) -> serde_json::Value {
        let m = &self.manifest;
        json!({
            "patch": self.patch,
            "old_size": self.old_size,
            "new_size": self.new_size,
            "patch_size": self.patch_size,
            "seconds": self.seconds,
            "frames": m.frames.len(),
            "max_window": m.max_window,
            "apply_memory": m.apply_memory(),
            "target_blake3": hex(&m.target_hash),
        })
    }
    fn text(&self) -> String {
        format!(
            "wrote {}: {} bytes ({:.2}% of the new image), {} frames, in {:.2} s",
            self.patch.display(),
            self.patch_size,
            100.0 * self.patch_size as f64 / self.new_size.max(1) as f64,
            self.manifest.frames.len(),
            self.seconds
        )
    }
}

/// What an apply did.
pub struct ApplySummary {
    pub output: std::path::PathBuf,
    pub report: apply::ApplyReport,
    pub seconds: f64,
}

impl Summary for ApplySummary {
    fn json(&self) -> serde_json::Value {
        let m = &self.report.manifest;
        json!({
            "output": self.output,
            "size": m.target_size,
            "blake3": hex(&m.target_hash),
            "key_id": self.report.key_id,
            "resumed_frames": self.report.resumed_frames,
            "seconds": self.seconds,
        })
    }
    fn text(&self) -> String {
        let m = &self.report.manifest;
        format!(
            "wrote {}: {} bytes, BLAKE3 {} verified (signed by {}{}), in {:.2} s",
            self.output.display(),
            m.target_size,
            hex(&m.target_hash),
            self.report.key_id,
            if self.report.resumed_frames > 0 {
                format!(", resumed after {} frames", self.report.resumed_frames)
            } else {
                String::new()
            },
            self.seconds
        )
    }
}

pub fn apply_cmd(
    old: &Path,
    patch: &Path,
    output: &Path,
    trusted: &sign::TrustedKeys,
    opts: &ApplyOptions,
    crash_after_frames: Option<u64>,
) -> Result<ApplySummary> {
    let start = Instant::now();
    let total = std::fs::metadata(old).map(|m| m.len()).unwrap_or(0);
    let bar = progress::bytes(total, "apply");
    let frames = std::sync::atomic::AtomicU64::new(0);
    let progress = |n: u64| {
        bar.inc(n);
        if let Some(limit) = crash_after_frames {
            if frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 > limit {
                std::process::abort();
            }
        }
    };
    let report = apply::apply_to_file(old, patch, output, trusted, opts, &progress)
        .with_context(|| format!("applying {} to {}", patch.display(), old.display()))?;
    bar.finish_and_clear();
    Ok(ApplySummary {
        output: output.to_path_buf(),
        report,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn inspect(
    path: &Path,
    json: bool,
    manifest_out: Option<&Path>,
    sig_out: Option<&Path>,
) -> Result<()> {
    let mut reader = open_patch(path)?;
    let (header, manifest_bytes, signature) = apply::read_unverified(&mut reader)
        .with_context(|| format!("reading {}", path.display()))?;
    if let (Some(m), Some(s)) = (manifest_out, sig_out) {
        atomic::write_file(m, &manifest_bytes)?;
        atomic::write_file(s, signature.as_bytes())?;
    }
    let m = Manifest::parse(&manifest_bytes)
        .with_context(|| format!("parsing the manifest of {}", path.display()))?;
    let comment = signature
        .lines()
        .find_map(|l| l.strip_prefix("trusted comment: "))
        .unwrap_or("")
        .to_owned();
    let mut kinds = std::collections::BTreeMap::<&str, (u64, u64, u64)>::new();
    for f in &m.frames {
        let e = kinds.entry(f.kind.name()).or_default();
        e.0 += 1;
        e.1 += f.target_len;
        e.2 += f.payload_len;
    }
    if json {
        let frames: Vec<_> = m
            .frames
            .iter()
            .map(|f| {
                json!({
                    "kind": f.kind.name(),
                    "target_offset": f.target_offset,
                    "target_len": f.target_len,
                    "source_offset": f.source_offset,
                    "source_len": f.source_len,
                    "payload_offset": f.payload_offset,
                    "payload_len": f.payload_len,
                    "payload_blake3": hex(&f.payload_hash),
                    "output_blake3": hex(&f.output_hash),
                })
            })
            .collect();
        let v = json!({
            "format_version": deltaward_engine::format::VERSION,
            "verified": false,
            "tool": m.tool,
            "options": m.options,
            "source": {"size": m.source_size, "blake3": hex(&m.source_hash)},
            "target": {"size": m.target_size, "blake3": hex(&m.target_hash)},
            "block_size": m.block_size,
            "max_window": m.max_window,
            "max_frame_len": m.max_frame_len,
            "apply_memory": m.apply_memory(),
            "manifest_len": header.manifest_len,
            "payload_len": m.payload_len,
            "trusted_comment": comment,
            "frames": frames,
        });
        println!("{v:#}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "patch       {} (format v{}, not verified: use `deltaward verify`)",
        path.display(),
        deltaward_engine::format::VERSION
    )?;
    writeln!(out, "tool        {}", m.tool)?;
    writeln!(out, "options     {}", m.options)?;
    writeln!(
        out,
        "source      {} bytes, BLAKE3 {}",
        m.source_size,
        hex(&m.source_hash)
    )?;
    writeln!(
        out,
        "target      {} bytes, BLAKE3 {}",
        m.target_size,
        hex(&m.target_hash)
    )?;
    writeln!(out, "signature   {comment}")?;
    writeln!(
        out,
        "manifest    {} bytes, payload {} bytes",
        header.manifest_len, m.payload_len
    )?;
    writeln!(
        out,
        "apply needs {} bytes of working memory (largest window {})",
        m.apply_memory(),
        m.max_window
    )?;
    writeln!(out, "frames      {}", m.frames.len())?;
    for (kind, (n, out_len, payload)) in kinds {
        writeln!(
            out,
            "  {kind:<8} {n:>7} frames {out_len:>14} bytes out {payload:>12} bytes payload"
        )?;
    }
    Ok(())
}

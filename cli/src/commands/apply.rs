//! `deltaward apply`: rebuild the new image from OLD and PATCH, verifying everything.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use anyhow::{Context, Result};
use clap::Args;
use deltaward_engine::{apply_to_file, ApplyOptions, ApplyReport, TrustedKeys};
use serde_json::json;

use crate::{
    args::{mib, output_file, Json, Summary, TrustedKeyFiles},
    progress,
};

/// Rebuild the new image from OLD and PATCH, verifying everything.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The old image.
    old: PathBuf,
    /// The patch.
    patch: PathBuf,
    /// Where to write the new image (replaced only after every check passed).
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    #[command(flatten)]
    keys: TrustedKeyFiles,
    /// Continue an interrupted apply from its last verified frame.
    #[arg(long)]
    resume: bool,
    /// Refuse patches needing more working memory than this, in MiB.
    #[arg(long, default_value = "256", value_name = "MIB", value_parser = mib)]
    memory_limit: u64,
    /// Checkpoint progress for --resume every this many MiB of output.
    #[arg(long, default_value = "32", value_name = "MIB", value_parser = mib)]
    checkpoint_mib: u64,
    #[command(flatten)]
    json: Json,
    /// Testing aid: abort the process after this many frames (simulates a crash).
    #[arg(long, hide = true)]
    crash_after_frames: Option<u64>,
}

pub fn run(a: ApplyArgs) -> Result<()> {
    output_file(&a.output)?;
    let trusted = a.keys.load()?;
    let opts = ApplyOptions::default()
        .memory_limit(a.memory_limit)
        .resume(a.resume)
        .checkpoint_bytes(a.checkpoint_mib);
    // The pool is started first, so that its threads start while the patch's
    // signature is checked (rayon's global pool would start at the first parallel
    // hash: 2 to 3 ms of a small image's apply, measured with strace).
    let summary = crate::args::thread_pool(None)?.install(|| {
        apply_file(
            &a.old,
            &a.patch,
            &a.output,
            &trusted,
            &opts,
            a.crash_after_frames,
        )
    })?;
    a.json.report(&summary);
    Ok(())
}

/// What an apply did.
pub struct ApplySummary {
    pub output: PathBuf,
    pub report: ApplyReport,
    pub seconds: f64,
}

impl Summary for ApplySummary {
    fn json(&self) -> serde_json::Value {
        let m = &self.report.manifest;
        json!({
            "output": self.output,
            "size": m.target_size,
            "blake3": m.target_hash.to_string(),
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
            m.target_hash,
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

/// Applies the patch file to the image file, writing `output` atomically.
pub fn apply_file(
    old: &Path,
    patch: &Path,
    output: &Path,
    trusted: &TrustedKeys,
    opts: &ApplyOptions,
    crash_after_frames: Option<u64>,
) -> Result<ApplySummary> {
    let start = Instant::now();
    let total = std::fs::metadata(old).map(|m| m.len()).unwrap_or(0);
    let bar = progress::bytes(total, "apply");
    let frames = AtomicU64::new(0);
    let progress = |n: u64| {
        bar.inc(n);
        if let Some(limit) = crash_after_frames {
            if frames.fetch_add(1, Ordering::Relaxed) + 1 > limit {
                std::process::abort();
            }
        }
    };
    let report = apply_to_file(old, patch, output, trusted, opts, &progress)
        .with_context(|| format!("applying {} to {}", patch.display(), old.display()))?;
    bar.finish_and_clear();
    tracing::info!(
        frames = report.manifest.frames.len(),
        resumed = report.resumed_frames,
        "applied"
    );
    Ok(ApplySummary {
        output: output.to_path_buf(),
        report,
        seconds: start.elapsed().as_secs_f64(),
    })
}

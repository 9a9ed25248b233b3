//! `deltaward diff`: build a signed patch OLD -> NEW.

use std::{
    io::BufWriter,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result};
use clap::Args;
use deltaward_engine::{AtomicFile, BuildOptions, Image, Manifest, Patch, SecretKey};
use serde_json::json;

use crate::{
    args::{mib, output_file, Effort, Force, Json, SigningKey, Summary},
    progress,
};

/// Build a signed patch that turns OLD into NEW.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The old image (what devices have).
    old: PathBuf,
    /// The new image.
    new: PathBuf,
    /// Patch file to write (an existing one only with --force).
    #[arg(short, long, value_name = "PATCH")]
    output: PathBuf,
    #[command(flatten)]
    key: SigningKey,
    #[command(flatten)]
    effort: Effort,
    /// Block size of the old image's index, in bytes.
    #[arg(long, default_value_t = 4096, value_name = "BYTES")]
    block_size: u32,
    /// Largest reference window per frame, in MiB (bounds the applier's memory).
    #[arg(long, value_name = "MIB", value_parser = mib)]
    max_window: Option<u64>,
    /// Memory for encoders running at once, in MiB.
    #[arg(long, default_value = "2048", value_name = "MIB", value_parser = mib)]
    memory_limit: u64,
    #[command(flatten)]
    force: Force,
    #[command(flatten)]
    json: Json,
}

pub fn run(a: DiffArgs) -> Result<()> {
    a.force.check(&a.output)?;
    output_file(&a.output)?;
    let key = a.key.load()?;
    let mut opts = a
        .effort
        .build_options()
        .block_size(a.block_size)
        .memory_limit(a.memory_limit);
    if let Some(w) = a.max_window {
        opts = opts.max_window(w);
    }
    let summary = a
        .effort
        .pool()?
        .install(|| build_patch_file(&a.old, &a.new, &a.output, &key, &opts, a.force.force))?;
    a.json.report(&summary);
    Ok(())
}

/// What a diff did, for the summary.
pub struct DiffSummary {
    pub patch: PathBuf,
    pub old_size: u64,
    pub new_size: u64,
    pub patch_size: u64,
    pub seconds: f64,
    pub manifest: Manifest,
}

/// Frees one large block, so that the C library reuses the memory the diff frees.
/// glibc's malloc gives a block above its mmap threshold (128 KiB at start) a
/// mapping of its own, every page of it a fault when first touched, and unmaps it
/// when it is freed; freeing such a block raises the threshold to that block's size,
/// up to 32 MiB (mallopt(3), "dynamic mmap threshold"). A diff allocates and frees
/// blocks of 1 to 30 MiB on every thread (the learning's sites, the encoders'
/// tables, growing vectors): with the threshold at 31 MiB they come from the heap,
/// and what one phase frees serves the next. On qemu-x86 that halves the page
/// faults, and the diff takes 12 % less CPU time. The block is never touched: one
/// mmap and one munmap. Other C libraries take it as an ordinary allocation. Not
/// for apply, whose working memory is one mapping of its own, and whose peak RSS
/// the retained heap would raise by up to a megabyte.
fn raise_mmap_threshold() {
    let block: Vec<u8> = Vec::with_capacity(31 << 20);
    std::hint::black_box(&block);
}

/// Diffs the image files `old` and `new` on the caller's rayon pool, signs the
/// patch and writes it to `output` atomically; an existing `output` is replaced only
/// with `replace` (the rename itself refuses otherwise).
pub fn build_patch_file(
    old: &Path,
    new: &Path,
    output: &Path,
    key: &SecretKey,
    opts: &BuildOptions,
    replace: bool,
) -> Result<DiffSummary> {
    raise_mmap_threshold();
    let start = Instant::now();
    let old_img = Image::open(old)?;
    let new_img = Image::open(new)?;
    tracing::debug!(ms = start.elapsed().as_millis() as u64, "images opened");
    // Fail early, before the work, if the output cannot be created.
    let mut out = AtomicFile::create(output)?;
    tracing::info!(
        old = old_img.len(),
        new = new_img.len(),
        level = opts.level.name(),
        "diffing"
    );
    let bar = progress::bytes(new_img.len() as u64, "diff");
    let patch = Patch::build_images(&old_img, &new_img, opts, &|n| bar.inc(n))
        .with_context(|| format!("diffing {} -> {}", old.display(), new.display()))?;
    tracing::debug!(ms = start.elapsed().as_millis() as u64, "diffed");
    let (old_size, new_size) = (old_img.len() as u64, new_img.len() as u64);
    // Unmapping the images takes the kernel 20 to 30 ms each for 400 to 600 MiB
    // (their page tables), on one thread: done beside the signing, writing and
    // syncing of the patch rather than after them. Where no thread can be started,
    // the closure is dropped here, and the images with it.
    let unmapped = std::thread::Builder::new()
        .name("unmap images".into())
        .spawn(move || drop((old_img, new_img)));
    let patch = patch.sign(key)?;
    bar.finish_and_clear();
    tracing::debug!(ms = start.elapsed().as_millis() as u64, "diffed and signed");
    let written = Instant::now();
    patch.write_to(BufWriter::with_capacity(1 << 20, out.file()))?;
    if replace {
        out.commit()?;
    } else {
        out.commit_new()?;
    }
    tracing::debug!(
        ms = written.elapsed().as_millis() as u64,
        "patch written, synced and renamed"
    );
    tracing::info!(bytes = patch.len(), "patch written");
    if let Ok(handle) = unmapped {
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    }
    Ok(DiffSummary {
        patch: output.to_path_buf(),
        old_size,
        new_size,
        patch_size: patch.len(),
        seconds: start.elapsed().as_secs_f64(),
        manifest: patch.manifest().clone(),
    })
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
            "target_blake3": m.target_hash.to_string(),
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

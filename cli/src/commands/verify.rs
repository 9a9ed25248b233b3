//! `deltaward verify`: check a patch's signature and payloads; with --old, decode it.

use std::{fs::File, io::BufReader, path::PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use deltaward_engine::{verify_patch, ApplyOptions, FileSource};

use crate::args::TrustedKeyFiles;

/// Check a patch's signature and payloads; with --old, decode it fully.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The patch.
    patch: PathBuf,
    #[command(flatten)]
    keys: TrustedKeyFiles,
    /// Also check the old image and every frame's output.
    #[arg(long, value_name = "OLD")]
    old: Option<PathBuf>,
    /// Refuse patches needing more working memory than this, in MiB.
    #[arg(long, default_value = "256", value_name = "MIB", value_parser = crate::args::mib)]
    memory_limit: u64,
}

pub fn run(a: VerifyArgs) -> Result<()> {
    let trusted = a.keys.load()?;
    let file =
        File::open(&a.patch).with_context(|| format!("opening patch {}", a.patch.display()))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let source = a.old.as_deref().map(FileSource::open).transpose()?;
    let opts = ApplyOptions::default().memory_limit(a.memory_limit);
    let head = verify_patch(&mut reader, &trusted, source.as_ref(), &opts)
        .with_context(|| format!("verifying {}", a.patch.display()))?;
    println!(
        "ok: {} signed by key {}; target {} bytes, BLAKE3 {}{}",
        a.patch.display(),
        head.key_id,
        head.manifest.target_size,
        head.manifest.target_hash,
        if a.old.is_some() {
            "; old image and every frame verified"
        } else {
            ""
        }
    );
    Ok(())
}

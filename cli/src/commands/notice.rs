//! `deltaward notice`: render the update notice of a release.json for operators.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use deltaward_release::{
    model::Release,
    notice::{self, Format},
};

/// Render the update notice of a release.json for operators.
#[derive(Args, Debug)]
pub struct NoticeArgs {
    /// The release.json to render.
    release: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
}

/// The notice's format.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Markdown,
    Html,
    Json,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Text => Format::Text,
            FormatArg::Markdown => Format::Markdown,
            FormatArg::Html => Format::Html,
            FormatArg::Json => Format::Json,
        }
    }
}

pub fn run(a: NoticeArgs) -> Result<()> {
    tracing::info!(release = %a.release.display(), format = ?a.format, "rendering the notice");
    // A local file, not verified here (check-release verifies a release as a device
    // does): read only a regular file, and no more than a release.json may be.
    let bytes = crate::input::read_bytes(
        &a.release,
        "release.json",
        deltaward_release::limits::RELEASE_JSON_MAX_BYTES,
    )?;
    let r =
        Release::from_json(&bytes).with_context(|| format!("parsing {}", a.release.display()))?;
    eprintln!(
        "note: {} is rendered as given; its signatures are not checked here (check-release checks them)",
        a.release.display()
    );
    print!("{}", notice::render(&r, a.format.into()));
    Ok(())
}

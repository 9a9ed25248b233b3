//! `deltaward audit`: the evidence an auditor checks offline.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use deltaward_mirror::log::{files, verify};
use serde_json::json;

use crate::args::{Json, Summary};

/// Check and report delivery evidence.
#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Verify a mirror's delivery log: the hash chain and the signed checkpoints.
    Verify(VerifyArgs),
    /// What the verified log shows per release and device, with the evidence.
    Report(ReportArgs),
}

/// The audit report's form.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    /// One self-contained page that prints on A4.
    Html,
    /// One row per release and device (and per device not updated).
    Csv,
    /// The whole report (docs/AUDIT.md describes it).
    Json,
}

/// What the verified log shows per release and device.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Log files, or log directories, in chain order.
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
    /// The mirror's public key (the log key's .pub).
    #[arg(long, value_name = "MIRROR.pub")]
    mirror_key: PathBuf,
    /// The repository whose releases to report: a directory, an origin or mirror URL, or
    /// a bucket (s3://BUCKET/PREFIX).
    #[arg(long, value_name = "URL_OR_DIR")]
    repo: String,
    #[command(flatten)]
    s3: crate::commands::mirror::S3Args,
    /// Product (repeat); default: every product the device reports name.
    #[arg(long = "product", value_name = "P")]
    products: Vec<String>,
    /// html, csv or json.
    #[arg(long, value_enum)]
    format: Format,
    /// Where to write it (replaced atomically).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: PathBuf,
}

/// Verify a delivery log.
#[derive(Args, Debug)]
#[command(
    after_help = "Names the first bad record: edited, deleted, reordered, inserted, a torn \
record no seal names, a checkpoint that does not verify, or records after the last checkpoint \
(the log truncated there, or still being written). Exit code 21 when the log does not verify."
)]
pub struct VerifyArgs {
    /// Log files, or log directories (their log-*.jsonl files), in chain order.
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
    /// The mirror's public key (the log key's .pub).
    #[arg(long, value_name = "MIRROR.pub")]
    mirror_key: PathBuf,
    #[command(flatten)]
    json: Json,
}

pub fn run(c: AuditCmd) -> Result<()> {
    match c {
        AuditCmd::Verify(a) => verify_cmd(a),
        AuditCmd::Report(a) => report_cmd(a),
    }
}

/// The log files named: files as given, directories expanded in chain order.
fn log_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(files(p).with_context(|| format!("listing {}", p.display()))?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

struct Verdict(deltaward_mirror::log::Verified);

impl Summary for Verdict {
    fn json(&self) -> serde_json::Value {
        json!({"verified": true, "log": self.0})
    }

    fn text(&self) -> String {
        let v = &self.0;
        format!(
            "verified: {} records (seq {} to {}) in {} file(s), {} checkpoint(s) signed by mirror key {}, {} torn record(s) sealed",
            v.records, v.first_seq, v.last_seq, v.files, v.checkpoints, v.key_id, v.sealed
        )
    }
}

fn verify_cmd(a: VerifyArgs) -> Result<()> {
    let keys = crate::keys::trusted(&[&a.mirror_key])?;
    let files = log_files(&a.logs)?;
    match verify(&files, &keys)? {
        Ok(v) => {
            a.json.answer(&Verdict(v));
            Ok(())
        }
        Err(t) => {
            if a.json.json {
                println!("{}", json!({"verified": false, "problem": t.to_string()}));
            }
            bail!(crate::exit::Tampered(t))
        }
    }
}

fn report_cmd(a: ReportArgs) -> Result<()> {
    use deltaward_mirror::audit::{build, to_csv, to_html};
    let keys = crate::keys::trusted(&[&a.mirror_key])?;
    let files = log_files(&a.logs)?;
    let remote = ["http://", "https://", "s3://"]
        .iter()
        .any(|p| a.repo.starts_with(p));
    let built = if remote {
        let rt = crate::commands::mirror::runtime()?;
        let up = std::sync::Arc::new(deltaward_mirror::upstream::Upstream::new(
            deltaward_mirror::upstream::Location::parse(&a.repo, &a.s3.options())?,
            None,
            None,
            &deltaward_mirror::Limits::default(),
            std::sync::Arc::default(),
        )?);
        let src = deltaward_mirror::update::http_source(up, rt.handle().clone());
        let products = a.products.clone();
        rt.block_on(async move {
            tokio::task::spawn_blocking(move || build(&files, &keys, &src, &products)).await
        })
        .context("building the report")??
    } else {
        let repo = deltaward_release::repo::Repo::new(std::path::Path::new(&a.repo));
        build(&files, &keys, &repo, &a.products)?
    };
    let report = match built {
        Ok(r) => r,
        Err(t) => bail!(crate::exit::Tampered(t)),
    };
    let text = match a.format {
        Format::Html => to_html(&report),
        Format::Csv => to_csv(&report)?,
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
    };
    crate::args::output_file(&a.output)?;
    deltaward_engine::write_file(&a.output, text.as_bytes())?;
    eprintln!(
        "audit report of {} product(s), {} device(s) written to {}",
        report.products.len(),
        report.devices.len(),
        a.output.display()
    );
    Ok(())
}

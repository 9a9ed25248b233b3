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

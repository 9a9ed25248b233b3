//! `deltaward keygen`: a minisign-compatible key pair.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::{args::Force, keys};

/// Write a new minisign-compatible key pair.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Secret key file to write.
    #[arg(short = 's', long = "secret-key", value_name = "KEY.key")]
    secret: PathBuf,
    /// Public key file to write.
    #[arg(short = 'p', long = "public-key", value_name = "KEY.pub")]
    public: PathBuf,
    /// Store the secret key without a password (for CI and tests).
    #[arg(long)]
    unencrypted: bool,
    /// Read the password from this file instead of the terminal.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    #[command(flatten)]
    force: Force,
}

pub fn run(a: KeygenArgs) -> Result<()> {
    a.force.check(&a.secret)?;
    a.force.check(&a.public)?;
    let pw = if a.unencrypted {
        None
    } else {
        Some(keys::password(
            a.password_file.as_deref(),
            "Password for the new secret key: ",
            true,
        )?)
    };
    let kp = deltaward_engine::generate_keypair(pw.as_deref())?;
    deltaward_engine::write_private_file(&a.secret, kp.secret.as_bytes())
        .context("writing secret key")?;
    deltaward_engine::write_file(&a.public, kp.public.as_bytes()).context("writing public key")?;
    tracing::info!(key_id = %kp.key_id, "key pair written");
    eprintln!(
        "key {} written: secret {} ({}), public {}",
        kp.key_id,
        a.secret.display(),
        if a.unencrypted {
            "unencrypted"
        } else {
            "password-protected"
        },
        a.public.display()
    );
    Ok(())
}

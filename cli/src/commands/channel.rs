//! `deltaward channel`: manage a product's signed channel.json.

use std::{path::PathBuf, time::SystemTime};

use anyhow::Result;
use clap::{Args, Subcommand};
use deltaward_release::{
    model::Channel,
    repo::{self, Repo},
};
use serde_json::json;

use crate::args::{duration, Json, RoleKeys, Summary};

/// Manage a product's signed channel.
#[derive(Subcommand, Debug)]
pub enum ChannelCmd {
    /// Re-sign the product's channel.json with a fresh expiry, rebuilding nothing.
    Refresh(RefreshArgs),
}

/// Re-sign the product's channel.json with a fresh expiry, rebuilding nothing.
#[derive(Args, Debug)]
#[command(mut_arg("secret", |a| a.help(
    "Channel-role secret key (repeat to meet a threshold above one)"
)))]
pub struct RefreshArgs {
    /// Product.
    #[arg(long)]
    product: String,
    #[command(flatten)]
    keys: RoleKeys,
    /// Repository directory.
    #[arg(long, short = 'o', visible_alias = "output", value_name = "REPO")]
    repo: PathBuf,
    /// Validity of the re-signed channel.
    #[arg(long, default_value = "7d")]
    expires_in: String,
    #[command(flatten)]
    json: Json,
}

pub fn run(c: ChannelCmd) -> Result<()> {
    match c {
        ChannelCmd::Refresh(a) => refresh(a),
    }
}

fn refresh(a: RefreshArgs) -> Result<()> {
    let validity = duration(&a.expires_in)?;
    let signers = a.keys.load()?;
    let refs: Vec<_> = signers.iter().collect();
    tracing::info!(
        product = %a.product,
        repo = %a.repo.display(),
        keys = refs.len(),
        "re-signing the channel"
    );
    let channel = repo::refresh_channel(
        &Repo::new(&a.repo),
        &a.product,
        &refs,
        SystemTime::now(),
        validity,
    )?;
    tracing::info!(version = channel.version, expires = %channel.expires, "channel signed");
    a.json.report(&RefreshSummary(&channel));
    Ok(())
}

/// The channel as re-signed.
#[derive(Debug)]
struct RefreshSummary<'a>(&'a Channel);

impl Summary for RefreshSummary<'_> {
    fn json(&self) -> serde_json::Value {
        let c = self.0;
        json!({"product": c.product, "version": c.version, "expires": c.expires})
    }

    fn text(&self) -> String {
        let c = self.0;
        format!(
            "channel {} version {} signed, expires {}",
            c.product, c.version, c.expires
        )
    }
}

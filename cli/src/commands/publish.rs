//! `deltaward publish`: upload a verified repository to S3-compatible object storage.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use deltaward_mirror::{
    parse_size,
    publish::{publish, Outcome, PublishOptions, Published},
    s3::Bucket,
};
use serde_json::json;

use crate::{
    args::{Json, Summary},
    commands::mirror::{runtime, S3Args},
};

/// Upload a repository to S3-compatible object storage, verified first.
#[derive(Args, Debug)]
#[command(after_help = "\
The repository is verified as a device would verify it before anything is uploaded; a \
broken one is refused. Then objects go up first, then releases, then roots, and each \
product's channel last, so that readers never see a channel naming what is not there yet. \
Files already in the bucket are skipped (objects by length, documents by MD5), so a second \
publish uploads nothing; an interrupted publish leaves the previous channels in effect. A \
replaced channel or root goes up under signatures that verify the old and the new one, and a \
bucket holding a newer channel or root than the repository is refused.\n\n\
Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN. Endpoint and \
region: --endpoint and --region, or AWS_ENDPOINT_URL and AWS_REGION.\n\n\
Example: deltaward publish repo/ s3://updates/pump --endpoint http://127.0.0.1:3900 --region garage")]
pub struct PublishArgs {
    /// The repository directory (as `deltaward release --repo` writes it).
    repo: PathBuf,
    /// Where to: s3://BUCKET or s3://BUCKET/PREFIX.
    #[arg(value_name = "s3://BUCKET/PREFIX")]
    destination: String,
    #[command(flatten)]
    s3: S3Args,
    /// Uploads (whole files or parts) in flight at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    jobs: usize,
    /// Files above this size go up in parts of this size (K, M, G suffixes; 5M to 5G).
    #[arg(long, default_value = "16M", value_name = "SIZE", value_parser = parse_size)]
    part_size: u64,
    /// Cap on upload bandwidth in bytes per second (K, M, G suffixes), for a shared link.
    #[arg(long, value_name = "BYTES_PER_S", value_parser = parse_size)]
    rate: Option<u64>,
    /// Extra CA certificates (PEM) to trust for an https:// endpoint.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Tries of each request while it fails transiently (no connection, timeout, 5xx).
    #[arg(long, default_value_t = 4, value_name = "N")]
    tries: u32,
    #[command(flatten)]
    json: Json,
}

pub fn run(a: PublishArgs) -> Result<()> {
    let bucket = Bucket::from_env(&a.destination, &a.s3.options())?;
    let opts = PublishOptions {
        jobs: a.jobs.max(1),
        part_size: a.part_size,
        extra_ca: a.ca.clone(),
        tries: a.tries.max(1),
        rate: a.rate,
        ..PublishOptions::default()
    };
    tracing::info!(repo = %a.repo.display(), to = bucket.url(), "verifying, then publishing");
    let on_file = |rel: &str, outcome: Outcome| match outcome {
        Outcome::Skipped => tracing::info!("{rel}: already there"),
        Outcome::Uploaded(n) => tracing::info!("{rel}: uploaded {n} bytes"),
    };
    let started = std::time::Instant::now();
    let published = runtime()?
        .block_on(publish(&a.repo, &bucket, &opts, &on_file))
        .with_context(|| format!("publishing {} to {}", a.repo.display(), bucket.url()))?;
    a.json.report(&PublishSummary {
        p: published,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(())
}

struct PublishSummary {
    p: Published,
    seconds: f64,
}

impl Summary for PublishSummary {
    fn json(&self) -> serde_json::Value {
        let mut v = json!(self.p);
        v["seconds"] = json!(self.seconds);
        v
    }

    fn text(&self) -> String {
        let p = &self.p;
        format!(
            "published to {}: {} file(s), {} uploaded ({} bytes, {} in parts), {} already there, in {:.1} s",
            p.destination, p.files, p.uploaded, p.bytes_uploaded, p.multipart, p.skipped, self.seconds
        )
    }
}

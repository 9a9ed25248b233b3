//! `deltaward mirror`: the on-premise caching mirror (and the origin server).

use std::{path::PathBuf, sync::Arc};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use deltaward_mirror::{
    parse_size, sync, AccessLog, Config, Metrics, Mirror, Mode, Origin, Server, Service,
};
use serde_json::json;

use crate::args::{Json, Summary};

/// Serve or prefetch a repository.
#[derive(Subcommand, Debug)]
pub enum MirrorCmd {
    /// Serve a repository (origin, `--root`) or a verified cache of an upstream (mirror).
    Serve(ServeArgs),
    /// Fetch and verify everything the current channels list, for a maintenance window.
    Sync(SyncArgs),
    /// Record the site's approval of a release (for `serve --require-approval`).
    Approve(ApproveArgs),
}

/// Record the site's approval of a release.
#[derive(Args, Debug)]
#[command(
    after_help = "The release must be in the cache (verified when a device or `mirror sync` fetched it). The approval is signed with the mirror's log key and written to the delivery log: by this command when the log is free, else by the serving mirror when it first honours it."
)]
pub struct ApproveArgs {
    /// The mirror's cache directory.
    #[arg(long, value_name = "DIR")]
    cache: PathBuf,
    /// The mirror's delivery log directory.
    #[arg(long, value_name = "DIR")]
    log_dir: PathBuf,
    /// The mirror's own secret key (the log key).
    #[arg(long, value_name = "KEY")]
    log_key: PathBuf,
    /// Product.
    #[arg(long)]
    product: String,
    /// Release version.
    #[arg(long)]
    version: String,
    /// Who approves (name or role, as the site's change management records it).
    #[arg(long)]
    by: String,
    /// A note: change ticket, reason.
    #[arg(long)]
    note: Option<String>,
    /// Approve a release the maker marked as not approved, the site applying its mitigations.
    #[arg(long)]
    accept_mitigations: bool,
    #[command(flatten)]
    json: Json,
}

/// Where the mirror's upstream is and what it trusts.
#[derive(Args, Debug)]
pub struct UpstreamArgs {
    /// The upstream: the maker's repository or another mirror (http:// or https://),
    /// or a bucket (s3://BUCKET/PREFIX, read with signed requests; credentials from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    #[command(flatten)]
    s3: S3Args,
    /// Cache directory (created if missing; one process at a time).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// The trusted root.json; rotations are followed from it.
    #[arg(long, value_name = "root.json")]
    trust: Option<PathBuf>,
    /// Cap on upstream bandwidth in bytes per second (K, M, G suffixes: powers of 1024).
    #[arg(long, value_name = "BYTES_PER_S", value_parser = parse_size)]
    upstream_rate: Option<u64>,
    /// Extra CA certificates (PEM) to trust for an https:// upstream.
    #[arg(long, value_name = "PEM")]
    upstream_ca: Option<PathBuf>,
    /// Most bytes of objects to keep cached (K, M, G, T suffixes); least recently used go first.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_cache_size: Option<u64>,
    /// Settings file (TOML, the same keys as these flags, plus [limits]); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Serve a repository or a verified cache of an upstream.
#[derive(Args, Debug)]
#[command(
    after_help = "Origin: deltaward mirror serve --root REPO --listen ADDR\n\
Mirror: deltaward mirror serve --upstream URL --cache DIR --trust root.json --listen ADDR\n\n\
The first line on stdout is `listening on http://HOST:PORT` (or https://). GET and HEAD of the \
repository layout, /healthz and /metrics. SIGTERM drains open responses and exits; SIGHUP \
reopens the access log."
)]
pub struct ServeArgs {
    /// Origin mode: serve this repository directory as it is.
    #[arg(long, value_name = "REPO", conflicts_with_all = ["upstream", "cache", "trust"])]
    root: Option<PathBuf>,
    #[command(flatten)]
    upstream: UpstreamArgs,
    /// Address to listen on; 127.0.0.1:0 picks a free port [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Serve TLS with this certificate chain (PEM); HTTP/2 and HTTP/1.1 by ALPN.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (mutual TLS).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Append the access log (one line per request) to this file instead of the log.
    #[arg(long, value_name = "FILE")]
    access_log: Option<PathBuf>,
    /// Keep the tamper-evident delivery log in this directory (mirror mode; needs --log-key).
    #[arg(long, value_name = "DIR", requires = "log_key")]
    log_dir: Option<PathBuf>,
    /// The mirror's own minisign secret key (unencrypted; `deltaward keygen --unencrypted`)
    /// that signs the log's checkpoints and site approvals, never releases.
    #[arg(long, value_name = "KEY", requires = "log_dir")]
    log_key: Option<PathBuf>,
    /// Serve a release's release.json and objects only after `mirror approve` (403 until then).
    #[arg(long, requires = "log_key")]
    require_approval: bool,
}

/// Fetch and verify everything the current channels list.
#[derive(Args, Debug)]
pub struct SyncArgs {
    #[command(flatten)]
    upstream: UpstreamArgs,
    /// Product to sync (repeat); default: every product the cache has a channel of.
    #[arg(long = "product", value_name = "P")]
    products: Vec<String>,
    #[command(flatten)]
    json: Json,
}

pub fn run(c: MirrorCmd) -> Result<()> {
    match c {
        MirrorCmd::Serve(a) => serve(a),
        MirrorCmd::Sync(a) => sync_cmd(a),
        MirrorCmd::Approve(a) => approve(a),
    }
}

impl UpstreamArgs {
    /// The settings file with these flags over it.
    fn config(&self) -> Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        over(&mut c.upstream, self.upstream.clone());
        over(&mut c.endpoint, self.s3.endpoint.clone());
        over(&mut c.region, self.s3.region.clone());
        over(&mut c.cache, self.cache.clone());
        over(&mut c.trust, self.trust.clone());
        over(&mut c.upstream_ca, self.upstream_ca.clone());
        over(&mut c.upstream_rate, self.upstream_rate);
        over(&mut c.max_cache_size, self.max_cache_size);
        Ok(c)
    }
}

/// A flag given overrides the settings file.
fn over<T>(slot: &mut Option<T>, flag: Option<T>) {
    if flag.is_some() {
        *slot = flag;
    }
}

/// Where an s3:// bucket is served from.
#[derive(Args, Debug, Clone)]
pub struct S3Args {
    /// S3 endpoint URL for s3:// (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, then
    /// AWS); any endpoint but AWS's is addressed path-style.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// S3 region for s3:// (default: AWS_REGION, AWS_DEFAULT_REGION, then us-east-1).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
}

impl S3Args {
    /// The options of the mirror crate.
    pub fn options(&self) -> deltaward_mirror::s3::S3Options {
        deltaward_mirror::s3::S3Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
        }
    }
}

/// The tokio runtime of the network commands (the libraries own none).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("deltaward-io")
        .build()
        .context("starting the async runtime")
}

fn serve(a: ServeArgs) -> Result<()> {
    let mut c = a.upstream.config()?;
    over(&mut c.root, a.root);
    over(&mut c.listen, a.listen);
    over(&mut c.tls_cert, a.tls_cert);
    over(&mut c.tls_key, a.tls_key);
    over(&mut c.client_ca, a.client_ca);
    over(&mut c.access_log, a.access_log);
    over(&mut c.log_dir, a.log_dir);
    over(&mut c.log_key, a.log_key);
    if a.require_approval {
        c.require_approval = true;
    }
    if c.root.is_some() && c.upstream.is_some() {
        bail!("--root (origin) and --upstream (mirror) exclude each other");
    }
    if c.root.is_none() && c.upstream.is_none() {
        bail!("give --root REPO (origin) or --upstream URL --cache DIR --trust root.json (mirror)");
    }
    runtime()?.block_on(async move {
        let metrics = Arc::new(Metrics::default());
        let mut log = None;
        let mode = match &c.root {
            Some(root) => Mode::Origin(Origin::new(root)?),
            None => {
                let m = Arc::new(Mirror::open(&c, metrics.clone()).context("opening the mirror")?);
                log = m.log.clone();
                Mode::Mirror(m)
            }
        };
        if let Some(log) = log.clone() {
            // fsync at least once a second; checkpoints when records have waited.
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let l = log.clone();
                    match tokio::task::spawn_blocking(move || l.tick()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!("delivery log: {e}"),
                        Err(e) => tracing::error!("delivery log: {e}"),
                    }
                }
            });
        }
        let access = AccessLog::new(c.access_log.as_deref())?;
        let service = Arc::new(Service::new(mode, &c.limits, access, metrics));
        let server = Server::bind(&c, service.clone()).await?;
        println!("listening on {}", server.url());
        std::io::Write::flush(&mut std::io::stdout()).context("writing stdout")?;
        let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut hup = signal(tokio::signal::unix::SignalKind::hangup())?;
        let reopen = service.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match reopen.access_log().reopen() {
                    Ok(()) => tracing::info!("SIGHUP: access log reopened"),
                    Err(e) => tracing::warn!("SIGHUP: {e}"),
                }
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: draining"),
                _ = int.recv() => tracing::info!("SIGINT: draining"),
            }
        };
        server.run(shutdown).await?;
        if let Some(log) = log {
            log.close().context("closing the delivery log")?;
        }
        Ok(())
    })
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).context("installing a signal handler")
}

struct SyncSummary(sync::Summary);

impl Summary for SyncSummary {
    fn json(&self) -> serde_json::Value {
        json!(self.0)
    }

    fn text(&self) -> String {
        let s = &self.0;
        let mut t = format!(
            "synced {}: {} releases, {} objects ({} already cached, {} fetched, {} bytes over the upstream link)",
            if s.products.is_empty() {
                "no products (give --product P)".to_owned()
            } else {
                s.products.join(", ")
            },
            s.releases,
            s.objects,
            s.already_cached,
            s.fetched,
            s.fetched_bytes
        );
        for (what, why) in &s.failures {
            t.push_str(&format!("\nfailed: {what}: {why}"));
        }
        t
    }
}

fn sync_cmd(a: SyncArgs) -> Result<()> {
    let c = a.upstream.config()?;
    let summary = runtime()?.block_on(async move {
        let mirror =
            Arc::new(Mirror::open(&c, Arc::new(Metrics::default())).context("opening the cache")?);
        let bar = crate::progress::bytes(0, "sync");
        let on = |e: sync::Event| match e {
            sync::Event::Planned { bytes, .. } => bar.set_length(bytes),
            sync::Event::Progress { bytes } => bar.set_position(bytes),
            sync::Event::Failed { what, reason } => {
                bar.suspend(|| tracing::warn!("{what}: {reason}"));
            }
        };
        let s = sync::sync(&mirror, &a.products, &on).await?;
        bar.finish_and_clear();
        anyhow::Ok(s)
    })?;
    let failed = !summary.failures.is_empty();
    a.json.answer(&SyncSummary(summary));
    if failed {
        bail!("some releases or objects could not be fetched and verified");
    }
    Ok(())
}

struct Approved(deltaward_mirror::approval::Approval, bool);

impl Summary for Approved {
    fn json(&self) -> serde_json::Value {
        json!({"approval": self.0, "logged": self.1})
    }

    fn text(&self) -> String {
        let a = &self.0;
        let mut t = format!(
            "approved {} {} (counter {}) for this site: by {} at {}",
            a.product, a.version, a.counter, a.by, a.time
        );
        if a.accept_mitigations {
            t.push_str(&format!(
                "; the maker did not approve it; mitigations accepted: {}",
                a.mitigations.join("; ")
            ));
        }
        t.push_str(if self.1 {
            "; written to the delivery log"
        } else {
            "; the serving mirror writes it to the delivery log when it first honours it"
        });
        t
    }
}

fn approve(a: ApproveArgs) -> Result<()> {
    let key = deltaward_mirror::mirror::load_key(&a.log_key)?;
    let approval = deltaward_mirror::approval::approve(
        &a.cache,
        &key,
        &a.product,
        &a.version,
        &a.by,
        a.note.as_deref(),
        a.accept_mitigations,
    )?;
    // Log it now if no mirror holds the log; a serving mirror logs it itself.
    let logged = match deltaward_mirror::log::DeliveryLog::open(
        &a.log_dir,
        key,
        deltaward_mirror::log::LogConfig::default(),
        json!({"mode": "approve"}),
    ) {
        Ok(log) => {
            log.append("approval", serde_json::to_value(&approval)?)?;
            log.close()?;
            deltaward_mirror::approval::mark_logged(&a.cache, &approval)?;
            true
        }
        Err(deltaward_mirror::Error::LogBusy { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    a.json.answer(&Approved(approval, logged));
    Ok(())
}

//! The device's update client (`deltaward update`): ask the site's mirrors what to
//! install, download only the patch for this device's image (or the full image),
//! resume after a dropped link or a power cut, verify everything, write the new image
//! atomically, and report the delivery.
//!
//! The order is the guarantee: the stored counters are raised only after the new
//! image has been written and verified; a refusal or failure leaves OUT and the
//! stored counters as they were (a root rotation, once verified, is kept, as with
//! `check-release`). Every attempt produces a [`Report`]; it is posted to the mirror
//! (`POST /v1/reports`) or, if no mirror takes it, queued in the state directory
//! and sent on the next run.
//!
//! Files in the state directory (beside `check-release`'s `root.json`, `state.json`
//! and `state.lock`, which is held for the whole update): `downloads/<blake3>.part`
//! (the object being downloaded, resumed with Range; removed after installing) and
//! `reports/*.json` (reports not yet delivered).

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use deltaward_engine::{apply_to_file, ApplyOptions, Digest, Image as Mapped};
use deltaward_release::{
    check::{accept, verify_latest, Checked, Device, Plan, StateDir, StateLock},
    install::install_full_image,
    model::Object,
    repo::timestamp,
    source::Source,
    trust::RoleName,
    LimitError, Mismatch,
};

use crate::{
    config::Limits,
    error::{Error, Result, UpstreamError},
    fill::Batcher,
    metrics::Metrics,
    report::{self, Check, KeyIds, ObjectUsed, Outcome, Report},
    upstream::{backoff, Location, Upstream},
};

/// What to update.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Request {
    /// Mirror URLs, tried in order.
    pub mirrors: Vec<String>,
    /// Extra CA certificates for `https://` mirrors.
    pub mirror_ca: Option<PathBuf>,
    /// Product.
    pub product: String,
    /// This device's hardware id.
    pub hardware: String,
    /// The image the device runs.
    pub image: PathBuf,
    /// Where the new image goes.
    pub output: PathBuf,
    /// The state directory (as `check-release`'s).
    pub state: PathBuf,
    /// The version the device runs, when known.
    pub current_version: Option<String>,
    /// This device's id in reports.
    pub device_id: String,
    /// Timeouts and tries of the link to the mirrors.
    pub limits: Limits,
    /// The exit code the caller will give for an error, for the report.
    pub exit_code: Option<fn(&(dyn std::error::Error + 'static)) -> u8>,
}

impl Request {
    /// An update of `product` for `hardware` from `image` to `output`, with the
    /// state in `state`, through `mirrors`.
    pub fn new(
        mirrors: Vec<String>,
        product: &str,
        hardware: &str,
        image: &Path,
        output: &Path,
        state: &Path,
    ) -> Self {
        Self {
            mirrors,
            mirror_ca: None,
            product: product.to_owned(),
            hardware: hardware.to_owned(),
            image: image.to_path_buf(),
            output: output.to_path_buf(),
            state: state.to_path_buf(),
            current_version: None,
            device_id: String::new(),
            limits: Limits::default(),
            exit_code: None,
        }
    }
}

/// A phase of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Hashing the current image.
    Hash,
    /// Fetching and verifying the documents.
    Check,
    /// Downloading the patch or full image.
    Download,
    /// Applying it.
    Apply,
    /// Delivering the report.
    Report,
}

/// What an update reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// A phase starts.
    Phase(Phase),
    /// Progress of the phase: bytes done of total.
    Progress {
        /// The phase.
        phase: Phase,
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
}

/// A release source over HTTP, for the release crate's (synchronous) checks: call it
/// on a blocking thread of the runtime `rt` (it blocks on the requests).
pub fn http_source(up: Arc<Upstream>, rt: tokio::runtime::Handle) -> impl Source + Send + 'static {
    HttpSource {
        up,
        rt,
        bytes: Arc::new(AtomicU64::new(0)),
    }
}

/// A release source over HTTP, for the release crate's (synchronous) checks, run on
/// a blocking thread.
struct HttpSource {
    up: Arc<Upstream>,
    rt: tokio::runtime::Handle,
    bytes: Arc<AtomicU64>,
}

impl Source for HttpSource {
    fn read_up_to(&self, rel: &str, max: u64) -> deltaward_release::Result<Option<Vec<u8>>> {
        match self
            .rt
            .block_on(self.up.get_small(rel, max.saturating_add(1), None))
        {
            Ok(f) => {
                self.bytes.fetch_add(f.body.len() as u64, Ordering::Relaxed);
                Ok(Some(f.body.to_vec()))
            }
            Err(UpstreamError::NotFound { .. }) => Ok(None),
            Err(UpstreamError::TooLarge { .. }) => Err(deltaward_release::Error::Limit {
                file: rel.to_owned(),
                limit: LimitError::TooLarge { max },
            }),
            Err(e) => Err(deltaward_release::Error::Fetch {
                path: rel.to_owned(),
                source: Box::new(e),
            }),
        }
    }
}

/// Runs one update. The report is always returned (and delivered or queued); the
/// error, if any, says why the update did not install (its class gives the exit code).
pub async fn update(req: &Request, on: &(dyn Fn(Event) + Send + Sync)) -> (Report, Result<()>) {
    let t0 = Instant::now();
    let metrics = Arc::new(Metrics::default());
    let mut report = Report {
        kind: report::REPORT_TYPE.into(),
        spec_version: 1,
        device_id: req.device_id.clone(),
        product: req.product.clone(),
        hardware_id: req.hardware.clone(),
        started: timestamp(SystemTime::now()),
        ..Report::default()
    };
    report.from.version = req.current_version.clone();
    let ups: Vec<Arc<Upstream>> = match req
        .mirrors
        .iter()
        .map(|m| {
            if crate::s3::is_s3(m) {
                return Err(crate::error::UpstreamError::Url {
                    url: m.clone(),
                    reason: "a device updates through mirrors (http:// or https://)".into(),
                }
                .into());
            }
            Upstream::new(
                Location::parse(m, &Default::default())?,
                req.mirror_ca.as_deref(),
                None,
                &req.limits,
                metrics.clone(),
            )
            .map(Arc::new)
        })
        .collect::<Result<Vec<_>>>()
    {
        Ok(u) => u,
        Err(e) => return (report, Err(e)),
    };
    let result = run(req, &ups, &mut report, on).await;
    let (outcome, reason) = match &result {
        Ok(o) => (*o, None),
        Err(e) if is_refusal(e) => (Outcome::Refused, Some(e.to_string())),
        Err(e) => (Outcome::Failed, Some(e.to_string())),
    };
    report.outcome = outcome;
    report.reason = reason;
    report.bytes_downloaded = metrics.upstream_bytes.get();
    report.finished = timestamp(SystemTime::now());
    report.durations_ms.total = t0.elapsed().as_millis() as u64;
    report.exit_code = match &result {
        Ok(_) => 0,
        Err(e) => req.exit_code.map_or(1, |f| f(e)),
    };
    on(Event::Phase(Phase::Report));
    deliver(&ups, &report, &req.state.join("reports")).await;
    (report, result.map(|_| ()))
}

/// Whether an error is a check's refusal (as opposed to a failure to get or apply).
pub fn is_refusal(e: &Error) -> bool {
    use deltaward_release::ErrorClass as C;
    match e {
        Error::Release(r) => matches!(
            r.class(),
            C::Rollback
                | C::Freeze
                | C::WrongHardware
                | C::BaseMismatch
                | C::MixAndMatch
                | C::UnknownKey
                | C::Threshold
                | C::RootRotation
                | C::Signature
        ),
        _ => false,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io {
            action: "running",
            path: PathBuf::from("(blocking task)"),
            source: std::io::Error::other(e),
        })?
}

async fn run(
    req: &Request,
    ups: &[Arc<Upstream>],
    report: &mut Report,
    on: &(dyn Fn(Event) + Send + Sync),
) -> Result<Outcome> {
    let state = StateDir::new(&req.state);
    let lock = {
        let s = state.clone();
        Arc::new(blocking(move || Ok(s.lock()?)).await?)
    };

    on(Event::Phase(Phase::Hash));
    let t = Instant::now();
    let image = req.image.clone();
    let (blake3, length) = blocking(move || hash_image(&image)).await?;
    report.durations_ms.hash = t.elapsed().as_millis() as u64;
    report.from.blake3 = blake3.to_string();
    report.from.length = length;
    let device = Device {
        hardware_id: req.hardware.clone(),
        version: req.current_version.clone().unwrap_or_default(),
        image_length: length,
        image_blake3: blake3,
    };

    on(Event::Phase(Phase::Check));
    let t = Instant::now();
    let (first, checked) = match check(req, ups, &state, &lock, &device, report).await {
        Err(Error::WaitingForApproval { mirror, what }) => {
            report.mirror = Some(mirror.clone());
            report.checks.push(Check::passed(
                "site approval",
                format!("{mirror} serves {what} only after the site approves it: waiting, nothing installed"),
            ));
            return Ok(Outcome::WaitingForApproval);
        }
        r => r?,
    };
    report.durations_ms.check = t.elapsed().as_millis() as u64;
    let release = &checked.release;
    report.mirror = Some(ups[first].base().to_owned());
    report.root_version = Some(checked.root_version);
    report.key_ids = KeyIds {
        channel: checked.channel_signers.clone(),
        release: checked.release_signers.clone(),
        patch: None,
    };
    report.to = Some(report::Image {
        version: Some(release.version.clone()),
        counter: Some(release.counter),
        length: release.target.length,
        blake3: release.target.blake3.to_string(),
    });
    let (object, base_version) = match &checked.plan {
        Plan::UpToDate => {
            report.checks.push(Check::passed(
                "image",
                format!(
                    "the device already runs {} (its BLAKE3 is the target's)",
                    release.version
                ),
            ));
            let (s, l, c) = (state.clone(), lock.clone(), checked.clone());
            blocking(move || Ok(accept(&s, &l, &c)?)).await?;
            return Ok(Outcome::UpToDate);
        }
        Plan::Patch(b) => {
            report.checks.push(Check::passed(
                "base",
                format!(
                    "the image is base {} of the release: a patch applies",
                    b.version
                ),
            ));
            (b.patch.clone(), Some(b.version.clone()))
        }
        Plan::Full => {
            report.checks.push(Check::passed(
                "base",
                "no patch of the release is for this image: the full image is installed",
            ));
            (release.full_image.object.clone(), None)
        }
    };
    report.object = Some(ObjectUsed {
        kind: if base_version.is_some() {
            "patch"
        } else {
            "full_image"
        }
        .into(),
        base_version,
        blake3: object.blake3.to_string(),
        length: object.length,
    });

    on(Event::Phase(Phase::Download));
    let t = Instant::now();
    let part = download(
        ups,
        first,
        &object,
        &req.state.join("downloads"),
        &req.limits,
        on,
    )
    .await?;
    report.durations_ms.download = t.elapsed().as_millis() as u64;
    report.checks.push(Check::passed(
        "object",
        format!(
            "{}: {} bytes, BLAKE3 as the release signs",
            object.path, object.length
        ),
    ));

    on(Event::Phase(Phase::Apply));
    let t = Instant::now();
    let total = release.target.length;
    if matches!(checked.plan, Plan::Patch(_)) {
        let keys = deltaward_release::trust::trusted_keys(&checked.root, RoleName::Release)?;
        let (image, out, patch) = (req.image.clone(), req.output.clone(), part.clone());
        let r = with_progress(Phase::Apply, total, on, move |progress| {
            Ok(apply_to_file(
                &image,
                &patch,
                &out,
                &keys,
                &ApplyOptions::default().resume(true),
                progress,
            )?)
        })
        .await?;
        report.key_ids.patch = Some(r.key_id.clone());
        report.checks.push(Check::passed(
            "patch",
            format!(
                "signed by release key {}; old image, every frame and the new image verified{}",
                r.key_id,
                if r.resumed_frames > 0 {
                    format!(" (resumed after {} frames)", r.resumed_frames)
                } else {
                    String::new()
                }
            ),
        ));
    } else {
        let (part, full, target, out) = (
            part.clone(),
            release.full_image.clone(),
            release.target.clone(),
            req.output.clone(),
        );
        with_progress(Phase::Apply, total, on, move |progress| {
            Ok(install_full_image(&part, &full, &target, &out, progress)?)
        })
        .await?;
        report.checks.push(Check::passed(
            "image",
            "the full image decoded to the target's length and BLAKE3",
        ));
    }
    report.durations_ms.apply = t.elapsed().as_millis() as u64;
    let (s, l, c) = (state.clone(), lock.clone(), checked.clone());
    blocking(move || Ok(accept(&s, &l, &c)?)).await?;
    let _ = std::fs::remove_file(&part);
    Ok(Outcome::Installed)
}

/// Runs `f` on a blocking thread, reporting the progress it gives every quarter of
/// a second.
async fn with_progress<T: Send + 'static>(
    phase: Phase,
    total: u64,
    on: &(dyn Fn(Event) + Send + Sync),
    f: impl FnOnce(&dyn Fn(u64)) -> Result<T> + Send + 'static,
) -> Result<T> {
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let mut task = tokio::task::spawn_blocking(move || f(&|n| d.store(n, Ordering::Relaxed)));
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tokio::select! {
            r = &mut task => {
                on(Event::Progress { phase, done: done.load(Ordering::Relaxed), total });
                return r.map_err(|e| Error::Io {
                    action: "running",
                    path: PathBuf::from("(blocking task)"),
                    source: std::io::Error::other(e),
                })?;
            }
            _ = tick.tick() => on(Event::Progress { phase, done: done.load(Ordering::Relaxed), total }),
        }
    }
}

/// The root's release keys, for the patch's signature.
/// BLAKE3 and length of the current image, hashed on all cores.
fn hash_image(path: &Path) -> Result<(Digest, u64)> {
    let img = Mapped::open(path)?;
    let mut h = blake3::Hasher::new();
    h.update_rayon(&img);
    Ok((Digest::from(h.finalize()), img.len() as u64))
}

/// The documents through each mirror in turn, with every check `check-release`
/// makes. A mirror that cannot be reached, or whose documents are refused, gives way
/// to the next; the first refusal is the answer when none succeeds.
async fn check(
    req: &Request,
    ups: &[Arc<Upstream>],
    state: &StateDir,
    lock: &Arc<StateLock>,
    device: &Device,
    report: &mut Report,
) -> Result<(usize, Checked)> {
    let mut refusal: Option<deltaward_release::Error> = None;
    let mut waiting: Option<(String, String)> = None;
    let mut unreachable = Vec::new();
    for (i, up) in ups.iter().enumerate() {
        let src = HttpSource {
            up: up.clone(),
            rt: tokio::runtime::Handle::current(),
            bytes: Arc::new(AtomicU64::new(0)),
        };
        let (product, s, l, d) = (
            req.product.clone(),
            state.clone(),
            lock.clone(),
            device.clone(),
        );
        let r = tokio::task::spawn_blocking(move || {
            verify_latest(&src, &product, &s, &l, &d, SystemTime::now())
        })
        .await
        .map_err(|e| Error::Io {
            action: "checking",
            path: req.state.clone(),
            source: std::io::Error::other(e),
        })?;
        match r {
            Ok(c) => {
                report.checks.extend([
                    Check::passed("root", format!("trusted root version {}", c.root_version)),
                    Check::passed(
                        "channel",
                        format!(
                            "version {}: signed by {} (threshold met), not expired, not below the stored version",
                            c.channel_version,
                            c.channel_signers.join(", ")
                        ),
                    ),
                    Check::passed(
                        "release",
                        format!(
                            "{} (counter {}): signed by {}, its hash and length as the channel signs, not expired, not below the stored counter",
                            c.release.version,
                            c.release.counter,
                            c.release_signers.join(", ")
                        ),
                    ),
                    Check::passed(
                        "hardware",
                        format!("{} is among {:?}", req.hardware, c.release.hardware_ids),
                    ),
                ]);
                return Ok((i, c));
            }
            Err(deltaward_release::Error::Fetch { path, source })
                if matches!(
                    source.downcast_ref::<UpstreamError>(),
                    Some(UpstreamError::Status { status: 403, .. })
                ) =>
            {
                waiting.get_or_insert((up.base().to_owned(), path));
            }
            Err(deltaward_release::Error::Fetch { path, source }) => {
                tracing::warn!("mirror {}: {path}: {source}", up.base());
                unreachable.push(format!("{}: {path}: {source}", up.base()));
            }
            Err(e) => {
                tracing::warn!("mirror {}: refused: {e}", up.base());
                report.checks.push(Check::failed(
                    "documents",
                    format!("from {}: {e}", up.base()),
                ));
                refusal.get_or_insert(e);
            }
        }
    }
    match (refusal, waiting) {
        (Some(e), _) => Err(e.into()),
        (None, Some((mirror, what))) => Err(Error::WaitingForApproval { mirror, what }),
        (None, None) => Err(Error::NoMirror { tried: unreachable }),
    }
}

/// Downloads `object` into `dir/<blake3>.part`, resuming what an earlier run left,
/// hashing as it goes, from the mirror that answered the check first and then the
/// others; no more than the signed length is taken. Returns the verified file.
async fn download(
    ups: &[Arc<Upstream>],
    first: usize,
    object: &Object,
    dir: &Path,
    limits: &Limits,
    on: &(dyn Fn(Event) + Send + Sync),
) -> Result<PathBuf> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let part = dir.join(format!("{}.part", object.blake3));
    let length = object.length;
    // What an earlier run left: hash it again (the file is ours, but not trusted).
    let (mut hasher, mut have) = {
        let p = part.clone();
        blocking(move || {
            let mut h = blake3::Hasher::new();
            match deltaward_engine::open_regular(&p) {
                Ok(f) => {
                    h.update_reader(std::io::Read::take(f, length))
                        .map_err(io("reading", &p))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("opening", &p)(e)),
            }
            let n = h.count();
            Ok((h, n))
        })
        .await?
    };
    // A file longer than the object (never written by us): start again.
    if std::fs::metadata(&part).is_ok_and(|m| m.len() > have) {
        std::fs::remove_file(&part).map_err(io("removing", &part))?;
        hasher = blake3::Hasher::new();
        have = 0;
    }
    let file = deltaward_engine::open_append(&part).map_err(io("opening", &part))?;
    let sink = Arc::new(std::sync::Mutex::new((file, hasher)));
    let rel = object.path.clone();
    let order = std::iter::once(first).chain((0..ups.len()).filter(|&i| i != first));
    let mut tried = Vec::new();
    'mirrors: for i in order {
        let up = &ups[i];
        let mut failures = 0;
        while have < length {
            let before = have;
            match pass(up, &rel, length, &sink, &part, &mut have, on).await {
                Ok(()) => {}
                Err(PassError::TooLong) => {
                    let _ = std::fs::remove_file(&part);
                    return Err(deltaward_release::Error::MixAndMatch {
                        what: rel,
                        mismatch: Mismatch::TooLong { expected: length },
                    }
                    .into());
                }
                Err(PassError::Local(e)) => return Err(e),
                Err(PassError::Upstream(e)) => {
                    if have > before {
                        failures = 0;
                    }
                    failures += 1;
                    if !e.is_transient() || failures >= limits.upstream_tries.max(1) {
                        tracing::warn!("{}: {rel}: {e}", up.base());
                        tried.push(format!("{}: {e}", up.base()));
                        continue 'mirrors;
                    }
                    tracing::info!("{}: {rel}: resuming at byte {have} after: {e}", up.base());
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
            if have == before && have < length {
                // The body ended short without an error: try again from here.
                failures += 1;
                if failures >= limits.upstream_tries.max(1) {
                    tried.push(format!("{}: the object ended at byte {have}", up.base()));
                    continue 'mirrors;
                }
            }
        }
        break;
    }
    if have < length {
        return Err(Error::NoMirror { tried });
    }
    let found = {
        let sink = sink.lock().unwrap_or_else(|e| e.into_inner());
        sink.0.sync_all().map_err(io("syncing", &part))?;
        Digest::from(sink.1.finalize())
    };
    if found != object.blake3 {
        let _ = std::fs::remove_file(&part);
        return Err(deltaward_release::Error::MixAndMatch {
            what: rel,
            mismatch: Mismatch::Blake3 {
                expected: object.blake3,
                found,
            },
        }
        .into());
    }
    Ok(part)
}

enum PassError {
    Upstream(UpstreamError),
    TooLong,
    Local(Error),
}

/// The downloaded file and the hash of what it holds.
type Sink = Arc<std::sync::Mutex<(std::fs::File, blake3::Hasher)>>;

/// One request for the rest of the object, appended to the file as it arrives.
async fn pass(
    up: &Upstream,
    rel: &str,
    length: u64,
    sink: &Sink,
    path: &Path,
    have: &mut u64,
    on: &(dyn Fn(Event) + Send + Sync),
) -> std::result::Result<(), PassError> {
    let url = format!("{}/{rel}", up.base());
    let opened = up.open(rel, *have).await.map_err(PassError::Upstream)?;
    if opened.total.is_some_and(|t| t > length) {
        return Err(PassError::TooLong);
    }
    let mut skip = opened.skip;
    let mut body = opened.body;
    let mut batch = Batcher::default();
    let write = |b: Bytes| {
        let sink = sink.clone();
        let path = path.to_path_buf();
        async move {
            let n = b.len() as u64;
            tokio::task::spawn_blocking(move || {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                std::io::Write::write_all(&mut s.0, &b).map_err(|source| Error::Io {
                    action: "writing",
                    path,
                    source,
                })?;
                s.1.update(&b);
                Ok(())
            })
            .await
            .map_err(|e| {
                PassError::Local(Error::Io {
                    action: "writing",
                    path: PathBuf::from("(download)"),
                    source: std::io::Error::other(e),
                })
            })?
            .map_err(PassError::Local)?;
            Ok::<u64, PassError>(n)
        }
    };
    let result = loop {
        let chunk = match up.chunk(&url, &mut body, *have).await {
            Ok(Some(c)) => c,
            Ok(None) => break Ok(()),
            Err(e) => break Err(PassError::Upstream(e)),
        };
        let chunk = crate::upstream::skip_prefix(chunk, &mut skip);
        if *have + batch_len(&batch) + chunk.len() as u64 > length {
            break Err(PassError::TooLong);
        }
        if let Some(b) = batch.push(&chunk) {
            *have += write(b).await?;
            on(Event::Progress {
                phase: Phase::Download,
                done: *have,
                total: length,
            });
        }
    };
    if let Some(b) = batch.take() {
        *have += write(b).await?;
        on(Event::Progress {
            phase: Phase::Download,
            done: *have,
            total: length,
        });
    }
    result
}

fn batch_len(b: &Batcher) -> u64 {
    b.len() as u64
}

/// Posts the queued reports, then this one, to the first mirror that takes them;
/// what no mirror takes is queued in `queue` for the next run.
async fn deliver(ups: &[Arc<Upstream>], report: &Report, queue: &Path) {
    let body = match serde_json::to_vec(report) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("encoding the report: {e}");
            return;
        }
    };
    let mut pending: Vec<(Option<PathBuf>, Vec<u8>)> = queued(queue)
        .into_iter()
        .filter_map(|p| {
            // Regular files only, capped: a FIFO or /dev/zero planted in the queue
            // neither blocks nor fills memory.
            let b =
                crate::config::read_capped(&p, crate::report::REPORT_MAX_BYTES as u64).ok()??;
            Some((Some(p), b))
        })
        .collect();
    pending.push((None, body));
    for (path, bytes) in pending {
        let mut sent = false;
        for up in ups {
            match up.post_json("v1/reports", Bytes::from(bytes.clone())).await {
                Ok(s) if s.is_success() => {
                    sent = true;
                    break;
                }
                Ok(s) => tracing::warn!("{}: the report was answered with {s}", up.base()),
                Err(e) => tracing::warn!("{}: delivering the report: {e}", up.base()),
            }
        }
        match (sent, path) {
            (true, Some(p)) => {
                let _ = std::fs::remove_file(p);
            }
            (false, None) => {
                let name = format!(
                    "{}-{}.json",
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos()),
                    &Digest::of(&bytes).to_string()[..16]
                );
                let p = queue.join(name);
                let r = std::fs::create_dir_all(queue)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        deltaward_engine::write_new_file(&p, &bytes).map_err(|e| e.to_string())
                    });
                match r {
                    Ok(()) => {
                        tracing::warn!("no mirror took the report; queued as {}", p.display())
                    }
                    Err(e) => tracing::warn!("queueing the report as {}: {e}", p.display()),
                }
            }
            _ => {}
        }
    }
}

/// Reports queued by earlier runs, oldest first.
fn queued(queue: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(queue)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

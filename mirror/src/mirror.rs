//! Mirror mode: documents and objects from the upstream, verified, cached and served.

use std::{collections::HashSet, path::Path, sync::Arc};

use bytes::Bytes;
use deltaward_engine::Digest;

use crate::{
    cache::{CacheDir, Objects},
    config::Config,
    docs::Docs,
    error::{ConfigError, Error, Result},
    fill::{self, Fill, Fills, Joined},
    log::{DeliveryLog, LogConfig},
    metrics::Metrics,
    s3::S3Options,
    upstream::{Location, Upstream},
};

/// Reads the mirror's own secret key (unencrypted minisign key file).
pub fn load_key(path: &Path) -> Result<deltaward_engine::SecretKey> {
    let f = deltaward_engine::open_regular(path).map_err(|source| Error::Io {
        action: "opening",
        path: path.to_path_buf(),
        source,
    })?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(f, 16 << 10), &mut text).map_err(
        |source| Error::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        },
    )?;
    Ok(deltaward_engine::SecretKey::from_text(&text, None)
        .map_err(deltaward_engine::Error::from)?)
}

/// A caching mirror of one upstream.
#[derive(Debug)]
pub struct Mirror {
    /// Verified documents.
    pub docs: Docs,
    /// Cached objects.
    pub objects: Objects,
    fills: Fills,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    _cache: Arc<CacheDir>,
    /// The delivery log, when `log_dir` is set.
    pub log: Option<Arc<DeliveryLog>>,
    /// The mirror's own public key (with a log key), that approvals must verify under.
    approvals: Option<deltaward_engine::TrustedKeys>,
    require_approval: bool,
}

/// How an object request is answered.
#[derive(Debug)]
pub enum ObjectAnswer {
    /// From the cache.
    Cached(Bytes),
    /// From a fill in progress (this request may have started it).
    Filling(Arc<Fill>),
    /// No verified release names it.
    NotNamed,
}

impl Mirror {
    /// Opens the cache (locking it), rebuilds its index, and loads the trusted root
    /// and the cached documents.
    pub fn open(config: &Config, metrics: Arc<Metrics>) -> Result<Self> {
        let missing = |setting| ConfigError::Missing {
            mode: "the mirror",
            setting,
        };
        let upstream_url = config.upstream.as_deref().ok_or(missing("--upstream"))?;
        let cache_dir = config.cache.as_deref().ok_or(missing("--cache"))?;
        let trust = config.trust.as_deref().ok_or(missing("--trust"))?;
        let cache = Arc::new(CacheDir::open(cache_dir)?);
        let location = Location::parse(
            upstream_url,
            &S3Options {
                endpoint: config.endpoint.clone(),
                region: config.region.clone(),
            },
        )?;
        let upstream = Arc::new(Upstream::new(
            location,
            config.upstream_ca.as_deref(),
            config.upstream_rate,
            &config.limits,
            metrics.clone(),
        )?);
        let objects = Objects::open(&cache, config.max_cache_size, metrics.clone())?;
        let approvals = match (&config.log_key, config.require_approval) {
            (Some(k), _) => {
                let key = load_key(k)?;
                let mut keys = deltaward_engine::TrustedKeys::new();
                if let Some(line) = key.public_base64() {
                    keys.add_text(&line)
                        .map_err(deltaward_engine::Error::from)?;
                }
                Some(keys)
            }
            (None, true) => return Err(missing("--log-key (for --require-approval)").into()),
            (None, false) => None,
        };
        let require_approval = config.require_approval;
        let log = match (&config.log_dir, &config.log_key) {
            (Some(dir), Some(key)) => Some(Arc::new(DeliveryLog::open(
                dir,
                load_key(key)?,
                LogConfig {
                    checkpoint_every: config.limits.log_checkpoint_every.max(1),
                    checkpoint_interval: config.limits.log_checkpoint_interval,
                    max_file_bytes: config.limits.log_max_file_bytes.max(4096),
                },
                serde_json::json!({
                    "mode": "mirror",
                    "upstream": upstream_url,
                    "cache": cache_dir.display().to_string(),
                    "version": env!("CARGO_PKG_VERSION"),
                }),
            )?)),
            (None, None) => None,
            (Some(_), None) => return Err(missing("--log-key").into()),
            (None, Some(_)) => return Err(missing("--log-dir").into()),
        };
        let docs = Docs::open(
            cache.clone(),
            upstream.clone(),
            trust,
            config.limits.metadata_max_age,
            metrics.clone(),
            log.clone(),
        )?;
        Ok(Self {
            docs,
            objects,
            fills: Fills::default(),
            upstream,
            metrics,
            _cache: cache,
            log,
            approvals,
            require_approval,
        })
    }

    /// Whether devices may have this release now: always without
    /// `require_approval`; with it, once an approval signed by this mirror's key names
    /// the release as cached. The first time an approval is seen it is written to the
    /// delivery log.
    pub fn release_allowed(&self, product: &str, version: &str) -> bool {
        if !self.require_approval {
            return true;
        }
        self.site_approval_verifies(product, version)
    }

    /// Whether a site approval of the cached release verifies under this mirror's
    /// key (none without a log key); the first time one does, it is written to the
    /// delivery log.
    pub fn site_approval_verifies(&self, product: &str, version: &str) -> bool {
        let Some(keys) = &self.approvals else {
            return false;
        };
        let Some(entry) = self.docs.cached_release(product, version) else {
            return false;
        };
        let cache = self._cache.dir();
        let Some(a) = crate::approval::approved(cache, keys, product, version, &entry) else {
            return false;
        };
        if self.log.is_some() && !crate::approval::logged(cache, &a) {
            self.record("approval", serde_json::to_value(&a).unwrap_or_default());
            if let Err(e) = crate::approval::mark_logged(cache, &a) {
                tracing::warn!("marking the approval as logged: {e}");
            }
        }
        true
    }

    /// Whether devices may have this object now: without `require_approval`,
    /// always; with it, when an approved release names it.
    pub fn object_allowed(&self, d: &Digest) -> bool {
        if !self.require_approval {
            return true;
        }
        self.docs
            .releases_naming(d)
            .iter()
            .any(|(p, v)| self.release_allowed(p, v))
    }

    /// The objects devices on this site still need for the current releases, as
    /// their latest reports show: the patch for each base image a device runs, and
    /// the full image when a device runs an image no patch is for. Eviction never
    /// drops these; `mirror sync` fetches them first.
    pub fn needed_by_devices(&self) -> HashSet<Digest> {
        let (devices, _, _) = crate::report::read_stored(&self._cache.dir().join("reports"));
        let mut needed = HashSet::new();
        for release in self.docs.current_releases() {
            let target = release.target.blake3.to_string();
            for r in devices
                .iter()
                .map(|d| &d.latest)
                .filter(|r| r.product == release.product)
            {
                let runs = r.runs_image();
                if runs == target {
                    continue;
                }
                match release.bases.iter().find(|b| b.blake3.to_string() == runs) {
                    Some(b) => needed.insert(b.patch.blake3),
                    None => needed.insert(release.full_image.object.blake3),
                };
            }
        }
        needed
    }

    /// Appends a record to the delivery log, if there is one. A failure to write is
    /// logged loudly; serving goes on.
    pub fn record(&self, kind: &str, data: serde_json::Value) {
        if let Some(log) = &self.log {
            if let Err(e) = log.append(kind, data) {
                tracing::error!("writing the delivery log: {e}");
            }
        }
    }

    /// Stores a device's report (already parsed) as `reports/<blake3>.json` in the
    /// cache directory: temporary file, fsync, rename; a report already stored is
    /// not written again. Returns the file name.
    pub fn store_report(&self, bytes: &[u8]) -> Result<String> {
        let dir = self._cache.dir().join("reports");
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            action: "creating",
            path: dir.clone(),
            source,
        })?;
        let name = format!("{}.json", Digest::of(bytes));
        let path = dir.join(&name);
        // The same report twice (a retry whose answer was lost): stored once.
        if let Err(e) = deltaward_engine::write_new_file(&path, bytes) {
            if !path.exists() {
                return Err(e.into());
            }
        }
        tracing::info!("stored report {name}");
        Ok(name)
    }

    /// The upstream.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        self._cache.dir()
    }

    /// Answers an object request: from the cache, or by joining or starting its
    /// fill. Only objects a verified release names are fetched.
    pub fn object(self: &Arc<Self>, d: &Digest) -> Result<ObjectAnswer> {
        if let Some(b) = self.objects.get(d) {
            self.metrics.cache_hits.inc();
            return Ok(ObjectAnswer::Cached(b));
        }
        let Some(length) = self.docs.signed_length(d) else {
            return Ok(ObjectAnswer::NotNamed);
        };
        self.metrics.cache_misses.inc();
        match self.fills.join(*d, length, || self.objects.create(d))? {
            Joined::Waiting(f) => {
                self.metrics.coalesced_waiters.inc();
                Ok(ObjectAnswer::Filling(f))
            }
            Joined::Started(f, writer) => {
                let me = self.clone();
                let digest = *d;
                tokio::spawn(async move { me.fill(digest, length, writer).await });
                Ok(ObjectAnswer::Filling(f))
            }
        }
    }

    async fn fill(&self, digest: Digest, length: u64, mut writer: Box<fill::FillWriter>) {
        let r = match fill::run(&self.upstream, digest, length, &mut writer).await {
            Ok(()) => (*writer).commit(digest, length).await,
            Err(e) => {
                drop(writer);
                Err(e)
            }
        };
        match r {
            Ok(w) => {
                self.objects.insert(
                    digest,
                    length,
                    &self.docs.pinned(),
                    &self.needed_by_devices(),
                );
                w.done();
                tracing::info!("cached object {digest} ({length} bytes)");
                self.record(
                    "fetch",
                    serde_json::json!({"what": format!("objects/{digest}"), "bytes": length, "result": "verified"}),
                );
            }
            Err(e) => {
                let refused = matches!(e, Error::Verify(_));
                if refused {
                    self.metrics.verification_failures.inc();
                }
                tracing::warn!("not caching object {digest}: {e}");
                self.record(
                    "fetch",
                    serde_json::json!({
                        "what": format!("objects/{digest}"),
                        "result": if refused { "refused" } else { "failed" },
                        "reason": e.to_string(),
                    }),
                );
            }
        }
        self.fills.finish(&digest);
    }
}

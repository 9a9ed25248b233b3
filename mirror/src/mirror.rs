//! Mirror mode: documents and objects from the upstream, verified, cached and served.

use std::{path::Path, sync::Arc};

use bytes::Bytes;
use deltaward_engine::Digest;

use crate::{
    cache::{CacheDir, Objects},
    config::Config,
    docs::Docs,
    error::{ConfigError, Error, Result},
    fill::{self, Fill, Fills, Joined},
    metrics::Metrics,
    upstream::Upstream,
};

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
        let upstream = Arc::new(Upstream::new(
            upstream_url,
            config.upstream_ca.as_deref(),
            config.upstream_rate,
            &config.limits,
            metrics.clone(),
        )?);
        let objects = Objects::open(&cache, config.max_cache_size, metrics.clone())?;
        let docs = Docs::open(
            cache.clone(),
            upstream.clone(),
            trust,
            config.limits.metadata_max_age,
            metrics.clone(),
        )?;
        Ok(Self {
            docs,
            objects,
            fills: Fills::default(),
            upstream,
            metrics,
            _cache: cache,
        })
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
                self.objects.insert(digest, length, &self.docs.pinned());
                w.done();
                tracing::info!("cached object {digest} ({length} bytes)");
            }
            Err(e) => {
                if matches!(e, Error::Verify(_)) {
                    self.metrics.verification_failures.inc();
                }
                tracing::warn!("not caching object {digest}: {e}");
            }
        }
        self.fills.finish(&digest);
    }
}

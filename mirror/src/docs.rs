//! Signed documents in mirror mode: fetched from the upstream with their
//! signatures, verified under the trusted root before they are cached or served,
//! revalidated by `ETag` after `metadata_max_age`, and served from the cache while
//! the upstream is unreachable, until their signed expiry and never after.
//!
//! - `root.json` is the newest root of the chain the mirror has followed from its
//!   trusted root (`--trust`), one verified rotation (`roots/N+1.root.json`) at a time.
//!   Older roots (`roots/N.root.json` below the trusted one) are accepted when the
//!   next root verifies as their rotation.
//! - `channel.json` must carry the channel role's threshold under that root, name
//!   its product, be unexpired and not older than the cached one.
//! - `release.json` must carry the release role's threshold, be the release its path
//!   names, unexpired, and match the length and hash its cached channel entry signs.
//!
//! A cached release is what lets an object in: the mirror fetches only objects a
//! verified release names, and requires the signed length.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use deltaward_engine::Digest;
use deltaward_release::{
    check::{verify_channel, verify_release},
    limits::{
        CHANNEL_JSON_MAX_BYTES, RELEASE_JSON_MAX_BYTES, ROOT_JSON_MAX_BYTES,
        SIGNATURE_FILE_MAX_BYTES,
    },
    model::{Channel, Release, Root},
    repo::parse_time,
    trust::{verify_document, verify_rotation, RoleName},
    ReleaseId,
};

use serde_json::json;

use crate::{
    cache::{CacheDir, Envelope},
    error::{Error, Result, UpstreamError, VerifyError},
    log::DeliveryLog,
    metrics::Metrics,
    route::Doc,
    upstream::Upstream,
};

/// What a cached document is.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// A root.
    Root(Root),
    /// A channel.
    Channel(Channel),
    /// A release.
    Release(Box<Release>),
}

/// A verified document as served.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its bytes.
    pub doc: Bytes,
    /// Its `.minisig` text, when known.
    pub sig: Option<Bytes>,
    /// The upstream's `ETag`, to revalidate with.
    pub upstream_etag: Option<String>,
    /// When it was last verified or revalidated upstream.
    pub checked: Instant,
    /// Its signed expiry.
    pub expires: SystemTime,
    /// The document.
    pub parsed: Parsed,
}

impl Entry {
    fn new(
        doc: Bytes,
        sig: Option<Bytes>,
        upstream_etag: Option<String>,
        parsed: Parsed,
    ) -> Result<Self> {
        let (file, expires) = match &parsed {
            Parsed::Root(r) => ("root.json", &r.expires),
            Parsed::Channel(c) => ("channel.json", &c.expires),
            Parsed::Release(r) => ("release.json", &r.expires),
        };
        let expires = parse_time(file, expires)?;
        Ok(Self {
            doc,
            sig,
            upstream_etag,
            checked: Instant::now(),
            expires,
            parsed,
        })
    }

    fn envelope(&self) -> Envelope {
        Envelope {
            doc: String::from_utf8_lossy(&self.doc).into_owned(),
            sig: self
                .sig
                .as_ref()
                .map(|s| String::from_utf8_lossy(s).into_owned()),
            upstream_etag: self.upstream_etag.clone(),
        }
    }
}

#[derive(Debug)]
struct State {
    /// The newest trusted root.
    root: Root,
    entries: HashMap<Doc, Arc<Entry>>,
}

/// The mirror's verified documents.
#[derive(Debug)]
pub struct Docs {
    cache: Arc<CacheDir>,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    max_age: Duration,
    state: Mutex<State>,
    flights: tokio::sync::Mutex<HashMap<Doc, Arc<tokio::sync::Mutex<()>>>>,
    log: Option<Arc<DeliveryLog>>,
}

pub(crate) fn max_bytes(doc: &Doc) -> u64 {
    match doc {
        Doc::Root | Doc::RootVersion(_) => ROOT_JSON_MAX_BYTES,
        Doc::Channel(_) => CHANNEL_JSON_MAX_BYTES,
        Doc::Release(..) => RELEASE_JSON_MAX_BYTES,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Docs {
    /// Loads the trusted root (the cached chain's newest, or `trust` if that is
    /// newer) and the cached documents, re-verifying each under it; a cached
    /// document that no longer verifies (expired, keys rotated out) is dropped.
    pub fn open(
        cache: Arc<CacheDir>,
        upstream: Arc<Upstream>,
        trust: &Path,
        max_age: Duration,
        metrics: Arc<Metrics>,
        log: Option<Arc<DeliveryLog>>,
    ) -> Result<Self> {
        let trust_bytes = deltaward_engine::open_regular(trust)
            .and_then(|f| {
                let mut b = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(f, ROOT_JSON_MAX_BYTES + 1),
                    &mut b,
                )?;
                Ok(b)
            })
            .map_err(|source| Error::Io {
                action: "reading",
                path: trust.to_path_buf(),
                source,
            })?;
        let trusted = Root::from_json(&trust_bytes)?;
        let mut root_entry = Entry::new(
            Bytes::from(trust_bytes),
            None,
            None,
            Parsed::Root(trusted.clone()),
        )?;
        let mut root = trusted;
        if let Some(env) = cache.read_doc("root.json")? {
            if let Ok(r) = Root::from_json(env.doc.as_bytes()) {
                if r.version >= root.version {
                    root = r.clone();
                    root_entry = Entry::new(
                        Bytes::from(env.doc),
                        env.sig.map(Bytes::from),
                        env.upstream_etag,
                        Parsed::Root(r),
                    )?;
                }
            }
        }
        // Revalidate soon after start.
        root_entry.checked = Instant::now() - max_age;
        let mut entries = HashMap::new();
        entries.insert(Doc::Root, Arc::new(root_entry));
        let docs = Self {
            cache,
            upstream,
            metrics,
            max_age,
            state: Mutex::new(State { root, entries }),
            flights: tokio::sync::Mutex::default(),
            log,
        };
        docs.load_cached();
        Ok(docs)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest trusted root.
    pub fn root(&self) -> Root {
        self.lock().root.clone()
    }

    fn load_cached(&self) {
        let now = SystemTime::now();
        let rels = self.cache.doc_rels();
        // Channels before releases: a release is checked against its channel entry.
        let mut docs: Vec<Doc> = rels
            .iter()
            .filter_map(|rel| match crate::route::Route::parse(&format!("/{rel}")) {
                Some(crate::route::Route::Document { doc, sig: false }) if doc != Doc::Root => {
                    Some(doc)
                }
                _ => None,
            })
            .collect();
        docs.sort();
        for doc in docs {
            let rel = doc.rel();
            let Ok(Some(env)) = self.cache.read_doc(&rel) else {
                continue;
            };
            let sig = env.sig.clone().unwrap_or_default();
            let parsed = match &doc {
                Doc::RootVersion(_) => Root::from_json(env.doc.as_bytes()).map(Parsed::Root),
                Doc::Channel(p) => verify_channel(&self.root(), p, env.doc.as_bytes(), &sig, now)
                    .map(|(c, _)| c)
                    .map(Parsed::Channel),
                Doc::Release(p, v) => self
                    .check_release(p, v, env.doc.as_bytes(), &sig, now)
                    .map(|r| Parsed::Release(Box::new(r))),
                Doc::Root => continue,
            };
            match parsed.map_err(Error::from).and_then(|p| {
                Entry::new(
                    Bytes::from(env.doc),
                    env.sig.map(Bytes::from),
                    env.upstream_etag,
                    p,
                )
            }) {
                Ok(mut e) => {
                    e.checked = Instant::now() - self.max_age;
                    self.lock().entries.insert(doc, Arc::new(e));
                }
                Err(e) => tracing::info!("not serving the cached {rel} any more: {e}"),
            }
        }
    }

    fn check_release(
        &self,
        product: &str,
        version: &str,
        bytes: &[u8],
        sigs: &str,
        now: SystemTime,
    ) -> deltaward_release::Result<Release> {
        let (root, entry) = {
            let st = self.lock();
            let entry = st
                .entries
                .get(&Doc::Channel(product.to_owned()))
                .and_then(|e| match &e.parsed {
                    Parsed::Channel(c) => c.releases.iter().find(|r| r.version == version).cloned(),
                    _ => None,
                });
            (st.root.clone(), entry)
        };
        let id = ReleaseId {
            product: product.to_owned(),
            version: version.to_owned(),
            counter: entry.as_ref().map_or(0, |e| e.counter),
        };
        verify_release(&root, &id, entry.as_ref(), bytes, sigs, now).map(|(r, _)| r)
    }

    fn cached(&self, doc: &Doc) -> Option<Arc<Entry>> {
        self.lock().entries.get(doc).cloned()
    }

    /// The bytes of a cached release.json.
    pub fn cached_release(&self, product: &str, version: &str) -> Option<Bytes> {
        self.cached(&Doc::Release(product.to_owned(), version.to_owned()))
            .map(|e| e.doc.clone())
    }

    /// The cached releases (product, version) that name an object.
    pub fn releases_naming(&self, d: &Digest) -> Vec<(String, String)> {
        let st = self.lock();
        st.entries
            .iter()
            .filter_map(|(doc, e)| match (doc, &e.parsed) {
                (Doc::Release(p, v), Parsed::Release(r))
                    if r.bases
                        .iter()
                        .map(|b| &b.patch)
                        .chain([&r.full_image.object])
                        .any(|o| &o.blake3 == d) =>
                {
                    Some((p.clone(), v.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The signed length of an object, if a cached release names it.
    pub fn signed_length(&self, d: &Digest) -> Option<u64> {
        let st = self.lock();
        st.entries.values().find_map(|e| match &e.parsed {
            Parsed::Release(r) => r
                .bases
                .iter()
                .map(|b| &b.patch)
                .chain([&r.full_image.object])
                .find(|o| &o.blake3 == d)
                .map(|o| o.length),
            _ => None,
        })
    }

    /// Objects that current releases name: the newest release of each cached
    /// channel, while it is unexpired (the one devices install).
    pub fn pinned(&self) -> HashSet<Digest> {
        let now = SystemTime::now();
        let st = self.lock();
        let mut out = HashSet::new();
        for (doc, e) in &st.entries {
            let (Doc::Release(p, v), Parsed::Release(r)) = (doc, &e.parsed) else {
                continue;
            };
            let newest = st.entries.get(&Doc::Channel(p.clone())).is_some_and(|c| {
                matches!(&c.parsed, Parsed::Channel(ch)
                    if ch.releases.iter().max_by_key(|x| x.counter).is_some_and(|x| &x.version == v))
            });
            if newest && e.expires > now {
                out.extend(r.bases.iter().map(|b| b.patch.blake3));
                out.insert(r.full_image.object.blake3);
            }
        }
        out
    }

    /// Fetches the releases that cached channels list but the cache lacks (an
    /// object asked for before its release was), each verified as usual.
    pub async fn fetch_listed_releases(&self) {
        let missing: Vec<Doc> = {
            let st = self.lock();
            st.entries
                .iter()
                .filter_map(|(d, e)| match (d, &e.parsed) {
                    (Doc::Channel(p), Parsed::Channel(c)) => Some((p.clone(), c.clone())),
                    _ => None,
                })
                .flat_map(|(p, c)| {
                    c.releases
                        .into_iter()
                        .map(move |r| Doc::Release(p.clone(), r.version))
                })
                .filter(|d| !st.entries.contains_key(d))
                .collect()
        };
        for doc in missing {
            if let Err(e) = self.get(&doc).await {
                tracing::info!("{}: {e}", doc.rel());
            }
        }
    }

    /// The newest cached release of each cached channel (what devices install now).
    pub fn current_releases(&self) -> Vec<deltaward_release::model::Release> {
        let st = self.lock();
        st.entries
            .iter()
            .filter_map(|(doc, e)| match (doc, &e.parsed) {
                (Doc::Channel(p), Parsed::Channel(c)) => {
                    let newest = c.releases.iter().max_by_key(|r| r.counter)?;
                    match &st
                        .entries
                        .get(&Doc::Release(p.clone(), newest.version.clone()))?
                        .parsed
                    {
                        Parsed::Release(r) => Some((**r).clone()),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect()
    }

    /// Every cached channel's product.
    pub fn products(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .lock()
            .entries
            .keys()
            .filter_map(|d| match d {
                Doc::Channel(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    /// A verified document: from the cache while fresh, else revalidated or fetched
    /// and verified; while the upstream fails, the cached copy until its expiry.
    pub async fn get(&self, doc: &Doc) -> Result<Arc<Entry>> {
        if let Some(e) = self.fresh(doc) {
            return Ok(e);
        }
        let flight = self
            .flights
            .lock()
            .await
            .entry(doc.clone())
            .or_default()
            .clone();
        let _one = flight.lock().await;
        if let Some(e) = self.fresh(doc) {
            return Ok(e);
        }
        let cached = self.cached(doc);
        let refreshed = self.refresh(doc, cached.as_deref()).await;
        self.record_fetch(doc, cached.as_deref(), &refreshed);
        // Forget the flight once nobody else waits on it: names asked for once
        // (a mistyped product) leave nothing behind.
        {
            let mut flights = self.flights.lock().await;
            if Arc::strong_count(&flight) <= 2 {
                flights.remove(doc);
            }
        }
        match refreshed {
            Ok(e) => Ok(e),
            Err(err) => {
                if matches!(err, Error::Release(_) | Error::Verify(_)) {
                    self.metrics.verification_failures.inc();
                }
                let Some(c) = cached else { return Err(err) };
                if c.expires <= SystemTime::now() {
                    return Err(err);
                }
                tracing::warn!("serving the cached {} until it expires: {err}", doc.rel());
                // Do not ask the upstream again for every request.
                let mut again = (*c).clone();
                again.checked = Instant::now();
                let again = Arc::new(again);
                self.lock().entries.insert(doc.clone(), again.clone());
                Ok(again)
            }
        }
    }

    /// Logs an upstream fetch of a document and its verification, unless nothing
    /// new came (the cached copy revalidated).
    fn record_fetch(&self, doc: &Doc, cached: Option<&Entry>, r: &Result<Arc<Entry>>) {
        let Some(log) = &self.log else { return };
        let data = match r {
            Ok(e) if cached.is_some_and(|c| c.doc == e.doc) => return,
            // The upstream has no such file (a root rotation not yet made): nothing fetched.
            Err(Error::Upstream(UpstreamError::NotFound { .. })) => return,
            Ok(e) => json!({
                "what": doc.rel(),
                "bytes": e.doc.len(),
                "blake3": Digest::of(&e.doc).to_string(),
                "result": "verified",
            }),
            Err(err) => json!({
                "what": doc.rel(),
                "result": if matches!(err, Error::Release(_) | Error::Verify(_)) { "refused" } else { "failed" },
                "reason": err.to_string(),
            }),
        };
        if let Err(e) = log.append("fetch", data) {
            tracing::error!("writing the delivery log: {e}");
        }
    }

    fn fresh(&self, doc: &Doc) -> Option<Arc<Entry>> {
        let e = self.cached(doc)?;
        (e.checked.elapsed() < self.max_age && e.expires > SystemTime::now()).then_some(e)
    }

    async fn fetch(
        &self,
        rel: &str,
        max: u64,
        etag: Option<&str>,
    ) -> Result<crate::upstream::Fetched> {
        Ok(self.upstream.get_small(rel, max, etag).await?)
    }

    async fn fetch_sig(&self, rel: &str) -> Result<Bytes> {
        Ok(self
            .fetch(&format!("{rel}.minisig"), SIGNATURE_FILE_MAX_BYTES, None)
            .await?
            .body)
    }

    fn store(&self, doc: &Doc, e: Entry) -> Result<Arc<Entry>> {
        self.cache.write_doc(&doc.rel(), &e.envelope())?;
        let e = Arc::new(e);
        self.lock().entries.insert(doc.clone(), e.clone());
        Ok(e)
    }

    async fn refresh(&self, doc: &Doc, cached: Option<&Entry>) -> Result<Arc<Entry>> {
        match doc {
            Doc::Root => {
                self.follow_rotations().await?;
                self.cached(&Doc::Root).ok_or_else(|| {
                    Error::Upstream(UpstreamError::NotFound {
                        url: "root.json".into(),
                    })
                })
            }
            Doc::RootVersion(n) => self.old_root(*n).await,
            Doc::Channel(p) => self.channel(doc, p, cached).await,
            Doc::Release(p, v) => self.release(doc, p, v, cached).await,
        }
    }

    /// Follows rotations from the newest trusted root, and fetches its own
    /// signatures if the trusted copy came without them.
    async fn follow_rotations(&self) -> Result<()> {
        let current = self.cached(&Doc::Root);
        if let Some(c) = current.as_ref().filter(|c| c.sig.is_none()) {
            let root = self.root();
            let rel = Doc::RootVersion(root.version).rel();
            let got = self.fetch(&rel, ROOT_JSON_MAX_BYTES, None).await?;
            let sig = self.fetch_sig(&rel).await?;
            if got.body != c.doc {
                return Err(VerifyError::RootChain {
                    version: root.version,
                }
                .into());
            }
            verify_document(
                &root,
                RoleName::Root,
                "root.json",
                root.version,
                &got.body,
                &text(&sig),
            )?;
            let mut e = (**c).clone();
            e.sig = Some(sig);
            e.upstream_etag = got.etag;
            self.store(&Doc::Root, e.clone())?;
            self.store(&Doc::RootVersion(root.version), e)?;
        }
        loop {
            let root = self.root();
            let Some(next) = root.version.checked_add(1) else {
                break;
            };
            let rel = Doc::RootVersion(next).rel();
            let got = match self.fetch(&rel, ROOT_JSON_MAX_BYTES, None).await {
                Ok(g) => g,
                Err(Error::Upstream(UpstreamError::NotFound { .. })) => break,
                Err(e) => return Err(e),
            };
            let sig = self.fetch_sig(&rel).await?;
            let new = verify_rotation(&root, &got.body, &text(&sig))?;
            tracing::info!("root rotated to version {}", new.version);
            let e = Entry::new(got.body, Some(sig), got.etag, Parsed::Root(new.clone()))?;
            self.store(&Doc::RootVersion(next), e.clone())?;
            self.store(&Doc::Root, e)?;
            self.lock().root = new;
        }
        let mut st = self.lock();
        if let Some(e) = st.entries.get(&Doc::Root) {
            let mut e = (**e).clone();
            e.checked = Instant::now();
            st.entries.insert(Doc::Root, Arc::new(e));
        }
        Ok(())
    }

    /// `roots/N.root.json`: a rotation above the trusted root is followed; below
    /// it, root N is accepted when root N+1 (already trusted) verifies as its
    /// rotation and N's own signatures verify.
    async fn old_root(&self, n: u64) -> Result<Arc<Entry>> {
        if n > self.root().version {
            self.follow_rotations().await?;
        }
        let mut want = self.root().version;
        if n > want {
            return Err(UpstreamError::NotFound {
                url: Doc::RootVersion(n).rel(),
            }
            .into());
        }
        let newest = self.cached(&Doc::Root);
        if want == n {
            if let Some(e) = newest.filter(|e| e.sig.is_some()) {
                return Ok(e);
            }
            self.follow_rotations().await?;
            return self
                .cached(&Doc::Root)
                .ok_or(Error::Verify(VerifyError::RootChain { version: n }));
        }
        // Walk down from the trusted root to n, each step proven by the one above.
        let mut above = match self.cached(&Doc::Root) {
            Some(e) if e.sig.is_some() => e,
            _ => {
                self.follow_rotations().await?;
                self.cached(&Doc::Root)
                    .ok_or(Error::Verify(VerifyError::RootChain { version: n }))?
            }
        };
        while want > n {
            want -= 1;
            let doc = Doc::RootVersion(want);
            if let Some(e) = self.cached(&doc) {
                above = e;
                continue;
            }
            let rel = doc.rel();
            let got = self.fetch(&rel, ROOT_JSON_MAX_BYTES, None).await?;
            let sig = self.fetch_sig(&rel).await?;
            let candidate = Root::from_json(&got.body)?;
            let above_sig = above.sig.as_deref().map(text).unwrap_or_default();
            if candidate.version != want
                || verify_rotation(&candidate, &above.doc, &above_sig).is_err()
            {
                return Err(VerifyError::RootChain { version: want }.into());
            }
            verify_document(
                &candidate,
                RoleName::Root,
                "root.json",
                want,
                &got.body,
                &text(&sig),
            )?;
            let e = Entry::new(got.body, Some(sig), got.etag, Parsed::Root(candidate))?;
            above = self.store(&doc, e)?;
        }
        Ok(above)
    }

    /// Fetches `doc`, conditionally on the cached copy's upstream ETag: `Err` with the
    /// cached entry (marked revalidated) when the upstream says it is unchanged.
    async fn fetch_doc(
        &self,
        doc: &Doc,
        cached: Option<&Entry>,
    ) -> Result<std::result::Result<crate::upstream::Fetched, Arc<Entry>>> {
        let etag = cached.and_then(|c| c.upstream_etag.as_deref());
        let got = self.fetch(&doc.rel(), max_bytes(doc), etag).await?;
        if got.status == http::StatusCode::NOT_MODIFIED {
            if let Some(c) = cached {
                let mut e = c.clone();
                e.checked = Instant::now();
                let e = Arc::new(e);
                self.lock().entries.insert(doc.clone(), e.clone());
                return Ok(Err(e));
            }
        }
        Ok(Ok(got))
    }

    async fn channel(
        &self,
        doc: &Doc,
        product: &str,
        cached: Option<&Entry>,
    ) -> Result<Arc<Entry>> {
        let rel = doc.rel();
        let got = match self.fetch_doc(doc, cached).await? {
            Ok(got) => got,
            Err(unchanged) => return Ok(unchanged),
        };
        let sig = self.fetch_sig(&rel).await?;
        let now = SystemTime::now();
        let verified = match verify_channel(&self.root(), product, &got.body, &text(&sig), now) {
            Ok((c, _)) => c,
            // Signed by keys of a newer root? Follow rotations once and try again.
            Err(first) => {
                let before = self.root().version;
                self.follow_rotations().await?;
                if self.root().version == before {
                    return Err(first.into());
                }
                verify_channel(&self.root(), product, &got.body, &text(&sig), now)?.0
            }
        };
        if let Some(Parsed::Channel(old)) = cached.map(|c| &c.parsed) {
            if verified.version < old.version {
                return Err(VerifyError::ChannelRollback {
                    product: product.to_owned(),
                    offered: verified.version,
                    cached: old.version,
                }
                .into());
            }
        }
        let e = Entry::new(got.body, Some(sig), got.etag, Parsed::Channel(verified))?;
        self.store(doc, e)
    }

    async fn release(
        &self,
        doc: &Doc,
        product: &str,
        version: &str,
        cached: Option<&Entry>,
    ) -> Result<Arc<Entry>> {
        let rel = doc.rel();
        // The channel entry signs the release's hash: have a verified channel first.
        if self.cached(&Doc::Channel(product.to_owned())).is_none() {
            if let Err(e) = Box::pin(self.get(&Doc::Channel(product.to_owned()))).await {
                tracing::debug!("no channel for {product} to check {rel} against: {e}");
            }
        }
        let got = match self.fetch_doc(doc, cached).await? {
            Ok(got) => got,
            Err(unchanged) => return Ok(unchanged),
        };
        let sig = self.fetch_sig(&rel).await?;
        let release =
            self.check_release(product, version, &got.body, &text(&sig), SystemTime::now())?;
        let e = Entry::new(
            got.body,
            Some(sig),
            got.etag,
            Parsed::Release(Box::new(release)),
        )?;
        self.store(doc, e)
    }
}

//! The cache directory: verified objects under `objects/<blake3>`, verified
//! documents (each with its signatures, as one envelope) under `docs/`, and the
//! directory's lock.
//!
//! Only verified bytes get a final name: a fill writes `objects/.<name>.tmp-*`
//! (the engine's [`AtomicFile`]), which is fsynced and renamed after its hash and
//! length are checked. At start-up the temporary files of an earlier run (killed
//! mid-fill) are removed and the index is rebuilt from the names in `objects/`,
//! least recently used first by modification time.
//!
//! Eviction keeps the bytes of objects at or under `max_cache_size`, least recently
//! used first, and evicts an object that a current, unexpired release names only when
//! nothing else is left to evict. An evicted file is unlinked; responses still
//! streaming it keep their open map.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use bytes::Bytes;
use deltaward_engine::{AtomicFile, Digest, Image};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    metrics::Metrics,
};

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A locked cache directory.
#[derive(Debug)]
pub struct CacheDir {
    dir: PathBuf,
    _lock: fs::File,
}

impl CacheDir {
    /// Creates (if needed) and locks the cache directory; a second process on the
    /// same directory gets [`Error::CacheBusy`] at once.
    pub fn open(dir: &Path) -> Result<Self> {
        for d in [dir.to_path_buf(), dir.join("objects"), dir.join("docs")] {
            fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        }
        let lock = dir.join("lock");
        let file = deltaward_engine::try_lock_file(&lock).map_err(io_err("locking", &lock))?;
        let Some(file) = file else {
            return Err(Error::CacheBusy {
                dir: dir.to_path_buf(),
                lock,
            });
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: file,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where an object lives.
    pub fn object_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("objects").join(d.to_string())
    }

    fn doc_path(&self, rel: &str) -> PathBuf {
        self.dir.join("docs").join(format!("{rel}.entry"))
    }

    /// Reads a document's envelope, if cached.
    pub fn read_doc(&self, rel: &str) -> Result<Option<Envelope>> {
        Self::read_doc_at(&self.dir, rel)
    }

    /// Reads a document's envelope from the cache directory `dir` without locking it
    /// (for commands that run beside a serving mirror).
    pub fn read_doc_at(dir: &Path, rel: &str) -> Result<Option<Envelope>> {
        let p = dir.join("docs").join(format!("{rel}.entry"));
        let f = match deltaward_engine::open_regular(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("opening", &p)(e)),
        };
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, ENVELOPE_MAX_BYTES), &mut b)
            .map_err(io_err("reading", &p))?;
        // A damaged envelope is dropped: the document is fetched again.
        Ok(serde_json::from_slice(&b).ok())
    }

    /// Stores a document's envelope atomically.
    pub fn write_doc(&self, rel: &str, env: &Envelope) -> Result<()> {
        let p = self.doc_path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        let b = serde_json::to_vec(env).map_err(|e| io_err("encoding", &p)(e.into()))?;
        deltaward_engine::write_file(&p, &b)?;
        Ok(())
    }

    /// The relative paths of every cached document (`docs/**/*.entry`).
    pub fn doc_rels(&self) -> Vec<String> {
        let root = self.dir.join("docs");
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(t) = e.file_type() else { continue };
                if t.is_dir() {
                    stack.push(p);
                } else if let Some(rel) = p
                    .strip_prefix(&root)
                    .ok()
                    .and_then(|r| r.to_str())
                    .and_then(|r| r.strip_suffix(".entry"))
                {
                    out.push(rel.to_owned());
                }
            }
        }
        out.sort();
        out
    }
}

/// Largest envelope read back (documents and signatures together).
const ENVELOPE_MAX_BYTES: u64 = 16 << 20;

/// A verified document with its signatures, as cached.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The document's bytes (JSON text).
    pub doc: String,
    /// The `.minisig` text, when known.
    pub sig: Option<String>,
    /// The upstream's `ETag` of the document, to revalidate with.
    pub upstream_etag: Option<String>,
}

#[derive(Debug)]
struct Entry {
    len: u64,
    used: u64,
    map: Option<Bytes>,
}

#[derive(Debug, Default)]
struct Index {
    map: HashMap<Digest, Entry>,
    total: u64,
    clock: u64,
}

/// The index of cached objects, with LRU eviction under a size cap.
#[derive(Debug)]
pub struct Objects {
    dir: PathBuf,
    max_bytes: Option<u64>,
    index: Mutex<Index>,
    metrics: Arc<Metrics>,
}

impl Objects {
    /// Rebuilds the index from `DIR/objects`, removing the temporary files of fills
    /// an earlier run did not finish.
    pub fn open(cache: &CacheDir, max_bytes: Option<u64>, metrics: Arc<Metrics>) -> Result<Self> {
        let dir = cache.dir().join("objects");
        let mut found = Vec::new();
        for e in fs::read_dir(&dir)
            .map_err(io_err("listing", &dir))?
            .flatten()
        {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let p = e.path();
            if name.starts_with('.') {
                tracing::info!("removing the unfinished fill {}", p.display());
                fs::remove_file(&p).map_err(io_err("removing", &p))?;
                continue;
            }
            let Ok(md) = e.metadata() else { continue };
            match Digest::from_hex(&name) {
                Some(d) if md.is_file() && name == d.to_string() => {
                    found.push((md.modified().unwrap_or(SystemTime::UNIX_EPOCH), d, md.len()));
                }
                _ => tracing::warn!("ignoring {} in the cache: not an object name", p.display()),
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, d, len) in found {
            index.clock += 1;
            index.total += len;
            index.map.insert(
                d,
                Entry {
                    len,
                    used: index.clock,
                    map: None,
                },
            );
        }
        metrics.cache_bytes.set(index.total as i64);
        metrics.cache_objects.set(index.map.len() as i64);
        Ok(Self {
            dir,
            max_bytes,
            index: Mutex::new(index),
            metrics,
        })
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.to_string())
    }

    /// Where a new object's fill is written (see [`AtomicFile`]).
    pub fn create(&self, d: &Digest) -> Result<AtomicFile> {
        Ok(AtomicFile::create(&self.path(d))?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the object is cached.
    pub fn contains(&self, d: &Digest) -> bool {
        self.lock().map.contains_key(d)
    }

    /// The cached object's bytes (mapped once and shared), marking it used.
    pub fn get(&self, d: &Digest) -> Option<Bytes> {
        {
            let mut ix = self.lock();
            ix.clock += 1;
            let clock = ix.clock;
            let e = ix.map.get_mut(d)?;
            e.used = clock;
            if let Some(m) = &e.map {
                return Some(m.clone());
            }
        }
        let path = self.path(d);
        match Image::open(&path) {
            Ok(img) => {
                let bytes = Bytes::from_owner(img);
                let mut ix = self.lock();
                if let Some(e) = ix.map.get_mut(d) {
                    e.map = Some(bytes.clone());
                }
                Some(bytes)
            }
            Err(e) => {
                // Removed from under us (by hand): forget it, fetch it again.
                tracing::warn!(
                    "cached object {} is unreadable, dropping it: {e}",
                    path.display()
                );
                let mut ix = self.lock();
                if let Some(old) = ix.map.remove(d) {
                    ix.total -= old.len;
                }
                self.gauges(&ix);
                None
            }
        }
    }

    /// Records a verified object just renamed into place, then evicts down to the cap,
    /// sparing `pinned` objects as long as anything else can go, and never evicting
    /// `needed` ones (objects devices on site still need).
    pub fn insert(&self, d: Digest, len: u64, pinned: &HashSet<Digest>, needed: &HashSet<Digest>) {
        let mut ix = self.lock();
        ix.clock += 1;
        let used = ix.clock;
        if let Some(old) = ix.map.insert(
            d,
            Entry {
                len,
                used,
                map: None,
            },
        ) {
            ix.total -= old.len;
        }
        ix.total += len;
        self.evict(&mut ix, pinned, needed, &d);
        self.gauges(&ix);
    }

    /// Evicts down to the cap, never `keep` (the object just added, being served).
    fn evict(
        &self,
        ix: &mut Index,
        pinned: &HashSet<Digest>,
        needed: &HashSet<Digest>,
        keep: &Digest,
    ) {
        let Some(max) = self.max_bytes else { return };
        while ix.total > max {
            let victim = ix
                .map
                .iter()
                .filter(|(d, _)| *d != keep && !needed.contains(*d))
                .min_by_key(|(d, e)| (pinned.contains(*d), e.used))
                .map(|(d, _)| *d);
            let Some(v) = victim else { break };
            if let Some(e) = ix.map.remove(&v) {
                ix.total -= e.len;
                let p = self.path(&v);
                if let Err(err) = fs::remove_file(&p) {
                    tracing::warn!("evicting {}: {err}", p.display());
                }
                tracing::info!(
                    "evicted {v} ({} bytes{})",
                    e.len,
                    if pinned.contains(&v) {
                        ", named by a current release"
                    } else {
                        ""
                    }
                );
                self.metrics.evictions.inc();
            }
        }
    }

    fn gauges(&self, ix: &Index) {
        self.metrics.cache_bytes.set(ix.total as i64);
        self.metrics.cache_objects.set(ix.map.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(objects: &Objects, cache: &CacheDir, data: &[u8], pinned: &HashSet<Digest>) -> Digest {
        let d = Digest::of(data);
        let mut f = objects.create(&d).expect("create");
        std::io::Write::write_all(&mut f, data).expect("write");
        f.commit().expect("commit");
        assert!(cache.object_path(&d).exists());
        objects.insert(d, data.len() as u64, pinned, &HashSet::new());
        d
    }

    #[test]
    fn eviction_takes_the_least_recently_used_and_pinned_last() {
        let t = tempfile::tempdir().expect("tmp");
        let cache = CacheDir::open(t.path()).expect("cache");
        let objects = Objects::open(&cache, Some(300), Arc::default()).expect("objects");
        let none = HashSet::new();
        let a = put(&objects, &cache, &[1; 100], &none);
        let b = put(&objects, &cache, &[2; 100], &none);
        let c = put(&objects, &cache, &[3; 100], &none);
        assert!(objects.get(&a).is_some()); // a is now more recent than b
        let pinned: HashSet<_> = [b].into();
        let d = put(&objects, &cache, &[4; 100], &pinned);
        // c is the least recently used unpinned object.
        assert!(!objects.contains(&c) && !cache.object_path(&c).exists());
        assert!(objects.contains(&a) && objects.contains(&b) && objects.contains(&d));
        // Only pinned objects left to evict: they go too, least recent first.
        let all: HashSet<_> = [a, b, d].into();
        let e = put(&objects, &cache, &[5; 200], &all);
        assert!(objects.contains(&e));
        assert!(!objects.contains(&b) && !objects.contains(&a));
        assert_eq!(objects.metrics.evictions.get(), 3);
    }

    #[test]
    fn restart_drops_unfinished_fills_and_keeps_objects() {
        let t = tempfile::tempdir().expect("tmp");
        let d = {
            let cache = CacheDir::open(t.path()).expect("cache");
            let objects = Objects::open(&cache, None, Arc::default()).expect("objects");
            let d = put(&objects, &cache, b"hello", &HashSet::new());
            let mut half = objects.create(&Digest::of(b"other")).expect("create");
            std::io::Write::write_all(&mut half, b"oth").expect("write");
            std::mem::forget(half); // as if killed: the temporary file stays
            d
        };
        let tmp_count = || {
            fs::read_dir(t.path().join("objects"))
                .expect("ls")
                .filter(|e| {
                    e.as_ref()
                        .map(|e| e.file_name().to_string_lossy().starts_with('.'))
                        .unwrap_or(false)
                })
                .count()
        };
        assert_eq!(tmp_count(), 1);
        let cache = CacheDir::open(t.path()).expect("cache");
        let objects = Objects::open(&cache, None, Arc::default()).expect("objects");
        assert_eq!(tmp_count(), 0);
        assert_eq!(objects.get(&d).as_deref(), Some(&b"hello"[..]));
        assert!(!objects.contains(&Digest::of(b"other")));
    }

    #[test]
    fn a_second_process_cannot_share_the_directory() {
        let t = tempfile::tempdir().expect("tmp");
        let _a = CacheDir::open(t.path()).expect("first");
        assert!(matches!(
            CacheDir::open(t.path()),
            Err(Error::CacheBusy { .. })
        ));
    }
}

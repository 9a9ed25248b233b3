//! Single flight: however many clients miss the same object at once, one upstream
//! fetch fills it, and every waiting client streams the bytes as they arrive.
//!
//! The policy, for auditors and integrators:
//! - The fill writes a temporary file in `objects/`, hashing as it writes; a cut
//!   download is resumed with a Range request (bounded retries with backoff), and no
//!   more than the signed length plus one byte is accepted.
//! - Clients stream from that file, but the last byte of every response is held back
//!   until the whole object has been verified (BLAKE3 = name, length = signed
//!   length), fsynced and renamed into the cache. If verification fails, every
//!   client's connection is cut short of its `Content-Length`: no client ever gets a
//!   complete 200 of bad bytes, and nothing is cached.
//! - A Range request for an object being filled waits for the fill to finish and is
//!   then answered from the cache (a 206 cannot be held back a byte short).
//! - The fill runs on its own: a client that gives up does not stop it.

use std::{
    collections::HashMap,
    io,
    os::unix::fs::FileExt,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use deltaward_engine::{AtomicFile, Digest};
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::{mpsc, watch};

use crate::{
    error::{Error, UpstreamError, VerifyError},
    respond::Body,
};

/// How far a fill has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bytes written to the temporary file so far.
    Writing(u64),
    /// Verified and in the cache.
    Done,
    /// Failed (upstream or verification); nothing cached.
    Failed,
}

/// One object being fetched.
#[derive(Debug)]
pub struct Fill {
    /// The object.
    pub digest: Digest,
    /// Its signed length.
    pub length: u64,
    reader: std::fs::File,
    progress: watch::Receiver<Progress>,
}

/// The fills in progress.
#[derive(Debug, Default)]
pub struct Fills {
    map: Mutex<HashMap<Digest, Arc<Fill>>>,
}

/// What [`Fills::join`] found.
#[derive(Debug)]
pub enum Joined {
    /// Another request had started this fill.
    Waiting(Arc<Fill>),
    /// This request starts it: run the returned writer.
    Started(Arc<Fill>, Box<FillWriter>),
}

/// The writing side of a fill.
#[derive(Debug)]
pub struct FillWriter {
    file: Option<AtomicFile>,
    hasher: blake3::Hasher,
    written: u64,
    progress: watch::Sender<Progress>,
}

impl Fills {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Fill>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the fill of `digest`, or starts one writing to `create()`'s file.
    pub fn join(
        &self,
        digest: Digest,
        length: u64,
        create: impl FnOnce() -> Result<AtomicFile, Error>,
    ) -> Result<Joined, Error> {
        let mut map = self.lock();
        if let Some(f) = map.get(&digest) {
            return Ok(Joined::Waiting(f.clone()));
        }
        let file = create()?;
        let tmp: PathBuf = file.temp_path().to_path_buf();
        let reader = deltaward_engine::open_regular(&tmp).map_err(|source| Error::Io {
            action: "opening",
            path: tmp,
            source,
        })?;
        let (tx, rx) = watch::channel(Progress::Writing(0));
        let fill = Arc::new(Fill {
            digest,
            length,
            reader,
            progress: rx,
        });
        map.insert(digest, fill.clone());
        Ok(Joined::Started(
            fill,
            Box::new(FillWriter {
                file: Some(file),
                hasher: blake3::Hasher::new(),
                written: 0,
                progress: tx,
            }),
        ))
    }

    /// Forgets a finished fill (after the object is in the cache index, or failed).
    pub fn finish(&self, digest: &Digest) {
        self.lock().remove(digest);
    }
}

impl FillWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a batch (hashing it) on a blocking thread, then tells the readers.
    pub async fn write(&mut self, batch: Bytes) -> Result<(), Error> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        let mut hasher = std::mem::take(&mut self.hasher);
        let (file, hasher, r) = tokio::task::spawn_blocking(move || {
            let r = io::Write::write_all(&mut file, &batch);
            hasher.update(&batch);
            (file, hasher, r)
        })
        .await
        .map_err(|e| Error::Io {
            action: "writing",
            path: PathBuf::from("(fill)"),
            source: io::Error::other(e),
        })?;
        let path = file.temp_path().to_path_buf();
        self.file = Some(file);
        self.hasher = hasher;
        r.map_err(|source| Error::Io {
            action: "writing",
            path,
            source,
        })?;
        self.written = self.hasher.count();
        self.progress.send_replace(Progress::Writing(self.written));
        Ok(())
    }

    /// Verifies length and hash, then fsyncs and renames the file into the cache,
    /// giving the writer back to announce [`done`](Self::done) once the object is
    /// indexed. On any error the temporary file is removed and readers are cut.
    pub async fn commit(mut self, digest: Digest, length: u64) -> Result<Self, Error> {
        if self.written != length {
            return Err(VerifyError::ObjectLength {
                name: digest,
                expected: length,
                found: self.written,
            }
            .into());
        }
        let found = Digest::from(self.hasher.finalize());
        if found != digest {
            return Err(VerifyError::ObjectHash {
                name: digest,
                found,
            }
            .into());
        }
        let Some(file) = self.file.take() else {
            return Ok(self);
        };
        tokio::task::spawn_blocking(move || file.commit())
            .await
            .map_err(|e| Error::Io {
                action: "committing",
                path: PathBuf::from("(fill)"),
                source: io::Error::other(e),
            })??;
        Ok(self)
    }

    /// Tells the readers the object is in the cache.
    pub fn done(self) {
        self.progress.send_replace(Progress::Done);
    }
}

impl Drop for FillWriter {
    fn drop(&mut self) {
        // Anything but done() is a failure; the AtomicFile removes its temporary file.
        if !matches!(*self.progress.borrow(), Progress::Done) {
            self.progress.send_replace(Progress::Failed);
        }
    }
}

/// Accumulates upstream chunks into batches for the writer: at 256 KiB, or when
/// 100 ms have passed since the last write, so that readers see steady progress.
#[derive(Debug)]
pub struct Batcher {
    buf: BytesMut,
    last: Instant,
}

impl Default for Batcher {
    fn default() -> Self {
        Self {
            buf: BytesMut::new(),
            last: Instant::now(),
        }
    }
}

impl Batcher {
    /// Adds a chunk; returns a batch to write when one is due.
    pub fn push(&mut self, chunk: &[u8]) -> Option<Bytes> {
        self.buf.extend_from_slice(chunk);
        (self.buf.len() >= 256 << 10 || self.last.elapsed() >= Duration::from_millis(100))
            .then(|| self.take())
            .flatten()
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The rest.
    pub fn take(&mut self) -> Option<Bytes> {
        self.last = Instant::now();
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

impl Fill {
    /// Bytes written so far (the whole length once done).
    pub fn written(&self) -> u64 {
        match *self.progress.borrow() {
            Progress::Writing(n) => n,
            Progress::Done => self.length,
            Progress::Failed => 0,
        }
    }

    /// Waits until the fill has finished; true when the object is in the cache.
    /// `tick` is called at least once a second meanwhile (the connection's
    /// activity, so that the idle timeout spares a client waiting on a fill).
    pub async fn finished(&self, tick: impl Fn()) -> bool {
        let mut rx = self.progress.clone();
        loop {
            match *rx.borrow_and_update() {
                Progress::Done => return true,
                Progress::Failed => return false,
                Progress::Writing(_) => {}
            }
            tick();
            // A second without news: tick again. The sender gone: the last word stands.
            if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await {
                return matches!(*rx.borrow(), Progress::Done);
            }
        }
    }

    /// The whole object as a body that streams while the fill runs, holding back
    /// the last byte until the object is verified, and failing (which cuts the
    /// connection) if it is not.
    pub fn stream(self: Arc<Self>) -> Body {
        let (tx, rx) = mpsc::channel::<io::Result<Frame<Bytes>>>(4);
        tokio::spawn(async move {
            if let Err(e) = self.pump(&tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        StreamBody::new(stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|x| (x, rx))
        }))
        .boxed_unsync()
    }

    async fn pump(self: &Arc<Self>, tx: &mpsc::Sender<io::Result<Frame<Bytes>>>) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let len = self.length;
        let mut pos = 0u64;
        let mut rx = self.progress.clone();
        loop {
            let p = *rx.borrow_and_update();
            let avail = match p {
                Progress::Done => len,
                Progress::Writing(w) => w.min(len.saturating_sub(1)),
                Progress::Failed => {
                    return Err(io::Error::other(format!(
                        "the upstream object {} failed; the response is cut",
                        self.digest
                    )))
                }
            };
            if pos < avail {
                let n = (avail - pos).min(CHUNK);
                let me = self.clone();
                let at = pos;
                let chunk = tokio::task::spawn_blocking(move || {
                    let mut b = vec![0u8; n as usize];
                    me.reader.read_exact_at(&mut b, at).map(|()| b)
                })
                .await
                .map_err(io::Error::other)??;
                pos += n;
                if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                    return Ok(()); // the client went away
                }
                continue;
            }
            if pos >= len {
                return Ok(());
            }
            if rx.changed().await.is_err() && !matches!(*rx.borrow(), Progress::Done) {
                return Err(io::Error::other("the fill stopped"));
            }
        }
    }
}

/// Why one pass of a download stopped.
enum Stop {
    Upstream(UpstreamError),
    Verify(VerifyError),
    Local(Error),
}

/// Upstream chunks of one object into a [`FillWriter`], resuming a cut download
/// from the bytes written, with backoff; it gives up after the configured tries
/// fail in a row without progress.
pub async fn run(
    upstream: &crate::upstream::Upstream,
    digest: Digest,
    length: u64,
    writer: &mut FillWriter,
) -> Result<(), Error> {
    let rel = format!("objects/{digest}");
    let tries = upstream.tries_now();
    let mut failures = 0;
    loop {
        let before = writer.written();
        let e = match pass(upstream, &rel, digest, length, writer).await {
            Ok(()) => return Ok(()),
            Err(Stop::Verify(v)) => return Err(v.into()),
            Err(Stop::Local(e)) => return Err(e),
            Err(Stop::Upstream(e)) => e,
        };
        if writer.written() > before {
            failures = 0;
        }
        failures += 1;
        if !e.is_transient() || failures >= tries {
            return Err(e.into());
        }
        tracing::info!("{rel}: resuming at byte {} after: {e}", writer.written());
        tokio::time::sleep(crate::upstream::backoff(failures)).await;
    }
}

async fn pass(
    upstream: &crate::upstream::Upstream,
    rel: &str,
    digest: Digest,
    length: u64,
    writer: &mut FillWriter,
) -> Result<(), Stop> {
    let url = format!("{}/{rel}", upstream.base());
    let too_long = || {
        Stop::Verify(VerifyError::ObjectLength {
            name: digest,
            expected: length,
            found: length.saturating_add(1),
        })
    };
    let opened = upstream
        .open(rel, writer.written())
        .await
        .map_err(Stop::Upstream)?;
    // The whole object's length (Content-Length of a 200, the total of a 206).
    if let Some(total) = opened.total {
        if total > length {
            return Err(too_long());
        }
    }
    let mut skip = opened.skip;
    let mut body = opened.body;
    let mut batch = Batcher::default();
    let result = loop {
        let chunk = match upstream.chunk(&url, &mut body, writer.written()).await {
            Ok(Some(c)) => c,
            Ok(None) => break Ok(()),
            Err(e) => break Err(Stop::Upstream(e)),
        };
        let chunk = crate::upstream::skip_prefix(chunk, &mut skip);
        if writer.written() + batch.buf.len() as u64 + chunk.len() as u64 > length {
            break Err(too_long());
        }
        if let Some(b) = batch.push(&chunk) {
            writer.write(b).await.map_err(Stop::Local)?;
        }
    };
    if let Some(b) = batch.take() {
        writer.write(b).await.map_err(Stop::Local)?;
    }
    result
}

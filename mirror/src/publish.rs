//! Publishing a repository to S3-compatible object storage (`deltaward publish`).
//!
//! Before anything is uploaded, the repository is verified as a device would verify
//! it ([`verify_repository`]): a broken one is refused whole. Then it goes up in
//! the order that never shows a reader a broken repository:
//! 1. **objects** (patches and full images), smallest first, several at once;
//! 2. **releases** (`release.json`, each after its `.minisig`);
//! 3. **roots** (`roots/N.root.json` from 1 up, then `root.json`);
//! 4. **channels**, last: until a product's channel is replaced, readers see the
//!    previous one, and everything it names is still there.
//!
//! A publish that stops part way (killed, network lost) leaves the previous
//! channels in effect; running it again uploads what is missing.
//!
//! - **Skipping.** An object (named by its hash) whose key exists with the same
//!   length is skipped (HEAD). A document is skipped when the stored ETag is its
//!   MD5, so a second publish of the same repository uploads nothing.
//! - **Checked uploads.** Every PUT and every part carries `Content-MD5`, which the
//!   store checks before it stores anything (a mismatch is `BadDigest`), and the
//!   ETag answered must be that MD5. A multipart object's length is checked with a
//!   HEAD after it is completed.
//! - **Multipart.** Files above the part size (16 MiB by default; raised so that no
//!   file needs more than 10,000 parts) go up in parts, several at once. One
//!   semaphore bounds the requests in flight, so memory stays at most
//!   `jobs × part size`. A failed multipart upload is aborted.
//! - **Retries.** Each request is tried up to `tries` times while it fails
//!   transiently (no connection, a timeout, 5xx, 429, 408), with exponential backoff
//!   and jitter.
//! - **Bandwidth.** `rate` caps the bytes sent per second (all uploads together), for
//!   a publish over a shared link.
//! - **Caching headers.** Objects are `immutable` (their name is their hash);
//!   documents are `no-cache`, so a CDN in front of the bucket revalidates them.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use ct_codecs::{Base64, Encoder};
use deltaward_engine::Digest;
use deltaward_release::{
    inventory::{verify_repository, Document, Inventory},
    limits::{CHANNEL_JSON_MAX_BYTES, MAX_SIGNATURE_BLOCKS, SIGNATURE_FILE_MAX_BYTES},
    model::Object,
    repo::Repo,
};
use futures_util::{stream, StreamExt};
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use md5::Digest as _;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::{
    error::{Error, PublishError, Result, UpstreamError},
    s3::{self, Bucket},
    upstream::{backoff, http_client, HttpClient, RateLimit},
};

/// The most parts one upload may have (S3's limit).
const MAX_PARTS: u64 = 10_000;
/// The smallest part S3 accepts (but the last).
const MIN_PART: u64 = 5 << 20;
/// The largest part (and single PUT) S3 accepts.
const MAX_PART: u64 = 5 << 30;
/// The most bytes of an answer's body read: error documents, multipart answers,
/// and a stored channel (at most 4 MiB) read back to compare versions.
const MAX_ANSWER: usize = (CHANNEL_JSON_MAX_BYTES as usize) + (64 << 10);

/// How to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Requests with a body in flight at once (objects and parts together).
    pub jobs: usize,
    /// Files above this many bytes go up in parts of this size (at least 5 MiB).
    pub part_size: u64,
    /// Extra CA certificates (PEM) to trust for an `https://` endpoint.
    pub extra_ca: Option<PathBuf>,
    /// Time one request has to complete (sending its body included).
    pub timeout: Duration,
    /// Tries of one request.
    pub tries: u32,
    /// Cap on upload bandwidth, bytes per second (for a shared link); `None`: none.
    pub rate: Option<u64>,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            jobs: 4,
            part_size: 16 << 20,
            extra_ca: None,
            timeout: Duration::from_secs(300),
            tries: 4,
            rate: None,
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Published {
    /// `s3://BUCKET/PREFIX`.
    pub destination: String,
    /// Files the repository holds for readers (documents and their signatures
    /// counted apart).
    pub files: u64,
    /// Files uploaded.
    pub uploaded: u64,
    /// Files already there.
    pub skipped: u64,
    /// Bytes of files uploaded.
    pub bytes_uploaded: u64,
    /// Objects uploaded in parts.
    pub multipart: u64,
    /// The paths uploaded, in order of completion.
    pub paths: Vec<String>,
}

/// What happened to one file, for progress output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was there already.
    Skipped,
    /// It was uploaded (this many bytes).
    Uploaded(u64),
}

/// Progress callback: each file as it is done.
pub type OnFile<'a> = &'a (dyn Fn(&str, Outcome) + Send + Sync);

/// Verifies the repository in `repo` and uploads it to `bucket` (see the module
/// documentation for the order and the checks).
pub async fn publish(
    repo: &Path,
    bucket: &Bucket,
    opts: &PublishOptions,
    on_file: OnFile<'_>,
) -> Result<Published> {
    if !bucket.is_signed() {
        return Err(PublishError::NoCredentials.into());
    }
    let dir = repo.to_path_buf();
    let inv =
        tokio::task::spawn_blocking(move || verify_repository(&Repo::new(&dir), SystemTime::now()))
            .await
            .map_err(|e| Error::Io {
                action: "verifying",
                path: repo.to_path_buf(),
                source: std::io::Error::other(e),
            })??;
    let part_size = opts.part_size.clamp(MIN_PART, MAX_PART);
    let ctx = Ctx {
        client: http_client(opts.extra_ca.as_deref(), Duration::from_secs(30))?,
        bucket,
        repo: Repo::new(repo),
        permits: Arc::new(Semaphore::new(opts.jobs.max(1))),
        jobs: opts.jobs.max(1),
        timeout: opts.timeout,
        tries: opts.tries.max(1),
        part_size,
        rate: opts.rate.filter(|r| *r > 0).map(RateLimit::new),
    };
    let mut out = Published {
        destination: bucket.url().to_owned(),
        files: inventory_files(&inv),
        ..Published::default()
    };
    let mut record = |rel: &str, outcome: Outcome, multipart: bool| {
        match outcome {
            Outcome::Skipped => out.skipped += 1,
            Outcome::Uploaded(n) => {
                out.uploaded += 1;
                out.bytes_uploaded += n;
                out.multipart += u64::from(multipart);
                out.paths.push(rel.to_owned());
            }
        }
        on_file(rel, outcome);
    };

    // 1. Objects, several at once.
    let ctx = &ctx;
    // After a failure no new object starts, and the uploads in flight run to their
    // end (a multipart upload completes or aborts itself) rather than being dropped
    // half done.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stop = &stop;
    let mut done = stream::iter(inv.objects.iter())
        .map(|o| async move {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(None);
            }
            let outcome = ctx.object(o).await;
            if outcome.is_err() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<_, Error>(Some((o.path.as_str(), outcome?, o.length > ctx.part_size)))
        })
        .buffer_unordered(ctx.jobs);
    let mut failed = None;
    while let Some(r) = done.next().await {
        match r {
            Ok(Some((rel, outcome, multipart))) => record(rel, outcome, multipart),
            Ok(None) => {}
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    drop(done);
    if let Some(e) = failed {
        return Err(e);
    }

    // 2.-4. Documents, in order, exactly as they were verified.
    for doc in inv.documents() {
        for (file, outcome) in ctx.document(doc).await? {
            record(&file, outcome, false);
        }
    }
    Ok(out)
}

fn inventory_files(inv: &Inventory) -> u64 {
    inv.objects.len() as u64 + 2 * inv.documents().count() as u64
}

/// What every request of one publish shares.
struct Ctx<'a> {
    client: HttpClient,
    bucket: &'a Bucket,
    repo: Repo,
    permits: Arc<Semaphore>,
    jobs: usize,
    timeout: Duration,
    tries: u32,
    part_size: u64,
    rate: Option<RateLimit>,
}

/// An answer: status, headers and (capped) body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn etag(&self) -> Option<&str> {
        self.headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|e| e.trim_matches('"'))
    }

    fn length(&self) -> Option<u64> {
        self.headers
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }
}

/// MD5 as hex (an S3 ETag) and as base64 (a `Content-MD5` header).
fn md5_of(bytes: &[u8]) -> (String, String) {
    let d = md5::Md5::digest(bytes);
    let hex = d.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = Base64::encode_to_string(d).unwrap_or_default();
    (hex, b64)
}

fn content_type(rel: &str) -> &'static str {
    if rel.starts_with("objects/") {
        "application/octet-stream"
    } else if rel.ends_with(".minisig") {
        "text/plain; charset=utf-8"
    } else {
        "application/json"
    }
}

fn cache_control(rel: &str) -> &'static str {
    if rel.starts_with("objects/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

impl Ctx<'_> {
    /// One request, within the timeout, its answer's body read (capped).
    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        shown: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> std::result::Result<Answer, PublishError> {
        let mut req = Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req = req.header(
            header::USER_AGENT,
            concat!("deltaward-publish/", env!("CARGO_PKG_VERSION")),
        );
        let req = req.body(Full::new(body)).map_err(|e| UpstreamError::Url {
            url: shown.to_owned(),
            reason: e.to_string(),
        })?;
        let timeout = |_| UpstreamError::Timeout {
            url: shown.to_owned(),
            seconds: self.timeout.as_secs(),
        };
        let work = async {
            let r = self
                .client
                .request(req)
                .await
                .map_err(|source| UpstreamError::Connect {
                    url: shown.to_owned(),
                    source,
                })?;
            let (parts, body) = r.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Ok::<_, PublishError>(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let answer = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(timeout)??;
        if answer.status.is_success()
            || answer.status == StatusCode::NOT_FOUND && *method == Method::HEAD
        {
            return Ok(answer);
        }
        Err(PublishError::Store {
            url: shown.to_owned(),
            status: answer.status.as_u16(),
            message: s3::error_text(&answer.body).unwrap_or_default(),
        })
    }

    /// [`Self::send_once`] with retries while it fails transiently. The URL is
    /// signed for each try (`sign`), after the bandwidth cap allowed the body, so a
    /// slow queue never sends an expired signature.
    async fn send(
        &self,
        method: Method,
        sign: &(dyn Fn() -> String + Sync),
        shown: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> std::result::Result<Answer, PublishError> {
        if let Some(rate) = &self.rate {
            rate.take(body.len() as u64).await;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .send_once(&method, &sign(), shown, headers, body.clone())
                .await
            {
                Err(e) if e.is_transient() && attempt < self.tries => {
                    tracing::debug!(
                        "{method} {shown}: try {attempt} of {} failed: {e}",
                        self.tries
                    );
                    tokio::time::sleep(backoff(attempt)).await;
                }
                r => return r,
            }
        }
    }

    /// The stored length and ETag of `rel`, if it is there.
    async fn head(&self, rel: &str) -> std::result::Result<Option<Answer>, PublishError> {
        let a = self
            .send(
                Method::HEAD,
                &|| self.bucket.head(rel),
                &self.bucket.shown(rel),
                &[],
                Bytes::new(),
            )
            .await?;
        Ok((a.status != StatusCode::NOT_FOUND).then_some(a))
    }

    /// The stored bytes of a small file `rel` (at most `MAX_ANSWER` are read).
    async fn get(&self, rel: &str) -> std::result::Result<Bytes, PublishError> {
        let a = self
            .send(
                Method::GET,
                &|| self.bucket.get(rel),
                &self.bucket.shown(rel),
                &[],
                Bytes::new(),
            )
            .await?;
        Ok(a.body)
    }

    /// Reads `len` bytes of the repository file `rel` at `offset`.
    async fn read(&self, rel: &str, offset: u64, len: u64) -> Result<Bytes> {
        let path = self.repo.path(rel);
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let f = deltaward_engine::open_regular(&path)?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact_at(&mut buf, offset)?;
            Ok::<_, std::io::Error>(Bytes::from(buf))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|source| Error::Io {
            action: "reading",
            path: self.repo.path(rel),
            source,
        })
    }

    /// Uploads the object `rel` of `len` bytes unless the bucket has it; the bytes
    /// read must still have the BLAKE3 they are named by (checked before the PUT, or
    /// before a multipart upload is completed).
    async fn object(&self, object: &Object) -> Result<Outcome> {
        let (rel, len) = (object.path.as_str(), object.length);
        if let Some(a) = self.head(rel).await? {
            if a.length() == Some(len) {
                return Ok(Outcome::Skipped);
            }
        }
        if len > self.part_size {
            self.multipart(object).await?;
        } else {
            let _permit = self.permits.acquire().await;
            let body = self.read(rel, 0, len).await?;
            check_object(object, Digest::of(&body), len)?;
            self.put(rel, body).await?;
        }
        Ok(Outcome::Uploaded(len))
    }

    /// Uploads a document and its signatures unless the bucket holds the same bytes.
    ///
    /// A document that replaces another (a channel, `root.json`) must never be seen
    /// with signatures that do not verify it: first the `.minisig` goes up holding
    /// the stored signature blocks and the new ones together (a block that does not
    /// verify counts for nothing), then the document, then its own `.minisig`. A
    /// stored channel or root of a higher version than the local one is refused: the
    /// repository is older than what readers already have.
    async fn document(&self, doc: &Document) -> Result<Vec<(String, Outcome)>> {
        let rel = doc.rel.as_str();
        let sig_rel = format!("{rel}.minisig");
        let (doc_hex, _) = md5_of(&doc.bytes);
        let (sig_hex, _) = md5_of(doc.sigs.as_bytes());
        let stored = self.head(rel).await?;
        let same = |a: &Option<Answer>, hex: &str, len: usize| {
            a.as_ref()
                .is_some_and(|a| a.etag() == Some(hex) && a.length() == Some(len as u64))
        };
        let stored_sig = self.head(&sig_rel).await?;
        if same(&stored, &doc_hex, doc.bytes.len()) {
            if same(&stored_sig, &sig_hex, doc.sigs.len()) {
                return Ok(vec![
                    (sig_rel, Outcome::Skipped),
                    (rel.to_owned(), Outcome::Skipped),
                ]);
            }
            self.put(&sig_rel, Bytes::from(doc.sigs.clone().into_bytes()))
                .await?;
            return Ok(vec![
                (sig_rel, Outcome::Uploaded(doc.sigs.len() as u64)),
                (rel.to_owned(), Outcome::Skipped),
            ]);
        }
        let sig_len = doc.sigs.len() as u64;
        let doc_len = doc.bytes.len() as u64;
        let sigs = Bytes::from(doc.sigs.clone().into_bytes());
        if stored.is_none() {
            self.put(&sig_rel, sigs).await?;
            self.put(rel, Bytes::from(doc.bytes.clone())).await?;
            return Ok(vec![
                (sig_rel, Outcome::Uploaded(sig_len)),
                (rel.to_owned(), Outcome::Uploaded(doc_len)),
            ]);
        }
        let shown = self.bucket.shown(rel);
        refuse_rollback(&shown, &self.get(rel).await?, &doc.bytes)?;
        let joined = match stored_sig {
            Some(_) => joined_signatures(&self.get(&sig_rel).await?, &doc.sigs),
            None => None,
        };
        match joined {
            Some(both) => self.put(&sig_rel, Bytes::from(both)).await?,
            None => tracing::warn!(
                "{shown}: the stored and new signatures do not fit in one .minisig; \
                 readers may see the new document with the old signatures for a moment"
            ),
        }
        self.put(rel, Bytes::from(doc.bytes.clone())).await?;
        self.put(&sig_rel, sigs).await?;
        Ok(vec![
            (rel.to_owned(), Outcome::Uploaded(doc_len)),
            (sig_rel, Outcome::Uploaded(sig_len)),
        ])
    }

    /// One checked PUT.
    async fn put(&self, rel: &str, body: Bytes) -> Result<()> {
        let (hex, b64) = md5_of(&body);
        let headers = [
            ("content-md5", b64.as_str()),
            ("content-type", content_type(rel)),
            ("cache-control", cache_control(rel)),
        ];
        let shown = self.bucket.shown(rel);
        let a = self
            .send(
                Method::PUT,
                &|| self.bucket.put(rel, &headers),
                &shown,
                &headers,
                body,
            )
            .await?;
        check_etag(&shown, &hex, a.etag())?;
        Ok(())
    }

    /// A multipart upload of `object`, its parts several at once and hashed in
    /// order as they complete; completed only when the bytes sent have the object's
    /// BLAKE3, aborted otherwise or if any part fails.
    async fn multipart(&self, object: &Object) -> Result<()> {
        let (rel, len) = (object.path.as_str(), object.length);
        let shown = self.bucket.shown(rel);
        let part_size = self.part_size.max(len.div_ceil(MAX_PARTS));
        let headers = [
            ("content-type", content_type(rel)),
            ("cache-control", cache_control(rel)),
        ];
        let a = self
            .send(
                Method::POST,
                &|| self.bucket.create_multipart(rel, &headers),
                &shown,
                &headers,
                Bytes::new(),
            )
            .await?;
        let upload_id = s3::upload_id(&a.body).ok_or_else(|| PublishError::Answer {
            url: shown.clone(),
            reason: "CreateMultipartUpload answered no UploadId".into(),
        })?;
        let parts = len.div_ceil(part_size);
        let mut hasher = blake3::Hasher::new();
        let mut etags = Vec::with_capacity(parts as usize);
        let mut sent = stream::iter(0..parts)
            .map(|i| {
                let upload_id = &upload_id;
                let shown = &shown;
                async move {
                    let _permit = self.permits.acquire().await;
                    let offset = i * part_size;
                    let body = self.read(rel, offset, part_size.min(len - offset)).await?;
                    let (hex, b64) = md5_of(&body);
                    let number = u16::try_from(i + 1).map_err(|_| PublishError::Answer {
                        url: shown.clone(),
                        reason: format!("part {} is past S3's 10,000", i + 1),
                    })?;
                    let headers = [("content-md5", b64.as_str())];
                    let part = format!("{shown} part {number}");
                    let a = self
                        .send(
                            Method::PUT,
                            &|| self.bucket.upload_part(rel, number, upload_id, &headers),
                            &part,
                            &headers,
                            body.clone(),
                        )
                        .await?;
                    check_etag(&part, &hex, a.etag())?;
                    Ok::<_, Error>((hex, body))
                }
            })
            .buffered(self.jobs);
        let mut failed = None;
        while let Some(r) = sent.next().await {
            match r {
                Ok((hex, body)) => {
                    hasher.update_rayon(&body);
                    etags.push(hex);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(sent);
        let done = match failed {
            Some(e) => Err(e),
            None => match check_object(object, Digest::from(hasher.finalize()), len) {
                Ok(()) => self.complete(rel, &shown, &upload_id, &etags, len).await,
                Err(e) => Err(e.into()),
            },
        };
        if done.is_err() {
            let url = self.bucket.abort_multipart(rel, &upload_id);
            if let Err(e) = self
                .send_once(&Method::DELETE, &url, &shown, &[], Bytes::new())
                .await
            {
                tracing::warn!("abandoning the upload of {shown}: {e}");
            }
        }
        done
    }

    /// Completes a multipart upload and checks the stored length.
    async fn complete(
        &self,
        rel: &str,
        shown: &str,
        upload_id: &str,
        etags: &[String],
        len: u64,
    ) -> Result<()> {
        let quoted: Vec<String> = etags.iter().map(|e| format!("\"{e}\"")).collect();
        let (_, xml) = self.bucket.complete_multipart(rel, upload_id, &quoted);
        let sign = || self.bucket.complete_multipart(rel, upload_id, &quoted).0;
        let a = self
            .send(Method::POST, &sign, shown, &[], Bytes::from(xml))
            .await?;
        // S3 can answer 200 with an error document once it has started answering.
        if let Some(message) = s3::error_text(&a.body) {
            if a.body.windows(7).any(|w| w == b"<Error>") {
                return Err(PublishError::Store {
                    url: shown.to_owned(),
                    status: a.status.as_u16(),
                    message,
                }
                .into());
            }
        }
        let stored = self.head(rel).await?.and_then(|a| a.length());
        if stored != Some(len) {
            return Err(PublishError::Length {
                url: shown.to_owned(),
                expected: len,
                found: stored,
            }
            .into());
        }
        Ok(())
    }
}

/// Requires the bytes read for an object to be the object its name and the
/// verified release say (it may have changed on disk since it was verified).
fn check_object(object: &Object, found: Digest, len: u64) -> std::result::Result<(), PublishError> {
    if found == object.blake3 && len == object.length {
        return Ok(());
    }
    Err(PublishError::Changed {
        path: object.path.clone(),
    })
}

/// Refuses to replace a stored channel or root of a higher `version` than the local
/// one: devices would refuse the older one as a rollback.
fn refuse_rollback(
    shown: &str,
    stored: &[u8],
    local: &[u8],
) -> std::result::Result<(), PublishError> {
    let version = |b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(b)
            .ok()
            .and_then(|v| v.get("version")?.as_u64())
    };
    match (version(stored), version(local)) {
        (Some(stored), Some(local)) if stored > local => Err(PublishError::Rollback {
            url: shown.to_owned(),
            stored,
            local,
        }),
        _ => Ok(()),
    }
}

/// The stored signature blocks followed by the new ones, when both fit in one
/// `.minisig` (16 KiB, 16 blocks), so that it verifies the stored document and the
/// new one alike.
fn joined_signatures(stored: &[u8], new: &str) -> Option<Vec<u8>> {
    let stored = std::str::from_utf8(stored).ok()?;
    let mut both = stored.trim_end().to_owned();
    both.push('\n');
    both.push_str(new);
    let blocks = both.matches("untrusted comment:").count();
    (blocks <= MAX_SIGNATURE_BLOCKS && both.len() as u64 <= SIGNATURE_FILE_MAX_BYTES)
        .then(|| both.into_bytes())
}

fn check_etag(
    shown: &str,
    md5_hex: &str,
    etag: Option<&str>,
) -> std::result::Result<(), PublishError> {
    if etag == Some(md5_hex) {
        return Ok(());
    }
    // Buckets encrypted with KMS or customer keys answer an ETag that is not the
    // MD5 (and not hex); the store has checked Content-MD5 before storing anything.
    if etag.is_some_and(|e| e.len() != 32 || !e.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Ok(());
    }
    Err(PublishError::Checksum {
        url: shown.to_owned(),
        expected: md5_hex.to_owned(),
        found: etag.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_is_the_etag_and_the_content_md5() {
        let (hex, b64) = md5_of(b"");
        assert_eq!(hex, "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(b64, "1B2M2Y8AsgTpgAmY7PhCfg==");
    }

    #[test]
    fn objects_are_immutable_and_documents_revalidated() {
        assert!(cache_control("objects/ab").contains("immutable"));
        assert_eq!(cache_control("products/p/channel.json"), "no-cache");
        assert_eq!(
            content_type("root.json.minisig"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type("root.json"), "application/json");
    }

    #[test]
    fn a_replaced_document_is_signed_for_both_meanwhile_and_rollback_refused() {
        let both = joined_signatures(b"untrusted comment: a\nX\n", "untrusted comment: b\nY\n")
            .expect("fits");
        assert_eq!(
            String::from_utf8(both).expect("utf8"),
            "untrusted comment: a\nX\nuntrusted comment: b\nY\n"
        );
        let many = "untrusted comment: a\nX\n".repeat(16);
        assert!(joined_signatures(many.as_bytes(), "untrusted comment: b\nY\n").is_none());
        assert!(refuse_rollback("s3://b/c", br#"{"version": 5}"#, br#"{"version": 4}"#).is_err());
        assert!(refuse_rollback("s3://b/c", br#"{"version": 4}"#, br#"{"version": 5}"#).is_ok());
        assert!(refuse_rollback("s3://b/r", b"junk", br#"{"version": 1}"#).is_ok());
    }

    #[test]
    fn a_wrong_etag_is_refused() {
        let (a, b) = ("0".repeat(32), "1".repeat(32));
        assert!(check_etag("s3://b/k", &a, Some(&a)).is_ok());
        assert!(check_etag("s3://b/k", &a, Some(&b)).is_err());
        assert!(check_etag("s3://b/k", &a, None).is_err());
        // A KMS-encrypted bucket's ETag is no MD5: Content-MD5 was checked instead.
        assert!(check_etag("s3://b/k", &a, Some("abc-2")).is_ok());
    }
}

//! The link to the upstream (the maker's origin or another mirror): one HTTP client
//! with timeouts, bounded retries with exponential backoff and jitter, Range resume
//! for objects, and one token bucket that caps the bandwidth of every upstream
//! request together (`upstream_rate`), because the site's WAN link is shared.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use bytes::{Bytes, BytesMut};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};

use crate::{
    config::Limits,
    error::{Result, UpstreamError},
    metrics::Metrics,
    s3, tls,
};

/// The HTTP client every upstream request (and every upload) goes through.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where the upstream repository is.
#[derive(Debug, Clone)]
pub enum Location {
    /// An `http://` or `https://` base URL (an origin, a mirror, a public bucket or a
    /// CDN).
    Http(String),
    /// A bucket (`s3://BUCKET/PREFIX`), read with signed requests.
    S3(Box<s3::Bucket>),
}

impl Location {
    /// `url` as an upstream: `s3://BUCKET/PREFIX` (endpoint, region and credentials
    /// from `opts` and the environment, see [`s3`]) or an `http(s)://` base URL.
    pub fn parse(url: &str, opts: &s3::S3Options) -> Result<Self> {
        if s3::is_s3(url) {
            return Ok(Self::S3(Box::new(s3::Bucket::from_env(url, opts)?)));
        }
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://"))
            || base.parse::<http::Uri>().is_err()
        {
            return Err(UpstreamError::Url {
                url: base,
                reason: "not an http://, https:// or s3:// URL".into(),
            }
            .into());
        }
        Ok(Self::Http(base))
    }

    /// The URL to request `rel` with a GET, and the one to show in messages (the
    /// signature left out).
    fn get(&self, rel: &str) -> (String, String) {
        match self {
            Self::Http(base) => {
                let u = format!("{base}/{rel}");
                (u.clone(), u)
            }
            Self::S3(b) => (b.get(rel), b.shown(rel)),
        }
    }

    /// The base URL (or `s3://BUCKET/PREFIX`).
    pub fn base(&self) -> &str {
        match self {
            Self::Http(base) => base,
            Self::S3(b) => b.url(),
        }
    }
}

/// The HTTP client for upstreams and uploads: HTTP/1.1 and HTTP/2, rustls (ring)
/// trusting the built-in web roots and the CA certificates in `extra_ca`.
pub(crate) fn http_client(
    extra_ca: Option<&Path>,
    connect_timeout: Duration,
) -> Result<HttpClient> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls::client_config(extra_ca)?)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector))
}

/// The upstream repository or mirror.
#[derive(Debug)]
pub struct Upstream {
    location: Location,
    client: HttpClient,
    rate: Option<RateLimit>,
    timeout: Duration,
    tries: u32,
    metrics: Arc<Metrics>,
    down_since: Mutex<Option<SystemTime>>,
}

/// A small file fetched whole.
#[derive(Debug)]
pub struct Fetched {
    /// 200, or 304 when the `If-None-Match` given matched.
    pub status: StatusCode,
    /// The upstream's `ETag`.
    pub etag: Option<String>,
    /// The body (empty on 304).
    pub body: Bytes,
}

/// An object download opened at some offset.
#[derive(Debug)]
pub struct Opened {
    /// The body.
    pub body: Incoming,
    /// Total length of the object, when the upstream says.
    pub total: Option<u64>,
    /// Bytes at the start of the body to discard (the upstream ignored the Range).
    pub skip: u64,
}

impl Upstream {
    /// A client for the repository at `location`, trusting the built-in web roots
    /// and the CA certificates in `extra_ca`.
    pub fn new(
        location: Location,
        extra_ca: Option<&Path>,
        rate: Option<u64>,
        limits: &Limits,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        Ok(Self {
            location,
            client: http_client(extra_ca, limits.upstream_timeout)?,
            rate: rate.filter(|r| *r > 0).map(RateLimit::new),
            timeout: limits.upstream_timeout,
            tries: limits.upstream_tries.max(1),
            metrics,
            down_since: Mutex::new(None),
        })
    }

    /// The upstream's base URL (or `s3://BUCKET/PREFIX`).
    pub fn base(&self) -> &str {
        self.location.base()
    }

    /// Since when the upstream has been unreachable, if it is.
    pub fn down_since(&self) -> Option<SystemTime> {
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self, r: &std::result::Result<impl Sized, UpstreamError>) {
        let mut d = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(_) => *d = None,
            Err(e) if e.is_unreachable() => {
                d.get_or_insert_with(SystemTime::now);
            }
            Err(_) => *d = None,
        }
    }

    /// Sends one request; the answer's head within the timeout.
    async fn send(
        &self,
        (target, url): (&str, &str),
        method: http::Method,
        headers: &[(header::HeaderName, String)],
        body: Bytes,
    ) -> std::result::Result<http::Response<Incoming>, UpstreamError> {
        let mut req = Request::builder().method(method).uri(target);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req = req.header(
            header::USER_AGENT,
            concat!("deltaward-mirror/", env!("CARGO_PKG_VERSION")),
        );
        let req = req.body(Full::new(body)).map_err(|e| UpstreamError::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        self.metrics.upstream_requests.inc();
        let r = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout {
                url: url.to_owned(),
                seconds: self.timeout.as_secs(),
            }),
            Ok(Err(source)) => Err(UpstreamError::Connect {
                url: url.to_owned(),
                source,
            }),
            Ok(Ok(r)) => Ok(r),
        };
        if r.is_err() {
            self.metrics.upstream_errors.inc();
        }
        self.mark(&r);
        r
    }

    /// Tries an upstream request gets now: the configured number, or one while the
    /// upstream is known to be down.
    pub fn tries_now(&self) -> u32 {
        if self.down_since().is_some() {
            1
        } else {
            self.tries
        }
    }

    /// Runs `f` up to the configured tries while it fails transiently, sleeping with
    /// exponential backoff and jitter in between. While the upstream is known to be
    /// down, one try.
    pub async fn retry<T, F, Fut>(&self, mut f: F) -> std::result::Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, UpstreamError>>,
    {
        let tries = self.tries_now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < tries => {
                    tracing::debug!("upstream try {attempt} of {tries} failed: {e}");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) if attempt > 1 => {
                    return Err(UpstreamError::Exhausted {
                        tries: attempt,
                        last: Box::new(e),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// GETs a small file whole (at most `max` bytes), with retries; `etag` makes
    /// it conditional (304 when unchanged).
    pub async fn get_small(
        &self,
        rel: &str,
        max: u64,
        etag: Option<&str>,
    ) -> std::result::Result<Fetched, UpstreamError> {
        self.retry(|| self.get_small_once(rel, max, etag)).await
    }

    async fn get_small_once(
        &self,
        rel: &str,
        max: u64,
        etag: Option<&str>,
    ) -> std::result::Result<Fetched, UpstreamError> {
        let (target, url) = self.location.get(rel);
        let headers: Vec<_> = etag
            .map(|e| (header::IF_NONE_MATCH, e.to_owned()))
            .into_iter()
            .collect();
        let r = self
            .send((&target, &url), http::Method::GET, &headers, Bytes::new())
            .await?;
        let status = r.status();
        let etag = r
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match status {
            StatusCode::NOT_MODIFIED => {
                return Ok(Fetched {
                    status,
                    etag,
                    body: Bytes::new(),
                })
            }
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(UpstreamError::NotFound { url }),
            s => {
                return Err(UpstreamError::Status {
                    url,
                    status: s.as_u16(),
                })
            }
        }
        if content_length(r.headers()).is_some_and(|n| n > max) {
            return Err(UpstreamError::TooLarge { url, max });
        }
        let mut body = r.into_body();
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.chunk(&url, &mut body, buf.len() as u64).await? {
            if buf.len() as u64 + chunk.len() as u64 > max {
                return Err(UpstreamError::TooLarge { url, max });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            status,
            etag,
            body: buf.freeze(),
        })
    }

    /// POSTs a JSON document to `rel` (one try); the status answered.
    pub async fn post_json(
        &self,
        rel: &str,
        body: Bytes,
    ) -> std::result::Result<StatusCode, UpstreamError> {
        let url = match &self.location {
            Location::Http(base) => format!("{base}/{rel}"),
            Location::S3(b) => {
                return Err(UpstreamError::Url {
                    url: b.shown(rel),
                    reason: "a bucket takes no reports; report to a mirror".into(),
                })
            }
        };
        let headers = [(header::CONTENT_TYPE, "application/json".to_owned())];
        let r = self
            .send((&url, &url), http::Method::POST, &headers, body)
            .await?;
        Ok(r.status())
    }

    /// Opens a download of `rel` from byte `from` (one try; the caller resumes).
    pub async fn open(&self, rel: &str, from: u64) -> std::result::Result<Opened, UpstreamError> {
        let (target, url) = self.location.get(rel);
        let headers: Vec<_> = (from > 0)
            .then(|| (header::RANGE, format!("bytes={from}-")))
            .into_iter()
            .collect();
        let r = self
            .send((&target, &url), http::Method::GET, &headers, Bytes::new())
            .await?;
        match r.status() {
            StatusCode::OK => Ok(Opened {
                total: content_length(r.headers()),
                skip: from,
                body: r.into_body(),
            }),
            StatusCode::PARTIAL_CONTENT => {
                let got = r
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match got.as_deref().and_then(parse_content_range) {
                    Some((start, total)) if start == from => Ok(Opened {
                        total,
                        skip: 0,
                        body: r.into_body(),
                    }),
                    _ => Err(UpstreamError::BadRange {
                        url,
                        asked: from,
                        got,
                    }),
                }
            }
            StatusCode::NOT_FOUND => Err(UpstreamError::NotFound { url }),
            s => Err(UpstreamError::Status {
                url,
                status: s.as_u16(),
            }),
        }
    }

    /// The next chunk of a body (`None` at its end), within the timeout, after the
    /// bandwidth cap allows it; `received` is for the error message.
    pub async fn chunk(
        &self,
        url: &str,
        body: &mut Incoming,
        received: u64,
    ) -> std::result::Result<Option<Bytes>, UpstreamError> {
        loop {
            let frame = match tokio::time::timeout(self.timeout, body.frame()).await {
                Err(_) => {
                    self.metrics.upstream_errors.inc();
                    return Err(UpstreamError::Timeout {
                        url: url.to_owned(),
                        seconds: self.timeout.as_secs(),
                    });
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(source))) => {
                    self.metrics.upstream_errors.inc();
                    return Err(UpstreamError::Body {
                        url: url.to_owned(),
                        received,
                        source,
                    });
                }
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data() {
                self.metrics.upstream_bytes.inc_by(data.len() as u64);
                if let Some(rate) = &self.rate {
                    rate.take(data.len() as u64).await;
                }
                return Ok(Some(data));
            }
        }
    }
}

/// Backoff before try `attempt + 1`: 250 ms doubling, at most 8 s, times a random
/// factor in [0.5, 1.5) so that many mirrors do not retry in step.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(250).saturating_mul(1 << attempt.min(5).saturating_sub(1));
    base.min(Duration::from_secs(8))
        .mul_f64(0.5 + fastrand::f64())
}

/// What is left of `chunk` once `skip` more bytes are dropped (an upstream that
/// ignored a Range sends the object from its start); `skip` counts down.
pub(crate) fn skip_prefix(chunk: Bytes, skip: &mut u64) -> Bytes {
    let s = (*skip).min(chunk.len() as u64);
    *skip -= s;
    chunk.slice(s as usize..)
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// `bytes START-END/TOTAL` → (START, TOTAL if known).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.parse().ok()?, total.parse().ok()))
}

/// A token bucket of bytes shared by every upstream transfer: a transfer takes the
/// bytes it received and, if that leaves the bucket in debt, sleeps until the debt
/// is paid. Not reading meanwhile lets TCP slow the sender. The bucket starts
/// empty and holds at most a tenth of a second's worth (at least 64 KiB), so that
/// even a short transfer runs at the cap rather than above it.
#[derive(Debug)]
pub(crate) struct RateLimit {
    rate: u64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimit {
    pub(crate) fn new(rate: u64) -> Self {
        Self {
            rate,
            burst: (rate as f64 / 10.0).max(65536.0),
            state: tokio::sync::Mutex::new((0.0, tokio::time::Instant::now())),
        }
    }

    pub(crate) async fn take(&self, n: u64) {
        let wait = {
            let mut s = self.state.lock().await;
            let now = tokio::time::Instant::now();
            let rate = self.rate as f64;
            let refill = now.duration_since(s.1).as_secs_f64() * rate;
            s.0 = (s.0 + refill).min(self.burst) - n as f64;
            s.1 = now;
            if s.0 < 0.0 {
                Duration::from_secs_f64(-s.0 / rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, Some(10))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for a in 1..20 {
            let b = backoff(a);
            assert!(
                b >= Duration::from_millis(125) && b < Duration::from_secs(12),
                "{a}: {b:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_paces_transfers_to_the_rate() {
        let r = RateLimit::new(1 << 20);
        let t = tokio::time::Instant::now();
        // Four seconds' worth, from an empty bucket.
        for _ in 0..64 {
            r.take(64 << 10).await;
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(3990), "{took:?}");
        assert!(took <= Duration::from_millis(4100), "{took:?}");
    }
}

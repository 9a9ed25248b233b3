//! One request in, one response out: rate limit, method, route, then the origin's
//! files or the mirror's verified cache; every response counted and logged when its
//! body ends.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;

use crate::{
    access::{AccessLog, Line},
    config::Limits,
    error::{Error, UpstreamError},
    metrics::Metrics,
    mirror::{Mirror, ObjectAnswer},
    origin::Origin,
    report::REPORT_MAX_BYTES,
    respond::{self, empty, representation, set_len, text, Body, Content, IMMUTABLE},
    route::{Doc, Route},
};

/// What the server serves.
#[derive(Debug)]
pub enum Mode {
    /// A repository directory as it is.
    Origin(Origin),
    /// A caching mirror of an upstream.
    Mirror(Arc<Mirror>),
}

/// The time of the last byte moved on a connection, for the idle timeout.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Records activity now.
    pub fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last activity.
    pub fn idle(&self) -> Duration {
        self.base
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The client side of one connection.
#[derive(Debug)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client certificate's identity (mutual TLS).
    pub user: Option<String>,
    /// Last activity.
    pub activity: Arc<Activity>,
}

/// The request handler shared by every connection.
#[derive(Debug)]
pub struct Service {
    mode: Mode,
    metrics: Arc<Metrics>,
    access: AccessLog,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    max_age: Duration,
}

impl Service {
    /// A handler for `mode`.
    pub fn new(mode: Mode, limits: &Limits, access: AccessLog, metrics: Arc<Metrics>) -> Self {
        let rate = NonZeroU32::new(limits.client_rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.client_burst).unwrap_or(rate);
        Self {
            mode,
            metrics,
            access,
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            max_age: limits.metadata_max_age,
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The access log (for SIGHUP).
    pub fn access_log(&self) -> &AccessLog {
        &self.access
    }

    /// Forgets the rate-limit state of clients not seen lately.
    pub fn prune(&self) {
        self.limiter.retain_recent();
    }

    /// Answers a request. The connection counts as active while the answer is
    /// being prepared (an upstream fetch may take a while); the response's body is
    /// counted and logged when it ends.
    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>, conn: &Conn) -> Response<Body> {
        let start = Instant::now();
        let line = Line {
            peer: conn.peer,
            user: conn.user.clone(),
            method: req.method().to_string(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.to_string()),
            version: match req.version() {
                http::Version::HTTP_2 => "HTTP/2.0",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            status: 0,
            bytes: 0,
            agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned(),
            took: Duration::ZERO,
            complete: false,
        };
        let head = req.method() == Method::HEAD;
        let range = req
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = self.answer(req, conn);
        tokio::pin!(answer);
        // Most answers (cached objects, documents) are ready at once: no timer then.
        let (kind, mut resp) = match futures_util::FutureExt::now_or_never(&mut answer) {
            Some(r) => r,
            None => {
                let second = Duration::from_secs(1);
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + second, second);
                loop {
                    tokio::select! {
                        r = &mut answer => break r,
                        _ = tick.tick() => conn.activity.touch(),
                    }
                }
            }
        };
        self.metrics.request(kind, resp.status().as_u16());
        let expected = if head {
            0
        } else {
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .or_else(|| resp.body().size_hint().exact())
                .unwrap_or(u64::MAX)
        };
        let body = std::mem::replace(resp.body_mut(), empty());
        let line = Line {
            status: resp.status().as_u16(),
            ..line
        };
        *resp.body_mut() = http_body_util::BodyExt::boxed_unsync(Tracked {
            inner: body,
            sent: 0,
            expected,
            done: Some((self.clone(), line, start)),
            object: (kind == "object").then_some(range),
        });
        resp
    }

    async fn answer(&self, req: Request<Incoming>, conn: &Conn) -> (&'static str, Response<Body>) {
        if self.limiter.check_key(&conn.peer.ip()).is_err() {
            self.metrics.rate_limited.inc();
            let mut r = text(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests from this address",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return ("other", r);
        }
        let Some(route) = Route::parse(req.uri().path()) else {
            return ("other", text(StatusCode::NOT_FOUND, "not found"));
        };
        let method = req.method();
        let (allowed, allow) = match route {
            Route::Reports => (method == Method::POST, "POST"),
            _ => (method == Method::GET || method == Method::HEAD, "GET, HEAD"),
        };
        if !allowed {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, format!("only {allow}"));
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            return ("other", r);
        }
        if route == Route::Reports {
            return ("report", self.report(req).await);
        }
        let req = &req;
        match route {
            Route::Health => ("health", self.health()),
            Route::Metrics => {
                let mut r = text(StatusCode::OK, self.metrics.render());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                ("metrics", r)
            }
            Route::Reports => ("other", text(StatusCode::NOT_FOUND, "not found")),
            Route::Document { doc, sig } => ("document", self.document(req, &doc, sig).await),
            Route::Object(d) => ("object", self.object(req, &d, conn).await),
            Route::Index | Route::Feed | Route::Notices => ("page", self.page(req, &route).await),
        }
    }

    /// An operator page (mirror mode only): rendered for each request, `no-cache`,
    /// with an `ETag` of its bytes so that HEAD and `If-None-Match` work as for
    /// documents. No script may run in them (`Content-Security-Policy`).
    async fn page(&self, req: &Request<Incoming>, route: &Route) -> Response<Body> {
        let Mode::Mirror(m) = &self.mode else {
            return text(StatusCode::NOT_FOUND, "not found");
        };
        let (bytes, content_type) = crate::pages::render(m, &self.metrics, route).await;
        let content = Content {
            etag: format!("\"{}\"", deltaward_engine::Digest::of(&bytes)),
            bytes,
            cache_control: "no-cache".to_owned(),
            content_type,
        };
        let mut r = respond::respond(req.method(), req.headers(), &content);
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        r
    }

    /// A device's delivery report: at most [`REPORT_MAX_BYTES`] of JSON in the report
    /// schema, stored durably in the mirror's cache (`reports/<blake3>.json`; the
    /// same report twice is stored once).
    async fn report(&self, req: Request<Incoming>) -> Response<Body> {
        let Mode::Mirror(m) = &self.mode else {
            return text(
                StatusCode::NOT_FOUND,
                "reports go to a mirror, not an origin",
            );
        };
        let body = http_body_util::Limited::new(req.into_body(), REPORT_MAX_BYTES);
        let bytes = match http_body_util::BodyExt::collect(body).await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a report is at most {REPORT_MAX_BYTES} bytes: {e}"),
                )
            }
        };
        if let Err(e) = crate::report::parse(&bytes) {
            return text(
                StatusCode::BAD_REQUEST,
                format!("not a delivery report: {e}"),
            );
        }
        let (store, stored) = (m.clone(), bytes.clone());
        match tokio::task::spawn_blocking(move || store.store_report(&bytes)).await {
            Ok(Ok(name)) => {
                self.metrics.reports.inc();
                if let Ok(r) = crate::report::parse(&stored) {
                    m.record(
                        "report",
                        // The whole report: the log alone is the evidence.
                        serde_json::json!({ "stored": name, "report": r }),
                    );
                }
                respond::json(StatusCode::CREATED, &serde_json::json!({ "stored": name }))
            }
            Ok(Err(e)) => error_response(&e),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }

    fn health(&self) -> Response<Body> {
        match &self.mode {
            Mode::Mirror(m) => match m.upstream().down_since() {
                Some(t) => text(
                    StatusCode::OK,
                    format!(
                        "degraded: upstream unreachable since {}",
                        humantime::format_rfc3339_seconds(t)
                    ),
                ),
                None => text(StatusCode::OK, "ok"),
            },
            Mode::Origin(_) => text(StatusCode::OK, "ok"),
        }
    }

    fn doc_content(&self, bytes: Bytes, sig: bool) -> Content {
        Content {
            etag: format!("\"{}\"", deltaward_engine::Digest::of(&bytes)),
            bytes,
            cache_control: format!("public, max-age={}", self.max_age.as_secs()),
            content_type: if sig {
                "text/plain; charset=utf-8"
            } else {
                "application/json"
            },
        }
    }

    async fn document(&self, req: &Request<Incoming>, doc: &Doc, sig: bool) -> Response<Body> {
        let bytes = match &self.mode {
            Mode::Origin(o) => match o.document(doc, sig).await {
                Ok(Some(b)) => b,
                Ok(None) => return text(StatusCode::NOT_FOUND, "not found"),
                Err(e) => return origin_error(&e),
            },
            Mode::Mirror(m) => match m.docs.get(doc).await {
                Ok(_) if !doc_allowed(m, doc) => return waiting(doc),
                Ok(e) if !sig => e.doc.clone(),
                Ok(e) => match &e.sig {
                    Some(s) => s.clone(),
                    None => {
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the signatures of the trusted root have not been fetched yet",
                        )
                    }
                },
                Err(e) => return error_response(&e),
            },
        };
        respond::respond(req.method(), req.headers(), &self.doc_content(bytes, sig))
    }

    async fn object(
        &self,
        req: &Request<Incoming>,
        d: &deltaward_engine::Digest,
        conn: &Conn,
    ) -> Response<Body> {
        let etag = format!("\"{d}\"");
        let content = |bytes| Content {
            bytes,
            etag: etag.clone(),
            cache_control: IMMUTABLE.to_owned(),
            content_type: "application/octet-stream",
        };
        let mirror = match &self.mode {
            Mode::Origin(o) => {
                return match o.object(d).await {
                    Ok(Some(b)) => respond::respond(req.method(), req.headers(), &content(b)),
                    Ok(None) => text(StatusCode::NOT_FOUND, "not found"),
                    Err(e) => origin_error(&e),
                }
            }
            Mode::Mirror(m) => m,
        };
        // The name is the validator: a client holding this ETag holds these bytes.
        if respond::not_modified(req.headers(), &etag) {
            return respond::respond(req.method(), req.headers(), &content(Bytes::new()));
        }
        if !mirror.object_allowed(d) {
            // Named by no approved release (or by none the mirror knows yet).
            mirror.docs.fetch_listed_releases().await;
            if !mirror.object_allowed(d) {
                return respond::json(
                    StatusCode::FORBIDDEN,
                    &serde_json::json!({
                        "error": "waiting for site approval",
                        "object": d.to_string(),
                    }),
                );
            }
        }
        let mut answer = mirror.object(d);
        if matches!(answer, Ok(ObjectAnswer::NotNamed)) {
            // Asked for before its release: fetch what the cached channels list.
            mirror.docs.fetch_listed_releases().await;
            answer = mirror.object(d);
        }
        let fill = match answer {
            Ok(ObjectAnswer::Cached(b)) => {
                return respond::respond(req.method(), req.headers(), &content(b))
            }
            Ok(ObjectAnswer::NotNamed) => {
                return text(
                    StatusCode::NOT_FOUND,
                    "no release verified by this mirror names this object",
                )
            }
            Ok(ObjectAnswer::Filling(f)) => f,
            Err(e) => return error_response(&e),
        };
        let ranged = req.headers().contains_key(header::RANGE);
        if req.method() == Method::HEAD || !ranged {
            let mut r = Response::new(empty());
            representation(
                r.headers_mut(),
                &etag,
                IMMUTABLE,
                "application/octet-stream",
            );
            set_len(r.headers_mut(), fill.length);
            if req.method() == Method::GET {
                *r.body_mut() = fill.stream();
            }
            return r;
        }
        // A range is answered from the verified cache once the fill is done.
        if fill.finished(|| conn.activity.touch()).await {
            if let Some(b) = mirror.objects.get(d) {
                return respond::respond(req.method(), req.headers(), &content(b));
            }
        }
        text(
            StatusCode::BAD_GATEWAY,
            "the upstream object could not be fetched and verified",
        )
    }
}

/// Whether a document may be served now (a release only once the site approved it,
/// with `require_approval`).
fn doc_allowed(m: &Mirror, doc: &Doc) -> bool {
    match doc {
        Doc::Release(p, v) => m.release_allowed(p, v),
        _ => true,
    }
}

/// The 403 a device gets for a release the site has not approved yet.
fn waiting(doc: &Doc) -> Response<Body> {
    let (product, version) = match doc {
        Doc::Release(p, v) => (p.as_str(), v.as_str()),
        _ => ("", ""),
    };
    respond::json(
        StatusCode::FORBIDDEN,
        &serde_json::json!({
            "error": "waiting for site approval",
            "product": product,
            "version": version,
        }),
    )
}

/// An origin's error: a file the repository holds but may not serve (a link, a
/// FIFO, a path outside it, over its size cap) is 404, anything else 500.
fn origin_error(e: &Error) -> Response<Body> {
    tracing::warn!("not serving: {e}");
    match e {
        Error::Release(_) => text(StatusCode::NOT_FOUND, "not found"),
        _ => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (see the log)",
        ),
    }
}

/// The status and message for a mirror's error while answering.
fn error_response(e: &Error) -> Response<Body> {
    let status = match e {
        Error::Upstream(UpstreamError::NotFound { .. }) => StatusCode::NOT_FOUND,
        Error::Upstream(u) if u.is_unreachable() => StatusCode::SERVICE_UNAVAILABLE,
        Error::Upstream(_) | Error::Verify(_) | Error::Release(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let msg = match e {
        Error::Verify(_) | Error::Release(_) => {
            format!("refused: the upstream's copy failed verification: {e}")
        }
        _ => e.to_string(),
    };
    if status.is_server_error() {
        tracing::warn!("answering {status}: {msg}");
    } else {
        tracing::debug!("answering {status}: {msg}");
    }
    text(status, msg)
}

/// A response body that counts what it sends and, when dropped, logs the request.
struct Tracked {
    inner: Body,
    sent: u64,
    expected: u64,
    done: Option<(Arc<Service>, Line, Instant)>,
    /// For an object: the Range asked for, if any (for the delivery log).
    object: Option<Option<String>>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.sent += d.len() as u64;
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some((svc, mut line, start)) = self.done.take() {
            svc.metrics.bytes_served.inc_by(self.sent);
            line.bytes = self.sent;
            line.took = start.elapsed();
            line.complete = self.sent == self.expected;
            svc.access.write(&line);
            if let (Some(range), Mode::Mirror(m)) = (&self.object, &svc.mode) {
                m.record(
                    "serve",
                    serde_json::json!({
                        "client": line.peer.ip().to_string(),
                        "user": line.user,
                        "object": line.target.trim_start_matches("/objects/"),
                        "method": line.method,
                        "range": range,
                        "status": line.status,
                        "bytes": line.bytes,
                        "complete": line.complete,
                    }),
                );
            }
        }
    }
}

//! Responses for content the mirror holds whole: conditional requests (`ETag`,
//! `If-None-Match`), ranges (one range: 206; several: `multipart/byteranges`;
//! unsatisfiable: 416; `If-Range`), and HEAD. Every response with a body has a
//! `Content-Length`.

use std::io;

use bytes::Bytes;
use futures_util::stream;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

/// The body type of every response.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Most ranges answered in one multipart response; more get the whole content (200).
pub const MAX_RANGES: usize = 32;

/// `Cache-Control` of objects: named by their hash, they never change.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Content held whole (mapped or in memory), with its validator.
#[derive(Debug, Clone)]
pub struct Content {
    /// The bytes.
    pub bytes: Bytes,
    /// The strong `ETag`, quoted.
    pub etag: String,
    /// `Cache-Control`.
    pub cache_control: String,
    /// `Content-Type`.
    pub content_type: &'static str,
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A body of one buffer.
pub fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|e| match e {}).boxed_unsync()
}

/// A body of several buffers, sent in order.
fn chunks(parts: Vec<Bytes>) -> Body {
    StreamBody::new(stream::iter(
        parts
            .into_iter()
            .map(|b| Ok::<_, io::Error>(Frame::data(b))),
    ))
    .boxed_unsync()
}

/// A plain-text response (errors, health).
pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut body = msg.into();
    body.push('\n');
    let len = body.len() as u64;
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set_len(h, len);
    r
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = value.to_string();
    let len = body.len() as u64;
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set_len(h, len);
    r
}

pub(crate) fn set_len(h: &mut HeaderMap, len: u64) {
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// The headers every representation carries: validator, caching, type, ranges.
pub(crate) fn representation(
    h: &mut HeaderMap,
    etag: &str,
    cache_control: &str,
    content_type: &'static str,
) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(cache_control) {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

/// Whether `If-None-Match` matches `etag` (weak comparison, as RFC 9110 asks).
pub(crate) fn not_modified(req: &HeaderMap, etag: &str) -> bool {
    let Some(v) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    v.split(',').map(str::trim).any(|t| {
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag.strip_prefix("W/").unwrap_or(etag)
    })
}

/// What the `Range` header (with `If-Range`) asks of a representation of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ranges {
    /// The whole representation (no Range, a failed If-Range, a malformed or
    /// overlapping set, or too many ranges).
    Whole,
    /// These ranges, inclusive, in the order asked.
    Some(Vec<std::ops::RangeInclusive<u64>>),
    /// 416.
    Unsatisfiable,
}

pub(crate) fn ranges(req: &HeaderMap, etag: &str, len: u64) -> Ranges {
    let Some(range) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ranges::Whole;
    };
    if let Some(cond) = req.get(header::IF_RANGE) {
        // Only a strong ETag can match: we send no Last-Modified, so a date never does.
        if cond.to_str().ok() != Some(etag) || etag.starts_with("W/") {
            return Ranges::Whole;
        }
    }
    let Ok(parsed) = http_range_header::parse_range_header(range) else {
        return Ranges::Whole;
    };
    if parsed.ranges.len() > MAX_RANGES {
        return Ranges::Whole;
    }
    if len == 0 {
        return Ranges::Unsatisfiable;
    }
    use http_range_header::RangeUnsatisfiableError as E;
    match parsed.validate(len) {
        Ok(r) => Ranges::Some(r),
        // A suffix longer than the content selects all of it.
        Err(E::FileSuffixOutOfBounds) if parsed.ranges.len() == 1 => {
            Ranges::Some(vec![0..=len - 1])
        }
        Err(E::RangeReversed | E::FileSuffixOutOfBounds) => Ranges::Unsatisfiable,
        Err(_) => Ranges::Whole,
    }
}

/// `Content-Range` of one range of `len`.
pub(crate) fn content_range(r: &std::ops::RangeInclusive<u64>, len: u64) -> String {
    format!("bytes {}-{}/{len}", r.start(), r.end())
}

/// The answer to a GET or HEAD for content held whole.
pub fn respond(method: &Method, req: &HeaderMap, c: &Content) -> Response<Body> {
    let len = c.bytes.len() as u64;
    let head = method == Method::HEAD;
    let mut r = Response::new(empty());
    let h = r.headers_mut();
    representation(h, &c.etag, &c.cache_control, c.content_type);
    if not_modified(req, &c.etag) {
        h.remove(header::CONTENT_TYPE);
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return r;
    }
    let (status, parts) = match ranges(req, &c.etag, len) {
        Ranges::Whole => (StatusCode::OK, vec![c.bytes.clone()]),
        Ranges::Unsatisfiable => {
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
        Ranges::Some(rs) if rs.len() == 1 => {
            let one = &rs[0];
            if let Ok(v) = HeaderValue::from_str(&content_range(one, len)) {
                h.insert(header::CONTENT_RANGE, v);
            }
            let part = c.bytes.slice(*one.start() as usize..=*one.end() as usize);
            (StatusCode::PARTIAL_CONTENT, vec![part])
        }
        Ranges::Some(rs) => {
            let boundary = format!("deltaward{:016x}", fastrand::u64(..));
            if let Ok(v) =
                HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
            {
                h.insert(header::CONTENT_TYPE, v);
            }
            let mut parts = Vec::with_capacity(rs.len() * 2 + 1);
            for one in &rs {
                parts.push(Bytes::from(format!(
                    "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Range: {}\r\n\r\n",
                    c.content_type,
                    content_range(one, len)
                )));
                parts.push(c.bytes.slice(*one.start() as usize..=*one.end() as usize));
            }
            parts.push(Bytes::from(format!("\r\n--{boundary}--\r\n")));
            (StatusCode::PARTIAL_CONTENT, parts)
        }
    };
    *r.status_mut() = status;
    let body_len: u64 = parts.iter().map(|p| p.len() as u64).sum();
    set_len(r.headers_mut(), body_len);
    if !head {
        *r.body_mut() = if parts.len() == 1 {
            full(parts.into_iter().next().unwrap_or_default())
        } else {
            chunks(parts)
        };
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> Content {
        Content {
            bytes: Bytes::from_static(b"0123456789"),
            etag: "\"abc\"".into(),
            cache_control: IMMUTABLE.into(),
            content_type: "application/octet-stream",
        }
    }

    fn get(headers: &[(&'static str, &str)]) -> Response<Body> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        respond(&Method::GET, &h, &content())
    }

    async fn body(r: Response<Body>) -> Vec<u8> {
        r.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn whole_single_multipart_and_unsatisfiable() {
        let r = get(&[]);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], "10");
        assert_eq!(body(r).await, b"0123456789");

        let r = get(&[("range", "bytes=2-4")]);
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()["content-range"], "bytes 2-4/10");
        assert_eq!(body(r).await, b"234");

        let r = get(&[("range", "bytes=-3")]);
        assert_eq!(body(r).await, b"789");

        let r = get(&[("range", "bytes=0-1,5-6")]);
        assert_eq!(r.status(), 206);
        let ct = r.headers()["content-type"].to_str().expect("ct").to_owned();
        let boundary = ct.split("boundary=").nth(1).expect("boundary").to_owned();
        let len: usize = r.headers()["content-length"]
            .to_str()
            .expect("len")
            .parse()
            .expect("n");
        let b = String::from_utf8(body(r).await).expect("utf8");
        assert_eq!(b.len(), len);
        assert!(
            b.contains("Content-Range: bytes 0-1/10\r\n\r\n01\r\n"),
            "{b}"
        );
        assert!(
            b.contains("Content-Range: bytes 5-6/10\r\n\r\n56\r\n"),
            "{b}"
        );
        assert!(b.ends_with(&format!("--{boundary}--\r\n")));

        let r = get(&[("range", "bytes=10-")]);
        assert_eq!(r.status(), 416);
        assert_eq!(r.headers()["content-range"], "bytes */10");
    }

    #[tokio::test]
    async fn validators() {
        let r = get(&[("if-none-match", "\"abc\"")]);
        assert_eq!(r.status(), 304);
        assert!(body(r).await.is_empty());
        assert_eq!(get(&[("if-none-match", "\"other\"")]).status(), 200);
        let r = get(&[("range", "bytes=2-4"), ("if-range", "\"abc\"")]);
        assert_eq!(r.status(), 206);
        let r = get(&[("range", "bytes=2-4"), ("if-range", "\"changed\"")]);
        assert_eq!(r.status(), 200);
        assert_eq!(body(r).await, b"0123456789");
        let r = get(&[
            ("range", "bytes=2-4"),
            ("if-range", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        assert_eq!(r.status(), 200);
        // Malformed or overlapping ranges: the whole content.
        assert_eq!(get(&[("range", "bytes=x-y")]).status(), 200);
        assert_eq!(get(&[("range", "bytes=0-5,3-7")]).status(), 200);
        let many = format!(
            "bytes={}",
            (0..40)
                .map(|i| format!("{i}-{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(get(&[("range", many.as_str())]).status(), 200);
    }

    #[tokio::test]
    async fn head_has_the_length_and_no_body() {
        let r = respond(&Method::HEAD, &HeaderMap::new(), &content());
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], "10");
        assert!(body(r).await.is_empty());
    }
}

//! A request line as the mirror sees it: the path (up to the first newline) and a
//! Range header (the rest).
//! - A path is routed only in its one canonical spelling: rendering the route back
//!   gives the path itself (so no encoded or dotted form reaches a file name).
//! - Any Range header gets 200, 206 or 416, never a panic; a single-range 206 has a
//!   Content-Range inside the content whose span is the Content-Length.
#![no_main]

use bytes::Bytes;
use deltaward_mirror::{
    respond::{respond, Content},
    route::Route,
};
use http::{header, HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

const LEN: u64 = 1000;

fuzz_target!(|data: &[u8]| {
    let (path, range) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(path) = std::str::from_utf8(path) {
        if let Some(route) = Route::parse(path) {
            let back = match &route {
                Route::Health => "/healthz".to_owned(),
                Route::Metrics => "/metrics".to_owned(),
                Route::Reports => "/v1/reports".to_owned(),
                Route::Index => "/".to_owned(),
                Route::Feed => "/feed.atom".to_owned(),
                Route::Notices => "/v1/notices.json".to_owned(),
                Route::Object(d) => format!("/objects/{d}"),
                Route::Document { doc, sig } => {
                    format!("/{}{}", doc.rel(), if *sig { ".minisig" } else { "" })
                }
            };
            assert_eq!(back, path, "{route:?}");
        }
    }
    let Ok(value) = HeaderValue::from_bytes(range) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::RANGE, value);
    let content = Content {
        bytes: Bytes::from(vec![7u8; LEN as usize]),
        etag: "\"e\"".into(),
        cache_control: "no-store".into(),
        content_type: "application/octet-stream",
    };
    let r = respond(&Method::GET, &headers, &content);
    let status = r.status().as_u16();
    assert!(matches!(status, 200 | 206 | 416), "{status}");
    let len: u64 = r.headers()[header::CONTENT_LENGTH]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    if status == 200 {
        assert_eq!(len, LEN);
    }
    if let Some(cr) = r.headers().get(header::CONTENT_RANGE) {
        if status == 206 {
            let cr = cr.to_str().expect("ascii");
            let (span, total) = cr
                .strip_prefix("bytes ")
                .and_then(|s| s.split_once('/'))
                .expect("bytes A-B/LEN");
            assert_eq!(total, LEN.to_string());
            let (a, b) = span.split_once('-').expect("A-B");
            let (a, b): (u64, u64) = (a.parse().expect("A"), b.parse().expect("B"));
            assert!(a <= b && b < LEN, "{cr}");
            assert_eq!(b - a + 1, len, "{cr}");
        }
    }
});

//! `deltaward mirror`: real origin and mirror processes on 127.0.0.1, curl as the
//! client. Caching, single flight, verification, offline, restart, eviction, sync.
#![allow(clippy::disallowed_methods)] // reason: tests write and tamper with fixtures directly

mod common;

use std::fs;

use common::{net::*, s};

#[test]
fn the_mirror_relays_documents_and_objects_byte_for_byte() {
    let p = Published::new(2);
    let origin = Server::origin(p.dir(), &p.repo);
    let m = Server::mirror(p.dir(), "mirror", &origin.url, &p.fx.path("cache"), &p.trust(), &[]);
    for rel in [
        "root.json",
        "root.json.minisig",
        "roots/1.root.json",
        "products/pump/channel.json",
        "products/pump/channel.json.minisig",
        "products/pump/releases/2.0/release.json",
        "products/pump/releases/2.0/release.json.minisig",
    ] {
        assert_eq!(get(&format!("{}/{rel}", m.url)), fs::read(p.repo.join(rel)).expect(rel), "{rel}");
    }
    for o in p.objects() {
        let want = fs::read(p.repo.join("objects").join(&o)).expect("object");
        assert_eq!(get(&format!("{}/objects/{o}", m.url)), want);
        // Second time from the cache.
        assert_eq!(get(&format!("{}/objects/{o}", m.url)), want);
    }
    assert_eq!(m.metric("deltaward_mirror_cache_hits_total"), 2);
    assert_eq!(origin.objects_served(), 2);
}

#[test]
fn two_hundred_clients_of_a_cold_object_cause_one_upstream_fetch() {
    let p = Published::new(4);
    let origin = Server::origin(p.dir(), &p.repo);
    // A slow WAN (2 MiB/s) so that the clients arrive while the fill runs.
    let m = Server::mirror(
        p.dir(),
        "mirror",
        &origin.url,
        &p.fx.path("cache"),
        &p.trust(),
        &["--upstream-rate", "2M"],
    );
    p.prime(&m.url, "2.0");
    let full = p.objects()[0].clone();
    let url = format!("{}/objects/{full}", m.url);
    let out = p.fx.path("clients");
    fs::create_dir(&out).expect("dir");
    let mut args: Vec<String> = vec!["-Z".into(), "--parallel-max".into(), "200".into(), "--parallel-immediate".into()];
    for i in 0..200 {
        args.push("-o".into());
        args.push(out.join(i.to_string()).to_string_lossy().into_owned());
        args.push(url.clone());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = curl(&refs);
    assert!(o.status.success(), "curl: {:?}", o.status);
    let want = fs::read(p.repo.join("objects").join(&full)).expect("object");
    for i in 0..200 {
        assert_eq!(fs::read(out.join(i.to_string())).expect("client file"), want, "client {i}");
    }
    assert_eq!(origin.objects_served(), 1, "exactly one upstream fetch");
    let coalesced = m.metric("deltaward_mirror_coalesced_waiters_total");
    let hits = m.metric("deltaward_mirror_cache_hits_total");
    assert_eq!(m.metric("deltaward_mirror_cache_misses_total"), coalesced + 1);
    assert_eq!(coalesced + 1 + hits, 200);
    assert!(coalesced > 0, "no client joined the fill");
}

#[test]
fn ranges_multipart_if_range_not_modified_and_curl_resume() {
    let p = Published::new(2);
    let origin = Server::origin(p.dir(), &p.repo);
    let m = Server::mirror(p.dir(), "mirror", &origin.url, &p.fx.path("cache"), &p.trust(), &[]);
    p.prime(&m.url, "2.0");
    let full = p.objects()[0].clone();
    let want = fs::read(p.repo.join("objects").join(&full)).expect("object");
    let url = format!("{}/objects/{full}", m.url);
    // A range of a cold object waits for the verified fill.
    let o = curl(&["-f", "-r", "100-199", &url]);
    assert_eq!(o.stdout, want[100..200]);
    for server in [&m.url, &origin.url] {
        let url = format!("{server}/objects/{full}");
        let o = curl(&["-f", "-D", "-", "-r", "10-19,30-39", &url]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(text.starts_with("HTTP/1.1 206"), "{text}");
        assert!(text.contains("multipart/byteranges; boundary="), "{text}");
        assert!(text.contains(&format!("Content-Range: bytes 10-19/{}", want.len())), "{text}");
        assert!(text.contains(&format!("Content-Range: bytes 30-39/{}", want.len())), "{text}");
        let etag = format!("\"{full}\"");
        assert_eq!(status(&url, &["-H", &format!("If-None-Match: {etag}")]), 304);
        assert_eq!(status(&url, &["-r", "0-9", "-H", &format!("If-Range: {etag}")]), 206);
        assert_eq!(status(&url, &["-r", "0-9", "-H", "If-Range: \"other\""]), 200);
        assert_eq!(status(&url, &["-r", &format!("{}-", want.len())]), 416);
        // A cut download resumed with curl -C -.
        let part = p.fx.path("part");
        fs::write(&part, &want[..want.len() / 3]).expect("part");
        let o = curl(&["-f", "-C", "-", "-o", s(&part), &url]);
        assert!(o.status.success(), "{o:?}");
        assert_eq!(fs::read(&part).expect("resumed"), want);
    }
}

#[test]
fn a_tampered_object_is_neither_cached_nor_served_complete() {
    let p = Published::new(2);
    let full = p.objects()[0].clone();
    let path = p.repo.join("objects").join(&full);
    let mut bytes = fs::read(&path).expect("object");
    let good = bytes.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).expect("tamper");
    let origin = Server::origin(p.dir(), &p.repo);
    let cache = p.fx.path("cache");
    let m = Server::mirror(p.dir(), "mirror", &origin.url, &cache, &p.trust(), &[]);
    p.prime(&m.url, "2.0");
    let url = format!("{}/objects/{full}", m.url);
    let got = p.fx.path("got");
    let o = curl(&["-o", s(&got), "-w", "%{http_code}", &url]);
    assert!(!o.status.success(), "curl must see the response cut");
    let received = fs::read(&got).unwrap_or_default();
    assert!(received.len() < good.len(), "a complete body was sent");
    assert!(!cache.join("objects").join(&full).exists());
    assert!(m.metric("deltaward_mirror_verification_failures_total") >= 1);
    // A range waits for verification and is refused.
    assert_eq!(status(&url, &["-r", "0-9"]), 502);
    // Repaired upstream: served and cached.
    fs::write(&path, &good).expect("repair");
    assert_eq!(get(&url), good);
    assert!(cache.join("objects").join(&full).exists());
}

#[test]
fn a_tampered_channel_is_neither_cached_nor_served() {
    let p = Published::new(1);
    let channel = p.repo.join("products/pump/channel.json");
    let text = fs::read_to_string(&channel).expect("channel");
    fs::write(&channel, text.replacen("\"version\": ", "\"version\":  ", 1)).expect("tamper");
    assert_ne!(fs::read_to_string(&channel).expect("channel"), text);
    let origin = Server::origin(p.dir(), &p.repo);
    let cache = p.fx.path("cache");
    let m = Server::mirror(p.dir(), "mirror", &origin.url, &cache, &p.trust(), &[]);
    let url = format!("{}/products/pump/channel.json", m.url);
    assert_eq!(status(&url, &[]), 502);
    assert!(!cache.join("docs/products/pump/channel.json.entry").exists());
    assert!(m.metric("deltaward_mirror_verification_failures_total") >= 1);
    // Nor may a release be fetched on the strength of it, nor its objects.
    let full = p.objects()[0].clone();
    assert_eq!(status(&format!("{}/objects/{full}", m.url), &[]), 404);
}

//! `deltaward mirror`: real origin and mirror processes on 127.0.0.1, curl as the
//! client. Caching, single flight, verification, offline, restart, eviction, sync.
#![allow(clippy::disallowed_methods)] // reason: tests write and tamper with fixtures directly

mod common;

use std::fs;

use common::{deltaward, net::*, ok, s};

#[test]
fn the_mirror_relays_documents_and_objects_byte_for_byte() {
    let p = Published::new(2);
    let origin = Server::origin(p.dir(), &p.repo);
    let m = Server::mirror(
        p.dir(),
        "mirror",
        &origin.url,
        &p.fx.path("cache"),
        &p.trust(),
        &[],
    );
    for rel in [
        "root.json",
        "root.json.minisig",
        "roots/1.root.json",
        "products/pump/channel.json",
        "products/pump/channel.json.minisig",
        "products/pump/releases/2.0/release.json",
        "products/pump/releases/2.0/release.json.minisig",
    ] {
        assert_eq!(
            get(&format!("{}/{rel}", m.url)),
            fs::read(p.repo.join(rel)).expect(rel),
            "{rel}"
        );
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
    let mut args: Vec<String> = vec![
        "-Z".into(),
        "--parallel-max".into(),
        "200".into(),
        "--parallel-immediate".into(),
    ];
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
        assert_eq!(
            fs::read(out.join(i.to_string())).expect("client file"),
            want,
            "client {i}"
        );
    }
    assert_eq!(origin.objects_served(), 1, "exactly one upstream fetch");
    let coalesced = m.metric("deltaward_mirror_coalesced_waiters_total");
    let hits = m.metric("deltaward_mirror_cache_hits_total");
    assert_eq!(
        m.metric("deltaward_mirror_cache_misses_total"),
        coalesced + 1
    );
    assert_eq!(coalesced + 1 + hits, 200);
    assert!(coalesced > 0, "no client joined the fill");
}

#[test]
fn ranges_multipart_if_range_not_modified_and_curl_resume() {
    let p = Published::new(2);
    let origin = Server::origin(p.dir(), &p.repo);
    let m = Server::mirror(
        p.dir(),
        "mirror",
        &origin.url,
        &p.fx.path("cache"),
        &p.trust(),
        &[],
    );
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
        assert!(
            text.contains(&format!("Content-Range: bytes 10-19/{}", want.len())),
            "{text}"
        );
        assert!(
            text.contains(&format!("Content-Range: bytes 30-39/{}", want.len())),
            "{text}"
        );
        let etag = format!("\"{full}\"");
        assert_eq!(
            status(&url, &["-H", &format!("If-None-Match: {etag}")]),
            304
        );
        assert_eq!(
            status(&url, &["-r", "0-9", "-H", &format!("If-Range: {etag}")]),
            206
        );
        assert_eq!(
            status(&url, &["-r", "0-9", "-H", "If-Range: \"other\""]),
            200
        );
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
    fs::write(
        &channel,
        text.replacen("\"version\": ", "\"version\":  ", 1),
    )
    .expect("tamper");
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

#[test]
fn while_the_upstream_is_down_cached_metadata_is_served_until_it_expires() {
    let p = Published::new(1);
    // A channel that expires in a few seconds.
    ok(&deltaward(&[
        "channel",
        "refresh",
        "--product",
        "pump",
        "--repo",
        s(&p.repo),
        "-s",
        s(&p.fx.key),
        "--expires-in",
        "4s",
    ]));
    let mut origin = Server::origin(p.dir(), &p.repo);
    let config = p.fx.path("mirror.toml");
    fs::write(
        &config,
        "[limits]\nmetadata_max_age = \"200ms\"\nupstream_tries = 1\n",
    )
    .expect("config");
    let m = Server::mirror(
        p.dir(),
        "mirror",
        &origin.url,
        &p.fx.path("cache"),
        &p.trust(),
        &["--config", s(&config)],
    );
    let url = format!("{}/products/pump/channel.json", m.url);
    let want = fs::read(p.repo.join("products/pump/channel.json")).expect("channel");
    assert_eq!(get(&url), want);
    assert_eq!(get_text(&format!("{}/healthz", m.url)).trim(), "ok");
    origin.signal("KILL");
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Stale, upstream down, not expired: the verified copy.
    assert_eq!(get(&url), want);
    let health = get_text(&format!("{}/healthz", m.url));
    assert!(
        health.starts_with("degraded: upstream unreachable since "),
        "{health}"
    );
    // After its signed expiry: refused, never served.
    wait_for(10, "the channel to expire", || status(&url, &[]) != 200);
    assert_eq!(status(&url, &[]), 503);
}

#[test]
fn a_fill_killed_mid_way_leaves_nothing_and_is_fetched_again() {
    let p = Published::new(4);
    let origin = Server::origin(p.dir(), &p.repo);
    let cache = p.fx.path("cache");
    let full = p.objects()[0].clone();
    let temps = || -> usize {
        fs::read_dir(cache.join("objects"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    };
    {
        let mut m = Server::mirror(
            p.dir(),
            "m1",
            &origin.url,
            &cache,
            &p.trust(),
            &["--upstream-rate", "512K"],
        );
        p.prime(&m.url, "2.0");
        let url = format!("{}/objects/{full}", m.url);
        let o = curl(&["--max-time", "1", "-o", "/dev/null", &url]);
        assert!(!o.status.success(), "the fill should still be running");
        assert_eq!(temps(), 1, "a partial fill file");
        m.signal("KILL");
    }
    assert!(!cache.join("objects").join(&full).exists());
    let m = Server::mirror(p.dir(), "m2", &origin.url, &cache, &p.trust(), &[]);
    assert_eq!(temps(), 0, "partial files are discarded at start");
    let want = fs::read(p.repo.join("objects").join(&full)).expect("object");
    assert_eq!(get(&format!("{}/objects/{full}", m.url)), want);
    assert_eq!(origin.objects_served(), 2, "fetched again from the start");
    assert!(cache.join("objects").join(&full).exists());
}

#[test]
fn eviction_keeps_the_current_release_longest() {
    let p = Published::new(2);
    // Release 3.0 (counter 3) is now the current one; 2.0 stays listed.
    let newer = p.fx.path("newer.img");
    let mut img = fs::read(&p.fx.new).expect("new");
    img[5000] ^= 0xff;
    fs::write(&newer, &img).expect("newer");
    let base = format!("1.0={}", s(&p.fx.old));
    ok(&deltaward(&[
        "release",
        "--product",
        "pump",
        "--version",
        "3.0",
        "--counter",
        "3",
        "--image",
        s(&newer),
        "--base",
        &base,
        "--notes",
        s(&p.notes),
        "--repo",
        s(&p.repo),
        "-s",
        s(&p.fx.key),
        "--level",
        "fast",
    ]));
    let origin = Server::origin(p.dir(), &p.repo);
    let cache = p.fx.path("cache");
    let release = |v: &str| -> serde_json::Value {
        serde_json::from_slice(
            &fs::read(
                p.repo
                    .join(format!("products/pump/releases/{v}/release.json")),
            )
            .expect("release"),
        )
        .expect("json")
    };
    let full = |v: &str| {
        release(v)["full_image"]["object"]["blake3"]
            .as_str()
            .expect("full")
            .to_owned()
    };
    let patch = |v: &str| {
        release(v)["bases"][0]["patch"]["blake3"]
            .as_str()
            .expect("patch")
            .to_owned()
    };
    let len = |o: &str| {
        fs::metadata(p.repo.join("objects").join(o))
            .expect("object")
            .len()
    };
    let (new_full, old_full, new_patch) = (full("3.0"), full("2.0"), patch("3.0"));
    // Room for both full images, not for the patch as well.
    let cap = len(&new_full) + len(&old_full) + len(&new_patch) - 1;
    let m = Server::mirror(
        p.dir(),
        "mirror",
        &origin.url,
        &cache,
        &p.trust(),
        &["--max-cache-size", &cap.to_string()],
    );
    p.prime(&m.url, "3.0");
    get(&format!(
        "{}/products/pump/releases/2.0/release.json",
        m.url
    ));
    // Least recently used first: the current full image, then the old one.
    get(&format!("{}/objects/{new_full}", m.url));
    get(&format!("{}/objects/{old_full}", m.url));
    get(&format!("{}/objects/{new_patch}", m.url));
    let cached = |o: &str| cache.join("objects").join(o).exists();
    assert!(
        !cached(&old_full),
        "the old release's image goes first, though used later"
    );
    assert!(cached(&new_full) && cached(&new_patch));
    assert_eq!(m.metric("deltaward_mirror_evictions_total"), 1);
    assert!(m.metric("deltaward_mirror_cache_bytes") <= cap);
}

#[test]
fn sync_fetches_everything_once_and_then_nothing() {
    let p = Published::new(2);
    let origin = Server::origin(p.dir(), &p.repo);
    let cache = p.fx.path("cache");
    let sync = || {
        let out = ok(&deltaward(&[
            "mirror",
            "sync",
            "--upstream",
            &origin.url,
            "--cache",
            s(&cache),
            "--trust",
            s(&p.trust()),
            "--product",
            "pump",
            "--json",
        ]));
        serde_json::from_str::<serde_json::Value>(&out).expect("json")
    };
    let first = sync();
    assert_eq!(first["objects"], 2, "{first}");
    assert_eq!(first["fetched"], 2, "{first}");
    for o in p.objects() {
        assert_eq!(
            fs::read(cache.join("objects").join(&o)).expect("cached"),
            fs::read(p.repo.join("objects").join(&o)).expect("repo")
        );
    }
    let second = sync();
    assert_eq!(second["fetched"], 0, "{second}");
    assert_eq!(second["already_cached"], 2, "{second}");
    assert_eq!(origin.objects_served(), 2);
    // The synced cache serves offline.
    drop(origin);
    let m = Server::mirror(
        p.dir(),
        "mirror",
        "http://127.0.0.1:9",
        &cache,
        &p.trust(),
        &[],
    );
    let full = p.objects()[0].clone();
    assert_eq!(
        get(&format!("{}/objects/{full}", m.url)),
        fs::read(p.repo.join("objects").join(&full)).expect("repo")
    );
}

#[test]
fn an_object_asked_for_before_its_release_is_found_through_the_channel() {
    let p = Published::new(1);
    let origin = Server::origin(p.dir(), &p.repo);
    let m = Server::mirror(
        p.dir(),
        "mirror",
        &origin.url,
        &p.fx.path("cache"),
        &p.trust(),
        &[],
    );
    let full = p.objects()[0].clone();
    // Nothing verified names it yet.
    assert_eq!(status(&format!("{}/objects/{full}", m.url), &[]), 404);
    get(&format!("{}/products/pump/channel.json", m.url));
    assert_eq!(
        get(&format!("{}/objects/{full}", m.url)),
        fs::read(p.repo.join("objects").join(&full)).expect("object")
    );
}

#[test]
fn eviction_never_drops_what_a_device_on_site_still_needs() {
    let p = Published::new(2);
    let origin = Server::origin(p.dir(), &p.repo);
    let cache = p.fx.path("cache");
    let objects = p.objects();
    let (full, patch) = (objects[0].clone(), objects[1].clone());
    let len = |o: &str| {
        fs::metadata(p.repo.join("objects").join(o))
            .expect("object")
            .len()
    };
    // Room for either object, not for both.
    let cap = len(&full) + len(&patch) - 1;
    let m = Server::mirror(
        p.dir(),
        "mirror",
        &origin.url,
        &cache,
        &p.trust(),
        &["--max-cache-size", &cap.to_string()],
    );
    p.prime(&m.url, "2.0");
    // A device on site reports that it still runs base 1.0 (its update failed).
    let old = deltaward_engine::Digest::of(&fs::read(&p.fx.old).expect("old")).to_string();
    let report = serde_json::json!({
        "_type": "deltaward-delivery-report", "spec_version": 1, "device_id": "pump-9",
        "product": "pump", "hardware_id": "pump-a1", "started": "2026-11-29T10:00:00Z",
        "finished": "2026-11-29T10:00:01Z",
        "from": {"version": "1.0", "counter": null, "length": 2097152, "blake3": old},
        "to": null, "object": null, "mirror": null, "root_version": null,
        "key_ids": {"channel": [], "release": [], "patch": null}, "checks": [],
        "bytes_downloaded": 0,
        "durations_ms": {"hash": 0, "check": 0, "download": 0, "apply": 0, "total": 0},
        "outcome": "failed", "reason": "power lost", "exit_code": 1
    });
    let posted = curl(&[
        "-f",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &report.to_string(),
        &format!("{}/v1/reports", m.url),
    ]);
    assert!(posted.status.success(), "{posted:?}");
    // The patch first, then the full image: LRU alone would evict the patch.
    get(&format!("{}/objects/{patch}", m.url));
    get(&format!("{}/objects/{full}", m.url));
    assert!(
        cache.join("objects").join(&patch).exists(),
        "the patch pump-9 needs was evicted"
    );
    assert!(cache.join("objects").join(&full).exists());
    assert_eq!(m.metric("deltaward_mirror_evictions_total"), 0);
}

#[test]
fn tls_files_that_are_fifos_or_dev_zero_are_refused_at_once() {
    let p = Published::new(1);
    let fifo = p.fx.path("cert.pem");
    common::ok(
        &std::process::Command::new("mkfifo")
            .arg(&fifo)
            .output()
            .expect("mkfifo"),
    );
    let zero = p.fx.path("key.pem");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    for (cert, key) in [(&fifo, &zero), (&zero, &fifo)] {
        let out = std::process::Command::new("timeout")
            .args([
                "30",
                common::bin(),
                "mirror",
                "serve",
                "--root",
                s(&p.repo),
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                s(cert),
                "--tls-key",
                s(key),
            ])
            .output()
            .expect("serve");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(s(cert)) || err.contains(s(key)), "{err}");
    }
}

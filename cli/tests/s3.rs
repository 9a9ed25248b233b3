//! Publishing to S3-compatible object storage and mirroring from it, against a real
//! store: a single Garage node on 127.0.0.1 (see `common/garage.rs`; no mock S3).
//! What is in the bucket is read back with curl's own SigV4 signing, independent of
//! deltaward's.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

mod common;

use std::{
    fs,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{
    bin,
    exit::MIX_AND_MATCH,
    fails_with,
    garage::Garage,
    net::{curl, result, Device, Published, Server},
    ok, s,
};

/// `deltaward publish REPO s3://BUCKET/PREFIX --json EXTRA` with the store's
/// credentials, endpoint and region in the environment.
fn publish(g: &Garage, repo: &Path, prefix: &str, extra: &[&str]) -> Output {
    let url = g.url(prefix);
    let mut args = vec!["publish", s(repo), &url, "--json"];
    args.extend_from_slice(extra);
    g.run(Path::new(bin()), &args)
}

fn summary(out: &Output) -> serde_json::Value {
    let text = ok(out);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Every file of the repository directory, relative, sorted.
fn files(repo: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                let rel = p.strip_prefix(base).expect("inside");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut v = Vec::new();
    walk(repo, repo, &mut v);
    v.sort();
    v
}

/// A mirror whose upstream is the private bucket at `prefix`.
fn mirror_of(g: &Garage, p: &Published, prefix: &str, name: &str) -> Server {
    let cache = p.fx.path(&format!("{name}-cache"));
    let url = g.url(prefix);
    let trust = p.trust();
    Server::start_with_env(
        p.dir(),
        name,
        &[
            "--upstream",
            &url,
            "--cache",
            s(&cache),
            "--trust",
            s(&trust),
        ],
        &g.env(),
    )
}

#[test]
fn publish_uploads_in_order_and_a_second_publish_uploads_nothing() {
    let Some(g) = Garage::start("updates") else {
        return;
    };
    // 12 MiB of noise: the full image goes up in three 5 MiB parts.
    let p = Published::new(12);
    let s1 = summary(&publish(&g, &p.repo, "site-a", &["--part-size", "5M"]));
    let local = files(&p.repo);
    assert_eq!(s1["files"], local.len() as u64, "{s1}");
    assert_eq!(s1["uploaded"], local.len() as u64, "{s1}");
    assert_eq!(s1["skipped"], 0, "{s1}");
    assert_eq!(s1["multipart"], 1, "{s1}");
    // The bucket holds the repository byte for byte, and nothing else.
    let keys = g.list("site-a/");
    let want: Vec<String> = local.iter().map(|f| format!("site-a/{f}")).collect();
    assert_eq!(keys, want);
    for f in &local {
        let stored = g.get(&format!("site-a/{f}")).expect("stored");
        assert_eq!(stored, fs::read(p.repo.join(f)).expect("local"), "{f}");
    }
    // In order: objects, then releases, then roots, then the channel last, each
    // document after its signatures.
    let order: Vec<&str> = s1["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|v| v.as_str().expect("str"))
        .collect();
    let pos = |f: &str| order.iter().position(|p| *p == f).expect(f);
    let last_object = order
        .iter()
        .rposition(|p| p.starts_with("objects/"))
        .expect("objects");
    let release = pos("products/pump/releases/2.0/release.json");
    assert!(last_object < pos("products/pump/releases/2.0/release.json.minisig"));
    assert!(pos("products/pump/releases/2.0/release.json.minisig") < release);
    assert!(release < pos("roots/1.root.json"));
    assert!(pos("roots/1.root.json") < pos("root.json"));
    assert_eq!(order.last(), Some(&"products/pump/channel.json"));

    // A second publish of the same repository uploads nothing.
    let s2 = summary(&publish(&g, &p.repo, "site-a", &[]));
    assert_eq!(s2["uploaded"], 0, "{s2}");
    assert_eq!(s2["bytes_uploaded"], 0, "{s2}");
    assert_eq!(s2["skipped"], local.len() as u64, "{s2}");

    // An older copy of the repository cannot roll the bucket's channel back.
    let older = p.fx.path("older-repo");
    assert!(Command::new("cp")
        .args(["-a", s(&p.repo), s(&older)])
        .status()
        .expect("cp")
        .success());
    ok(&common::deltaward(&[
        "channel",
        "refresh",
        "--product",
        "pump",
        "-s",
        s(&p.fx.key),
        "--repo",
        s(&p.repo),
    ]));
    let s3 = summary(&publish(&g, &p.repo, "site-a", &[]));
    assert_eq!(s3["uploaded"], 2, "{s3}");
    let err = fails_with(&publish(&g, &older, "site-a", &[]), 1);
    assert!(err.contains("the bucket holds version 2"), "{err}");
    assert_eq!(
        g.get("site-a/products/pump/channel.json").expect("channel"),
        fs::read(p.repo.join("products/pump/channel.json")).expect("local")
    );

    // The bucket is private: an unsigned request is refused.
    let anonymous = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{}/{}/site-a/root.json", g.endpoint, g.bucket),
    ]);
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "403");
}

#[test]
fn publish_refuses_a_broken_repository_before_uploading_anything() {
    let Some(g) = Garage::start("updates") else {
        return;
    };
    let p = Published::new(2);
    // One byte of the patch changed: the release's hash no longer matches.
    let patch = p.objects().pop().expect("the patch (smallest object)");
    let path = p.repo.join("objects").join(&patch);
    let mut bytes = fs::read(&path).expect("patch");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, bytes).expect("write");
    // The exit code is the class of the refusal, as check-release gives it.
    let err = fails_with(&publish(&g, &p.repo, "broken", &[]), MIX_AND_MATCH);
    assert!(err.contains("refusing to publish"), "{err}");
    assert!(err.contains(&patch), "{err}");
    assert!(g.list("broken/").is_empty());

    // Without credentials: a clear error, nothing uploaded.
    let out = Command::new(bin())
        .args(["publish", s(&p.repo), &g.url("nocreds")])
        .env("AWS_ENDPOINT_URL", &g.endpoint)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("run");
    let err = fails_with(&out, 1);
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
}

#[test]
fn a_mirror_pulls_from_the_private_bucket_and_a_device_updates_through_it() {
    let Some(g) = Garage::start("updates") else {
        return;
    };
    let p = Published::new(4);
    summary(&publish(&g, &p.repo, "prod", &[]));
    let m = mirror_of(&g, &p, "prod", "mirror");
    let dev = Device::new(&p, "dev", &p.fx.old);
    let r = result(&dev.update(&p, &[&m.url], &[]));
    assert_eq!(r["outcome"], "installed", "{r}");
    assert_eq!(r["to"]["version"], "2.0", "{r}");
    assert_eq!(
        fs::read(&dev.out).expect("new image"),
        fs::read(&p.fx.new).expect("want")
    );
    // The mirror fetched from the bucket with signed requests, each object once.
    let fetched = m.metric("deltaward_mirror_upstream_requests_total");
    assert!(fetched > 0);
    let r2 = result(&Device::new(&p, "dev2", &p.fx.old).update(&p, &[&m.url], &[]));
    assert_eq!(r2["outcome"], "installed", "{r2}");
    assert_eq!(m.metric("deltaward_mirror_cache_misses_total"), 1);
    // Ranges are served from the cache.
    let patch = format!(
        "objects/{}",
        r["object"]["blake3"].as_str().expect("object")
    );
    let part = curl(&["-r", "10-19", &format!("{}/{patch}", m.url)]);
    assert_eq!(
        part.stdout,
        fs::read(p.repo.join(&patch)).expect("patch")[10..20]
    );
    // Wrong credentials: the mirror cannot read the bucket and says so.
    let cache = p.fx.path("bad-cache");
    let url = g.url("prod");
    let mut env = g.env();
    env[1].1 = "0".repeat(64);
    let bad = Server::start_with_env(
        p.dir(),
        "bad-mirror",
        &[
            "--upstream",
            &url,
            "--cache",
            s(&cache),
            "--trust",
            s(&p.trust()),
        ],
        &env,
    );
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{}/products/pump/channel.json", bad.url),
    ]);
    assert_eq!(String::from_utf8_lossy(&code.stdout), "502");
    assert!(bad.log_text().contains("HTTP 403"), "{}", bad.log_text());
}

#[test]
fn an_interrupted_publish_leaves_the_previous_channel_in_effect() {
    let Some(g) = Garage::start("updates") else {
        return;
    };
    // 12 MiB images of noise: release 3.0's full image is large, its patch small.
    let p = Published::new(12);
    summary(&publish(&g, &p.repo, "prod", &[]));
    let channel_before = g.get("prod/products/pump/channel.json").expect("channel");

    let img = p.fx.path("3.0.img");
    let mut next = fs::read(&p.fx.new).expect("new");
    for b in next.iter_mut().step_by(1 << 20) {
        *b ^= 0xa5;
    }
    fs::write(&img, next).expect("image");
    p.release_image("3.0", "3", &img, &[]);
    let release: serde_json::Value = serde_json::from_slice(
        &fs::read(p.repo.join("products/pump/releases/3.0/release.json")).expect("release"),
    )
    .expect("json");
    let new_patch = release["bases"][0]["patch"]["path"]
        .as_str()
        .expect("patch")
        .to_owned();

    // Publish at 2 MiB/s and kill it once the new patch (the smallest object, first
    // up) is in the bucket, while the 12 MiB full image is still going up (6 s).
    let url = g.url("prod");
    let mut child = Command::new(bin())
        .args([
            "publish",
            s(&p.repo),
            &url,
            "--rate",
            "2M",
            "--part-size",
            "5M",
            "--jobs",
            "1",
        ])
        .envs(g.env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("publish");
    let start = Instant::now();
    while g.get(&format!("prod/{new_patch}")).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the new patch never appeared"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "publish ended before it was interrupted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert!(g
        .get("prod/products/pump/releases/3.0/release.json")
        .is_none());
    assert_eq!(
        g.get("prod/products/pump/channel.json").expect("channel"),
        channel_before,
        "the previous channel is still the one in effect"
    );
    // A device gets the previous release, whole and verified.
    let m = mirror_of(&g, &p, "prod", "mirror");
    let r = result(&Device::new(&p, "dev", &p.fx.old).update(&p, &[&m.url], &[]));
    assert_eq!(r["outcome"], "installed", "{r}");
    assert_eq!(r["to"]["version"], "2.0", "{r}");
    drop(m);

    // Publishing again completes it, without uploading the patch again.
    let s2 = summary(&publish(&g, &p.repo, "prod", &[]));
    assert!(!s2["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .any(|x| x == new_patch.as_str()));
    // The channel was replaced: its signatures for both went up first, then the
    // channel, then its own signatures, last of all.
    let paths: Vec<&str> = s2["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|v| v.as_str().expect("str"))
        .collect();
    assert_eq!(
        paths[paths.len() - 2..],
        [
            "products/pump/channel.json",
            "products/pump/channel.json.minisig"
        ]
    );
    let m = mirror_of(&g, &p, "prod", "mirror-after");
    let r = result(&Device::new(&p, "dev-after", &p.fx.old).update(&p, &[&m.url], &[]));
    assert_eq!(r["outcome"], "installed", "{r}");
    assert_eq!(r["to"]["version"], "3.0", "{r}");
}

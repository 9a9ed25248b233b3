//! `deltaward update`: a device updating through real origin and mirror processes on
//! 127.0.0.1: install, up to date, full-image fallback, refusals with their codes,
//! dropped connections, a killed download, and reports delivered or queued.
#![allow(clippy::disallowed_methods)] // reason: tests write and tamper with fixtures directly

mod common;

use std::{
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{deltaward, exit, fails_with, net::*, ok, s};

/// The reports a mirror stored, parsed.
fn reports(cache: &Path) -> Vec<serde_json::Value> {
    fs::read_dir(cache.join("reports"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    serde_json::from_slice(&fs::read(e.path()).expect("report")).expect("json")
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_device_updates_through_the_mirror_then_is_up_to_date() {
    let p = Published::new(4);
    let origin = Server::origin(p.dir(), &p.repo);
    let cache = p.fx.path("cache");
    let m = Server::mirror(p.dir(), "mirror", &origin.url, &cache, &p.trust(), &[]);
    let dev = Device::new(&p, "dev", &p.fx.old);
    let out = dev.update(&p, &[&m.url], &["--current-version", "1.0"]);
    ok(&out);
    let r = result(&out);
    assert_eq!(r["outcome"], "installed", "{r}");
    assert_eq!(
        fs::read(&dev.out).expect("new image"),
        fs::read(&p.fx.new).expect("want")
    );
    assert_eq!(r["object"]["kind"], "patch");
    assert_eq!(r["object"]["base_version"], "1.0");
    assert_eq!(r["to"]["version"], "2.0");
    assert_eq!(r["device_id"], "pump-17");
    assert_eq!(r["root_version"], 1);
    assert!(
        !r["key_ids"]["release"].as_array().expect("ids").is_empty(),
        "{r}"
    );
    assert!(r["key_ids"]["patch"].is_string(), "{r}");
    assert!(
        r["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .all(|c| c["result"] == "passed"),
        "{r}"
    );
    let patch_len = r["object"]["length"].as_u64().expect("length");
    assert!(r["bytes_downloaded"].as_u64().expect("bytes") >= patch_len);
    assert!(
        dev.state_json().contains("\"highest_counter\": 2"),
        "{}",
        dev.state_json()
    );
    // The phases were announced as JSON events.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for phase in ["hash", "check", "download", "apply", "report"] {
        assert!(
            text.contains(&format!("{{\"event\":\"phase\",\"phase\":\"{phase}\"}}")),
            "{text}"
        );
    }
    // The mirror stored the report.
    let stored = reports(&cache);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0], r);
    // Run again on the new image: up to date, metadata only.
    let served = m.metric("deltaward_mirror_requests_total{route=\"object\",code=\"200\"}");
    let again = Device {
        image: dev.out.clone(),
        out: dev.out.with_extension("again"),
        state: dev.state.clone(),
    };
    let out = again.update(&p, &[&m.url], &[]);
    ok(&out);
    let r = result(&out);
    assert_eq!(r["outcome"], "up_to_date", "{r}");
    assert!(r["object"].is_null());
    assert!(!again.out.exists());
    assert_eq!(
        m.metric("deltaward_mirror_requests_total{route=\"object\",code=\"200\"}"),
        served
    );
    assert_eq!(reports(&cache).len(), 2);
}

#[test]
fn a_device_whose_base_has_no_patch_gets_the_full_image() {
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
    let other = p.fx.path("other.img");
    fs::write(&other, deltaward_testkit::noise(1 << 20, 99)).expect("other image");
    let dev = Device::new(&p, "dev", &other);
    let out = dev.update(&p, &[&m.url], &[]);
    ok(&out);
    let r = result(&out);
    assert_eq!(r["outcome"], "installed", "{r}");
    assert_eq!(r["object"]["kind"], "full_image");
    assert_eq!(
        fs::read(&dev.out).expect("new"),
        fs::read(&p.fx.new).expect("want")
    );
}

#[test]
fn refusals_leave_output_and_state_untouched_and_are_reported() {
    let p = Published::new(1);
    let origin = Server::origin(p.dir(), &p.repo);
    let cache = p.fx.path("cache");
    let m = Server::mirror(p.dir(), "mirror", &origin.url, &cache, &p.trust(), &[]);

    // Another device's hardware.
    let dev = Device::new(&p, "hw", &p.fx.old);
    let trust = p.trust();
    let out = deltaward(&[
        "update",
        "--mirror",
        &m.url,
        "--product",
        "pump",
        "--hardware",
        "ventilator-b2",
        "--image",
        s(&dev.image),
        "-o",
        s(&dev.out),
        "--state",
        s(&dev.state),
        "--init-root",
        s(&trust),
        "--json",
    ]);
    fails_with(&out, exit::WRONG_HARDWARE);
    let r = result(&out);
    assert_eq!(r["outcome"], "refused");
    assert_eq!(r["exit_code"], exit::WRONG_HARDWARE);
    assert!(!dev.out.exists());
    assert!(
        dev.state_json().contains("\"highest_counter\": 0"),
        "{}",
        dev.state_json()
    );

    // Rollback: the device accepted a higher counter before.
    let dev = Device::new(&p, "rollback", &p.fx.old);
    ok(&deltaward(&[
        "check-release",
        "--repo",
        s(&p.repo),
        "--product",
        "pump",
        "--state",
        s(&dev.state),
        "--init-root",
        s(&trust),
        "--hardware",
        "pump-a1",
        "--current-version",
        "1.0",
        "--image",
        s(&dev.image),
    ]));
    fs::write(
        dev.state.join("state.json"),
        "{\"highest_counter\": 9, \"channel_version\": 0}",
    )
    .expect("state");
    let out = dev.update(&p, &[&m.url], &[]);
    fails_with(&out, exit::ROLLBACK);
    assert!(!dev.out.exists());
    assert!(dev.state_json().contains("9"));

    // Every refusal reached the mirror.
    let stored = reports(&cache);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored.iter().all(|r| r["outcome"] == "refused"),
        "{stored:?}"
    );
}

#[test]
fn an_expired_channel_is_refused() {
    let p = Published::new(1);
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
        "1s",
    ]));
    std::thread::sleep(Duration::from_millis(1500));
    let origin = Server::origin(p.dir(), &p.repo);
    let dev = Device::new(&p, "dev", &p.fx.old);
    // The repository URL stands where a mirror's would.
    let out = dev.update(&p, &[&origin.url], &[]);
    fails_with(&out, exit::FREEZE);
    assert!(!dev.out.exists());
}

#[test]
fn a_mix_and_match_object_is_refused_and_the_report_queued_until_a_mirror_takes_it() {
    let p = Published::new(2);
    // The patch object replaced by other bytes of the same length.
    let patch = p.objects()[1].clone();
    let path = p.repo.join("objects").join(&patch);
    let good = fs::read(&path).expect("patch");
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x55;
    fs::write(&path, &bad).expect("tamper");
    let origin = Server::origin(p.dir(), &p.repo);
    let dev = Device::new(&p, "dev", &p.fx.old);
    // Straight from the origin (which takes no reports): refused, report queued.
    let out = dev.update(&p, &[&origin.url], &["--current-version", "1.0"]);
    fails_with(&out, exit::MIX_AND_MATCH);
    assert!(!dev.out.exists());
    let queued = || fs::read_dir(dev.state.join("reports")).map_or(0, |d| d.count());
    assert_eq!(queued(), 1);
    // Repaired, through a mirror: installed, and both reports delivered.
    fs::write(&path, &good).expect("repair");
    let cache = p.fx.path("cache");
    let m = Server::mirror(p.dir(), "mirror", &origin.url, &cache, &p.trust(), &[]);
    let out = dev.update(&p, &[&m.url], &["--current-version", "1.0"]);
    ok(&out);
    assert_eq!(queued(), 0);
    let stored = reports(&cache);
    assert_eq!(stored.len(), 2);
    let mut outcomes: Vec<_> = stored
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or("").to_owned())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["installed", "refused"]);
}

#[test]
fn no_mirror_reachable_has_its_own_code_and_a_second_mirror_is_used() {
    let p = Published::new(1);
    let origin = Server::origin(p.dir(), &p.repo);
    let dev = Device::new(&p, "dev", &p.fx.old);
    let dead = "http://127.0.0.1:9";
    let out = dev.update(&p, &[dead], &[]);
    fails_with(&out, 20);
    assert_eq!(result(&out)["outcome"], "failed");
    let out = dev.update(&p, &[dead, &origin.url], &[]);
    ok(&out);
    assert_eq!(result(&out)["mirror"], origin.url.as_str());
}

/// A proxy to `upstream` that cuts every connection after `cut` bytes of response.
fn cutting_proxy(upstream: &str, cut: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let target = upstream.trim_start_matches("http://").to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let target = target.clone();
            std::thread::spawn(move || {
                let Ok(server) = TcpStream::connect(&target) else {
                    return;
                };
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                });
                let (mut s_read, mut c_write) = (server, client);
                let mut sent = 0;
                let mut buf = [0u8; 16384];
                while sent < cut {
                    let n = match s_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(cut - sent),
                    };
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = c_write.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn dropped_connections_are_resumed() {
    let p = Published::new(3);
    let origin = Server::origin(p.dir(), &p.repo);
    let proxy = cutting_proxy(&origin.url, 256 << 10);
    let other = p.fx.path("other.img");
    fs::write(&other, deltaward_testkit::noise(1 << 20, 7)).expect("other");
    // The full image (about 3 MiB) comes in pieces of at most 256 KiB.
    let dev = Device::new(&p, "dev", &other);
    let out = dev.update(&p, &[&proxy], &[]);
    ok(&out);
    assert_eq!(result(&out)["object"]["kind"], "full_image");
    assert_eq!(
        fs::read(&dev.out).expect("new"),
        fs::read(&p.fx.new).expect("want")
    );
    assert!(origin.metric("deltaward_mirror_requests_total{route=\"object\",code=\"206\"}") >= 8);
}

#[test]
fn an_update_killed_during_the_download_resumes_without_fetching_again() {
    let p = Published::new(8);
    let origin = Server::origin(p.dir(), &p.repo);
    let cache = p.fx.path("cache");
    // A slow WAN: the device streams the fill at 2 MiB/s.
    let m = Server::mirror(
        p.dir(),
        "mirror",
        &origin.url,
        &cache,
        &p.trust(),
        &["--upstream-rate", "2M"],
    );
    let other = p.fx.path("other.img");
    fs::write(&other, deltaward_testkit::noise(1 << 20, 5)).expect("other");
    let dev = Device::new(&p, "dev", &other);
    let trust = p.trust();
    let mut child = Command::new(common::bin())
        .args([
            "update",
            "--mirror",
            &m.url,
            "--product",
            "pump",
            "--hardware",
            "pump-a1",
            "--image",
            s(&dev.image),
            "-o",
            s(&dev.out),
            "--state",
            s(&dev.state),
            "--init-root",
            s(&trust),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let downloads = dev.state.join("downloads");
    let part_len = || -> u64 {
        fs::read_dir(&downloads)
            .map(|d| {
                d.flatten()
                    .map(|e| e.metadata().map_or(0, |m| m.len()))
                    .sum()
            })
            .unwrap_or(0)
    };
    wait_for(20, "a part of the download", || part_len() > 2 << 20);
    child.kill().expect("kill");
    child.wait().expect("wait");
    let had = part_len();
    assert!(!dev.out.exists());
    let served_before = m.metric("deltaward_mirror_bytes_served_total");
    let out = dev.update(&p, &[&m.url], &[]);
    ok(&out);
    assert_eq!(
        fs::read(&dev.out).expect("new"),
        fs::read(&p.fx.new).expect("want")
    );
    let full = result(&out)["object"]["length"].as_u64().expect("length");
    let served = m.metric("deltaward_mirror_bytes_served_total") - served_before;
    // The rerun fetched the rest and the documents, not the bytes it had.
    assert!(
        served < full - had + (64 << 10),
        "served {served}, had {had} of {full}"
    );
    assert!(!downloads
        .join(format!(
            "{}.part",
            result(&out)["object"]["blake3"].as_str().unwrap_or("")
        ))
        .exists());
}

/// The kernel security update as a 600 MiB ext4 image (scripts/make-pairs.sh),
/// released, served by an origin, relayed by a mirror, and installed by a device
/// whose update is killed during the apply and run again.
#[test]
#[ignore = "needs scripts/make-pairs.sh"]
fn kernel_ext4_through_origin_mirror_and_update_with_a_killed_apply() {
    let (old, new) = deltaward_testkit::pair("kernel-ext4");
    let p = Published::new(1);
    let repo = p.fx.path("kernel-repo");
    let k = s(&p.fx.public);
    ok(&deltaward(&[
        "root",
        "--repo",
        s(&repo),
        "--root-pub",
        k,
        "--release-pub",
        k,
        "--channel-pub",
        k,
        "-s",
        s(&p.fx.key),
    ]));
    let base = format!("6.1.0-old={}", s(&old));
    ok(&deltaward(&[
        "release",
        "--product",
        "pump",
        "--version",
        "6.1.0-new",
        "--counter",
        "2",
        "--image",
        s(&new),
        "--base",
        &base,
        "--notes",
        s(&p.notes),
        "--repo",
        s(&repo),
        "-s",
        s(&p.fx.key),
    ]));
    let origin = Server::origin(p.dir(), &repo);
    let cache = p.fx.path("cache");
    let trust = repo.join("root.json");
    let m = Server::mirror(p.dir(), "mirror", &origin.url, &cache, &trust, &[]);
    let state = p.fx.path("state");
    let out = p.fx.path("new.img");
    let args = |json: bool| {
        let mut a = vec![
            "update".to_owned(),
            "--mirror".into(),
            m.url.clone(),
            "--product".into(),
            "pump".into(),
            "--hardware".into(),
            "pump-a1".into(),
            "--image".into(),
            s(&old).into(),
            "-o".into(),
            s(&out).into(),
            "--state".into(),
            s(&state).into(),
            "--init-root".into(),
            s(&trust).into(),
            "--current-version".into(),
            "6.1.0-old".into(),
        ];
        if json {
            a.push("--json".into());
        }
        a
    };
    let mut child = Command::new(common::bin())
        .args(args(false))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill it once the apply has written part of the new image.
    let private = p.fx.path(".new.img.deltaward");
    let killed_in_apply = {
        let end = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let partial = fs::read_dir(&private)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.metadata().is_ok_and(|m| m.len() > 64 << 20))
                })
                .unwrap_or(false);
            if partial {
                child.kill().expect("kill");
                break true;
            }
            if child.try_wait().expect("wait").is_some() || std::time::Instant::now() > end {
                break false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let _ = child.wait();
    let served_before = m.metric("deltaward_mirror_bytes_served_total");
    let refs: Vec<String> = args(true);
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let done = deltaward(&refs);
    ok(&done);
    let r = result(&done);
    assert_eq!(r["outcome"], "installed", "{r}");
    assert_eq!(r["object"]["kind"], "patch");
    let want = fs::read(&new).expect("new");
    assert!(
        fs::read(&out).expect("out") == want,
        "the output differs from the new image"
    );
    assert!(
        killed_in_apply,
        "the update ended before its apply could be killed"
    );
    {
        let patch = r["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["check"] == "patch")
            .cloned();
        let detail = patch.map(|c| c["detail"].to_string()).unwrap_or_default();
        assert!(detail.contains("resumed after"), "{detail}");
        // The patch was complete on disk: the rerun fetched only documents.
        let served = m.metric("deltaward_mirror_bytes_served_total") - served_before;
        assert!(served < 64 << 10, "{served} bytes served again");
    }
}

#[test]
fn a_fifo_or_dev_zero_in_the_report_queue_neither_blocks_nor_fills_memory() {
    let p = Published::new(1);
    let origin = Server::origin(p.dir(), &p.repo);
    let dev = Device::new(&p, "dev", &p.fx.old);
    let queue = dev.state.join("reports");
    fs::create_dir_all(&queue).expect("queue");
    ok(&Command::new("mkfifo")
        .arg(queue.join("0-fifo.json"))
        .output()
        .expect("mkfifo"));
    std::os::unix::fs::symlink("/dev/zero", queue.join("1-zero.json")).expect("symlink");
    // The origin takes no reports: this run's report is queued beside them. Under a
    // time limit: a read of the FIFO would wait for a writer forever.
    let trust = p.trust();
    let out = Command::new("timeout")
        .args([
            "60",
            common::bin(),
            "update",
            "--mirror",
            &origin.url,
            "--product",
            "pump",
            "--hardware",
            "pump-a1",
            "--image",
            s(&dev.image),
            "-o",
            s(&dev.out),
            "--state",
            s(&dev.state),
            "--init-root",
            s(&trust),
        ])
        .output()
        .expect("update");
    ok(&out);
    assert_eq!(
        fs::read(&dev.out).expect("new"),
        fs::read(&p.fx.new).expect("want")
    );
    // Its own report was queued; the planted entries are left alone.
    assert_eq!(fs::read_dir(&queue).expect("queue").count(), 3);
}

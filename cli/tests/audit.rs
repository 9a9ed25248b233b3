//! The mirror's delivery log and `deltaward audit verify`: a real mirror records
//! fetches, deliveries and device reports; the log verifies; each kind of tampering
//! is named; a torn record after kill -9 is sealed and the chain goes on.
#![allow(clippy::disallowed_methods)] // reason: tests tamper with log files directly

mod common;

use std::{fs, path::Path};

use common::{deltaward, exit, fails_with, net::*, ok, s};

/// A mirror with a delivery log (checkpoint every 5 records), two objects fetched
/// and served, and one device report; stopped cleanly. Returns the log directory
/// and the mirror's public key.
fn logged_run(p: &Published) -> (std::path::PathBuf, std::path::PathBuf) {
    let (key, public) = (p.fx.path("mirror.key"), p.fx.path("mirror.pub"));
    ok(&deltaward(&[
        "keygen",
        "-s",
        s(&key),
        "-p",
        s(&public),
        "--unencrypted",
    ]));
    let logs = p.fx.path("logs");
    let config = p.fx.path("mirror.toml");
    fs::write(&config, "[limits]\nlog_checkpoint_every = 5\n").expect("config");
    let origin = Server::origin(p.dir(), &p.repo);
    let mut m = Server::mirror(
        p.dir(),
        "mirror",
        &origin.url,
        &p.fx.path("cache"),
        &p.trust(),
        &[
            "--log-dir",
            s(&logs),
            "--log-key",
            s(&key),
            "--config",
            s(&config),
        ],
    );
    p.prime(&m.url, "2.0");
    for o in p.objects() {
        get(&format!("{}/objects/{o}", m.url));
    }
    let device = p.fx.path("device");
    fs::create_dir_all(&device).expect("dir");
    ok(&deltaward(&[
        "update",
        "--mirror",
        &m.url,
        "--product",
        "pump",
        "--hardware",
        "pump-a1",
        "--image",
        s(&p.fx.old),
        "-o",
        s(&device.join("new.img")),
        "--state",
        s(&device.join("state")),
        "--init-root",
        s(&p.trust()),
        "--device-id",
        "pump-17",
    ]));
    assert!(m.signal("TERM").success());
    (logs, public)
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for f in deltaward_mirror::log::files(dir).expect("files") {
        for line in fs::read_to_string(f).expect("log").lines() {
            out.push(serde_json::from_str(line).expect("record"));
        }
    }
    out
}

fn verify(dir: &Path, public: &Path) -> std::process::Output {
    deltaward(&["audit", "verify", s(dir), "--mirror-key", s(public)])
}

/// A copy of the log directory with its (single) file's lines changed by `f`.
fn tampered(
    p: &Published,
    logs: &Path,
    name: &str,
    f: impl FnOnce(&mut Vec<String>),
) -> std::path::PathBuf {
    let dir = p.fx.path(name);
    fs::create_dir_all(&dir).expect("dir");
    let files = deltaward_mirror::log::files(logs).expect("files");
    assert_eq!(files.len(), 1);
    let mut lines: Vec<String> = fs::read_to_string(&files[0])
        .expect("log")
        .lines()
        .map(str::to_owned)
        .collect();
    f(&mut lines);
    let file_name = files[0].file_name().expect("name");
    fs::write(dir.join(file_name), lines.join("\n") + "\n").expect("write");
    dir
}

#[test]
fn the_log_records_what_happened_and_verifies() {
    let p = Published::new(2);
    let (logs, public) = logged_run(&p);
    let out = ok(&verify(&logs, &public));
    assert!(out.starts_with("verified: "), "{out}");
    let recs = records(&logs);
    let kinds: Vec<&str> = recs.iter().filter_map(|r| r["kind"].as_str()).collect();
    for k in ["start", "fetch", "serve", "report", "checkpoint", "stop"] {
        assert!(kinds.contains(&k), "no {k} record in {kinds:?}");
    }
    assert_eq!(kinds.last(), Some(&"checkpoint"));
    let served: Vec<_> = recs.iter().filter(|r| r["kind"] == "serve").collect();
    assert!(served
        .iter()
        .all(|r| r["data"]["complete"] == true && r["data"]["client"] == "127.0.0.1"));
    let report = recs.iter().find(|r| r["kind"] == "report").expect("report");
    assert_eq!(report["data"]["report"]["device_id"], "pump-17");
    assert_eq!(report["data"]["report"]["outcome"], "installed");
    assert!(!report["data"]["report"]["checks"]
        .as_array()
        .expect("checks")
        .is_empty());
    let fetched: Vec<_> = recs.iter().filter(|r| r["kind"] == "fetch").collect();
    assert!(
        fetched.iter().all(|r| r["data"]["result"] == "verified"),
        "{fetched:?}"
    );
}

/// A change to a log's lines.
type Tamper = Box<dyn FnOnce(&mut Vec<String>)>;

#[test]
fn each_kind_of_tampering_is_named() {
    let p = Published::new(1);
    let (logs, public) = logged_run(&p);
    let n = records(&logs).len();
    assert!(n >= 10, "{n} records");
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "edited",
            Box::new(|l: &mut Vec<String>| l[3] = l[3].replacen("\"kind\"", "\"kind\" ", 1)),
            "record 3 was edited",
        ),
        (
            "deleted",
            Box::new(|l: &mut Vec<String>| {
                l.remove(4);
            }),
            "records 4 to 4 are missing (deleted)",
        ),
        (
            "reordered",
            Box::new(|l: &mut Vec<String>| l.swap(5, 6)),
            "reordered",
        ),
        (
            "inserted",
            Box::new(|l: &mut Vec<String>| {
                let x = l[6].clone();
                l.insert(7, x);
            }),
            "appears again (inserted)",
        ),
        (
            "truncated",
            Box::new(|l: &mut Vec<String>| {
                l.pop();
            }),
            "after its last checkpoint",
        ),
    ];
    for (name, f, says) in cases {
        let dir = tampered(&p, &logs, name, f);
        let out = verify(&dir, &public);
        let err = fails_with(&out, exit::TAMPERED);
        assert!(err.contains(says), "{name}: {err}");
    }
    // Another key: the checkpoints do not verify.
    let (k2, p2) = (p.fx.path("other.key"), p.fx.path("other.pub"));
    ok(&deltaward(&[
        "keygen",
        "-s",
        s(&k2),
        "-p",
        s(&p2),
        "--unencrypted",
    ]));
    let err = fails_with(&verify(&logs, &p2), exit::TAMPERED);
    assert!(err.contains("checkpoint"), "{err}");
    // A re-chained edit (every hash after it recomputed) still fails at the next
    // checkpoint, whose signature covers the old chain.
    let dir = tampered(&p, &logs, "rechained", |l| {
        let mut recs: Vec<serde_json::Value> = l
            .iter()
            .map(|x| serde_json::from_str(x).expect("record"))
            .collect();
        recs[2]["data"]["forged"] = serde_json::json!(true);
        let mut prev = recs[2]["prev"].as_str().expect("prev").to_owned();
        for r in recs.iter_mut().skip(2) {
            r["prev"] = serde_json::json!(prev);
            let line = serde_json::to_string(r).expect("json");
            prev = deltaward_engine::Digest::of(line.as_bytes()).to_string();
        }
        // Lines before the edit stay as they were; the rest are rewritten, chained.
        for (i, r) in recs.iter().enumerate().skip(2) {
            l[i] = serde_json::to_string(r).expect("json");
        }
    });
    let err = fails_with(&verify(&dir, &public), exit::TAMPERED);
    assert!(
        err.contains("checkpoint") && err.contains("does not verify"),
        "{err}"
    );
}

#[test]
fn a_torn_record_after_kill_9_is_sealed_and_the_chain_goes_on() {
    let p = Published::new(1);
    let (key, public) = (p.fx.path("mirror.key"), p.fx.path("mirror.pub"));
    ok(&deltaward(&[
        "keygen",
        "-s",
        s(&key),
        "-p",
        s(&public),
        "--unencrypted",
    ]));
    let logs = p.fx.path("logs");
    let origin = Server::origin(p.dir(), &p.repo);
    let cache = p.fx.path("cache");
    let args = ["--log-dir", s(&logs), "--log-key", s(&key)];
    {
        let mut m = Server::mirror(p.dir(), "m1", &origin.url, &cache, &p.trust(), &args);
        p.prime(&m.url, "2.0");
        m.signal("KILL");
    }
    // kill -9 in the middle of a write leaves a record cut short.
    let last = deltaward_mirror::log::files(&logs)
        .expect("files")
        .pop()
        .expect("file");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .expect("log");
    std::io::Write::write_all(&mut f, b"{\"seq\":99,\"time\":\"2026-11-29T1").expect("torn");
    drop(f);
    let err = fails_with(&verify(&logs, &public), exit::TAMPERED);
    assert!(err.contains("not a record"), "{err}");
    // Restart: the torn record is sealed, the chain continues, a clean stop signs it.
    let mut m = Server::mirror(p.dir(), "m2", &origin.url, &cache, &p.trust(), &args);
    get(&format!("{}/products/pump/channel.json", m.url));
    assert!(m.signal("TERM").success());
    let out = ok(&verify(&logs, &public));
    assert!(out.contains("1 torn record(s) sealed"), "{out}");
    let seal = records_lenient(&logs)
        .into_iter()
        .find(|r| r["kind"] == "seal")
        .expect("seal");
    assert!(seal["data"]["length"].as_u64().expect("length") > 0);
}

/// Records of every line that parses (a torn line does not).
fn records_lenient(dir: &Path) -> Vec<serde_json::Value> {
    deltaward_mirror::log::files(dir)
        .expect("files")
        .into_iter()
        .flat_map(|f| {
            fs::read_to_string(f)
                .expect("log")
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn devices_wait_for_site_approval_then_install_and_the_log_shows_both() {
    let p = Published::new(1);
    let (key, public) = (p.fx.path("mirror.key"), p.fx.path("mirror.pub"));
    ok(&deltaward(&[
        "keygen",
        "-s",
        s(&key),
        "-p",
        s(&public),
        "--unencrypted",
    ]));
    let (logs, cache) = (p.fx.path("logs"), p.fx.path("cache"));
    let origin = Server::origin(p.dir(), &p.repo);
    let mut m = Server::mirror(
        p.dir(),
        "mirror",
        &origin.url,
        &cache,
        &p.trust(),
        &[
            "--log-dir",
            s(&logs),
            "--log-key",
            s(&key),
            "--require-approval",
        ],
    );
    let device = p.fx.path("device");
    fs::create_dir_all(&device).expect("dir");
    let out = device.join("new.img");
    let update = || {
        deltaward(&[
            "update",
            "--mirror",
            &m.url,
            "--product",
            "pump",
            "--hardware",
            "pump-a1",
            "--image",
            s(&p.fx.old),
            "-o",
            s(&out),
            "--state",
            s(&device.join("state")),
            "--init-root",
            s(&p.trust()),
            "--json",
        ])
    };
    // Before approval: the release is withheld, the device waits (exit 0, nothing installed).
    let first = update();
    ok(&first);
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        text.contains("\"outcome\":\"waiting_for_approval\""),
        "{text}"
    );
    assert!(!out.exists());
    assert_eq!(
        status(
            &format!("{}/products/pump/releases/2.0/release.json", m.url),
            &[]
        ),
        403
    );
    let full = p.objects()[0].clone();
    assert_eq!(status(&format!("{}/objects/{full}", m.url), &[]), 403);
    // A forged approval (not signed by the mirror's key) is not honoured.
    let forged = cache.join("approvals/pump");
    fs::create_dir_all(&forged).expect("dir");
    fs::write(
        forged.join("2.0.json"),
        "{\"product\":\"pump\",\"version\":\"2.0\",\"by\":\"intruder\"}",
    )
    .expect("forged");
    assert_eq!(
        status(
            &format!("{}/products/pump/releases/2.0/release.json", m.url),
            &[]
        ),
        403
    );
    // The site approves (the mirror is serving: it logs the approval itself).
    let approved = ok(&deltaward(&[
        "mirror",
        "approve",
        "--cache",
        s(&cache),
        "--log-dir",
        s(&logs),
        "--log-key",
        s(&key),
        "--product",
        "pump",
        "--version",
        "2.0",
        "--by",
        "Biomedical engineering, J. Doe",
        "--note",
        "CHG-1234",
    ]));
    assert!(approved.contains("approved pump 2.0"), "{approved}");
    let second = update();
    ok(&second);
    assert!(String::from_utf8_lossy(&second.stdout).contains("\"outcome\":\"installed\""));
    assert_eq!(
        fs::read(&out).expect("new"),
        fs::read(&p.fx.new).expect("want")
    );
    assert!(m.signal("TERM").success());
    ok(&verify(&logs, &public));
    let recs = records(&logs);
    let approval = recs
        .iter()
        .find(|r| r["kind"] == "approval")
        .expect("approval record");
    assert_eq!(approval["data"]["by"], "Biomedical engineering, J. Doe");
    assert_eq!(approval["data"]["note"], "CHG-1234");
    let outcomes: Vec<_> = recs
        .iter()
        .filter(|r| r["kind"] == "report")
        .map(|r| {
            r["data"]["report"]["outcome"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(outcomes, ["waiting_for_approval", "installed"]);
}

#[test]
fn a_release_the_maker_did_not_approve_needs_accepted_mitigations() {
    let p = Published::new(1);
    let notes = p.fx.path("NOTES-unapproved.toml");
    fs::write(
        &notes,
        NOTES.replace(
            "approved = true",
            "approved = false\nmitigations = [\"Keep the pump off the network until updated.\"]",
        ),
    )
    .expect("notes");
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
        s(&p.fx.new),
        "--base",
        &base,
        "--notes",
        s(&notes),
        "--repo",
        s(&p.repo),
        "-s",
        s(&p.fx.key),
        "--level",
        "fast",
        "-f",
    ]));
    let (key, public) = (p.fx.path("mirror.key"), p.fx.path("mirror.pub"));
    ok(&deltaward(&[
        "keygen",
        "-s",
        s(&key),
        "-p",
        s(&public),
        "--unencrypted",
    ]));
    let (logs, cache) = (p.fx.path("logs"), p.fx.path("cache"));
    {
        let origin = Server::origin(p.dir(), &p.repo);
        let m = Server::mirror(p.dir(), "mirror", &origin.url, &cache, &p.trust(), &[]);
        p.prime(&m.url, "3.0");
    }
    let approve = |extra: &[&str]| {
        let mut a = vec![
            "mirror",
            "approve",
            "--cache",
            s(&cache),
            "--log-dir",
            s(&logs),
            "--log-key",
            s(&key),
            "--product",
            "pump",
            "--version",
            "3.0",
            "--by",
            "J. Doe",
            "--json",
        ];
        a.extend_from_slice(extra);
        deltaward(&a)
    };
    let err = fails_with(&approve(&[]), exit::FAILURE);
    assert!(
        err.contains("--accept-mitigations") && err.contains("Keep the pump off the network"),
        "{err}"
    );
    let out = ok(&approve(&["--accept-mitigations"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["approval"]["maker_approved"], false);
    assert_eq!(
        v["approval"]["mitigations"][0],
        "Keep the pump off the network until updated."
    );
    assert_eq!(v["logged"], true);
    ok(&verify(&logs, &public));
}

#[test]
fn the_audit_report_matches_what_the_devices_did_in_every_format() {
    let p = Published::new(1);
    let (key, public) = (p.fx.path("mirror.key"), p.fx.path("mirror.pub"));
    ok(&deltaward(&[
        "keygen",
        "-s",
        s(&key),
        "-p",
        s(&public),
        "--unencrypted",
    ]));
    let logs = p.fx.path("logs");
    let origin = Server::origin(p.dir(), &p.repo);
    let mut m = Server::mirror(
        p.dir(),
        "mirror",
        &origin.url,
        &p.fx.path("cache"),
        &p.trust(),
        &["--log-dir", s(&logs), "--log-key", s(&key)],
    );
    let device = |name: &str, hardware: &str| {
        let d = p.fx.path(name);
        fs::create_dir_all(&d).expect("dir");
        deltaward(&[
            "update",
            "--mirror",
            &m.url,
            "--product",
            "pump",
            "--hardware",
            hardware,
            "--image",
            s(&p.fx.old),
            "-o",
            s(&d.join("new.img")),
            "--state",
            s(&d.join("state")),
            "--init-root",
            s(&p.trust()),
            "--current-version",
            "1.0",
            "--device-id",
            name,
        ])
    };
    ok(&device("dev-a", "pump-a1"));
    fails_with(&device("dev-b", "ventilator-b2"), exit::WRONG_HARDWARE);
    assert!(m.signal("TERM").success());
    let report = |format: &str, repo: &str| {
        let out = p.fx.path(&format!("audit.{format}"));
        ok(&deltaward(&[
            "audit",
            "report",
            s(&logs),
            "--mirror-key",
            s(&public),
            "--repo",
            repo,
            "--format",
            format,
            "-o",
            s(&out),
        ]));
        fs::read_to_string(&out).expect("report")
    };
    let json: serde_json::Value = serde_json::from_str(&report("json", s(&p.repo))).expect("json");
    let rel = &json["products"][0]["releases"][0];
    assert_eq!(json["products"][0]["product"], "pump");
    assert_eq!(rel["version"], "2.0");
    assert_eq!(rel["compatibility"]["statement"], "For pump A1 on 1.x.");
    assert_eq!(rel["maker_approval"]["approved"], true);
    let installed = rel["installed"].as_array().expect("installed");
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0]["device_id"], "dev-a");
    assert!(installed[0]["key_ids"]["patch"].is_string());
    assert!(installed[0]["checks"].as_array().expect("checks").len() >= 6);
    assert_eq!(rel["received"].as_array().expect("received").len(), 1);
    assert!(rel["served"]
        .as_array()
        .expect("served")
        .iter()
        .all(|s| s["complete"] == true));
    let devices = json["devices"].as_array().expect("devices");
    let dev = |id: &str| {
        devices
            .iter()
            .find(|d| d["device_id"] == id)
            .expect("device")
            .clone()
    };
    assert_eq!(dev("dev-a")["up_to_date"], true);
    assert_eq!(dev("dev-a")["runs"], "2.0");
    assert_eq!(dev("dev-b")["up_to_date"], false);
    assert_eq!(dev("dev-b")["runs"], "1.0");
    assert_eq!(dev("dev-b")["last_outcome"], "refused");
    assert!(dev("dev-b")["reason"]
        .as_str()
        .expect("reason")
        .contains("hardware"));

    let csv = report("csv", s(&p.repo));
    let rows: Vec<Vec<String>> = csv
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert_eq!(rows[0][0], "section");
    assert!(
        rows.iter()
            .any(|r| r[0] == "installed" && r[2] == "2.0" && r[5] == "dev-a"),
        "{csv}"
    );
    assert!(
        rows.iter()
            .any(|r| r[0] == "not_updated" && r[5] == "dev-b" && r[7] == "refused"),
        "{csv}"
    );

    // Releases from the origin's URL this time.
    let html = report("html", &origin.url);
    for fact in [
        "Release 2.0",
        "For pump A1 on 1.x.",
        "dev-a",
        "dev-b",
        "not updated",
        "@page { size: A4",
    ] {
        assert!(html.contains(fact), "{fact} missing from the HTML report");
    }
    // A tampered log gives no report.
    let files = deltaward_mirror::log::files(&logs).expect("files");
    let text = fs::read_to_string(&files[0])
        .expect("log")
        .replacen("dev-a", "dev-x", 1);
    fs::write(&files[0], text).expect("tamper");
    let out = p.fx.path("tampered.json");
    fails_with(
        &deltaward(&[
            "audit",
            "report",
            s(&logs),
            "--mirror-key",
            s(&public),
            "--repo",
            s(&p.repo),
            "--format",
            "json",
            "-o",
            s(&out),
        ]),
        exit::TAMPERED,
    );
    assert!(!out.exists());
}

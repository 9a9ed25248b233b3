//! `deltaward release`, `root`, `channel refresh`, `check-release` and `notice`, one
//! test per behaviour or refusal, each on its own published repository
//! ([`Published`]), with the reference minisign on release.json.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::{deltaward, exit::*, fails_with, fixture, ok, run, s, Fixture};

const MITIGATIONS: &str = "mitigations = [\"Disconnect the pump from the network until updated.\"]";

const NOTES: &str = r#"hardware_ids = ["pump-a1"]
[compatibility]
statement = "For pump A1 on 1.x."
applies_from = ["old"]
[[security_fixes]]
id = "CVE-2026-7777"
severity = "critical"
summary = "Unauthenticated firmware upload."
[support]
class = "required"
end_of_support = "2030-01-01"
[approval]
approved = false
mitigations = ["Disconnect the pump from the network until updated."]
[installation]
instructions = "IFU section 4"
"#;

/// A repository with a root (its own root key; the fixture's key holds the release
/// and channel roles) and release 2.0 (counter 3) of product `pump` for hardware
/// `pump-a1`, patched from the base `old` (the fixture's old image).
struct Published {
    fx: Fixture,
    repo: PathBuf,
    notes: PathBuf,
    state: PathBuf,
}

impl Published {
    fn new() -> Self {
        let fx = fixture(2);
        let repo = fx.path("repo");
        let notes = fx.path("NOTES.toml");
        fs::write(&notes, NOTES).expect("notes");
        let (root_key, root_pub) = (fx.path("root.key"), fx.path("root.pub"));
        ok(&deltaward(&[
            "keygen",
            "-s",
            s(&root_key),
            "-p",
            s(&root_pub),
            "--unencrypted",
        ]));
        ok(&root(
            "--repo",
            &repo,
            (&root_pub, &root_key),
            &fx.public,
            &[],
        ));
        let state = fx.path("state");
        let p = Self {
            fx,
            repo,
            notes,
            state,
        };
        ok(&p.release("2.0", "3", &[]));
        p
    }

    /// `deltaward release` of version `version` from base `old` into the repository
    /// (`--repo`), at level fast, with `extra` flags.
    fn release(&self, version: &str, counter: &str, extra: &[&str]) -> Output {
        self.release_into(&self.repo, "--repo", version, counter, extra)
    }

    /// As [`Self::release`], naming the repository `dir` with `flag`.
    fn release_into(
        &self,
        dir: &Path,
        flag: &str,
        version: &str,
        counter: &str,
        extra: &[&str],
    ) -> Output {
        let base = format!("old={}", s(&self.fx.old));
        let mut args = vec![
            "release",
            "--product",
            "pump",
            "--version",
            version,
            "--counter",
            counter,
            "--image",
            s(&self.fx.new),
            "--base",
            &base,
            "--notes",
            s(&self.notes),
            "-s",
            s(&self.fx.key),
            flag,
            s(dir),
            "--level",
            "fast",
        ];
        args.extend_from_slice(extra);
        deltaward(&args)
    }

    /// `deltaward check-release` of `repo` as a device of `hardware` on version
    /// `old`, with the state it has (not provisioned here), with `extra` flags.
    fn check_repo(&self, repo: &Path, hardware: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "check-release",
            "--repo",
            s(repo),
            "--product",
            "pump",
            "--state",
            s(&self.state),
            "--hardware",
            hardware,
            "--current-version",
            "old",
            "--image",
            s(&self.fx.old),
        ];
        args.extend_from_slice(extra);
        deltaward(&args)
    }

    /// `deltaward check-release` of the repository as a `pump-a1` device
    /// provisioned with the repository's root.json, with `extra` flags.
    fn check(&self, extra: &[&str]) -> Output {
        self.check_as("pump-a1", extra)
    }

    /// As [`Self::check`], as a device of `hardware`.
    fn check_as(&self, hardware: &str, extra: &[&str]) -> Output {
        let root_json = self.repo.join("root.json");
        let mut args = vec!["--init-root", s(&root_json)];
        args.extend_from_slice(extra);
        self.check_repo(&self.repo, hardware, &args)
    }

    /// The release.json of `version`.
    fn release_json(&self, version: &str) -> PathBuf {
        self.repo
            .join(format!("products/pump/releases/{version}/release.json"))
    }

    fn channel_json(&self) -> String {
        fs::read_to_string(self.repo.join("products/pump/channel.json")).expect("channel")
    }

    /// How many content-addressed objects (patches, full images) the repository
    /// holds (`objects/HASH`).
    fn objects(&self) -> usize {
        fs::read_dir(self.repo.join("objects"))
            .expect("objects")
            .count()
    }
}

/// `deltaward root` into `repo` (named with `flag`): the root role is `root_keys`
/// (public, secret; the secret signs), `public` holds the release and channel roles;
/// `extra` flags are added.
fn root(
    flag: &str,
    repo: &Path,
    (root_pub, root_key): (&Path, &Path),
    public: &Path,
    extra: &[&str],
) -> Output {
    let mut args = vec![
        "root",
        flag,
        s(repo),
        "--root-pub",
        s(root_pub),
        "--release-pub",
        s(public),
        "--channel-pub",
        s(public),
        "-s",
        s(root_key),
    ];
    args.extend_from_slice(extra);
    deltaward(&args)
}

#[test]
fn release_json_verifies_with_the_reference_minisign() {
    let p = Published::new();
    ok(&run(
        "minisign",
        &["-V", "-p", s(&p.fx.public), "-m", s(&p.release_json("2.0"))],
    ));
}

#[test]
fn check_release_plans_a_patch_from_the_device_base() {
    let p = Published::new();
    let out = ok(&p.check(&[]));
    assert!(out.contains("ok: pump 2.0 (counter 3)"), "{out}");
    assert!(out.contains("plan: patch from old"), "{out}");
}

#[test]
fn check_release_json_names_the_patch_to_fetch() {
    let p = Published::new();
    let out = ok(&p.check(&["--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["plan"], "patch from old", "{out}");
    assert_eq!(v["counter"], 3, "{out}");
    assert!(
        v["object"]
            .as_str()
            .is_some_and(|o| o.starts_with("objects/")),
        "{out}"
    );
}

#[test]
fn check_release_refuses_other_hardware() {
    let p = Published::new();
    let err = fails_with(&p.check_as("pump-b7", &[]), WRONG_HARDWARE);
    assert!(err.contains("pump-b7"), "{err}");
}

#[test]
fn check_release_refuses_an_expired_channel_as_a_freeze() {
    let p = Published::new();
    fails_with(&p.check(&["--at", "2099-01-01T00:00:00Z"]), FREEZE);
}

#[test]
fn check_release_refuses_a_rollback_to_an_older_snapshot() {
    let p = Published::new();
    let snapshot = p.fx.path("snapshot");
    fs::create_dir_all(&snapshot).expect("mkdir");
    ok(&run(
        "cp",
        &["-a", &format!("{}/.", s(&p.repo)), s(&snapshot)],
    ));
    ok(&p.release("2.1", "4", &[]));
    let out = ok(&p.check(&[]));
    assert!(out.contains("counter 4"), "{out}");
    // The device has seen counter 4: the snapshot's counter 3 is a rollback (the
    // device keeps its trusted root; nothing is provisioned again).
    let err = fails_with(&p.check_repo(&snapshot, "pump-a1", &[]), ROLLBACK);
    assert!(err.contains("rollback"), "{err}");
}

#[test]
fn release_refuses_a_counter_that_does_not_go_up() {
    let p = Published::new();
    let err = fails_with(&p.release("2.1", "3", &[]), FAILURE);
    assert!(err.contains("counter"), "{err}");
    assert!(!p.release_json("2.1").exists());
}

#[test]
fn release_refuses_to_overwrite_a_release_without_force() {
    let p = Published::new();
    let before = fs::read(p.release_json("2.0")).expect("release.json");
    let objects = p.objects();
    let err = fails_with(&p.release("2.0", "4", &[]), FAILURE);
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(
        fs::read(p.release_json("2.0")).expect("release.json"),
        before
    );
    assert_eq!(
        p.objects(),
        objects,
        "no patch may be built before refusing"
    );

    ok(&p.release("2.0", "4", &["--force"]));
    let after = fs::read_to_string(p.release_json("2.0")).expect("release.json");
    assert!(after.contains("\"counter\": 4"), "{after}");
    let out = ok(&p.check(&[]));
    assert!(out.contains("pump 2.0 (counter 4)"), "{out}");
}

#[test]
fn release_refuses_unapproved_notes_without_mitigations() {
    let p = Published::new();
    fs::write(&p.notes, NOTES.replace(MITIGATIONS, "")).expect("write");
    let err = fails_with(&p.release("2.2", "5", &[]), FAILURE);
    assert!(err.contains("mitigations"), "{err}");
    assert!(!p.release_json("2.2").exists());
}

#[test]
fn release_json_summary_lists_the_patches() {
    let p = Published::new();
    let out = ok(&p.release("2.1", "4", &["--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["version"], "2.1", "{out}");
    assert_eq!(v["patches"][0]["from"], "old", "{out}");
    let patch = v["patches"][0]["path"].as_str().expect("patch path");
    assert!(p.repo.join(patch).is_file(), "{out}");
}

#[test]
fn channel_refresh_re_signs_without_a_rebuild() {
    let p = Published::new();
    let before = p.channel_json();
    assert!(before.contains("\"version\": 1"), "{before}");
    let release = fs::read(p.release_json("2.0")).expect("release.json");
    let objects = p.objects();
    ok(&deltaward(&[
        "channel",
        "refresh",
        "--product",
        "pump",
        "-s",
        s(&p.fx.key),
        "--repo",
        s(&p.repo),
        "--expires-in",
        "30d",
    ]));
    let after = p.channel_json();
    assert!(after.contains("\"version\": 2"), "{after}");
    assert_eq!(
        fs::read(p.release_json("2.0")).expect("release.json"),
        release
    );
    assert_eq!(p.objects(), objects);
    ok(&p.check(&[]));
    // 30 days of validity: still valid in 20 days, frozen in 40.
    let in_days = |d: u64| {
        humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + std::time::Duration::from_secs(d * 86_400),
        )
        .to_string()
    };
    ok(&p.check(&["--at", &in_days(20)]));
    fails_with(&p.check(&["--at", &in_days(40)]), FREEZE);
}

#[test]
fn the_old_output_flags_still_name_the_repository() {
    let p = Published::new();
    ok(&p.release_into(&p.repo, "-o", "2.1", "4", &[]));
    ok(&p.release_into(&p.repo, "--output", "2.2", "5", &[]));
    for flag in ["-o", "--output"] {
        ok(&deltaward(&[
            "channel",
            "refresh",
            "--product",
            "pump",
            "-s",
            s(&p.fx.key),
            flag,
            s(&p.repo),
        ]));
    }
    assert!(p.channel_json().contains("\"version\": 5"));
    let out = ok(&p.check(&[]));
    assert!(out.contains("pump 2.2 (counter 5)"), "{out}");
    for (flag, dir) in [("-o", "repo-o"), ("--output", "repo-output")] {
        let dir = p.fx.path(dir);
        let keys = (p.fx.public.as_path(), p.fx.key.as_path());
        ok(&root(flag, &dir, keys, &p.fx.public, &[]));
        assert!(dir.join("root.json").is_file(), "{flag}");
    }
}

#[test]
fn help_names_the_repository_with_repo() {
    for cmd in [&["release"][..], &["root"], &["channel", "refresh"]] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = ok(&deltaward(&args));
        assert!(out.contains("-o, --repo <REPO>"), "{cmd:?}: {out}");
        assert!(out.contains("--output"), "{cmd:?}: {out}");
    }
    let out = ok(&deltaward(&["check-release", "--help"]));
    assert!(out.contains("--repo <REPO>"), "{out}");
    let out = ok(&deltaward(&["release", "--help"]));
    for flag in ["--force", "--level", "--threads", "--json", "--channel-key"] {
        assert!(out.contains(flag), "{flag}: {out}");
    }
    assert!(out.contains("the first one also the patches"), "{out}");
}

#[test]
fn verbose_logs_the_release_steps() {
    let p = Published::new();
    let out = p.release("2.1", "4", &["-v"]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INFO") && err.contains("building release"),
        "{err}"
    );
    assert!(
        err.contains("release.json and channel.json signed"),
        "{err}"
    );
}

#[test]
fn notice_renders_every_format() {
    let p = Published::new();
    let rel = p.release_json("2.0");
    for (fmt, needle) in [
        ("text", "NOT approved"),
        ("markdown", "## Security fixes"),
        ("html", "<h2>Approval</h2>"),
        ("json", "\"CVE-2026-7777\""),
    ] {
        let out = ok(&deltaward(&["notice", s(&rel), "--format", fmt]));
        assert!(out.contains(needle), "{fmt}: {out}");
        assert!(
            out.contains("CVE-2026-7777") && out.contains("2030-01-01"),
            "{fmt}: {out}"
        );
    }
}

/// `deltaward root` refuses one Ed25519 key listed under two key ids: minisign does not
/// sign the key id, so the key would count twice toward a threshold.
#[test]
fn root_refuses_two_ids_for_one_key() {
    use ct_codecs::{Base64, Decoder, Encoder};
    let fx = fixture(1);
    let text = fs::read_to_string(&fx.public).expect("public key");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut raw = Base64::decode_to_vec(&lines[1], None).expect("base64");
    raw[2..10].copy_from_slice(&[0x5a; 8]);
    lines[1] = Base64::encode_to_string(&raw).expect("base64");
    let alias = fx.path("alias.pub");
    fs::write(&alias, lines.join("\n") + "\n").expect("write");
    let repo = fx.path("repo");
    let keys = (fx.public.as_path(), fx.key.as_path());
    let extra = ["--release-pub", s(&alias), "--thresholds", "1", "2", "1"];
    let err = fails_with(&root("--repo", &repo, keys, &fx.public, &extra), FAILURE);
    assert!(err.contains("two ids"), "{err}");
    assert!(!repo.join("root.json").exists());
}

/// The base entries of a release.json, and the manifest of each patch (read from
/// the repository's object), by base version.
fn bases_and_manifests(repo: &Path, version: &str) -> Vec<(serde_json::Value, Vec<u8>)> {
    let rel: serde_json::Value = serde_json::from_slice(
        &fs::read(repo.join(format!("products/pump/releases/{version}/release.json")))
            .expect("release.json"),
    )
    .expect("json");
    let mut out: Vec<_> = rel["bases"]
        .as_array()
        .expect("bases")
        .iter()
        .map(|b| {
            let patch = fs::read(repo.join(b["patch"]["path"].as_str().expect("path")))
                .expect("patch object");
            let manifest = deltaward_testkit::sections(&patch).manifest.to_vec();
            let mut b = b.clone();
            // The patch object's name and hash cover its signature, which minisign's
            // signer randomises; its length does not change.
            let patch = b["patch"].as_object_mut().expect("patch");
            patch.remove("path");
            patch.remove("blake3");
            (b, manifest)
        })
        .collect();
    out.sort_by(|a, b| a.0["version"].as_str().cmp(&b.0["version"].as_str()));
    out
}

/// The arguments of `deltaward release` of version 2.0 (counter 3) into `repo`
/// from the patches (`--patch`), no `--base`.
fn release_from_patches_args<'a>(
    p: &'a Published,
    repo: &'a Path,
    patches: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "release",
        "--product",
        "pump",
        "--version",
        "2.0",
        "--counter",
        "3",
        "--image",
        s(&p.fx.new),
        "--notes",
        s(&p.notes),
        "-s",
        s(&p.fx.key),
        "--repo",
        s(repo),
    ];
    for patch in patches {
        args.extend_from_slice(&["--patch", patch]);
    }
    args
}

/// Runs [`release_from_patches_args`].
fn release_from_patches(p: &Published, repo: &Path, patches: &[&str]) -> Output {
    deltaward(&release_from_patches_args(p, repo, patches))
}

/// A second repository with the same root as `p`'s (no release yet).
fn same_root_repo(p: &Published, name: &str) -> PathBuf {
    let repo = p.fx.path(name);
    fs::create_dir_all(repo.join("roots")).expect("mkdir");
    for f in ["root.json", "root.json.minisig"] {
        fs::copy(p.repo.join(f), repo.join(f)).expect("copy root");
    }
    for f in ["1.root.json", "1.root.json.minisig"] {
        fs::copy(p.repo.join("roots").join(f), repo.join("roots").join(f)).expect("copy root");
    }
    repo
}

#[test]
fn a_release_from_patches_diffed_in_other_processes_equals_one_from_bases() {
    let p = Published::new();
    // The build farm: one `deltaward diff` per base, each its own process.
    let patch = p.fx.diff("farm-old.dwp", &["--level", "fast"]);
    let farm = same_root_repo(&p, "farm-repo");
    let given = format!("old={}", s(&patch));
    ok(&release_from_patches(&p, &farm, &[&given]));

    let made_here = bases_and_manifests(&p.repo, "2.0");
    let from_farm = bases_and_manifests(&farm, "2.0");
    assert_eq!(made_here.len(), 1);
    assert_eq!(made_here, from_farm, "base entries and signed manifests");
    // The signatures differ (minisign's signer adds randomness), so the objects do.
    let names = |repo: &Path| {
        let mut v: Vec<_> = fs::read_dir(repo.join("objects"))
            .expect("objects")
            .map(|e| e.expect("entry").file_name())
            .collect();
        v.sort();
        v
    };
    assert_ne!(names(&p.repo), names(&farm));
    // And a device takes the patch from the farm's release.
    let out = ok(&p.check_repo(
        &farm,
        "pump-a1",
        &["--init-root", s(&farm.join("root.json")), "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["plan"], "patch from old", "{out}");
}

#[test]
fn a_patch_without_a_version_takes_it_from_the_channel() {
    let p = Published::new();
    // 2.1: the new image with its first MiB changed; its patch from 2.0 (the new
    // image) is named without a version.
    let mut next = fs::read(&p.fx.new).expect("new");
    for b in next.iter_mut().take(1 << 20).step_by(4096) {
        *b ^= 0x5a;
    }
    let next_img = p.fx.path("next.img");
    fs::write(&next_img, &next).expect("write");
    let patch = p.fx.path("from-2.0.dwp");
    ok(&deltaward(&[
        "diff",
        s(&p.fx.new),
        s(&next_img),
        "-o",
        s(&patch),
        "-s",
        s(&p.fx.key),
        "--level",
        "fast",
    ]));
    let out = ok(&deltaward(&[
        "release",
        "--product",
        "pump",
        "--version",
        "2.1",
        "--counter",
        "4",
        "--image",
        s(&next_img),
        "--notes",
        s(&p.notes),
        "-s",
        s(&p.fx.key),
        "--repo",
        s(&p.repo),
        "--patch",
        s(&patch),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["patches"][0]["from"], "2.0", "{out}");
}

#[test]
fn release_refuses_a_patch_of_another_image_an_unknown_base_or_key() {
    let p = Published::new();
    let farm = same_root_repo(&p, "farm-repo");
    // A patch old -> old's reverse is not a patch to the release's image.
    let other = p.fx.path("other.dwp");
    ok(&deltaward(&[
        "diff",
        s(&p.fx.new),
        s(&p.fx.old),
        "-o",
        s(&other),
        "-s",
        s(&p.fx.key),
        "--level",
        "fast",
    ]));
    let err = fails_with(
        &release_from_patches(&p, &farm, &[&format!("new={}", s(&other))]),
        1,
    );
    assert!(err.contains("not the release's image"), "{err}");

    // Without a version, and no release in the (empty) channel has its base.
    let patch = p.fx.diff("farm-old.dwp", &["--level", "fast"]);
    let err = fails_with(&release_from_patches(&p, &farm, &[s(&patch)]), 1);
    assert!(err.contains("give its version as VERSION=PATCH"), "{err}");

    // Signed by a key that is neither given nor in the root's release role.
    let (k, pubk) = (p.fx.path("stranger.key"), p.fx.path("stranger.pub"));
    ok(&deltaward(&[
        "keygen",
        "-s",
        s(&k),
        "-p",
        s(&pubk),
        "--unencrypted",
    ]));
    let foreign = p.fx.path("foreign.dwp");
    ok(&deltaward(&[
        "diff",
        s(&p.fx.old),
        s(&p.fx.new),
        "-o",
        s(&foreign),
        "-s",
        s(&k),
        "--level",
        "fast",
    ]));
    let err = fails_with(
        &release_from_patches(&p, &farm, &[&format!("old={}", s(&foreign))]),
        1,
    );
    assert!(err.contains("foreign.dwp"), "{err}");
    assert!(err.to_lowercase().contains("key"), "{err}");
    // Nothing was written for any of them.
    assert!(!farm.join("products").exists());
}

#[test]
fn a_fifo_or_device_given_as_a_patch_fails_at_once() {
    let p = Published::new();
    let farm = same_root_repo(&p, "farm-repo");
    let fifo = p.fx.path("patch.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    for patch in [s(&fifo), "/dev/zero"] {
        // Under `timeout`: a regression would block (FIFO) or read forever (/dev/zero).
        let labelled = format!("old={patch}");
        let out = Command::new("timeout")
            .args(["60", common::bin()])
            .args(release_from_patches_args(&p, &farm, &[&labelled]))
            .output()
            .expect("run");
        let err = fails_with(&out, 1);
        assert!(err.contains("not a regular file"), "{patch}: {err}");
    }
}

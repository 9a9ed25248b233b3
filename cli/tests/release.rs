//! `deltaward release`, `root`, `channel refresh`, `check-release` and `notice` end
//! to end, with the reference minisign on release.json.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

mod common;

use std::fs;

use common::{deltaward, exit::*, fails_with, fixture, ok, run, s};

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

#[test]
fn release_check_notice_and_refusals() {
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
    ok(&deltaward(&[
        "root",
        "-o",
        s(&repo),
        "--root-pub",
        s(&root_pub),
        "--release-pub",
        s(&fx.public),
        "--channel-pub",
        s(&fx.public),
        "-s",
        s(&root_key),
    ]));
    ok(&deltaward(&[
        "release",
        "--product",
        "pump",
        "--version",
        "2.0",
        "--counter",
        "3",
        "--image",
        s(&fx.new),
        "--base",
        &format!("old={}", s(&fx.old)),
        "--notes",
        s(&notes),
        "-s",
        s(&fx.key),
        "-o",
        s(&repo),
        "--level",
        "fast",
    ]));
    let rel = repo.join("products/pump/releases/2.0/release.json");
    ok(&run(
        "minisign",
        &["-V", "-p", s(&fx.public), "-m", s(&rel)],
    ));

    let state = fx.path("state");
    let root_json = repo.join("root.json");
    let check = |hw: &str, at: Option<&str>| {
        let mut args = vec![
            "check-release",
            "--repo",
            s(&repo),
            "--product",
            "pump",
            "--state",
            s(&state),
            "--init-root",
            s(&root_json),
            "--hardware",
            hw,
            "--current-version",
            "old",
            "--image",
            s(&fx.old),
        ];
        if let Some(t) = at {
            args.extend(["--at", t]);
        }
        deltaward(&args)
    };
    let out = ok(&check("pump-a1", None));
    assert!(out.contains("plan: patch from old"), "{out}");
    fails_with(&check("pump-b7", None), WRONG_HARDWARE);
    fails_with(&check("pump-a1", Some("2099-01-01T00:00:00Z")), FREEZE);

    // A second release, then the first one served again: rollback.
    let snapshot = fx.path("snapshot");
    fs::create_dir_all(&snapshot).expect("mkdir");
    ok(&run(
        "cp",
        &["-a", &format!("{}/.", s(&repo)), s(&snapshot)],
    ));
    ok(&deltaward(&[
        "release",
        "--product",
        "pump",
        "--version",
        "2.1",
        "--counter",
        "4",
        "--image",
        s(&fx.new),
        "--base",
        &format!("old={}", s(&fx.old)),
        "--notes",
        s(&notes),
        "-s",
        s(&fx.key),
        "-o",
        s(&repo),
        "--level",
        "fast",
    ]));
    ok(&check("pump-a1", None));
    let out = deltaward(&[
        "check-release",
        "--repo",
        s(&snapshot),
        "--product",
        "pump",
        "--state",
        s(&state),
        "--hardware",
        "pump-a1",
        "--current-version",
        "old",
        "--image",
        s(&fx.old),
    ]);
    let err = fails_with(&out, ROLLBACK);
    assert!(err.contains("rollback"), "{err}");

    // Refreshing the channel re-signs it without a rebuild.
    let before = fs::read_to_string(repo.join("products/pump/channel.json")).expect("channel");
    ok(&deltaward(&[
        "channel",
        "refresh",
        "--product",
        "pump",
        "-s",
        s(&fx.key),
        "-o",
        s(&repo),
        "--expires-in",
        "30d",
    ]));
    let after = fs::read_to_string(repo.join("products/pump/channel.json")).expect("channel");
    assert_ne!(before, after);
    assert!(after.contains("\"version\": 3"), "{after}");
    ok(&check("pump-a1", None));

    // An unapproved release without mitigations is refused at build time.
    let bad_notes = fx.path("bad.toml");
    fs::write(
        &bad_notes,
        NOTES.replace(
            "mitigations = [\"Disconnect the pump from the network until updated.\"]",
            "",
        ),
    )
    .expect("write");
    let err = fails_with(
        &deltaward(&[
            "release",
            "--product",
            "pump",
            "--version",
            "2.2",
            "--counter",
            "5",
            "--image",
            s(&fx.new),
            "--base",
            s(&fx.old),
            "--notes",
            s(&bad_notes),
            "-s",
            s(&fx.key),
            "-o",
            s(&repo),
        ]),
        FAILURE,
    );
    assert!(err.contains("mitigations"), "{err}");

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
    let err = fails_with(
        &deltaward(&[
            "root",
            "-o",
            s(&repo),
            "--root-pub",
            s(&fx.public),
            "--release-pub",
            s(&fx.public),
            "--release-pub",
            s(&alias),
            "--channel-pub",
            s(&fx.public),
            "--thresholds",
            "1",
            "2",
            "1",
            "-s",
            s(&fx.key),
        ]),
        1,
    );
    assert!(err.contains("two ids"), "{err}");
    assert!(!repo.join("root.json").exists());
}

//! The `deltaward` command end to end, with the reference `minisign` program.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

mod common;

use std::fs;

use common::{deltaward, exit::*, fails_with, fixture, ok, run, s, Fixture};

#[test]
fn diff_apply_verify_inspect_round_trip() {
    let fx = fixture(4);
    let patch = fx.diff("p.dwp", &["--level", "fast", "--threads", "1"]);
    let out = fx.path("out.img");
    let json = ok(&fx.apply(&patch, &out, &["--json"]));
    assert!(json.contains("\"blake3\""), "{json}");
    assert_eq!(
        fs::read(&out).expect("out"),
        fs::read(&fx.new).expect("new")
    );
    let v = ok(&deltaward(&[
        "verify",
        s(&patch),
        "-p",
        s(&fx.public),
        "--old",
        s(&fx.old),
    ]));
    assert!(v.contains("every frame verified"), "{v}");
    let i = ok(&deltaward(&["inspect", s(&patch), "--json"]));
    assert!(i.contains("\"frames\"") && i.contains("\"target\""), "{i}");
    // No temporary or resume files are left behind.
    let leftovers: Vec<_> = fs::read_dir(fx.dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn minisign_signs_and_verifies_with_deltaward_keys() {
    let fx = fixture(1);
    let msg = fx.path("message.txt");
    fs::write(&msg, b"release notes").expect("write");
    ok(&run("minisign", &["-S", "-s", s(&fx.key), "-m", s(&msg)]));
    ok(&run(
        "minisign",
        &["-V", "-p", s(&fx.public), "-m", s(&msg)],
    ));
}

#[test]
fn extracted_manifest_verifies_with_minisign() {
    let fx = fixture(1);
    let patch = fx.diff("p.dwp", &[]);
    let (m, sig) = fx.extract(&patch, "manifest");
    let out = ok(&run(
        "minisign",
        &["-V", "-m", s(&m), "-x", s(&sig), "-p", s(&fx.public)],
    ));
    assert!(out.contains("role=patch"), "{out}");
    // And a tampered manifest does not.
    let mut bytes = fs::read(&m).expect("read");
    bytes[20] ^= 1;
    fs::write(&m, bytes).expect("write");
    let bad = run(
        "minisign",
        &["-V", "-m", s(&m), "-x", s(&sig), "-p", s(&fx.public)],
    );
    assert!(!bad.status.success());
}

#[test]
fn keys_made_by_minisign_work_with_deltaward() {
    let fx = fixture(1);
    let (key, public) = (fx.path("ms.key"), fx.path("ms.pub"));
    ok(&run(
        "minisign",
        &["-G", "-W", "-s", s(&key), "-p", s(&public)],
    ));
    let patch = fx.path("p.dwp");
    ok(&deltaward(&[
        "diff",
        s(&fx.old),
        s(&fx.new),
        "-o",
        s(&patch),
        "-s",
        s(&key),
    ]));
    let out = fx.path("out.img");
    ok(&deltaward(&[
        "apply",
        s(&fx.old),
        s(&patch),
        "-o",
        s(&out),
        "-p",
        s(&public),
    ]));
    assert_eq!(
        fs::read(&out).expect("out"),
        fs::read(&fx.new).expect("new")
    );
}

#[test]
fn encrypted_keys_need_the_password() {
    let fx = fixture(1);
    let (key, public, pw) = (fx.path("enc.key"), fx.path("enc.pub"), fx.path("pw"));
    fs::write(&pw, "s3cret passphrase\n").expect("write");
    ok(&deltaward(&[
        "keygen",
        "-s",
        s(&key),
        "-p",
        s(&public),
        "--password-file",
        s(&pw),
    ]));
    let patch = fx.path("p.dwp");
    // Without a terminal or password file: a clear error, no patch.
    let err = fails_with(
        &deltaward(&[
            "diff",
            s(&fx.old),
            s(&fx.new),
            "-o",
            s(&patch),
            "-s",
            s(&key),
        ]),
        FAILURE,
    );
    assert!(err.contains("password"), "{err}");
    assert!(!patch.exists());
    let wrong = fx.path("wrong");
    fs::write(&wrong, "nope").expect("write");
    fails_with(
        &deltaward(&[
            "diff",
            s(&fx.old),
            s(&fx.new),
            "-o",
            s(&patch),
            "-s",
            s(&key),
            "--password-file",
            s(&wrong),
        ]),
        KEY,
    );
    ok(&deltaward(&[
        "diff",
        s(&fx.old),
        s(&fx.new),
        "-o",
        s(&patch),
        "-s",
        s(&key),
        "--password-file",
        s(&pw),
    ]));
    ok(&deltaward(&["verify", s(&patch), "-p", s(&public)]));
}

/// Applies `patch` to `old` into an OUT that already holds data; checks the exit
/// code, that OUT is untouched and that nothing else was left in the directory.
fn refused(fx: &Fixture, old: &std::path::Path, patch: &std::path::Path, code: u8) -> String {
    let out = fx.path("existing-out.img");
    fs::write(&out, b"previous image").expect("seed out");
    let before: Vec<_> = fs::read_dir(fx.dir.path())
        .expect("ls")
        .count()
        .to_string()
        .into();
    let err = fails_with(
        &deltaward(&[
            "apply",
            s(old),
            s(patch),
            "-o",
            s(&out),
            "-p",
            s(&fx.public),
        ]),
        code,
    );
    assert_eq!(
        fs::read(&out).expect("out"),
        b"previous image",
        "OUT was modified"
    );
    let after: String = fs::read_dir(fx.dir.path()).expect("ls").count().to_string();
    assert_eq!(
        String::from_utf8(before).expect("utf8"),
        after,
        "files were left behind"
    );
    assert!(err.contains("error"), "{err}");
    err
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let fx = fixture(2);
    let patch = fx.diff("p.dwp", &[]);
    let bytes = fs::read(&patch).expect("read");

    // Cut in the manifest: nothing is kept.
    let truncated = fx.path("truncated.dwp");
    fs::write(&truncated, &bytes[..200]).expect("write");
    let err = refused(&fx, &fx.old, &truncated, CORRUPT);
    assert!(err.contains("truncated"), "{err}");
    // Cut in the payloads (a download cut short): OUT is untouched, and the verified
    // frames are kept for --resume with the whole patch.
    fs::write(&truncated, &bytes[..bytes.len() - 100]).expect("write");
    let out = fx.path("existing-out.img");
    let err = fails_with(&fx.apply(&truncated, &out, &[]), CORRUPT);
    assert!(err.contains("truncated"), "{err}");
    assert_eq!(
        fs::read(&out).expect("out"),
        b"previous image",
        "OUT was modified"
    );
    assert!(fx.path(".existing-out.img.deltaward/partial").exists());
    ok(&fx.apply(&patch, &out, &["--resume"]));
    assert_eq!(
        fs::read(&out).expect("out"),
        fs::read(&fx.new).expect("new")
    );
    assert!(!fx.path(".existing-out.img.deltaward/partial").exists());

    let flipped = fx.path("flipped.dwp");
    let mut b = bytes.clone();
    let n = b.len();
    b[n - 50] ^= 0x10;
    fs::write(&flipped, &b).expect("write");
    let err = refused(&fx, &fx.old, &flipped, CORRUPT);
    assert!(err.contains("hash mismatch"), "{err}");

    let resigned_manifest = fx.path("manifest-flip.dwp");
    let mut b = bytes.clone();
    b[100] ^= 0x01;
    fs::write(&resigned_manifest, &b).expect("write");
    refused(&fx, &fx.old, &resigned_manifest, SIGNATURE);

    let other = fixture(1);
    let wrong_key = other.diff("other.dwp", &[]);
    let err = refused(&fx, &other.old, &wrong_key, SIGNATURE);
    assert!(err.contains("not trusted"), "{err}");

    let err = refused(&fx, &fx.new, &patch, WRONG_BASE);
    assert!(err.contains("expected") && err.contains("found"), "{err}");

    let missing = fx.path("no/such/dir/out.img");
    let err = fails_with(&fx.apply(&patch, &missing, &[]), FAILURE);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!fx.path("no").exists());

    let garbage = fx.path("garbage.dwp");
    fs::write(&garbage, b"this is not a patch at all, just text").expect("write");
    let err = refused(&fx, &fx.old, &garbage, CORRUPT);
    assert!(err.contains("magic"), "{err}");
}

#[test]
fn legacy_signatures_are_refused() {
    let fx = fixture(1);
    let patch = fx.diff("p.dwp", &[]);
    let (m, sig) = fx.extract(&patch, "m");
    let legacy = fx.path("legacy.minisig");
    ok(&run(
        "minisign",
        &["-S", "-l", "-s", s(&fx.key), "-m", s(&m), "-x", s(&legacy)],
    ));
    // Splice the legacy signature in place of deltaward's.
    let bytes = fs::read(&patch).expect("read");
    let old_sig = fs::read(&sig).expect("sig");
    let new_sig = fs::read(&legacy).expect("legacy");
    let manifest_len = fs::read(&m).expect("m").len();
    let mut out = bytes[..32].to_vec();
    out[16..20].copy_from_slice(&(new_sig.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes[32..32 + manifest_len]);
    out.extend_from_slice(&new_sig);
    out.extend_from_slice(&bytes[32 + manifest_len + old_sig.len()..]);
    let spliced = fx.path("legacy.dwp");
    fs::write(&spliced, out).expect("write");
    let err = refused(&fx, &fx.old, &spliced, SIGNATURE);
    assert!(err.contains("legacy"), "{err}");
}

#[test]
fn a_killed_apply_resumes_to_an_identical_image() {
    let fx = fixture(24);
    // Small frames, so the patch has many and the crash lands in the middle.
    let patch = fx.diff("p.dwp", &["--level", "fast", "--max-window", "1"]);
    let out = fx.path("out.img");
    let crashed = fx.apply(
        &patch,
        &out,
        &["--crash-after-frames", "12", "--checkpoint-mib", "1"],
    );
    assert!(
        !crashed.status.success(),
        "the simulated crash did not happen"
    );
    assert!(!out.exists(), "a crashed apply left an output");
    assert!(
        fx.path(".out.img.deltaward/partial").exists(),
        "no partial output to resume"
    );
    assert!(
        fx.path(".out.img.deltaward/resume").exists(),
        "no checkpoint"
    );
    let json = ok(&fx.apply(&patch, &out, &["--resume", "--json"]));
    let resumed: u64 = json
        .split("\"resumed_frames\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|n| n.trim().parse().ok())
        .expect("resumed_frames in JSON");
    assert!(resumed > 0, "nothing was resumed: {json}");
    assert_eq!(
        fs::read(&out).expect("out"),
        fs::read(&fx.new).expect("new")
    );
    assert!(!fx.path(".out.img.deltaward/partial").exists());
    assert!(!fx.path(".out.img.deltaward/resume").exists());
}

#[test]
fn an_apply_killed_after_its_last_frame_resumes_from_the_checkpoint_before_it() {
    // No checkpoint is written after the last frame (the file is synced, read
    // back and renamed next): a crash there repeats the frames since the one
    // before, and the image comes out whole.
    let fx = fixture(24);
    let patch = fx.diff("p.dwp", &["--level", "fast", "--max-window", "1"]);
    let manifest = ok(&deltaward(&["inspect", "--json", s(&patch)]));
    let frames = manifest.matches("\"kind\"").count();
    assert!(frames > 4, "too few frames to test with: {manifest}");
    let out = fx.path("out.img");
    // Progress is reported once before the frames and once after each.
    let crashed = fx.apply(
        &patch,
        &out,
        &[
            "--crash-after-frames",
            &frames.to_string(),
            "--checkpoint-mib",
            "1",
        ],
    );
    assert!(
        !crashed.status.success(),
        "the simulated crash did not happen"
    );
    assert!(!out.exists(), "a crashed apply left an output");
    let checkpoint = fs::read_to_string(fx.path(".out.img.deltaward/resume")).expect("checkpoint");
    let done: usize = checkpoint
        .lines()
        .find_map(|l| l.strip_prefix("frames "))
        .and_then(|n| n.parse().ok())
        .expect("frames in the checkpoint");
    assert!(
        done > 0 && done < frames,
        "checkpoint after {done} of {frames} frames"
    );
    let json = ok(&fx.apply(&patch, &out, &["--resume", "--json"]));
    assert!(
        json.contains(&format!("\"resumed_frames\":{done}")),
        "{json}"
    );
    assert_eq!(
        fs::read(&out).expect("out"),
        fs::read(&fx.new).expect("new")
    );
}

#[test]
fn demo_runs_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ok(&deltaward(&["demo", "--size", "8", "--dir", s(dir.path())]));
    assert!(out.contains("byte-identical"), "{out}");
    assert!(
        out.contains("tampered patch") && out.contains("refused"),
        "{out}"
    );
}

#[test]
fn diff_refuses_to_overwrite_an_existing_patch_without_force() {
    let fx = fixture(1);
    let patch = fx.path("p.dwp");
    fs::write(&patch, b"keep me").expect("seed");
    let args = |extra: &'static str| {
        let mut a = vec![
            "diff",
            s(&fx.old),
            s(&fx.new),
            "-o",
            s(&patch),
            "-s",
            s(&fx.key),
        ];
        if !extra.is_empty() {
            a.push(extra);
        }
        a
    };
    let err = fails_with(&deltaward(&args("")), FAILURE);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(fs::read(&patch).expect("patch"), b"keep me");
    ok(&deltaward(&args("--force")));
    ok(&deltaward(&["verify", s(&patch), "-p", s(&fx.public)]));
}

#[test]
fn apply_to_a_directory_fails_before_any_work() {
    let fx = fixture(1);
    let patch = fx.diff("p.dwp", &["--level", "fast"]);
    let dir = fx.path("outdir");
    fs::create_dir(&dir).expect("mkdir");
    let err = fails_with(&fx.apply(&patch, &dir, &[]), FAILURE);
    assert!(err.contains("is a directory"), "{err}");
    assert_eq!(fs::read_dir(&dir).expect("ls").count(), 0);
}

#[test]
fn a_public_key_given_as_the_secret_key_is_named_as_such() {
    let fx = fixture(1);
    let err = fails_with(
        &deltaward(&[
            "diff",
            s(&fx.old),
            s(&fx.new),
            "-o",
            s(&fx.path("p.dwp")),
            "-s",
            s(&fx.public),
        ]),
        KEY,
    );
    assert!(
        err.contains("a public key was given where a secret key is needed"),
        "{err}"
    );
    assert!(!err.contains("terminal"), "{err}");
}

#[test]
fn an_error_prints_each_cause_once() {
    let fx = fixture(1);
    let err = fails_with(
        &deltaward(&[
            "verify",
            s(&fx.path("nonexistent.dwp")),
            "-p",
            s(&fx.public),
        ]),
        FAILURE,
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn verbose_turns_on_logs() {
    let fx = fixture(1);
    let patch = fx.path("p.dwp");
    let out = deltaward(&[
        "-v",
        "diff",
        s(&fx.old),
        s(&fx.new),
        "-o",
        s(&patch),
        "-s",
        s(&fx.key),
    ]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INFO") && err.contains("patch written"),
        "{err}"
    );
}

/// Issue 7, apply defect 7: inspect shows untrusted text with control characters
/// escaped, and bounds the memory of a manifest before reading it.
#[test]
fn inspect_escapes_hostile_text_and_bounds_manifest_memory() {
    let fx = fixture(1);
    let patch = fx.diff("p.dwp", &["--level", "fast"]);
    let bytes = fs::read(&patch).expect("patch");
    let mut m = deltaward_testkit::manifest(&bytes);
    m.tool = "x\u{1b}[2K\rOK: signature verified\u{7}".into();
    let key =
        deltaward_engine::SecretKey::from_text(&fs::read_to_string(&fx.key).expect("key"), None)
            .expect("secret key");
    let hostile = fx.path("hostile.dwp");
    fs::write(&hostile, deltaward_testkit::resign(&bytes, &m, &key)).expect("write");
    let shown = ok(&deltaward(&["inspect", s(&hostile)]));
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\r'),
        "{shown:?}"
    );
    assert!(shown.contains("NOT VERIFIED"), "{shown}");
    let err = fails_with(
        &deltaward(&["inspect", s(&hostile), "--memory-limit", "0"]),
        LIMIT,
    );
    assert!(err.contains("working memory"), "{err}");
}

/// A size in MiB too large for 64 bits of bytes is a usage error, not a wrapped
/// (and so tiny or zero) limit.
#[test]
fn a_mib_flag_that_overflows_is_refused() {
    let fx = fixture(1);
    let patch = fx.diff("p.dwp", &["--level", "fast"]);
    let out = fx.path("out.img");
    let err = fails_with(
        &fx.apply(&patch, &out, &["--memory-limit", "17592186044416"]),
        USAGE,
    );
    assert!(err.contains("does not fit"), "{err}");
    assert!(!out.exists());
}

/// An image that is a character device (here /dev/zero, directly and through a
/// link) fails at once with a clear error, instead of being read until memory runs
/// out; nothing is written.
#[cfg(unix)]
#[test]
fn an_image_that_is_dev_zero_is_refused_at_once() {
    let fx = fixture(1);
    let link = fx.path("zero.img");
    std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
    for (old, new) in [
        (std::path::Path::new("/dev/zero"), fx.new.as_path()),
        (fx.old.as_path(), link.as_path()),
    ] {
        let out = fx.path("p.dwp");
        let err = fails_with(
            &deltaward(&["diff", s(old), s(new), "-o", s(&out), "-s", s(&fx.key)]),
            FAILURE,
        );
        assert!(err.contains("character device"), "{err}");
        assert!(!out.exists());
    }
}

/// Key and password files are read only when they are regular files of a sane
/// size: a secret key linked to /dev/zero, or a named pipe, fails at once with a
/// clear error instead of exhausting memory or waiting for a writer.
#[cfg(unix)]
#[test]
fn a_key_file_linked_to_dev_zero_or_a_fifo_is_refused_at_once() {
    let fx = fixture(1);
    let zero = fx.path("zero.key");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let fifo = fx.path("fifo.key");
    ok(&run("mkfifo", &[s(&fifo)]));
    for key in [&zero, &fifo] {
        let out = fx.path("p.dwp");
        let err = fails_with(
            &deltaward(&["diff", s(&fx.old), s(&fx.new), "-o", s(&out), "-s", s(key)]),
            FAILURE,
        );
        assert!(err.contains("secret key"), "{err}");
        assert!(!out.exists());
    }
    let big = fx.path("big.pub");
    fs::write(&big, vec![b'A'; 1 << 20]).expect("write");
    let patch = fx.diff("q.dwp", &["--level", "fast"]);
    let err = fails_with(&deltaward(&["verify", s(&patch), "-p", s(&big)]), FAILURE);
    assert!(err.contains("larger than"), "{err}");
}

//! Regression tests for the release defects of issue 7, each named after the defect
//! it pins: fast-forwards that a rotation must undo, one key counted twice, a missing
//! state, overlapping checks, endless data, forged notices, unverified channels,
//! unconfined paths, and the nits.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

mod world;

use std::{
    io::Write,
    time::{Duration, SystemTime},
};

use ct_codecs::{Base64, Decoder, Encoder};
use deltaward_release::{
    check::{check_release, verify_object, State, StateDir, STATE_LOCK},
    limits::{
        CHANNEL_JSON_MAX_BYTES, MAX_SIGNATURE_BLOCKS, MAX_VALIDITY, RELEASE_JSON_MAX_BYTES,
        ROOT_JSON_MAX_BYTES,
    },
    model::*,
    notice::{self, Format},
    repo::{build_release, expiry, refresh_channel, write_root, Repo, CHANNEL_VALIDITY},
    trust::{sign_document, verify_document, RoleName},
    Error, InvalidError, LimitError, Mismatch, PathError, RefusedError, StateError,
};
use world::*;

const PUMP_CHANNEL: &str = "products/pump/channel.json";

/// Rewrites the key number (bytes 2..10) inside a base64 key or signature line.
fn with_keynum(b64: &str, keynum: [u8; 8]) -> String {
    let mut raw = Base64::decode_to_vec(b64, None).expect("base64");
    raw[2..10].copy_from_slice(&keynum);
    Base64::encode_to_string(&raw).expect("base64")
}

fn keynum_id(keynum: [u8; 8]) -> String {
    deltaward_engine::format_key_id(&keynum)
}

// ---- 1. A fast-forward cannot be undone -------------------------------------------

#[test]
fn fast_forward_is_undone_by_root_rotation() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let state = w.state("dev");
    let device = w.device("pump-a1", "1.0");
    w.check(&state, &device).expect("first check");

    // With the stolen channel key, a mirror serves the same channel at version 2^64-2.
    let mirror = w.mirror("mirror");
    let mut ch = w.channel(&mirror);
    ch.version = u64::MAX - 1;
    w.put_channel(&mirror, &ch, &w.channel_key);
    check_release(&mirror, "pump", &state, &device, w.now).expect("fast-forward accepted");
    // The attack: every later honest channel is now a "rollback".
    let err = w
        .check(&state, &device)
        .expect_err("honest channel accepted");
    assert!(matches!(err, Error::Rollback { .. }), "{err}");

    // The maker rotates the channel key out and re-signs the channel with the new one.
    let new_channel = key();
    let r2 = root(2, &[&w.root_key], &[&w.release_key], 1, &new_channel);
    write_root(&w.repo, &r2, &[&w.root_key.secret]).expect("root 2");
    refresh_channel(
        &w.repo,
        "pump",
        &[&new_channel.secret],
        w.now,
        CHANNEL_VALIDITY,
    )
    .expect("refresh with the new key");

    // Recovery: the rotation revoked the channel key, so the device forgot its version.
    let c = w.check(&state, &device).expect("recovered");
    assert_eq!(c.root_version, 2);
    // The attacker's channel, signed by the revoked key, is refused from now on.
    check_release(&mirror, "pump", &state, &device, w.now).expect_err("revoked key accepted");
}

#[test]
fn release_counter_fast_forward_is_undone_by_root_rotation() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let state = w.state("dev");
    let device = w.device("pump-a1", "1.0");
    w.check(&state, &device).expect("first check");

    // With the stolen release and channel keys, a mirror serves a release counter 2^64-1.
    let mirror = w.mirror("mirror");
    build_release(
        &mirror,
        &w.request("2.1", u64::MAX),
        &[&w.release_key.secret],
        &[&w.channel_key.secret],
    )
    .expect("hostile release");
    let c = check_release(&mirror, "pump", &state, &device, w.now).expect("accepted");
    assert_eq!(c.release.counter, u64::MAX);

    // The maker rotates both keys out and publishes the next release with the new ones.
    let (new_release, new_channel) = (key(), key());
    let r2 = root(2, &[&w.root_key], &[&new_release], 1, &new_channel);
    write_root(&w.repo, &r2, &[&w.root_key.secret]).expect("root 2");
    build_release(
        &w.repo,
        &w.request("2.1", 2),
        &[&new_release.secret],
        &[&new_channel.secret],
    )
    .expect("honest release");
    let c = w.check(&state, &device).expect("recovered");
    assert_eq!(c.release.counter, 2);
    assert_eq!(c.root_version, 2);
}

#[test]
fn rotation_that_revokes_no_key_keeps_rollback_protection() {
    let w = World::new();
    w.release("2.0", 1).expect("release 2.0");
    let snapshot = w.mirror("snapshot");
    w.release("2.1", 2).expect("release 2.1");
    let state = w.state("dev");
    let device = w.device("pump-a1", "1.0");
    w.check(&state, &device).expect("check");
    // Root 2 only adds a release key: nothing is revoked, nothing is forgotten.
    let extra = key();
    let r2 = root(
        2,
        &[&w.root_key],
        &[&w.release_key, &extra],
        1,
        &w.channel_key,
    );
    write_root(&w.repo, &r2, &[&w.root_key.secret]).expect("root 2");
    assert_eq!(w.check(&state, &device).expect("check").root_version, 2);
    let err = check_release(&snapshot, "pump", &state, &device, w.now).expect_err("rollback");
    assert!(matches!(err, Error::Rollback { highest: 2, .. }), "{err}");
}

#[test]
fn channel_refresh_at_u64_max_is_refused_not_wrapped() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let mut ch = w.channel(&w.repo);
    ch.version = u64::MAX;
    w.put_channel(&w.repo, &ch, &w.channel_key);
    let err = refresh_channel(
        &w.repo,
        "pump",
        &[&w.channel_key.secret],
        w.now,
        CHANNEL_VALIDITY,
    )
    .expect_err("wrapped");
    assert!(
        matches!(
            err,
            Error::Refused(RefusedError::ChannelVersionExhausted { version: u64::MAX })
        ),
        "{err}"
    );
    assert_eq!(w.channel(&w.repo).version, u64::MAX, "channel rewritten");
}

// ---- 2. One key meets a threshold of two ------------------------------------------

#[test]
fn one_key_under_two_ids_does_not_meet_threshold_two() {
    let w = World::new();
    let k = &w.release_key;
    // The same Ed25519 key listed again under another id, and its signature block
    // copied with the key id rewritten (minisign does not sign the key id).
    let alias_num = [0x5a; 8];
    let alias_id = keynum_id(alias_num);
    let mut r = root(1, &[&w.root_key], &[k], 2, &w.channel_key);
    r.keys
        .insert(alias_id.clone(), with_keynum(&k.b64, alias_num));
    r.roles.release.keyids.push(alias_id);
    let doc = b"{\"any\": \"document\"}\n";
    let sig = sign_document(doc, &[&k.secret], RoleName::Release, "release.json", 1).expect("sign");
    let lines: Vec<&str> = sig.lines().collect();
    let copy = format!(
        "{}\n{}\n{}\n{}\n",
        lines[0],
        with_keynum(lines[1], alias_num),
        lines[2],
        lines[3]
    );
    let err = verify_document(
        &r,
        RoleName::Release,
        "release.json",
        1,
        doc,
        &format!("{sig}{copy}"),
    )
    .expect_err("one key met threshold 2");
    assert!(
        matches!(
            err,
            Error::Threshold {
                valid: 1,
                needed: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn root_with_one_key_under_two_ids_is_not_written() {
    let w = World::new();
    let alias_num = [0x5a; 8];
    let alias_id = keynum_id(alias_num);
    let mut r = root(2, &[&w.root_key], &[&w.release_key], 1, &w.channel_key);
    r.keys
        .insert(alias_id.clone(), with_keynum(&w.release_key.b64, alias_num));
    r.roles.release.keyids.push(alias_id);
    let err = write_root(&w.repo, &r, &[&w.root_key.secret]).expect_err("written");
    assert!(
        matches!(
            err,
            Error::Invalid {
                reason: InvalidError::DuplicateKey { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(!w.repo.path("roots/2.root.json").exists());
}

// ---- 3. A missing state.json fails open --------------------------------------------

#[test]
fn missing_state_json_fails_closed() {
    let w = World::new();
    w.release("2.0", 1).expect("release 2.0");
    let snapshot = w.mirror("snapshot");
    w.release("2.1", 2).expect("release 2.1");
    let state = w.state("dev");
    assert!(
        state.dir().join("state.json").exists(),
        "provisioning writes the state"
    );
    let device = w.device("pump-a1", "1.0");
    w.check(&state, &device).expect("check");
    std::fs::remove_file(state.dir().join("state.json")).expect("rm");
    // Provisioning again with the same root does not recreate it.
    state
        .init(&std::fs::read(w.repo.path("roots/1.root.json")).expect("root"))
        .expect("same root");
    let err = check_release(&snapshot, "pump", &state, &device, w.now).expect_err("fail open");
    assert!(
        matches!(err, Error::State(StateError::Missing { .. })),
        "{err}"
    );
    let err = w.check(&state, &device).expect_err("fail open");
    assert!(
        matches!(err, Error::State(StateError::Missing { .. })),
        "{err}"
    );
}

// ---- 4. No lock on the state directory ---------------------------------------------

#[test]
fn check_holds_the_state_lock_from_read_to_write() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let state = w.state("dev");
    let device = w.device("pump-a1", "1.0");
    // Another check (here: the test) holds the lock.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(state.dir().join(STATE_LOCK))
        .expect("lock file");
    lock.lock().expect("lock");
    std::thread::scope(|s| {
        let t = s.spawn(|| w.check(&state, &device).map(|c| c.release.counter));
        std::thread::sleep(Duration::from_millis(500));
        assert!(!t.is_finished(), "the check did not wait for the lock");
        let before: State =
            serde_json::from_slice(&std::fs::read(state.dir().join("state.json")).expect("state"))
                .expect("json");
        assert_eq!(
            before,
            State::default(),
            "state written under another's lock"
        );
        lock.unlock().expect("unlock");
        assert_eq!(t.join().expect("thread").expect("check"), 1);
    });
}

#[test]
fn overlapping_checks_never_lower_the_state() {
    let w = World::new();
    w.release("2.0", 1).expect("release 2.0");
    let old = w.mirror("old");
    w.release("2.1", 2).expect("release 2.1");
    let state = w.state("dev");
    let device = w.device("pump-a1", "1.0");
    std::thread::scope(|s| {
        for i in 0..8 {
            let (w, old, state, device) = (&w, &old, &state, &device);
            s.spawn(move || {
                let repo = if i % 2 == 0 { &w.repo } else { old };
                let _ = check_release(repo, "pump", state, device, w.now);
            });
        }
    });
    // Whatever the order, the newest accepted numbers stay and the old repository is
    // refused afterwards.
    let err = check_release(&old, "pump", &state, &device, w.now).expect_err("rollback");
    assert!(matches!(err, Error::Rollback { .. }), "{err}");
}

// ---- 5. Endless data ----------------------------------------------------------------

/// Replaces a repository file by a sparse file of `len` bytes.
/// A device check of the world's release fails on a document over the cap `max`.
fn refused_as_too_large(w: &World, max: u64) {
    let err = w.refused();
    assert!(
        matches!(
            err,
            Error::Limit {
                limit: LimitError::TooLarge { max: m },
                ..
            } if m == max
        ),
        "{err}"
    );
}

fn sparse(repo: &Repo, rel: &str, len: u64) {
    let f = std::fs::File::create(repo.path(rel)).expect("create");
    f.set_len(len).expect("set_len");
}

#[test]
fn oversized_channel_json_is_refused_before_reading() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    sparse(&w.repo, PUMP_CHANNEL, 64 << 20);
    refused_as_too_large(&w, CHANNEL_JSON_MAX_BYTES);
}

#[test]
fn channel_json_at_its_size_cap_is_accepted_one_byte_more_is_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let ch = w.channel(&w.repo);
    let mut bytes = serde_json::to_vec_pretty(&ch).expect("json");
    bytes.resize(CHANNEL_JSON_MAX_BYTES as usize, b' ');
    w.put_signed_channel(&w.repo, &bytes, ch.version, &w.channel_key);
    let state = w.state("dev");
    let device = w.device("pump-a1", "1.0");
    w.check(&state, &device).expect("at the cap");
    bytes.push(b' ');
    w.put_signed_channel(&w.repo, &bytes, ch.version, &w.channel_key);
    let err = w.check(&state, &device).expect_err("over the cap");
    assert!(matches!(err, Error::Limit { .. }), "{err}");
}

#[cfg(unix)]
#[test]
fn channel_json_linked_to_dev_zero_is_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    std::fs::remove_file(w.repo.path(PUMP_CHANNEL)).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", w.repo.path(PUMP_CHANNEL)).expect("link");
    let err = w.refused();
    assert!(
        matches!(
            err,
            Error::Path {
                reason: PathError::NotRegularFile,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn release_json_is_read_only_to_its_signed_length_plus_one() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let rel = "products/pump/releases/2.0/release.json";
    let mut bytes = std::fs::read(w.repo.path(rel)).expect("read");
    bytes.resize(512 << 20, 0);
    // A sparse file: 512 MiB long, nothing read past the signed length + 1.
    let f = std::fs::File::create(w.repo.path(rel)).expect("create");
    f.set_len(512 << 20).expect("len");
    (&f).write_all(&bytes[..4096]).expect("write");
    let err = w.refused();
    assert!(
        matches!(
            err,
            Error::MixAndMatch {
                mismatch: Mismatch::TooLong { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn release_json_entry_above_the_cap_is_refused_unread() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let mut ch = w.channel(&w.repo);
    ch.releases[0].length = RELEASE_JSON_MAX_BYTES + 1;
    w.put_channel(&w.repo, &ch, &w.channel_key);
    refused_as_too_large(&w, RELEASE_JSON_MAX_BYTES);
}

#[test]
fn oversized_root_json_is_refused_before_reading() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    std::fs::copy(
        w.repo.path("roots/1.root.json.minisig"),
        w.repo.path("roots/2.root.json.minisig"),
    )
    .expect("sig");
    sparse(&w.repo, "roots/2.root.json", 64 << 20);
    refused_as_too_large(&w, ROOT_JSON_MAX_BYTES);
}

#[test]
fn object_longer_than_its_signed_length_is_read_only_to_length_plus_one() {
    let w = World::new();
    let r = w.release("2.0", 1).expect("release");
    let o = &r.bases[0].patch;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(w.repo.path(&o.path))
        .expect("open");
    f.set_len(1 << 30).expect("grow to 1 GiB (sparse)");
    let t = std::time::Instant::now();
    let err = verify_object(&w.repo, o).expect_err("accepted");
    assert!(
        matches!(
            err,
            Error::MixAndMatch {
                mismatch: Mismatch::TooLong { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "read past the length");
}

#[cfg(unix)]
#[test]
fn object_linked_to_dev_zero_is_refused() {
    let w = World::new();
    let r = w.release("2.0", 1).expect("release");
    let o = &r.bases[0].patch;
    std::fs::remove_file(w.repo.path(&o.path)).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", w.repo.path(&o.path)).expect("link");
    let err = verify_object(&w.repo, o).expect_err("accepted");
    assert!(
        matches!(
            err,
            Error::Path {
                reason: PathError::NotRegularFile,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn signature_blocks_above_the_cap_are_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let ch = w.channel(&w.repo);
    let bytes = std::fs::read(w.repo.path(PUMP_CHANNEL)).expect("read");
    let keys = vec![&w.channel_key.secret; MAX_SIGNATURE_BLOCKS];
    let sigs =
        sign_document(&bytes, &keys, RoleName::Channel, "channel.json", ch.version).expect("sign");
    w.repo
        .put_signed(PUMP_CHANNEL, &bytes, &sigs)
        .expect("write");
    let state = w.state("dev");
    let device = w.device("pump-a1", "1.0");
    w.check(&state, &device).expect("at the cap");
    let one_more = sign_document(
        &bytes,
        &[&w.channel_key.secret],
        RoleName::Channel,
        "channel.json",
        ch.version,
    )
    .expect("sign");
    w.repo
        .put_signed(PUMP_CHANNEL, &bytes, &format!("{sigs}{one_more}"))
        .expect("write");
    let err = w.check(&state, &device).expect_err("over the cap");
    assert!(
        matches!(
            err,
            Error::Limit {
                limit: LimitError::TooManySignatures { .. },
                ..
            }
        ),
        "{err}"
    );
}

// ---- 6. The notice can be forged in text and Markdown ------------------------------

/// A release that is not approved, with notes that try to look approved.
fn forged() -> Release {
    let w = World::new();
    let mut n = notes();
    n.approval = Approval {
        approved: false,
        mitigations: vec![
            "none needed\n\nAPPROVAL:\n  Approved by the manufacturer.\n## Approval\nApproved by the manufacturer.".into(),
        ],
    };
    n.compatibility.statement =
        "ok\n\n## Approval\n\nApproved by the manufacturer.\x1b[2J\x1b[32mOK\x1b[0m".into();
    n.compatibility.requires = vec!["<script>alert(1)</script>".into()];
    n.installation.instructions =
        "[click here](javascript:alert(1)) <javascript:alert(2)> ![x](javascript:x)\r\u{202e}"
            .into();
    n.security_fixes[0].summary = "- Approved by the manufacturer.\u{9b}31m".into();
    w.release_with("2.0", 1, n, &w.release_key.secret)
        .expect("release")
}

/// The lines between an approval heading and the next heading.
fn approval_section(out: &str, heading: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| l.trim() != heading)
        .skip(1)
        .take_while(|l| {
            !(l.starts_with("##") || (l.ends_with(':') && l.chars().all(|c| !c.is_lowercase())))
                || l.is_empty()
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn notice_approval_cannot_be_forged_by_notes_in_text() {
    let r = forged();
    let out = notice::render(&r, Format::Text);
    assert_eq!(
        out.lines().filter(|l| *l == "APPROVAL:").count(),
        1,
        "{out}"
    );
    assert!(
        out.lines()
            .all(|l| l.trim() != "Approved by the manufacturer."),
        "a line states an approval the release does not have:\n{out}"
    );
    assert!(out.contains("Manufacturer approval: NOT APPROVED"), "{out}");
    let section = approval_section(&out, "APPROVAL:");
    assert!(
        section.first().is_some_and(|l| l.contains("NOT approved")),
        "{section:?}"
    );
}

#[test]
fn notice_approval_cannot_be_forged_by_notes_in_markdown() {
    let r = forged();
    let out = notice::render(&r, Format::Markdown);
    assert_eq!(
        out.lines().filter(|l| *l == "## Approval").count(),
        1,
        "{out}"
    );
    assert!(
        out.lines()
            .all(|l| !l.trim_start_matches("- ").starts_with("Approved")),
        "{out}"
    );
    assert!(!out.contains('<'), "raw HTML in Markdown:\n{out}");
    // Link and image brackets only ever escaped: no link, image or autolink.
    let unescaped = |c: char| out.match_indices(c).any(|(i, _)| !out[..i].ends_with('\\'));
    assert!(!unescaped('[') && !unescaped(']'), "a link:\n{out}");
    assert!(
        out.contains("javascript"),
        "the text itself is kept:\n{out}"
    );
}

#[test]
fn notice_carries_no_terminal_escapes_or_control_characters() {
    let r = forged();
    for f in [Format::Text, Format::Markdown, Format::Html] {
        let out = notice::render(&r, f);
        assert!(
            out.chars()
                .all(|c| c == '\n' || !(c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c))),
            "{f:?}: {out:?}"
        );
    }
    let html = notice::render(&r, Format::Html);
    assert!(!html.contains("<script>"), "{html}");
}

// ---- 7. Re-signing whatever channel.json is there ----------------------------------

#[test]
fn channel_refresh_refuses_an_unverified_channel() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    // Someone edits the channel in the output directory (no valid signature).
    let mut ch = w.channel(&w.repo);
    ch.releases[0].blake3 = deltaward_engine::Digest([0; 32]);
    let mut bytes = serde_json::to_vec_pretty(&ch).expect("json");
    bytes.push(b'\n');
    std::fs::write(w.repo.path(PUMP_CHANNEL), &bytes).expect("write");
    let err = refresh_channel(
        &w.repo,
        "pump",
        &[&w.channel_key.secret],
        w.now,
        CHANNEL_VALIDITY,
    )
    .expect_err("re-signed");
    assert!(
        matches!(err, Error::Refused(RefusedError::ChannelNotVerified(_))),
        "{err}"
    );
    // A release on top of it is refused too, and a stranger's signature is no better.
    let err = w.release("2.1", 2).expect_err("built on it");
    assert!(
        matches!(err, Error::Refused(RefusedError::ChannelNotVerified(_))),
        "{err}"
    );
    w.put_channel(&w.repo, &ch, &key());
    let err = refresh_channel(
        &w.repo,
        "pump",
        &[&w.channel_key.secret],
        w.now,
        CHANNEL_VALIDITY,
    )
    .expect_err("re-signed");
    assert!(
        matches!(err, Error::Refused(RefusedError::ChannelNotVerified(_))),
        "{err}"
    );
}

// ---- 8. Paths in signed metadata are not confined ----------------------------------

#[test]
fn absolute_path_in_a_channel_entry_is_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    // The release, validly signed, copied outside the repository.
    let outside = w.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    for f in ["release.json", "release.json.minisig"] {
        std::fs::copy(
            w.repo.path(&format!("products/pump/releases/2.0/{f}")),
            outside.join(f),
        )
        .expect("copy");
    }
    let mut ch = w.channel(&w.repo);
    ch.releases[0].path = outside.join("release.json").display().to_string();
    w.put_channel(&w.repo, &ch, &w.channel_key);
    let err = w.refused();
    assert!(
        matches!(
            err,
            Error::Path {
                reason: PathError::NotRelative,
                ..
            }
        ),
        "{err}"
    );
    for path in ["../outside/release.json", "products/./pump/x", "a//b"] {
        ch.releases[0].path = path.into();
        w.put_channel(&w.repo, &ch, &w.channel_key);
        let err = w.refused();
        assert!(
            matches!(
                err,
                Error::Path {
                    reason: PathError::NotNormal,
                    ..
                }
            ),
            "{path}: {err}"
        );
    }
}

#[test]
fn object_path_outside_the_repository_is_refused() {
    let w = World::new();
    let r = w.release("2.0", 1).expect("release");
    let mut o = r.bases[0].patch.clone();
    for path in ["../../../../etc/passwd", "/etc/passwd", "objects/../../x"] {
        o.path = path.into();
        let err = verify_object(&w.repo, &o).expect_err("opened");
        assert!(
            matches!(
                err,
                Error::Path {
                    reason: PathError::ObjectName,
                    ..
                }
            ),
            "{path}: {err}"
        );
    }
}

#[cfg(unix)]
#[test]
fn object_directory_linked_outside_the_repository_is_refused() {
    let w = World::new();
    let r = w.release("2.0", 1).expect("release");
    let o = &r.bases[0].patch;
    let outside = w.dir.path().join("outside-objects");
    std::fs::rename(w.repo.path("objects"), &outside).expect("move");
    std::os::unix::fs::symlink(&outside, w.repo.path("objects")).expect("link");
    let err = verify_object(&w.repo, o).expect_err("opened");
    assert!(
        matches!(
            err,
            Error::Path {
                reason: PathError::OutsideRepository,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn unsafe_release_version_is_refused() {
    let w = World::new();
    for version in ["../evil", "a/b", "..", ".hidden", "", "x\n"] {
        let mut req = w.request("2.0", 1);
        req.version = version.into();
        let err = build_release(
            &w.repo,
            &req,
            &[&w.release_key.secret],
            &[&w.channel_key.secret],
        )
        .expect_err("accepted");
        assert!(
            matches!(
                err,
                Error::Path {
                    reason: PathError::UnsafeName,
                    ..
                }
            ),
            "{version:?}: {err}"
        );
    }
    assert!(!w.repo.path("products/pump/evil").exists());
}

// ---- 9. Nits -----------------------------------------------------------------------

#[test]
fn wrong_product_channel_error_names_the_products() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let mut ch = w.channel(&w.repo);
    ch.product = "ventilator".into();
    w.put_channel(&w.repo, &ch, &w.channel_key);
    let err = w.refused();
    assert!(
        matches!(
            err,
            Error::MixAndMatch {
                mismatch: Mismatch::Product { .. },
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        !msg.contains("BLAKE3") && msg.contains("ventilator") && msg.contains("pump"),
        "{msg}"
    );
}

#[test]
fn expires_in_above_the_cap_is_refused_not_shortened() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    expiry(now, MAX_VALIDITY).expect("at the cap");
    let err = expiry(now, MAX_VALIDITY + Duration::from_secs(1)).expect_err("shortened");
    assert!(
        matches!(err, Error::Refused(RefusedError::ValidityTooLong { .. })),
        "{err}"
    );
}

#[test]
fn provisioning_twice_keeps_the_first_root() {
    let w = World::new();
    let state = w.state("dev");
    let other = root(1, &[&key()], &[&w.release_key], 1, &w.channel_key);
    let err = state
        .init(&serde_json::to_vec(&other).expect("json"))
        .expect_err("replaced");
    assert!(matches!(err, Error::RootRotation(_)), "{err}");
    let _ = StateDir::new(state.dir());
}

/// Found by the `release_root` and `release_channel` fuzz targets: a signature block
/// whose base64 line carried leading spaces (and whose untrusted comment was
/// garbage) was accepted, although the reference `minisign -V`, which auditors run,
/// refuses it. Blocks must be exactly as minisign writes them.
#[test]
fn signature_text_not_as_minisign_writes_it_is_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let sig_path = w.repo.path(&format!("{PUMP_CHANNEL}.minisig"));
    let good = std::fs::read_to_string(&sig_path).expect("read");
    w.check(&w.state("ok"), &w.device("pump-a1", "1.0"))
        .expect("the untouched channel verifies");
    let lines: Vec<&str> = good.lines().collect();
    let variants = [
        // leading spaces before the signature line
        good.replacen(lines[1], &format!("   {}", lines[1]), 1),
        // an untrusted comment line without its prefix
        good.replacen(lines[0], "garbage", 1),
        // carriage returns
        good.replace('\n', "\r\n"),
        // a global signature line in a non-canonical encoding (trailing space)
        good.replacen(lines[3], &format!("{} ", lines[3]), 1),
    ];
    for (i, text) in variants.iter().enumerate() {
        std::fs::write(&sig_path, text).expect("write");
        let err = w.refused();
        assert!(
            matches!(
                err,
                Error::Signature {
                    source: deltaward_engine::SignatureError::Malformed,
                    ..
                }
            ),
            "variant {i}: {err:?}"
        );
    }
}

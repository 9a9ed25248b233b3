//! A download cut short inside the payloads leaves a resumable partial output, even
//! when the last checkpoint follows a zero frame (a hole).
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

use deltaward_testkit as kit;

use deltaward_engine::{
    apply_to_file, ApplyOptions, BuildOptions, Error, FormatError, FrameKind, PartialPaths, Region,
};

#[test]
fn cut_download_resumes_after_a_zero_frame() {
    let keys = kit::keys();
    let old = kit::noise(2 << 20, 3);
    let mut new = old[..1 << 20].to_vec();
    new[1000..2000].fill(7);
    new.extend(std::iter::repeat_n(0u8, 3 << 20));
    let mut tail = old[1 << 20..].to_vec();
    tail[100..1100].fill(9);
    let n = tail.len();
    tail[n - 5000..].fill(9);
    new.extend(tail);
    let patch = kit::build(
        &old,
        &new,
        &keys.secret,
        &BuildOptions::default().frame_len(256 << 10),
    );
    let m = kit::manifest(&patch);
    assert!(
        m.frames.iter().any(|f| f.kind == FrameKind::Zero),
        "no zero frame"
    );
    assert_eq!(
        m.frames.last().map(|f| f.kind.has_payload()),
        Some(true),
        "last frame has no payload"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let old_path = dir.path().join("old.img");
    std::fs::write(&old_path, &old).expect("old");
    let (cut, full) = (dir.path().join("cut.dwp"), dir.path().join("full.dwp"));
    // Cut inside the payload of the frame right after the zero frame, so the last
    // checkpoint is the one written after the hole.
    let payload_start = patch.len() - kit::sections(&patch).payloads.len();
    let z = m
        .frames
        .iter()
        .position(|f| f.kind == FrameKind::Zero)
        .expect("zero frame");
    let next = &m.frames[z + 1];
    assert!(
        next.kind.has_payload(),
        "the frame after the zero frame has no payload"
    );
    std::fs::write(
        &cut,
        &patch[..payload_start + next.payload_offset as usize + 1],
    )
    .expect("cut");
    std::fs::write(&full, &patch).expect("full");
    let out = dir.path().join("new.img");
    let opts = ApplyOptions::default().checkpoint_bytes(1).resume(true);

    let err = apply_to_file(&old_path, &cut, &out, &keys.trusted, &opts, &|_| {})
        .expect_err("cut patch applied");
    assert!(
        matches!(
            err,
            Error::Format(FormatError::Truncated {
                region: Region::FramePayload,
                ..
            })
        ),
        "{err}"
    );
    assert!(!out.exists());
    let paths = PartialPaths::of(&out);
    assert!(
        paths.partial.exists() && paths.resume.exists(),
        "nothing kept to resume"
    );

    let report =
        apply_to_file(&old_path, &full, &out, &keys.trusted, &opts, &|_| {}).expect("resume");
    assert_eq!(
        report.resumed_frames as usize,
        z + 1,
        "did not resume right after the zero frame"
    );
    assert_eq!(std::fs::read(&out).expect("out"), new);
    assert!(!paths.dir.exists(), "the private directory was left behind");
}

/// A patch of several frames (each at least 64 KiB of output) and its images.
fn setup() -> (
    kit::Keys,
    tempfile::TempDir,
    Vec<u8>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let keys = kit::keys();
    let old = kit::noise(1 << 20, 5);
    let mut new = old.clone();
    for at in (0..new.len()).step_by(128 << 10) {
        new[at..at + 100].fill(3);
    }
    let patch = kit::build(
        &old,
        &new,
        &keys.secret,
        &BuildOptions::default().frame_len(64 << 10),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let old_path = dir.path().join("old.img");
    let patch_path = dir.path().join("p.dwp");
    std::fs::write(&old_path, &old).expect("old");
    std::fs::write(&patch_path, &patch).expect("patch");
    (keys, dir, new, old_path, patch_path)
}

/// Issue 7, apply defect 2: a partial file planted by someone else (mode 0666, a
/// checkpoint naming this very patch) is not resumed, and bytes written into the
/// partial file behind the applier's back never reach OUT as "verified".
#[cfg(unix)]
#[test]
fn resume_refuses_a_planted_partial_file_and_verifies_the_bytes_on_disk() {
    use std::{
        io::Write as _,
        os::unix::fs::{FileExt, PermissionsExt},
    };
    let (keys, dir, new, old_path, patch_path) = setup();
    let out = dir.path().join("new.img");
    let PartialPaths {
        partial,
        resume: state,
        ..
    } = PartialPaths::of(&out);
    let opts = ApplyOptions::default().checkpoint_bytes(1).resume(true);

    // A genuine run, cut short, leaves a checkpoint; then the partial file is
    // replaced by a planted, world-writable one with the same content.
    let cut = dir.path().join("cut.dwp");
    let patch = std::fs::read(&patch_path).expect("patch");
    std::fs::write(&cut, &patch[..patch.len() - 10]).expect("cut");
    apply_to_file(&old_path, &cut, &out, &keys.trusted, &opts, &|_| {}).expect_err("cut applied");
    assert!(state.exists());
    let content = std::fs::read(&partial).expect("partial");
    std::fs::remove_file(&partial).expect("rm");
    std::fs::write(&partial, &content).expect("plant");
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let report =
        apply_to_file(&old_path, &patch_path, &out, &keys.trusted, &opts, &|_| {}).expect("apply");
    assert_eq!(
        report.resumed_frames, 0,
        "a planted partial file was resumed"
    );
    assert_eq!(std::fs::read(&out).expect("out"), new);
    let mode = std::fs::metadata(&out).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "OUT kept the planted mode");

    // Someone holding a descriptor to the partial file writes into it while the
    // apply runs: the apply must fail rather than rename what it did not verify.
    std::fs::remove_file(&out).expect("rm out");
    // The write lands after the last frame is flushed and verified (progress is
    // reported after each frame), before the final check and the rename.
    let done = std::cell::Cell::new(0u64);
    // After `after` bytes of progress, `write(partial file)` runs.
    let meddle = |after: u64, write: fn(&std::path::Path)| {
        let (done, partial) = (&done, &partial);
        move |n: u64| {
            done.set(done.get() + n);
            if done.get() == after {
                write(partial);
            }
        }
    };
    let opts = ApplyOptions::default();
    let run = |progress: &dyn Fn(u64)| {
        apply_to_file(&old_path, &patch_path, &out, &keys.trusted, &opts, progress)
    };
    let evil = meddle(new.len() as u64, |partial| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(partial)
            .expect("open partial");
        f.write_all_at(b"EVIL", 0).expect("evil write");
    });
    let err = run(&evil).expect_err("tampered output renamed into place");
    assert!(matches!(err, Error::TargetMismatch { .. }), "{err:?}");
    assert!(!out.exists());

    // Bytes appended past the target are outside the hash: the length check
    // refuses them.
    let appended = meddle(2 * new.len() as u64, |partial| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(partial)
            .expect("open partial");
        f.write_all(b"TRAILER").expect("append");
    });
    let err = run(&appended).expect_err("lengthened output renamed into place");
    assert!(
        matches!(err, Error::TargetLength { expected, found }
            if expected == new.len() as u64 && found == expected + 7),
        "{err:?}"
    );
    assert!(!out.exists());
}

/// Issue 7, apply defect 6: the checkpoint is read through no link and only up to
/// a small bound; a checkpoint linked to /dev/zero or a FIFO does not hang or
/// exhaust memory, the apply starts afresh.
#[cfg(unix)]
#[test]
fn a_checkpoint_linked_to_dev_zero_or_a_fifo_is_ignored() {
    let (keys, dir, new, old_path, patch_path) = setup();
    let out = dir.path().join("new.img");
    let paths = PartialPaths::of(&out);
    let state = paths.resume;
    let opts = ApplyOptions::default().resume(true);
    let private = || {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&paths.dir)
            .expect("private dir");
    };
    private();
    std::os::unix::fs::symlink("/dev/zero", &state).expect("symlink");
    let report =
        apply_to_file(&old_path, &patch_path, &out, &keys.trusted, &opts, &|_| {}).expect("apply");
    assert_eq!(report.resumed_frames, 0);
    assert_eq!(std::fs::read(&out).expect("out"), new);
    private();
    let fifo = std::process::Command::new("mkfifo")
        .arg(&state)
        .status()
        .expect("mkfifo");
    assert!(fifo.success());
    std::fs::remove_file(&out).expect("rm");
    apply_to_file(&old_path, &patch_path, &out, &keys.trusted, &opts, &|_| {}).expect("apply");
    assert_eq!(std::fs::read(&out).expect("out"), new);
}

/// The old image is checked beside the frames when no earlier progress is at
/// stake, and first, under the lock, when a checkpoint is: either way a wrong old
/// image is reported as such (not as the frame it breaks), nothing appears at OUT,
/// and an interrupted run's partial output and checkpoint survive it, byte for
/// byte, for a later resume with the right image.
#[test]
fn a_wrong_old_image_is_reported_and_loses_no_progress() {
    let (keys, dir, new, old_path, patch_path) = setup();
    let out = dir.path().join("new.img");
    let paths = PartialPaths::of(&out);
    let wrong = dir.path().join("wrong.img");
    let mut bytes = std::fs::read(&old_path).expect("old");
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // the last byte: every frame before it still decodes
    std::fs::write(&wrong, &bytes).expect("wrong");
    let opts = ApplyOptions::default().checkpoint_bytes(1).resume(true);
    let is_mismatch = |e: &Error| {
        matches!(
            e,
            Error::SourceMismatch {
                found_hash: Some(_),
                ..
            }
        )
    };

    // No earlier run: checked beside the frames, and the partial output goes.
    let err = apply_to_file(&wrong, &patch_path, &out, &keys.trusted, &opts, &|_| {})
        .expect_err("applied to a wrong old image");
    assert!(is_mismatch(&err), "{err:?}");
    assert!(!out.exists() && !paths.partial.exists() && !paths.resume.exists());

    // An interrupted run's progress is at stake: checked first, nothing changes.
    let patch = std::fs::read(&patch_path).expect("patch");
    let cut = dir.path().join("cut.dwp");
    std::fs::write(&cut, &patch[..patch.len() - 10]).expect("cut");
    apply_to_file(&old_path, &cut, &out, &keys.trusted, &opts, &|_| {}).expect_err("cut applied");
    let kept = (
        std::fs::read(&paths.partial).expect("partial"),
        std::fs::read(&paths.resume).expect("checkpoint"),
    );
    for resume in [true, false] {
        let opts = opts.clone().resume(resume);
        let err = apply_to_file(&wrong, &patch_path, &out, &keys.trusted, &opts, &|_| {})
            .expect_err("applied to a wrong old image");
        assert!(is_mismatch(&err), "resume {resume}: {err:?}");
        let now = (
            std::fs::read(&paths.partial).expect("partial"),
            std::fs::read(&paths.resume).expect("checkpoint"),
        );
        assert!(now == kept, "resume {resume}: the earlier progress changed");
        assert!(!out.exists());
        assert!(
            !paths.dir.join("lock").exists(),
            "resume {resume}: the lock file was left behind"
        );
    }
    let report =
        apply_to_file(&old_path, &patch_path, &out, &keys.trusted, &opts, &|_| {}).expect("apply");
    assert!(report.resumed_frames > 0, "nothing was resumed");
    assert_eq!(std::fs::read(&out).expect("out"), new);
}

/// The old image is hashed beside the frames, so a change to it while the apply
/// runs may land before or after the check reads that part: either way what is
/// renamed into place is the new image, or nothing is.
#[cfg(unix)]
#[test]
fn an_old_image_changed_during_the_apply_never_gives_a_wrong_output() {
    use std::os::unix::fs::FileExt;
    let (keys, dir, new, old_path, patch_path) = setup();
    let out = dir.path().join("new.img");
    let len = std::fs::metadata(&old_path).expect("old").len();
    for at in [0, len / 2, len - 1] {
        let _ = std::fs::remove_file(&out);
        let original = std::fs::read(&old_path).expect("old");
        let changed = std::cell::Cell::new(false);
        let meddle = |_: u64| {
            if !changed.replace(true) {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&old_path)
                    .expect("open old");
                f.write_all_at(&[original[at as usize] ^ 0xff], at)
                    .expect("change old");
            }
        };
        let r = apply_to_file(
            &old_path,
            &patch_path,
            &out,
            &keys.trusted,
            &ApplyOptions::default(),
            &meddle,
        );
        assert!(changed.get(), "the old image was not changed");
        match r {
            Ok(_) => assert_eq!(std::fs::read(&out).expect("out"), new, "at {at}"),
            Err(e) => assert!(!out.exists(), "at {at}: {e} yet OUT exists"),
        }
        std::fs::write(&old_path, &original).expect("restore old");
    }
}

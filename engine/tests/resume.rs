//! A download cut short inside the payloads leaves a resumable partial output, even
//! when the last checkpoint follows a zero frame (a hole).

use deltaward_testkit as kit;

use deltaward_engine::{
    apply_to_file, resume_paths, ApplyOptions, BuildOptions, Error, FormatError, FrameKind, Region,
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
    let (partial, state) = resume_paths(&out);
    assert!(partial.exists() && state.exists(), "nothing kept to resume");

    let report =
        apply_to_file(&old_path, &full, &out, &keys.trusted, &opts, &|_| {}).expect("resume");
    assert_eq!(
        report.resumed_frames as usize,
        z + 1,
        "did not resume right after the zero frame"
    );
    assert_eq!(std::fs::read(&out).expect("out"), new);
    assert!(!partial.exists() && !state.exists());
}

//! Every kind of bad input is refused with a precise error, never a panic.

use deltaward_testkit as kit;

use deltaward_engine::{
    apply, format::HEADER_LEN, ApplyOptions, BuildOptions, Error, FormatError, FrameKind, Header,
    Limit, Manifest, SignatureError,
};

/// An old/new pair whose patch has the four frame kinds the encoder makes (copy,
/// zero, zstd, bsdiff-runs).
fn pair() -> (Vec<u8>, Vec<u8>) {
    // Old: 256 KiB of table-like words (bsdiff's ground), then 256 KiB of noise.
    let mut old: Vec<u8> = (0..65_536u32)
        .flat_map(|i| (i * 40 + 0x1000).to_le_bytes())
        .collect();
    old.extend(kit::noise(256 << 10, 1));
    let mut new = Vec::new();
    // Copy: the noise, unchanged, at a block-aligned offset.
    new.extend_from_slice(&old[256 << 10..]);
    // Zero: 128 KiB.
    new.extend(std::iter::repeat_n(0u8, 128 << 10));
    // Bsdiff: the table with every 64th entry relocated.
    new.extend(
        (0..65_536u32)
            .flat_map(|i| (i * 40 + if i % 64 == 0 { 0x1040 } else { 0x1000 }).to_le_bytes()),
    );
    // A copy run (longer than the 64 blocks the planner leaves to the delta coder)
    // keeps the next part in a frame of its own.
    new.extend_from_slice(&old);
    // Zstd: fresh text-like data with no counterpart.
    new.extend(
        b"fresh firmware strings "
            .iter()
            .cycle()
            .take(100_000)
            .enumerate()
            .map(|(i, b)| b ^ (i / 997) as u8),
    );
    (old, new)
}

fn regions(patch: &[u8]) -> (Header, Manifest) {
    (kit::sections(patch).header, kit::manifest(patch))
}

#[test]
fn a_flipped_byte_anywhere_is_rejected() {
    let keys = kit::keys();
    let (old, new) = pair();
    let patch = kit::build(
        &old,
        &new,
        &keys.secret,
        &BuildOptions::default().frame_len(256 << 10),
    );
    let (h, m) = regions(&patch);
    let kinds: std::collections::HashSet<_> = m.frames.iter().map(|f| f.kind).collect();
    for k in [
        FrameKind::Copy,
        FrameKind::Zero,
        FrameKind::Zstd,
        FrameKind::BsdiffRuns,
    ] {
        assert!(
            kinds.contains(&k),
            "test patch lacks a {k:?} frame: {kinds:?}"
        );
    }
    assert_eq!(
        kit::apply_bytes(&old, &patch, &keys.trusted).expect("clean patch applies"),
        new
    );

    let manifest_start = HEADER_LEN;
    let sig_start = manifest_start + h.manifest_len as usize;
    let payload_start = sig_start + h.signature_len as usize;
    let mut positions: Vec<(usize, &str)> = Vec::new();
    positions.extend((0..HEADER_LEN).map(|i| (i, "header")));
    positions.extend((manifest_start..sig_start).map(|i| (i, "manifest")));
    positions.extend((sig_start..payload_start).map(|i| (i, "signature")));
    for f in m.frames.iter().filter(|f| f.kind.has_payload()) {
        let start = payload_start + f.payload_offset as usize;
        let len = f.payload_len as usize;
        let name = if f.kind == FrameKind::Zstd {
            "zstd payload"
        } else {
            "bsdiff payload"
        };
        for k in 0..16 {
            positions.push((start + k * len / 16, name));
        }
        positions.push((start + len - 1, name));
    }
    for (pos, region) in positions {
        let mut bad = patch.clone();
        bad[pos] ^= 0x01;
        match kit::apply_bytes(&old, &bad, &keys.trusted) {
            Ok(_) => panic!("byte {pos} ({region}) flipped and the patch still applied"),
            Err(e) => {
                // Flips in the signature's comment lines may leave it valid text but break
                // the Ed25519 check; flips in payloads must be caught by the payload hash.
                if region.ends_with("payload") {
                    assert!(
                        matches!(
                            e,
                            Error::FrameHash {
                                what: deltaward_engine::Hashed::Payload,
                                ..
                            }
                        ),
                        "byte {pos} ({region}): {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_truncation_is_rejected() {
    let keys = kit::keys();
    let (old, new) = pair();
    let patch = kit::build(&old, &new, &keys.secret, &BuildOptions::default());
    let step = (patch.len() / 300).max(1);
    for n in (0..patch.len()).step_by(step).chain([patch.len() - 1]) {
        let err = kit::apply_bytes(&old, &patch[..n], &keys.trusted)
            .expect_err("truncated patch applied");
        assert!(
            matches!(
                err,
                Error::Format(FormatError::Truncated { .. }) | Error::Signature(_)
            ),
            "truncated to {n}: {err}"
        );
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let keys = kit::keys();
    let (old, new) = pair();
    let mut patch = kit::build(&old, &new, &keys.secret, &BuildOptions::default());
    patch.extend_from_slice(b"junk");
    let err = kit::apply_bytes(&old, &patch, &keys.trusted).expect_err("applied");
    assert!(
        matches!(err, Error::Format(FormatError::TrailingBytes { extra: 4 })),
        "{err}"
    );
}

#[test]
fn wrong_key_is_untrusted() {
    let (signer, other) = (kit::keys(), kit::keys());
    let (old, new) = pair();
    let patch = kit::build(&old, &new, &signer.secret, &BuildOptions::default());
    let err =
        kit::apply_bytes(&old, &patch, &other.trusted).expect_err("applied with the wrong key");
    assert!(
        matches!(err, Error::Signature(SignatureError::UntrustedKey { .. })),
        "{err}"
    );
}

#[test]
fn unsigned_patch_is_rejected() {
    let keys = kit::keys();
    let (old, new) = pair();
    let patch = kit::build(&old, &new, &keys.secret, &BuildOptions::default());
    let sections = kit::sections(&patch);
    let unsigned = deltaward_engine::Sections::join(sections.manifest, b"", sections.payloads);
    let err = kit::apply_bytes(&old, &unsigned, &keys.trusted).expect_err("unsigned patch applied");
    assert!(
        matches!(err, Error::Signature(SignatureError::Unsigned)),
        "{err}"
    );
}

#[test]
fn wrong_base_names_expected_and_found() {
    let keys = kit::keys();
    let (old, new) = pair();
    let patch = kit::build(&old, &new, &keys.secret, &BuildOptions::default());
    let mut other = old.clone();
    other[12345] ^= 1;
    let err = kit::apply_bytes(&other, &patch, &keys.trusted).expect_err("wrong base applied");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::SourceMismatch {
                found_hash: Some(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(msg.contains("expected") && msg.contains("found"), "{msg}");
    let err =
        kit::apply_bytes(&old[..1000], &patch, &keys.trusted).expect_err("short base applied");
    assert!(
        matches!(
            err,
            Error::SourceMismatch {
                found_size: 1000,
                found_hash: None,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn absurd_sizes_in_a_signed_manifest_are_refused() {
    let keys = kit::keys();
    let (old, new) = pair();
    let patch = kit::build(&old, &new, &keys.secret, &BuildOptions::default());
    let (_, m) = regions(&patch);

    // An output of 16 EiB of zeros, correctly signed: refused by the size limit.
    let mut huge = m.clone();
    let last = huge.frames.last().expect("frames").clone();
    let mut z = last.clone();
    z.kind = FrameKind::Zero;
    z.target_offset = last.target_offset + last.target_len;
    z.target_len = 1 << 40;
    z.source_offset = 0;
    z.source_len = 0;
    z.payload_offset = 0;
    z.payload_len = 0;
    z.payload_hash = deltaward_engine::format::empty_hash();
    huge.target_size += z.target_len;
    huge.frames.push(z);
    let bad = kit::resign(&patch, &huge, &keys.secret);
    // 1 TiB + a little: above the default limit of 1 TiB... the frame also exceeds
    // the format's frame-length limit, which is checked first.
    let err = kit::apply_bytes(&old, &bad, &keys.trusted).expect_err("absurd size applied");
    assert!(
        matches!(
            err,
            Error::Format(FormatError::LimitExceeded { .. } | FormatError::BadFrame { .. })
        ),
        "{err}"
    );

    // A window beyond the format limit.
    let mut wide = m.clone();
    wide.max_window = u64::MAX / 2;
    let err = kit::apply_bytes(
        &old,
        &kit::resign(&patch, &wide, &keys.secret),
        &keys.trusted,
    )
    .expect_err("absurd window applied");
    assert!(
        matches!(
            err,
            Error::Format(FormatError::LimitExceeded {
                limit: Limit::Window,
                ..
            })
        ),
        "{err}"
    );

    // A legitimate patch whose frames need more memory than the device allows.
    let mut out = Vec::new();
    let err = apply(
        &old.as_slice(),
        &mut patch.as_slice(),
        &mut out,
        &keys.trusted,
        &ApplyOptions::default().memory_limit(1024),
        &|_| {},
    )
    .expect_err("memory limit ignored");
    assert!(matches!(err, Error::MemoryLimit { .. }), "{err}");

    // A target size above the configured limit.
    let err = apply(
        &old.as_slice(),
        &mut patch.as_slice(),
        &mut out,
        &keys.trusted,
        &ApplyOptions::default().max_target_size(1000),
        &|_| {},
    )
    .expect_err("size limit ignored");
    assert!(
        matches!(
            err,
            Error::Format(FormatError::LimitExceeded {
                limit: Limit::TargetSize,
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn manifest_altered_and_resigned_with_another_comment_is_rejected() {
    let keys = kit::keys();
    let (old, new) = pair();
    let patch = kit::build(&old, &new, &keys.secret, &BuildOptions::default());
    let sections = kit::sections(&patch);
    // Sign the same manifest with a trusted comment naming another target.
    let mb = sections.manifest;
    let sig = keys
        .secret
        .sign(
            mb,
            "deltaward-patch v1 role=patch source=00 target=00 size=1",
        )
        .expect("sign");
    let bad = deltaward_engine::Sections::join(mb, sig.as_bytes(), sections.payloads);
    let err = kit::apply_bytes(&old, &bad, &keys.trusted).expect_err("applied");
    assert!(
        matches!(
            err,
            Error::Signature(SignatureError::CommentMismatch { .. })
        ),
        "{err}"
    );
}

#[test]
fn block_sizes_outside_512_bytes_to_1_mib_are_refused() {
    let old = kit::noise(8192, 1);
    for (bs, ok) in [
        (256, false),
        (512, true),
        (1 << 20, true),
        (2 << 20, false),
        (3000, false),
    ] {
        let built =
            deltaward_engine::Patch::build(&old, &old, &BuildOptions::default().block_size(bs));
        assert_eq!(built.is_ok(), ok, "block size {bs}");
        if let Err(e) = built {
            assert!(matches!(e, Error::InvalidOption { .. }), "{e:?}");
        }
    }
}

//! Each refusal of `check_release`, named after the attack it stops, plus the
//! release round trip, minisign interop and the golden notice.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

mod world;

use std::{path::Path, time::Duration};

use deltaward_engine::{generate_keypair, TrustedKeys};
use deltaward_release::{
    check::{check_release, verify_object, Plan},
    model::*,
    notice::{self, Format},
    repo::{write_root, Repo, CHANNEL_VALIDITY},
    trust::{sign_document, RoleName},
    Error, RootRotationError,
};
use deltaward_testkit::cli::{ok, run, s};
use world::*;

#[test]
fn release_from_two_bases_round_trips_each_patch() {
    let w = World::new();
    let r = w.release("2.0", 1).expect("release");
    assert_eq!(r.bases.len(), 2);
    let mut trusted = TrustedKeys::new();
    trusted.add_text(&w.release_key.public).expect("key");
    for b in &r.bases {
        let patch = verify_object(&w.repo, &b.patch).expect("object");
        let out = w.dir.path().join(format!("out-{}.img", b.version));
        deltaward_engine::apply_to_file(
            &w.img(&b.version),
            &patch,
            &out,
            &trusted,
            &Default::default(),
            &|_| {},
        )
        .expect("apply");
        assert_eq!(
            std::fs::read(out).expect("out"),
            std::fs::read(w.img("2.0")).expect("new")
        );
    }
    let checked = w
        .check(&w.state("dev"), &w.device("pump-a1", "1.1"))
        .expect("check");
    assert!(matches!(checked.plan, Plan::Patch(ref b) if b.version == "1.1"));
    // A device on a version without a patch gets the full image, which decompresses to the target.
    let full = w
        .check(&w.state("dev2"), &w.device("pump-a1", "2.1"))
        .expect("check");
    assert_eq!(full.plan, Plan::Full);
    let obj = verify_object(&w.repo, &r.full_image.object).expect("full object");
    let data = zstd::stream::decode_all(std::fs::File::open(obj).expect("open")).expect("decode");
    assert_eq!(data, std::fs::read(w.img("2.0")).expect("new"));
}

#[test]
fn rollback_is_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release 2.0");
    let snapshot = w.dir.path().join("snapshot");
    copy_dir(w.repo.dir(), &snapshot);
    w.release("2.1", 2).expect("release 2.1");
    let state = w.state("dev");
    assert_eq!(
        w.check(&state, &w.device("pump-a1", "1.0"))
            .expect("check")
            .release
            .counter,
        2
    );
    // A hostile mirror serves the older, validly signed repository.
    let err = check_release(
        &Repo::new(&snapshot),
        "pump",
        &state,
        &w.device("pump-a1", "1.0"),
        w.now,
    )
    .expect_err("rollback accepted");
    assert!(matches!(err, Error::Rollback { highest: 2, .. }), "{err}");
    assert!(err.to_string().contains("channel version"), "{err}");
}

#[test]
fn freeze_is_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let later = w.now + CHANNEL_VALIDITY + Duration::from_secs(1);
    let err = check_release(
        &w.repo,
        "pump",
        &w.state("dev"),
        &w.device("pump-a1", "1.0"),
        later,
    )
    .expect_err("frozen accepted");
    assert!(
        matches!(err, Error::Expired { ref file, .. } if file == "channel.json"),
        "{err}"
    );
}

#[test]
fn wrong_hardware_is_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let err = w
        .check(&w.state("dev"), &w.device("ventilator-v9", "1.0"))
        .expect_err("accepted");
    assert!(matches!(err, Error::WrongHardware { .. }), "{err}");
}

#[test]
fn base_mismatch_is_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    // The device says it runs 1.0 but its image is something else.
    let mut d = w.device("pump-a1", "1.0");
    d.image_blake3 = deltaward_engine::Digest([0; 32]);
    let err = w.check(&w.state("dev"), &d).expect_err("accepted");
    assert!(matches!(err, Error::BaseMismatch { .. }), "{err}");
}

#[test]
fn mix_and_match_is_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release 2.0");
    let old_release =
        std::fs::read(w.repo.path("products/pump/releases/2.0/release.json")).expect("read");
    let old_sig = std::fs::read(
        w.repo
            .path("products/pump/releases/2.0/release.json.minisig"),
    )
    .expect("read");
    w.release("2.1", 2).expect("release 2.1");
    // The mirror serves 2.1's channel with 2.0's (validly signed) release in its place.
    std::fs::write(
        w.repo.path("products/pump/releases/2.1/release.json"),
        old_release,
    )
    .expect("write");
    std::fs::write(
        w.repo
            .path("products/pump/releases/2.1/release.json.minisig"),
        old_sig,
    )
    .expect("write");
    let err = w.refused();
    assert!(matches!(err, Error::MixAndMatch { .. }), "{err}");
}

#[test]
fn mix_and_match_of_objects_is_refused() {
    let w = World::new();
    let r = w.release("2.0", 1).expect("release");
    // The object named for base 1.0 is replaced by the one for 1.1.
    let (a, b) = (&r.bases[0].patch, &r.bases[1].patch);
    std::fs::copy(w.repo.path(&b.path), w.repo.path(&a.path)).expect("swap");
    let err = verify_object(&w.repo, a).expect_err("accepted");
    assert!(matches!(err, Error::MixAndMatch { .. }), "{err}");
}

#[test]
fn unknown_key_is_refused() {
    let w = World::new();
    let stranger = key();
    w.release_with("2.0", 1, notes(), &stranger.secret)
        .expect("release");
    let err = w.refused();
    assert!(
        matches!(err, Error::UnknownKey { ref key_id, .. } if *key_id == stranger.id),
        "{err}"
    );
}

#[test]
fn threshold_not_met_is_refused() {
    let w = World::new();
    let second = key();
    // Root 2 requires two release signatures; it is a proper rotation.
    let r2 = root(
        2,
        &[&w.root_key],
        &[&w.release_key, &second],
        2,
        &w.channel_key,
    );
    write_root(&w.repo, &r2, &[&w.root_key.secret]).expect("root 2");
    w.release("2.0", 1).expect("release");
    let err = w.refused();
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
    // Signed by both keys (each counted once), it passes.
    let rel = "products/pump/releases/2.0/release.json";
    let bytes = std::fs::read(w.repo.path(rel)).expect("read");
    let sigs = sign_document(
        &bytes,
        &[&w.release_key.secret, &w.release_key.secret],
        RoleName::Release,
        "release.json",
        1,
    )
    .expect("sign");
    std::fs::write(w.repo.path(&format!("{rel}.minisig")), &sigs).expect("write");
    let err = w
        .check(&w.state("dev"), &w.device("pump-a1", "1.0"))
        .expect_err("one key twice accepted");
    assert!(matches!(err, Error::Threshold { valid: 1, .. }), "{err}");
    let sigs = sign_document(
        &bytes,
        &[&w.release_key.secret, &second.secret],
        RoleName::Release,
        "release.json",
        1,
    )
    .expect("sign");
    std::fs::write(w.repo.path(&format!("{rel}.minisig")), sigs).expect("write");
    w.check(&w.state("dev"), &w.device("pump-a1", "1.0"))
        .expect("two keys accepted");
}

#[test]
fn root_rotation_skipping_a_version_is_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let r3 = root(3, &[&w.root_key], &[&w.release_key], 1, &w.channel_key);
    write_root(&w.repo, &r3, &[&w.root_key.secret]).expect("root 3");
    let err = w.refused();
    assert!(matches!(err, Error::RootRotation(_)), "{err}");
}

#[test]
fn root_rotation_without_old_key_signatures_is_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let new_root_key = key();
    let r2 = root(2, &[&new_root_key], &[&w.release_key], 1, &w.channel_key);
    write_root(&w.repo, &r2, &[&new_root_key.secret]).expect("root 2");
    let err = w.refused();
    assert!(
        matches!(
            err,
            Error::RootRotation(RootRotationError::NotSignedByOld(_))
        ),
        "{err}"
    );
    // Signed by the old and the new root key, the rotation is accepted.
    write_root(&w.repo, &r2, &[&w.root_key.secret, &new_root_key.secret]).expect("root 2");
    let c = w
        .check(&w.state("dev"), &w.device("pump-a1", "1.0"))
        .expect("rotation accepted");
    assert_eq!(c.root_version, 2);
}

#[test]
fn unapproved_release_without_mitigations_is_refused() {
    let w = World::new();
    let mut n = notes();
    n.approval = Approval {
        approved: false,
        mitigations: vec![],
    };
    let err = w
        .release_with("2.0", 1, n.clone(), &w.release_key.secret)
        .expect_err("accepted");
    assert!(
        matches!(
            err,
            deltaward_release::Error::Refused(deltaward_release::RefusedError::NoMitigations)
        ),
        "{err:?}"
    );
    n.approval.mitigations = vec!["Isolate the pump network segment until installed.".into()];
    w.release_with("2.0", 1, n, &w.release_key.secret)
        .expect("with mitigations");
}

#[test]
fn counter_must_go_up() {
    let w = World::new();
    w.release("2.0", 5).expect("release");
    let err = w.release("2.1", 5).expect_err("accepted");
    assert!(
        matches!(
            err,
            deltaward_release::Error::Refused(
                deltaward_release::RefusedError::CounterNotAbove { .. }
            )
        ),
        "{err:?}"
    );
}

#[test]
fn reference_minisign_verifies_release_json() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    let pubfile = w.dir.path().join("release.pub");
    std::fs::write(&pubfile, &w.release_key.public).expect("write");
    let rel = w.repo.path("products/pump/releases/2.0/release.json");
    let stdout = ok(&run("minisign", &["-V", "-p", s(&pubfile), "-m", s(&rel)]));
    assert!(
        stdout.contains("role=release file=release.json version=1"),
        "{stdout}"
    );
}

#[test]
fn golden_notice() {
    let w = World::new();
    let mut r = w.release("2.0", 7).expect("release");
    // Pin the parts that vary from run to run.
    r.target.blake3 = deltaward_engine::Digest([0xb3; 32]);
    r.target.sha256 = deltaward_engine::Digest([0x5a; 32]);
    r.target.length = 262_144;
    for (fmt, name) in [
        (Format::Text, "notice.txt"),
        (Format::Markdown, "notice.md"),
        (Format::Html, "notice.html"),
    ] {
        let got = notice::render(&r, fmt);
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("DELTAWARD_BLESS").is_some() {
            std::fs::write(&path, &got).expect("bless");
        }
        let want = std::fs::read_to_string(&path).expect("golden file");
        assert_eq!(
            got, want,
            "{name} changed; bless with DELTAWARD_BLESS=1 if intended"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&notice::render(&r, Format::Json)).expect("json");
    assert_eq!(json["security_fixes"][0]["id"], "CVE-2026-0001");
}

#[test]
fn legacy_signature_is_refused() {
    let w = World::new();
    w.release("2.0", 1).expect("release");
    // Re-sign release.json with minisign's legacy (non-prehashed) mode and the right comment.
    let keyfile = w.dir.path().join("release.key");
    let rel = w.repo.path("products/pump/releases/2.0/release.json");
    let sig = w.dir.path().join("legacy.minisig");
    // The World's key text is not kept; make a fresh release key trusted by a new root.
    let kp = generate_keypair(None).expect("keygen");
    std::fs::write(&keyfile, &kp.secret).expect("write");
    ok(&run(
        "minisign",
        &[
            "-S",
            "-l",
            "-s",
            s(&keyfile),
            "-m",
            s(&rel),
            "-x",
            s(&sig),
            "-t",
            "deltaward role=release file=release.json version=1",
        ],
    ));
    let b64 = kp.public.lines().nth(1).expect("line").to_owned();
    let mut r = root(1, &[&w.root_key], &[&w.release_key], 1, &w.channel_key);
    r.keys.insert(kp.key_id.clone(), b64);
    r.roles.release.keyids = vec![kp.key_id.clone()];
    let bytes = std::fs::read(&rel).expect("read");
    let err = deltaward_release::trust::verify_document(
        &r,
        RoleName::Release,
        "release.json",
        1,
        &bytes,
        &std::fs::read_to_string(&sig).expect("sig"),
    )
    .expect_err("legacy signature accepted");
    assert!(
        matches!(
            err,
            Error::Signature {
                source: deltaward_engine::SignatureError::Legacy,
                ..
            }
        ),
        "{err}"
    );
}

/// Every field of a serialized release.json is in docs/release.schema.json, and every
/// field the schema requires is written, at every level.
#[test]
fn schema_matches_release_json() {
    fn walk(
        value: &serde_json::Value,
        schema: &serde_json::Value,
        defs: &serde_json::Value,
        at: &str,
    ) {
        let schema = match schema.get("$ref").and_then(|r| r.as_str()) {
            Some(r) => &defs[r.trim_start_matches("#/$defs/")],
            None => schema,
        };
        match value {
            serde_json::Value::Object(map) => {
                let props = schema["properties"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{at}: schema has no properties"));
                for (k, v) in map {
                    let sub = props
                        .get(k)
                        .unwrap_or_else(|| panic!("{at}.{k} is not in the schema"));
                    walk(v, sub, defs, &format!("{at}.{k}"));
                }
                for r in schema["required"].as_array().into_iter().flatten() {
                    let r = r.as_str().expect("required name");
                    assert!(
                        map.contains_key(r),
                        "{at}.{r} is required by the schema but not written"
                    );
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &schema["items"], defs, &format!("{at}[{i}]"));
                }
            }
            _ => {}
        }
    }
    let w = World::new();
    let r = w.release("2.0", 1).expect("release");
    let value = serde_json::to_value(&r).expect("json");
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/release.schema.json");
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(schema_path).expect("schema")).expect("schema json");
    walk(&value, &schema, &schema["$defs"], "release");
}

//! The fuzz targets' seed corpora, `fuzz/corpus/<target>/`, derived from the test
//! vectors so that each target starts from inputs that reach its code:
//!
//! - `bsdiff_decode`, `zstd_decode`: the first frame of each of their kinds in
//!   `patch.dwp` (bsdiff, zstd) and `runs.dwp` (bsdiff-runs), as
//!   `[target_len: u32][source_len: u32][flags: u8][window][payload]`
//!   (`fuzz/fuzz_targets/frame_input.rs`), the window cut from `old.bin`;
//! - `parse_manifest`: each distinct manifest among the format cases;
//! - `apply_patch`: every format case (`engine/tests/vectors/cases/`);
//! - `transform_learn`: the kernel-module images `modules-old.bin` and
//!   `modules-new.bin`, and the program images `programs-old.bin` and
//!   `programs-new.bin`, each pair as `[old_len: u32][old][new]`.
//!
//! Every fuzz target has a corpus directory, and each seed there is what the
//! vectors give today (other files, such as inputs that once crashed, may sit
//! beside them). Regenerate after blessing new vectors with
//! `DELTAWARD_BLESS=1 cargo test -p deltaward-engine --test fuzz_seeds`.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use deltaward_testkit as kit;

use deltaward_engine::{FrameKind, Sections};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

fn vectors() -> PathBuf {
    root().join("engine/tests/vectors")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fuzz targets registered in `fuzz/Cargo.toml`.
fn targets() -> Vec<String> {
    let manifest = String::from_utf8(read(&root().join("fuzz/Cargo.toml"))).expect("utf8");
    let mut in_bin = false;
    let mut out = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(name) = line.strip_prefix("name = ").filter(|_| in_bin) {
            out.push(name.trim_matches('"').to_owned());
        }
    }
    out
}

/// Every seed, by target and file name.
fn seeds() -> BTreeMap<(&'static str, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    let old = read(&vectors().join("old.bin"));
    let mut seeded = Vec::new();
    for (file, prefix) in [("patch.dwp", ""), ("runs.dwp", "runs-")] {
        let patch = read(&vectors().join(file));
        let s = kit::sections(&patch);
        let m = kit::manifest(&patch);
        for (i, f) in m.frames.iter().enumerate() {
            let target = match f.kind {
                FrameKind::Bsdiff | FrameKind::BsdiffRuns => "bsdiff_decode",
                FrameKind::Zstd => "zstd_decode",
                FrameKind::Copy | FrameKind::Zero => continue,
            };
            if seeded.contains(&f.kind) {
                continue; // one frame of each kind: the windows are 64 KiB
            }
            seeded.push(f.kind);
            let mut seed = Vec::new();
            seed.extend_from_slice(&(f.target_len as u32).to_le_bytes());
            seed.extend_from_slice(&(f.source_len as u32).to_le_bytes());
            seed.push(0);
            seed.extend_from_slice(&old[f.source_offset as usize..][..f.source_len as usize]);
            seed.extend_from_slice(
                &s.payloads[f.payload_offset as usize..][..f.payload_len as usize],
            );
            out.insert((target, format!("{prefix}frame-{i}")), seed);
        }
    }
    for name in ["modules", "programs"] {
        let (old, new) = (
            read(&vectors().join(format!("{name}-old.bin"))),
            read(&vectors().join(format!("{name}-new.bin"))),
        );
        let mut pair = (old.len() as u32).to_le_bytes().to_vec();
        pair.extend_from_slice(&old);
        pair.extend_from_slice(&new);
        out.insert(("transform_learn", name.to_owned()), pair);
    }
    let cases = String::from_utf8(read(&vectors().join("cases.txt"))).expect("utf8");
    let mut manifests = Vec::new();
    for name in cases
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
    {
        let bytes = read(&vectors().join(format!("cases/{name}.dwp")));
        if let Ok(sec) = Sections::split(&bytes) {
            let manifest = sec.manifest.to_vec();
            if !manifests.contains(&manifest) {
                out.insert(("parse_manifest", name.to_owned()), manifest.clone());
                manifests.push(manifest);
            }
        }
        out.insert(("apply_patch", format!("{name}.dwp")), bytes);
    }
    out
}

#[test]
fn every_fuzz_target_has_current_seeds() {
    let corpus = root().join("fuzz/corpus");
    let seeds = seeds();
    if std::env::var_os("DELTAWARD_BLESS").is_some() {
        for ((target, name), bytes) in &seeds {
            std::fs::create_dir_all(corpus.join(target)).expect("mkdir");
            std::fs::write(corpus.join(target).join(name), bytes).expect("write seed");
        }
    }
    let targets = targets();
    assert!(targets.len() >= 4, "fuzz targets: {targets:?}");
    // The engine's targets get their seeds from here; the release crate's targets
    // have seeds made with the CLI (fuzz/fixtures/README.md). Every target has some.
    for target in &targets {
        let derived = seeds.keys().any(|(t, _)| t == target);
        let stored = std::fs::read_dir(corpus.join(target)).map_or(0, |d| d.count());
        assert!(
            derived || stored > 0,
            "fuzz target {target} has no seeds in fuzz/corpus/{target}"
        );
    }
    let mut problems = Vec::new();
    for ((target, name), bytes) in &seeds {
        let path = corpus.join(target).join(name);
        match std::fs::read(&path) {
            Ok(stored) if stored == *bytes => {}
            Ok(_) => problems.push(format!("{target}/{name} differs")),
            Err(e) => problems.push(format!("{target}/{name}: {e}")),
        }
    }
    assert!(
        problems.is_empty(),
        "fuzz seeds are not current (bless with DELTAWARD_BLESS=1):\n{}",
        problems.join("\n")
    );
}

//! The source transform on images of synthetic kernel modules: a new kernel build
//! renumbers every module's BTF references to it and changes symbol CRCs; the
//! transform learns both from the images, the patch carries it, and the applier
//! rebuilds the new image exactly.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

use deltaward_engine::{
    BuildOptions, Error, ErrorClass, Image, Level, Patch, RegionKind, SourceTransform,
};
use deltaward_testkit::{
    self as kit,
    modules::{module_image, NEW_KERNEL, OLD_KERNEL},
    programs::{program_for, Machine},
};

const MODULES: u64 = 12;
const RECORDS: u32 = 1500;

fn old_crc(s: u32) -> u32 {
    s.wrapping_mul(2_654_435_761)
}

fn new_crc(s: u32) -> u32 {
    if s.is_multiple_of(2) {
        old_crc(s) ^ 0x5a5a_0f0f
    } else {
        old_crc(s)
    }
}

/// Old and new images: the new kernel renumbers BTF, half the CRCs change, every
/// module's code changes, and module 0's own types are reordered.
fn images() -> (Vec<u8>, Vec<u8>) {
    let old = module_image(&OLD_KERNEL, MODULES, RECORDS, old_crc, false, false);
    let new = module_image(&NEW_KERNEL, MODULES, RECORDS, new_crc, true, true);
    (old, new)
}

/// How many of the transform's regions are of the kind `is` accepts.
fn regions(t: &SourceTransform, is: impl Fn(&RegionKind) -> bool) -> usize {
    t.regions.iter().filter(|(_, k)| is(k)).count()
}

fn transform(patch: &[u8]) -> SourceTransform {
    kit::manifest(patch)
        .transform
        .expect("the patch carries a transform")
}

#[test]
fn renumbered_modules_cost_little_and_apply_exactly() {
    let keys = kit::keys();
    let (old, new) = images();
    let with = kit::build(&old, &new, &keys.secret, &BuildOptions::default());
    let without = kit::build(
        &old,
        &new,
        &keys.secret,
        &BuildOptions::default().transform(false),
    );
    assert!(kit::manifest(&without).transform.is_none());
    let t = transform(&with);
    let btf = regions(&t, |k| matches!(k, RegionKind::Btf { .. }));
    let versions = regions(&t, |k| *k == RegionKind::ModVersions);
    assert_eq!((btf, versions), (MODULES as usize, MODULES as usize));
    // The maps say what the new kernel did: kernel types from 400 up moved by 3,
    // module types (from 1000) by 3, kernel strings from 5000 up and module strings
    // (from 20000) by 10.
    assert_eq!(t.types.map(399), 399);
    assert_eq!(t.types.map(1200), 1203);
    assert_eq!(t.strings.map(20_001), 20_011);
    assert_eq!(t.crcs.map(old_crc(2)), new_crc(2));
    assert_eq!(t.crcs.map(old_crc(3)), old_crc(3));
    // Module 0's reordered types got a map of their own, and only module 0.
    let local: Vec<bool> = t
        .regions
        .iter()
        .filter_map(|(_, k)| match k {
            RegionKind::Btf { types, .. } => Some(!types.entries().is_empty()),
            _ => None,
        })
        .collect();
    assert!(local[0], "module 0 has its own type map");
    assert!(local[1..].iter().all(|&l| !l), "{local:?}");
    assert!(
        with.len() * 3 < without.len(),
        "with the transform {} bytes, without {}",
        with.len(),
        without.len()
    );
    for patch in [&with, &without] {
        assert_eq!(
            kit::apply_bytes(&old, patch, &keys.trusted).expect("apply"),
            new
        );
    }
}

#[test]
fn every_level_applies_and_file_and_memory_builds_agree() {
    let keys = kit::keys();
    let (old, new) = images();
    let dir = tempfile::tempdir().expect("tempdir");
    let (old_path, new_path) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::write(&old_path, &old).expect("write");
    std::fs::write(&new_path, &new).expect("write");
    let (old_img, new_img) = (
        Image::open(&old_path).expect("map"),
        Image::open(&new_path).expect("map"),
    );
    for level in [Level::Fast, Level::Default, Level::Best] {
        let opts = BuildOptions::default().level(level);
        // From memory the diff sees the old image through per-window copies; from
        // files, through a private map of the old file. The patches are the same.
        let memory = Patch::build(&old, &new, &opts).expect("build");
        let files = Patch::build_images(&old_img, &new_img, &opts, &|_| {}).expect("build");
        assert_eq!(memory.manifest(), files.manifest(), "{level:?}");
        // Neither depends on the threads, nor on how many frames encode at once
        // (one permit, so every frame reuses one encoder's buffers).
        for (threads, memory_limit) in [(1, 2 << 30), (4, 1)] {
            let opts = BuildOptions::default()
                .level(level)
                .memory_limit(memory_limit);
            let (m, f) = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool")
                .install(|| {
                    (
                        Patch::build(&old, &new, &opts),
                        Patch::build_images(&old_img, &new_img, &opts, &|_| {}),
                    )
                });
            let what = format!("{level:?}, {threads} threads, memory {memory_limit}");
            assert_eq!(m.expect("build").manifest(), memory.manifest(), "{what}");
            assert_eq!(f.expect("build").manifest(), memory.manifest(), "{what}");
        }
        let mut bytes = Vec::new();
        files
            .sign(&keys.secret)
            .expect("sign")
            .write_to(&mut bytes)
            .expect("write");
        assert!(kit::manifest(&bytes).transform.is_some());
        assert_eq!(
            kit::apply_bytes(&old, &bytes, &keys.trusted).expect("apply"),
            new
        );
    }
}

#[test]
fn modules_at_unaligned_offsets_are_found() {
    // The new image shifted by 123 bytes: no module starts on a 512-byte boundary.
    let keys = kit::keys();
    let (old, new) = images();
    let mut shifted = kit::noise(123, 9);
    shifted.extend_from_slice(&new);
    let patch = kit::build(&old, &shifted, &keys.secret, &BuildOptions::default());
    let t = transform(&patch);
    assert_eq!(t.regions.len(), 2 * MODULES as usize);
    assert_eq!(
        kit::apply_bytes(&old, &patch, &keys.trusted).expect("apply"),
        shifted
    );
}

#[test]
fn a_transform_region_that_is_not_btf_is_refused() {
    let keys = kit::keys();
    let (old, new) = images();
    let patch = kit::build(&old, &new, &keys.secret, &BuildOptions::default());
    let mut m = kit::manifest(&patch);
    let window = m
        .frames
        .iter()
        .find(|f| f.kind.has_payload() && f.source_len > 0)
        .map(|f| f.source_offset)
        .expect("a delta frame with a window");
    // The first 64 bytes of that window are filler, not BTF.
    let t = m.transform.as_mut().expect("transform");
    t.regions = vec![(window..window + 64, RegionKind::btf())];
    let bad = kit::resign(&patch, &m, &keys.secret);
    let err = kit::apply_bytes(&old, &bad, &keys.trusted).expect_err("refused");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Corrupt);
}

#[test]
fn images_without_modules_get_no_transform() {
    let keys = kit::keys();
    let old = kit::noise(1 << 20, 5);
    let mut new = old.clone();
    new[1000..1100].fill(7);
    let patch = kit::build(&old, &new, &keys.secret, &BuildOptions::default());
    assert!(kit::manifest(&patch).transform.is_none());
    // Modules in the old image only: nothing to learn from.
    let (with_modules, _) = images();
    let patch = kit::build(&with_modules, &new, &keys.secret, &BuildOptions::default());
    assert!(kit::manifest(&patch).transform.is_none());
}

/// A program of 3,000 functions for `m`, and its new build in which every 40th
/// function grew, each inside an image at an unaligned offset that the new image
/// moves.
fn programs(m: Machine) -> (Vec<u8>, Vec<u8>) {
    let old = program_for(m, 11, 3000, &|_| 0);
    let new = program_for(m, 11, 3000, &|i| if i % 40 == 7 { 1 + i % 29 } else { 0 });
    let around = kit::noise(9000, 5);
    let old_img = [&around[..3001], &old, &around[3001..]].concat();
    let new_img = [&around[..3517], &new, &around[3001..]].concat();
    (old_img, new_img)
}

/// `fast` learns no address maps: on qemu-x86 they took 40 % of its CPU time.
/// It still applies exactly, and the same program at the default level does get
/// its map (the test below).
#[test]
fn the_fast_level_learns_no_programs_address_maps() {
    let keys = kit::keys();
    for m in [Machine::X86_64, Machine::Aarch64] {
        let (old, new) = programs(m);
        let patch = kit::build(
            &old,
            &new,
            &keys.secret,
            &BuildOptions::default().level(Level::Fast),
        );
        assert!(kit::manifest(&patch).transform.is_none(), "{m:?}");
        assert_eq!(
            kit::apply_bytes(&old, &patch, &keys.trusted).expect("applies"),
            new,
            "{m:?}"
        );
    }
}

#[test]
fn a_program_whose_code_moved_costs_little_and_applies_exactly() {
    let keys = kit::keys();
    for (m, level) in [Machine::X86_64, Machine::Aarch64]
        .into_iter()
        .flat_map(|m| [Level::Default, Level::Best].map(|l| (m, l)))
    {
        let (old, new) = programs(m);
        let opts = BuildOptions::default().level(level);
        let with = kit::build(&old, &new, &keys.secret, &opts);
        let without = kit::build(&old, &new, &keys.secret, &opts.clone().transform(false));
        let t = transform(&with);
        assert_eq!(t.spaces.len(), 1, "{m:?} {level:?}");
        let code = regions(&t, |k| match m {
            Machine::X86_64 => matches!(k, RegionKind::X86Code { .. }),
            Machine::Aarch64 => matches!(k, RegionKind::Arm64Code { .. }),
        });
        let rela = regions(&t, |k| matches!(k, RegionKind::Rela { .. }));
        let pointers = regions(&t, |k| matches!(k, RegionKind::Pointers { .. }));
        assert_eq!((code, rela, pointers), (1, 1, 1), "{m:?} {level:?}");
        // Measured, with / without the transform: x86-64 3,417 / 38,534 bytes at
        // default, 3,375 / 38,121 at best; AArch64 6,370 / 37,116 and 6,413 /
        // 37,344.
        assert!(
            (with.len() as f64) < without.len() as f64 * 0.25,
            "{m:?} {level:?}: {} bytes with the transform, {} without",
            with.len(),
            without.len()
        );
        assert_eq!(
            kit::apply_bytes(&old, &with, &keys.trusted).expect("applies"),
            new,
            "{m:?} {level:?}"
        );
    }
}

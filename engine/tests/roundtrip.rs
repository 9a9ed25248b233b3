//! apply(build(old, new)) == new, on generated pairs.

use deltaward_testkit as kit;

use deltaward_engine::{BuildOptions, Level};
use proptest::prelude::*;

/// An edit applied to the old image to make the new one.
#[derive(Debug, Clone)]
enum Edit {
    Insert { at: usize, len: usize, seed: u64 },
    Delete { at: usize, len: usize },
    Move { from: usize, len: usize, to: usize },
    Zero { at: usize, len: usize },
    Random { at: usize, len: usize, seed: u64 },
    FlipByte { at: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..20_000usize, any::<u64>()).prop_map(|(at, len, seed)| Edit::Insert {
            at,
            len,
            seed
        }),
        (any::<usize>(), 1..20_000usize).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), 1..40_000usize, any::<usize>()).prop_map(|(from, len, to)| Edit::Move {
            from,
            len,
            to
        }),
        (any::<usize>(), 1..30_000usize).prop_map(|(at, len)| Edit::Zero { at, len }),
        (any::<usize>(), 1..10_000usize, any::<u64>()).prop_map(|(at, len, seed)| Edit::Random {
            at,
            len,
            seed
        }),
        any::<usize>().prop_map(|at| Edit::FlipByte { at }),
    ]
}

fn apply_edit(data: &mut Vec<u8>, e: &Edit) {
    let n = data.len();
    match *e {
        Edit::Insert { at, len, seed } => {
            let at = if n == 0 { 0 } else { at % (n + 1) };
            let ins = kit::noise(len, seed);
            data.splice(at..at, ins);
        }
        Edit::Delete { at, len } if n > 0 => {
            let at = at % n;
            let end = (at + len).min(n);
            data.drain(at..end);
        }
        Edit::Move { from, len, to } if n > 0 => {
            let from = from % n;
            let end = (from + len).min(n);
            let chunk: Vec<u8> = data.drain(from..end).collect();
            let to = to % (data.len() + 1);
            data.splice(to..to, chunk);
        }
        Edit::Zero { at, len } if n > 0 => {
            let at = at % n;
            let end = (at + len).min(n);
            data[at..end].fill(0);
        }
        Edit::Random { at, len, seed } if n > 0 => {
            let at = at % n;
            let end = (at + len).min(n);
            let r = kit::noise(end - at, seed);
            data[at..end].copy_from_slice(&r);
        }
        Edit::FlipByte { at } if n > 0 => data[at % n] ^= 0x5a,
        _ => {}
    }
}

/// Old images: code-like text with structure, zero runs, and random data.
fn old_image() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        (1..4096usize, any::<u64>()).prop_map(|(n, s)| kit::noise(n, s)),
        (1..300_000usize, any::<u64>()).prop_map(|(n, s)| {
            let mut v = kit::noise(n, s);
            // Structure: repeated records and a zero run, like a file system.
            for (i, chunk) in v.chunks_mut(512).enumerate() {
                if i % 3 == 0 {
                    chunk.fill((i % 7) as u8);
                }
            }
            let z = n / 4;
            v[z..z + n / 8].fill(0);
            v
        }),
    ]
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![Just(Level::Fast), Just(Level::Default), Just(Level::Best)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn apply_of_build_is_new(old in old_image(), edits in prop::collection::vec(edit(), 0..6), level in level(), small_blocks in any::<bool>()) {
        let keys = kit::keys();
        let mut new = old.clone();
        for e in &edits {
            apply_edit(&mut new, e);
        }
        let mut opts = BuildOptions::default().level(level).frame_len(64 << 10);
        if small_blocks {
            opts = opts.block_size(512);
        }
        let patch = kit::build(&old, &new, &keys.secret, &opts);
        let out = kit::apply_bytes(&old, &patch, &keys.trusted).expect("apply");
        prop_assert_eq!(out, new);
    }
}

#[test]
fn identical_images_need_no_payload() {
    let keys = kit::keys();
    let old = kit::noise(1 << 20, 5);
    let patch =
        deltaward_engine::Patch::build(&old, &old, &BuildOptions::default()).expect("build");
    assert_eq!(patch.manifest().payload_len, 0);
    assert!(patch
        .manifest()
        .frames
        .iter()
        .all(|f| f.kind == deltaward_engine::FrameKind::Copy));
    let bytes = kit::build(&old, &old, &keys.secret, &BuildOptions::default());
    assert_eq!(
        kit::apply_bytes(&old, &bytes, &keys.trusted).expect("apply"),
        old
    );
}

#[test]
fn shifted_data_is_found_across_block_boundaries() {
    // 2 MiB of noise shifted by 1000 bytes: no block matches, the anchors must find it.
    let keys = kit::keys();
    let old = kit::noise(2 << 20, 9);
    let mut new = vec![0xEEu8; 1000];
    new.extend_from_slice(&old);
    let bytes = kit::build(
        &old,
        &new,
        &keys.secret,
        &BuildOptions::default().level(Level::Fast),
    );
    assert!(
        bytes.len() < 64 << 10,
        "shifted copy cost {} bytes",
        bytes.len()
    );
    assert_eq!(
        kit::apply_bytes(&old, &bytes, &keys.trusted).expect("apply"),
        new
    );
}

/// The patch is the same whatever the number of threads, and whatever number of
/// frames the memory limit lets encode at once (frames wait for a permit, not for
/// a batch).
#[test]
fn patch_is_the_same_whatever_the_threads_and_memory_limit() {
    let old = kit::text(b"deltaward frames ", 3 << 20, 4099);
    let mut new = old.clone();
    for (k, at) in (0..new.len()).step_by(200_003).enumerate() {
        let noise = kit::noise(3000, k as u64);
        let end = (at + noise.len()).min(new.len());
        new[at..end].copy_from_slice(&noise[..end - at]);
    }
    for level in [Level::Fast, Level::Default, Level::Best] {
        let build = |threads: usize, memory: Option<u64>| {
            let mut opts = BuildOptions::default().level(level).frame_len(128 << 10);
            if let Some(m) = memory {
                opts = opts.memory_limit(m);
            }
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool")
                .install(|| deltaward_engine::Patch::build(&old, &new, &opts))
                .expect("build")
        };
        let one = build(1, None);
        let delta = one
            .manifest()
            .frames
            .iter()
            .filter(|f| f.kind.has_payload())
            .count();
        assert!(delta >= 8, "{level:?}: {delta} delta frames");
        for (threads, memory) in [(4, None), (4, Some(1)), (3, Some(1 << 20))] {
            assert_eq!(
                build(threads, memory).manifest(),
                one.manifest(),
                "{level:?} with {threads} threads and memory limit {memory:?}"
            );
        }
    }
}

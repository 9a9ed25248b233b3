//! Issue 7, apply defect 5: what apply allocates stays within what the manifest
//! declares (`apply_memory` plus the manifest itself), whatever the order of large
//! and small frames. Allocations are counted by a global allocator, so this is a
//! deterministic count, not a timing; it lives alone in its own test binary so no
//! other test's allocations are counted.
#![allow(unsafe_code)] // reason: a counting GlobalAlloc must implement an unsafe trait
#![allow(clippy::disallowed_methods)] // reason: the test writes its fixtures directly

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

use deltaward_engine::{
    apply, apply_to_file, format::manifest_memory, ApplyOptions, BuildOptions, FrameKind,
};
use deltaward_testkit as kit;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters
// are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What the applier may use besides the frames and the manifest, as documented.
const SLACK: usize = deltaward_engine::format::APPLY_OVERHEAD as usize;

#[test]
fn apply_allocates_within_the_declared_memory() {
    // Frame shapes that peak in different places: a bsdiff frame with a wide window
    // and a small payload (changed table-like data), then a zstd frame with no window
    // and a payload as large as its output (fresh noise).
    let keys = kit::keys();
    let old_table = kit::table(1 << 18, 0);
    let mut old = old_table.clone();
    old.extend(kit::noise(1 << 20, 1));
    let mut new = kit::table(1 << 18, 0x40);
    new.extend(kit::noise(1 << 20, 2));
    let patch = kit::build(
        &old,
        &new,
        &keys.secret,
        &BuildOptions::default().frame_len(1 << 20),
    );
    let m = kit::manifest(&patch);
    let kinds: Vec<_> = m.frames.iter().map(|f| f.kind).collect();
    assert!(
        kinds.contains(&FrameKind::BsdiffRuns) && kinds.contains(&FrameKind::Zstd),
        "{kinds:?}"
    );
    let declared = m.apply_memory() + manifest_memory(kit::sections(&patch).header.manifest_len);
    // The applier before the fix kept one buffer each for windows, payloads and
    // outputs, growing to their separate maxima, and allocated the bsdiff streams
    // anew: this patch must be one where that exceeds what it declares.
    let max = |f: fn(&deltaward_engine::Frame) -> u64| m.frames.iter().map(f).max().unwrap_or(0);
    let unshrunk = max(|f| f.source_len)
        + max(|f| f.payload_len)
        + max(|f| f.target_len)
        + max(|f| {
            if matches!(f.kind, FrameKind::Bsdiff | FrameKind::BsdiffRuns) {
                deltaward_engine::format::bsdiff_max_decoded_len(f.target_len)
            } else {
                0
            }
        });
    assert!(
        unshrunk > declared + SLACK as u64,
        "the frames do not exercise the bound: {unshrunk} vs {declared}"
    );
    let mut out = Vec::with_capacity(new.len());
    let before = CURRENT.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    apply(
        &old.as_slice(),
        &mut patch.as_slice(),
        &mut out,
        &keys.trusted,
        &ApplyOptions::default(),
        &|_| {},
    )
    .expect("apply");
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert_eq!(out, new);
    assert!(
        peak <= declared as usize + SLACK,
        "apply allocated {peak} bytes at its peak; the patch declares {declared}"
    );
    drop(out);

    // The same through files, where the defect was measured: the partial file, its
    // checkpoints and the final re-read from disk add no buffers of their own.
    let dir = tempfile::tempdir().expect("tempdir");
    let (old_path, patch_path) = (dir.path().join("old.img"), dir.path().join("p.dwp"));
    std::fs::write(&old_path, &old).expect("old");
    std::fs::write(&patch_path, &patch).expect("patch");
    let out_path = dir.path().join("new.img");
    let opts = ApplyOptions::default().checkpoint_bytes(64 << 10);
    let before = CURRENT.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    apply_to_file(
        &old_path,
        &patch_path,
        &out_path,
        &keys.trusted,
        &opts,
        &|_| {},
    )
    .expect("apply to file");
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert_eq!(std::fs::read(&out_path).expect("out"), new);
    assert!(
        peak <= declared as usize + SLACK,
        "apply_to_file allocated {peak} bytes at its peak; the patch declares {declared}"
    );
}

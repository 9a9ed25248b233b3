//! Any bytes given to apply as a patch: never a panic, and never an output unless
//! the patch is exactly a validly signed one (which random input cannot be). Seeds:
//! the format cases of engine/tests/vectors, several of them signed by the vector
//! key, so that mutations get past the signature and reach the frame decoders.
#![no_main]

use std::sync::OnceLock;

use deltaward_engine::{apply, ApplyOptions, TrustedKeys};
use libfuzzer_sys::fuzz_target;

/// The public key that signed the vector patch and the re-signed format cases.
const VECTOR_KEY: &str = include_str!("../../engine/tests/vectors/key.pub");
const OLD: &[u8] = include_bytes!("../../engine/tests/vectors/old.bin");
const NEW: &[u8] = include_bytes!("../../engine/tests/vectors/new.bin");
const MODULES_OLD: &[u8] = include_bytes!("../../engine/tests/vectors/modules-old.bin");
const MODULES_NEW: &[u8] = include_bytes!("../../engine/tests/vectors/modules-new.bin");

fn keys() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut k = TrustedKeys::new();
        k.add_text(VECTOR_KEY).expect("vector key");
        k
    })
}

fuzz_target!(|data: &[u8]| {
    // The vector images, and the kernel-module images whose patch has a source
    // transform.
    for (old, new) in [(OLD, NEW), (MODULES_OLD, MODULES_NEW)] {
        let mut out = Vec::new();
        let opts = ApplyOptions::default().memory_limit(64 << 20);
        if apply(&old, &mut &data[..], &mut out, keys(), &opts, &|_| {}).is_ok() {
            // Only the genuine patch can get through every check.
            assert_eq!(
                out, new,
                "a patch was accepted but produced the wrong image"
            );
        }
    }
});

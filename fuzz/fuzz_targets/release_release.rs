//! release.json: parsing never panics and what parses re-serialises to an equal document;
//! with signatures (document NUL signatures) it verifies under the trusted root only
//! when the reference verifier finds the threshold of distinct keys (one key under
//! two ids counts once).
#![no_main]

#[path = "common/release.rs"]
mod common;

use deltaward_release::{
    model::Release,
    trust::{verify_document, RoleName},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (doc, sigs) = common::split(data);
    let Ok(parsed) = Release::from_json(doc) else {
        return;
    };
    let again = serde_json::to_vec(&parsed).expect("serialise");
    let back: Release = serde_json::from_slice(&again).expect("re-parse");
    assert_eq!(back, parsed);
    let Some(sigs) = sigs else { return };
    let root = common::trusted();
    let version = parsed.counter;
    if verify_document(&root, RoleName::Release, "release.json", version, doc, sigs).is_ok() {
        let n =
            common::reference_signers(&root, RoleName::Release, "release.json", version, doc, sigs);
        assert!(n >= 2, "accepted with {n} signer(s)");
    }
});

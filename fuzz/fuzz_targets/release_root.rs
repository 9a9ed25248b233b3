//! root.json: parsing never panics and what parses re-serialises to an equal root;
//! a rotation (document NUL signatures) is accepted only when the reference verifier
//! finds the threshold of distinct keys of the trusted root and of the new root.
#![no_main]

#[path = "common/release.rs"]
mod common;

use deltaward_release::{
    model::Root,
    trust::{verify_rotation, RoleName},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (doc, sigs) = common::split(data);
    if let Ok(root) = Root::from_json(doc) {
        let again = serde_json::to_vec(&root).expect("serialise");
        let back: Root = serde_json::from_slice(&again).expect("re-parse");
        assert_eq!(back, root);
    }
    let Some(sigs) = sigs else { return };
    let trusted = common::trusted();
    if let Ok(next) = verify_rotation(&trusted, doc, sigs) {
        assert_eq!(next.version, 2);
        for root in [&trusted, &next] {
            let n = common::reference_signers(root, RoleName::Root, "root.json", 2, doc, sigs);
            assert!(
                n >= root.roles.root.threshold as usize,
                "accepted with {n} signer(s)"
            );
        }
    }
});

//! Manifest and header parsing: never a panic; whatever parses re-encodes to the
//! same bytes (parse and encode are a bijection; for a manifest with a source
//! transform, whose zstd frame a writer may compress its own way, it re-encodes to
//! bytes that parse to the same manifest), and its working memory is computable.
//! Seeds: the manifests of the format cases.
#![no_main]

use deltaward_engine::format::{Header, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::parse(data) {
        assert_eq!(
            Header::parse(&h.to_bytes()),
            Ok(h),
            "a parsed header does not re-parse"
        );
    }
    if let Ok(m) = Manifest::parse(data) {
        if m.transform.is_none() {
            assert_eq!(m.to_bytes(), data, "parse/encode is not a bijection");
        } else {
            assert_eq!(
                Manifest::parse(&m.to_bytes()).as_ref(),
                Ok(&m),
                "a manifest with a transform does not round-trip"
            );
        }
        let _ = m.apply_memory();
    }
});

//! Manifest parsing: never a panic; whatever parses re-encodes to the same bytes.
#![no_main]

use deltaward_engine::format::{Header, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data);
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(m.to_bytes(), data, "parse/encode is not a bijection");
        let _ = m.apply_memory();
    }
});

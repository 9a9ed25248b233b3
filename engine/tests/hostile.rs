//! Regression tests for the hostile-input defects of issue 7 that concern what the
//! applier reads (each named after its defect).

use std::io::Read;

use deltaward_engine::{verify_patch, ApplyOptions, BuildOptions, Error, FileSource, FormatError};
use deltaward_testkit as kit;

/// Defect 4: trailing bytes are unsigned and may be endless; verify counts them up
/// to a bound and never stores them.
#[test]
fn verify_does_not_read_endless_trailing_bytes_into_memory() {
    let keys = kit::keys();
    let old = kit::noise(256 << 10, 1);
    let mut new = old.clone();
    new[1000..1100].fill(9);
    let patch = kit::build(&old, &new, &keys.secret, &BuildOptions::default());
    let mut endless = patch.as_slice().chain(std::io::repeat(0));
    let err =
        verify_patch::<FileSource, _>(&mut endless, &keys.trusted, None, &ApplyOptions::default())
            .expect_err("trailing bytes accepted");
    assert!(
        matches!(err, Error::Format(FormatError::TrailingBytes { extra }) if extra >= 1),
        "{err:?}"
    );
}

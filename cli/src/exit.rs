//! Exit codes, documented in the README and in `deltaward --help`, and the one
//! mapping from an error chain to them (by error class, never by message).

/// Anything not listed below (I/O errors, bad arguments to a subcommand).
pub const FAILURE: u8 = 1;
/// Command-line usage error (clap).
pub const USAGE: u8 = 2;
/// The signature is missing, malformed, legacy, or from an untrusted key.
pub const SIGNATURE: u8 = 3;
/// The patch is malformed, truncated or corrupted.
pub const CORRUPT: u8 = 4;
/// The old image is not the one the patch was built from.
pub const WRONG_BASE: u8 = 5;
/// The patch needs more memory or output space than allowed.
pub const LIMIT: u8 = 6;
/// A key could not be read or decrypted.
pub const KEY: u8 = 7;
/// update: no mirror could be reached (or none had the object whole).
pub const NO_MIRROR: u8 = 20;
/// audit verify: the delivery log does not verify (tampered, torn, truncated).
pub const TAMPERED: u8 = 21;

/// The error `audit verify` fails with: the log's first problem.
#[derive(Debug, thiserror::Error)]
#[error("the delivery log does not verify: {0}")]
pub struct Tampered(pub deltaward_mirror::log::Tamper);
/// check-release: rollback (a lower release counter or channel version).
pub const ROLLBACK: u8 = 10;
/// check-release: freeze (an expired channel, release or root).
pub const FREEZE: u8 = 11;
/// check-release: the release is not for this hardware.
pub const WRONG_HARDWARE: u8 = 12;
/// check-release: the device's image is not the base the release names.
pub const BASE_MISMATCH: u8 = 13;
/// check-release: mix-and-match (a file differs from its signed hash).
pub const MIX_AND_MATCH: u8 = 14;
/// check-release: signed by a key the trusted root does not list.
pub const UNKNOWN_KEY: u8 = 15;
/// check-release: fewer valid signatures than the role's threshold.
pub const THRESHOLD: u8 = 16;
/// check-release: a root rotation skips a version or lacks the old keys' signatures.
pub const ROOT_ROTATION: u8 = 17;

/// The exit code of an engine error class, if it has one of its own.
fn engine(c: deltaward_engine::ErrorClass) -> Option<u8> {
    use deltaward_engine::ErrorClass as E;
    match c {
        E::Signature => Some(SIGNATURE),
        E::Corrupt => Some(CORRUPT),
        E::WrongBase => Some(WRONG_BASE),
        E::Limit => Some(LIMIT),
        E::Key => Some(KEY),
        _ => None,
    }
}

/// The exit code of a release error class, if it has one of its own.
fn release(c: deltaward_release::ErrorClass) -> Option<u8> {
    use deltaward_release::ErrorClass as R;
    match c {
        R::Rollback => Some(ROLLBACK),
        R::Freeze => Some(FREEZE),
        R::WrongHardware => Some(WRONG_HARDWARE),
        R::BaseMismatch => Some(BASE_MISMATCH),
        R::MixAndMatch => Some(MIX_AND_MATCH),
        R::UnknownKey => Some(UNKNOWN_KEY),
        R::Threshold => Some(THRESHOLD),
        R::RootRotation => Some(ROOT_ROTATION),
        R::Signature => Some(SIGNATURE),
        R::Limit => Some(LIMIT),
        R::Engine(e) => engine(e),
        _ => None,
    }
}

/// Maps an error chain to the documented exit code: the first error in the whole
/// chain whose class has a code of its own; [`FAILURE`] otherwise.
pub fn code(e: &anyhow::Error) -> u8 {
    e.chain().find_map(own_code).unwrap_or(FAILURE)
}

/// [`code`] for a plain error and its sources.
pub fn code_of(e: &(dyn std::error::Error + 'static)) -> u8 {
    std::iter::successors(Some(e), |e| e.source())
        .find_map(own_code)
        .unwrap_or(FAILURE)
}

/// The code of this one error, if its class has one.
fn own_code(cause: &(dyn std::error::Error + 'static)) -> Option<u8> {
    if let Some(err) = cause.downcast_ref::<deltaward_release::Error>() {
        return release(err.class());
    }
    if let Some(err) = cause.downcast_ref::<deltaward_engine::Error>() {
        return engine(err.class());
    }
    if cause.downcast_ref::<Tampered>().is_some() {
        return Some(TAMPERED);
    }
    if let Some(err) = cause.downcast_ref::<deltaward_mirror::Error>() {
        // Its transparent variants hide the inner error from the source chain.
        return match err {
            deltaward_mirror::Error::NoMirror { .. } => Some(NO_MIRROR),
            deltaward_mirror::Error::Release(e) => release(e.class()),
            deltaward_mirror::Error::Engine(e) => engine(e.class()),
            _ => None,
        };
    }
    cause
        .downcast_ref::<deltaward_engine::KeyError>()
        .map(|_| KEY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn an_engine_failure_inside_a_release_error_keeps_its_code() {
        let inner = deltaward_engine::Error::MemoryLimit {
            needed: 2,
            limit: 1,
        };
        let e: anyhow::Error = deltaward_release::Error::Engine(inner).into();
        assert_eq!(code(&e.context("building a release")), LIMIT);
    }

    #[test]
    fn a_generic_cause_does_not_hide_a_specific_one_below_it() {
        let sig = deltaward_engine::Error::Signature(deltaward_engine::SignatureError::Invalid);
        let e = Err::<(), _>(sig)
            .context("verifying patch")
            .context("step 3")
            .expect_err("error");
        assert_eq!(code(&e), SIGNATURE);
        assert_eq!(code(&anyhow::anyhow!("plain failure")), FAILURE);
    }
}

//! The CLI tests' view of the shared test kit: the binary under test, its exit
//! codes (the binary's own constants, compiled in from `src/exit.rs`), and fixtures.
#![allow(dead_code, unused_imports)] // reason: each CLI test binary uses a different part of this module

use std::process::Output;

pub use deltaward_testkit::cli::{fails_with, ok, run, s, Fixture};

/// The exit codes, exactly as the binary defines them.
#[path = "../../src/exit.rs"]
pub mod exit;

pub mod net;

pub mod garage;

/// The deltaward binary built by cargo for this test run.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_deltaward")
}

/// Runs deltaward with `args`.
pub fn deltaward(args: &[&str]) -> Output {
    run(bin(), args)
}

/// A work directory with keys and a pair of `mib` MiB images (see [`Fixture`]).
pub fn fixture(mib: usize) -> Fixture {
    Fixture::new(bin(), mib)
}

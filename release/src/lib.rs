//! Signed releases for deltaward, in the manner of The Update Framework.
//!
//! A release, not a single patch, is the signed unit: `release.json` names the
//! target image, a patch for each supported base, the full-image fallback, and the
//! update notice's content (compatibility, security fixes, support, approval).
//! A per-product `channel.json` with a short expiry lists the releases; `root.json`
//! lists the keys trusted for each role with a threshold. Devices verify the chain
//! and refuse rollback, freeze, mix-and-match, wrong hardware and bases, unknown
//! keys and unmet thresholds ([`check::check_release`]).
//!
//! ```
//! use deltaward_release::trust::{comment, RoleName};
//! assert_eq!(comment(RoleName::Release, "release.json", 7), "deltaward role=release file=release.json version=7");
//! ```
//!
//! # What this crate does not do
//! It does not fetch over the network (the mirror does), apply patches (the engine
//! does) or keep secret keys: callers pass them in.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod check;
pub mod error;
pub mod install;
pub mod inventory;
pub mod limits;
pub mod model;
pub mod notice;
pub mod repo;
pub mod source;
pub mod trust;

pub use error::{
    Error, ErrorClass, InvalidError, LimitError, Mismatch, PathError, RefusedError, ReleaseId,
    Result, RootRotationError, StateError, UnpublishableError,
};

//! The on-premise caching mirror of deltaward.
//!
//! A hospital runs hundreds of devices behind one thin, shared WAN link. The mirror
//! sits between them and the maker's origin: it fetches each signed object once,
//! verifies it before caching, serves the devices at LAN speed with ranges and
//! resume, and keeps serving verified metadata while the WAN is down, until its
//! signed expiry.
//!
//! - [`route`]: request paths, normalised once (the repository layout only).
//! - [`docs`]: signed documents verified under the trusted root, revalidated by ETag.
//! - [`fill`]: single-flight upstream fetches that clients stream while they run,
//!   the last byte held back until the object is verified.
//! - [`cache`]: the cache directory, its index and LRU eviction.
//! - [`upstream`]: the HTTP client with retries, Range resume and a bandwidth cap,
//!   for an `http(s)://` upstream or an S3 bucket ([`s3`]: addressing and signing).
//! - [`publish`]: uploads a verified repository to a bucket in the order that never
//!   shows a reader a broken repository.
//! - [`server`] and [`service`]: hyper, TLS, limits, graceful drain; [`respond`]:
//!   ranges, multipart ranges and conditional requests.
//!
//! - [`pages`]: the operator pages (`/`, `/feed.atom`, `/v1/notices.json`): releases
//!   with their notices and site approvals, the cache, the upstream, the devices.
//!
//! The same server in origin mode ([`Mode::Origin`]) serves a repository directory
//! as it is, so a mirror's upstream can be an origin or another mirror.
//!
//! ```
//! use deltaward_mirror::route::{Doc, Route};
//! assert_eq!(
//!     Route::parse("/products/pump/channel.json"),
//!     Some(Route::Document { doc: Doc::Channel("pump".into()), sig: false })
//! );
//! assert_eq!(Route::parse("/products/%2e%2e/channel.json"), None);
//! ```
//!
//! # What this crate does not do
//! It holds no signing key of the maker and signs nothing; devices verify everything
//! it relays again. It does not own a runtime: the binary builds the tokio runtime
//! and handles signals, and calls [`Server::run`] with a shutdown future.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access;
pub mod approval;
pub mod audit;
pub mod cache;
pub mod config;
pub mod docs;
pub mod error;
pub mod fill;
pub mod log;
pub mod metrics;
pub mod mirror;
pub mod origin;
pub mod pages;
pub mod publish;
pub mod report;
pub mod respond;
pub mod route;
pub mod s3;
pub mod server;
pub mod service;
pub mod sync;
mod tls;
pub mod update;
pub mod upstream;

pub use access::AccessLog;
pub use config::{parse_size, Config, Limits};
pub use error::{ConfigError, Error, PublishError, Result, UpstreamError, VerifyError};
pub use metrics::Metrics;
pub use mirror::Mirror;
pub use origin::Origin;
pub use server::Server;
pub use service::{Mode, Service};

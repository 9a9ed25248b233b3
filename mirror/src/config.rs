//! The mirror's settings: every flag of `deltaward mirror serve` has a key of the same
//! name (with `_` for `-`) in the `--config` TOML file, and flags override the file.
//!
//! ```toml
//! listen = "0.0.0.0:8080"
//! upstream = "https://updates.example.com/repo"
//! cache = "/var/lib/deltaward-mirror/cache"
//! trust = "/etc/deltaward-mirror/root.json"
//! max_cache_size = "200G"
//! upstream_rate = "2M"          # bytes per second over the WAN
//!
//! [limits]
//! header_read_timeout = "10s"
//! idle_timeout = "60s"
//! max_connections = 4096
//! ```

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::error::{ConfigError, Error, Result};

/// All settings of a mirror or origin. `Default` is "nothing set"; [`Limits`] has
/// its documented defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: Option<String>,
    /// Origin mode: the repository directory to serve as it is.
    pub root: Option<PathBuf>,
    /// Mirror mode: the upstream repository or mirror URL (`http://` or `https://`),
    /// or a bucket (`s3://BUCKET/PREFIX`; credentials from the environment).
    pub upstream: Option<String>,
    /// The S3 endpoint of an `s3://` upstream (default: `AWS_ENDPOINT_URL`, then AWS).
    pub endpoint: Option<String>,
    /// The S3 region of an `s3://` upstream (default: `AWS_REGION`, then `us-east-1`).
    pub region: Option<String>,
    /// Mirror mode: the cache directory.
    pub cache: Option<PathBuf>,
    /// Mirror mode: the trusted `root.json` (used when the cache has none yet).
    pub trust: Option<PathBuf>,
    /// Most bytes of objects kept in the cache (LRU eviction above it).
    #[serde(default, deserialize_with = "size_opt")]
    pub max_cache_size: Option<u64>,
    /// Cap on upstream bandwidth, bytes per second, for all fetches together.
    #[serde(default, deserialize_with = "size_opt")]
    pub upstream_rate: Option<u64>,
    /// Extra CA certificates (PEM) to trust for an `https://` upstream, beside the
    /// built-in web roots.
    pub upstream_ca: Option<PathBuf>,
    /// Serve TLS with this certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (PEM): mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// Keep the tamper-evident delivery log in this directory (mirror mode).
    pub log_dir: Option<PathBuf>,
    /// The mirror's own minisign secret key (unencrypted) that signs log checkpoints
    /// and site approvals.
    pub log_key: Option<PathBuf>,
    /// Serve a release's release.json and objects only after the site approved it
    /// (`deltaward mirror approve`; needs `log_key`).
    #[serde(default)]
    pub require_approval: bool,
    /// Write the access log (one line per request, Common Log Format) to this file,
    /// reopened on SIGHUP; without it, access lines go to the log at info level.
    pub access_log: Option<PathBuf>,
    /// Timeouts and caps.
    #[serde(default)]
    pub limits: Limits,
}

/// Timeouts and caps that protect the mirror from slow or abusive clients and a
/// slow upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Limits {
    /// Time a client has to send a request's headers (HTTP/1; also the TLS handshake). Default 10 s.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving either way for this long is closed. Default 60 s.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Most open client connections; more are closed at once. Default 4096.
    pub max_connections: usize,
    /// Largest request head (HTTP/1 buffer, HTTP/2 header list), bytes. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Requests per second allowed to one client address, sustained. Default 200.
    pub client_rate: u32,
    /// Requests one client address may make in a burst. Default 1000.
    pub client_burst: u32,
    /// How long verified metadata is served before it is revalidated upstream. Default 60 s.
    #[serde(deserialize_with = "duration")]
    pub metadata_max_age: Duration,
    /// Time the upstream has to answer, and most time between two body chunks. Default 30 s.
    #[serde(deserialize_with = "duration")]
    pub upstream_timeout: Duration,
    /// Tries of one upstream request before giving up (backoff with jitter between). Default 4.
    pub upstream_tries: u32,
    /// Time open responses get to finish after SIGTERM. Default 30 s.
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// Delivery-log records between signed checkpoints. Default 100.
    pub log_checkpoint_every: u64,
    /// Longest a delivery-log record waits for its checkpoint. Default 60 s.
    #[serde(deserialize_with = "duration")]
    pub log_checkpoint_interval: Duration,
    /// Size at which a delivery-log file is closed and the next begun. Default 64 MiB.
    #[serde(deserialize_with = "size")]
    pub log_max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_header_bytes: 16 << 10,
            client_rate: 200,
            client_burst: 1000,
            metadata_max_age: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(30),
            upstream_tries: 4,
            drain_timeout: Duration::from_secs(30),
            log_checkpoint_every: 100,
            log_checkpoint_interval: Duration::from_secs(60),
            log_max_file_bytes: 64 << 20,
        }
    }
}

impl Config {
    /// Reads a TOML settings file (capped at 1 MiB, a regular file).
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let f = deltaward_engine::open_regular(path).map_err(|source| Error::Io {
            action: "opening",
            path: path.to_path_buf(),
            source,
        })?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(f, 1 << 20), &mut text).map_err(
            |source| Error::Io {
                action: "reading",
                path: path.to_path_buf(),
                source,
            },
        )?;
        toml::from_str(&text).map_err(|e| {
            Error::Config(ConfigError::Parse {
                file: path.to_path_buf(),
                source: Box::new(e),
            })
        })
    }
}

/// Reads at most `max` bytes of a regular file (no link, no FIFO, no device):
/// `Ok(None)` when it is absent, an error when it is larger.
pub(crate) fn read_capped(
    path: &std::path::Path,
    max: u64,
) -> std::result::Result<Option<Vec<u8>>, String> {
    let f = match deltaward_engine::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut b = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, max + 1), &mut b)
        .map_err(|e| e.to_string())?;
    if b.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(Some(b))
}

/// Parses a size: bytes, or a number with `K`, `M`, `G` or `T` (powers of 1024,
/// optionally followed by `iB` or `B`).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (bytes, or a number with K, M, G or T)"))?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn size_opt<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(Some(n)),
        Raw::Text(s) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

fn size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    size_opt(d).map(|s| s.unwrap_or(0))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert!(parse_size("10X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn the_file_takes_every_setting_and_refuses_unknown_ones() {
        let c: Config = toml::from_str(
            "listen = \"127.0.0.1:0\"\nmax_cache_size = \"1G\"\nupstream_rate = 1000\n[limits]\nidle_timeout = \"5s\"\nmax_connections = 7\n",
        )
        .expect("parses");
        assert_eq!(c.max_cache_size, Some(1 << 30));
        assert_eq!(c.upstream_rate, Some(1000));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.max_connections, 7);
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(10));
        assert!(toml::from_str::<Config>("listne = \"x\"").is_err());
    }
}

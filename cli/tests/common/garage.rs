//! A real S3-compatible store for the publishing tests: a single Garage node on
//! 127.0.0.1 with a generated configuration, its bucket and key made with Garage's
//! own CLI (no mock S3).
//!
//! The binary is `$DELTAWARD_GARAGE`, else `garage` on the `PATH`, else
//! `~/.cargo/bin/garage` (`cargo install garage --locked`, as `.ci/run` does). When
//! it is missing the tests say so on stderr and skip, unless
//! `DELTAWARD_REQUIRE_GARAGE=1` (set by `.ci/run`), which makes a missing binary
//! a failure: CI never skips them silently.
#![allow(dead_code)] // reason: each test binary uses a different part of this module
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// A running Garage node with one bucket and one key allowed to read and write it.
pub struct Garage {
    child: Child,
    dir: tempfile::TempDir,
    bin: PathBuf,
    config: PathBuf,
    /// `http://127.0.0.1:PORT`, the S3 API.
    pub endpoint: String,
    /// The S3 region.
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// The access key id.
    pub key_id: String,
    /// The secret key.
    pub secret: String,
}

/// Where the Garage binary is, if anywhere.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DELTAWARD_GARAGE") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("garage"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = PathBuf::from(std::env::var_os("HOME")?);
        let p = home.join(".cargo/bin/garage");
        p.is_file().then_some(p)
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Garage {
    /// Starts a node with bucket `bucket`, or `None` (with a message) when the binary
    /// is missing and not required.
    pub fn start(bucket: &str) -> Option<Self> {
        let Some(bin) = binary() else {
            if std::env::var("DELTAWARD_REQUIRE_GARAGE").as_deref() == Ok("1") {
                panic!(
                    "DELTAWARD_REQUIRE_GARAGE=1 but no garage binary: install it with \
                     `cargo install garage --locked` or set DELTAWARD_GARAGE"
                );
            }
            eprintln!(
                "SKIPPED: no garage binary (install it with `cargo install garage --locked`, \
                 or set DELTAWARD_GARAGE); .ci/run builds it and sets DELTAWARD_REQUIRE_GARAGE=1"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let (rpc, s3) = (free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", fastrand::u8(..)))
            .collect();
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
"#,
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
            ),
        )
        .expect("garage.toml");
        let log = std::fs::File::create(dir.path().join("garage.log")).expect("log");
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn garage server");
        let mut g = Self {
            child,
            dir,
            bin,
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
            region: "garage".into(),
            bucket: bucket.into(),
            key_id: String::new(),
            secret: String::new(),
        };
        g.provision();
        Some(g)
    }

    /// Runs the Garage CLI against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run garage")
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "garage {args:?}: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// Runs `args` until it succeeds (its output), within 30 s of `start`; fails at
    /// once, with the server's log, if the server has exited.
    fn until_ok(&mut self, args: &[&str], start: Instant) -> String {
        loop {
            let out = self.cli(args);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("garage server exited ({exit}):\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "garage {args:?} did not succeed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Layout, bucket, key and its grants, through Garage's CLI.
    fn provision(&mut self) {
        let start = Instant::now();
        let node = self.until_ok(&["node", "id", "-q"], start);
        let node = node.trim();
        let id = node.split('@').next().unwrap_or(node).to_owned();
        // `node id` reads the node's key from disk and can succeed before the
        // server listens for RPC; `status` asks the server (a layout command sent
        // earlier failed with "Connection refused" in a loaded CI run).
        self.until_ok(&["status"], start);
        self.cli_ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
        self.cli_ok(&["layout", "apply", "--version", "1"]);
        let bucket = self.bucket.clone();
        self.cli_ok(&["bucket", "create", &bucket]);
        let info = self.cli_ok(&["key", "create", "deltaward-test"]);
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in `garage key create`:\n{info}"))
        };
        self.key_id = field("Key ID:");
        self.secret = field("Secret key:");
        self.cli_ok(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &bucket,
            "--key",
            "deltaward-test",
        ]);
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The environment a client needs: credentials, endpoint and region.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", self.region.clone()),
        ]
    }

    /// Runs `program args` with [`Self::env`].
    pub fn run(&self, program: &Path, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .envs(self.env())
            .output()
            .expect("run")
    }

    /// curl with its own SigV4 signing (independent of deltaward's) as this
    /// store's key: `-s`, `args`, then `url`.
    fn curl_signed(&self, args: &[&str], url: &str) -> Output {
        Command::new("curl")
            .arg("-s")
            .args(args)
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{}:s3", self.region))
            .arg("--user")
            .arg(format!("{}:{}", self.key_id, self.secret))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg(url)
            .output()
            .expect("curl")
    }

    /// GETs `key` of the bucket (signed by curl): the body, or `None` on 404.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let url = format!("{}/{}/{key}", self.endpoint, self.bucket);
        let mut body = self.curl_signed(&["-w", "\n%{http_code}"], &url).stdout;
        let nl = body.iter().rposition(|b| *b == b'\n').expect("status line");
        let code = String::from_utf8_lossy(&body[nl + 1..]).into_owned();
        body.truncate(nl);
        match code.as_str() {
            "200" => Some(body),
            "404" => None,
            c => panic!("GET {url}: HTTP {c}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// The keys under `prefix` (ListObjectsV2, signed by curl), sorted.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let url = format!(
            "{}/{}?list-type=2&prefix={}",
            self.endpoint,
            self.bucket,
            prefix.replace('/', "%2F")
        );
        let out = self.curl_signed(&["--fail"], &url);
        assert!(out.status.success(), "list {url}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut keys: Vec<String> = text
            .split("<Key>")
            .skip(1)
            .filter_map(|p| p.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

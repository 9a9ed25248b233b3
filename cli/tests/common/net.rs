//! Real servers for the mirror tests: `deltaward mirror serve` processes on
//! 127.0.0.1:0 (killed when dropped), a published repository made by the CLI, and
//! curl as the client.
#![allow(dead_code)] // reason: each test binary uses a different part of this module
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::{bin, deltaward, ok, s, Fixture};

/// A running `deltaward mirror serve`.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT` (or https).
    pub url: String,
    /// Its stderr (the log), a file.
    pub log: PathBuf,
}

impl Server {
    /// Starts `deltaward mirror serve ARGS --listen 127.0.0.1:0` and waits for its
    /// `listening on URL` line.
    pub fn start(dir: &Path, name: &str, args: &[&str]) -> Self {
        Self::start_with_env(dir, name, args, &[])
    }

    /// As [`Self::start`], with environment variables set.
    pub fn start_with_env(
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(&'static str, String)],
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(bin());
        cmd.args(["mirror", "serve", "--listen", "127.0.0.1:0", "-v"])
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let mut child = cmd.spawn().expect("spawn deltaward mirror serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("first line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "{name}: first line {line:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_owned();
        Self { child, url, log }
    }

    /// An origin serving `repo`.
    pub fn origin(dir: &Path, repo: &Path) -> Self {
        Self::start(dir, "origin", &["--root", s(repo)])
    }

    /// A mirror of `upstream` with its cache in `cache`, trusting `trust`.
    pub fn mirror(
        dir: &Path,
        name: &str,
        upstream: &str,
        cache: &Path,
        trust: &Path,
        extra: &[&str],
    ) -> Self {
        let mut args = vec![
            "--upstream",
            upstream,
            "--cache",
            s(cache),
            "--trust",
            s(trust),
        ];
        args.extend_from_slice(extra);
        Self::start(dir, name, &args)
    }

    /// The value of a metric line `NAME VALUE` (0 when absent).
    pub fn metric(&self, name: &str) -> u64 {
        let text = get_text(&format!("{}/metrics", self.url));
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Objects served with 200 or 206 (how a test counts upstream fetches at an origin).
    pub fn objects_served(&self) -> u64 {
        self.metric("deltaward_mirror_requests_total{route=\"object\",code=\"200\"}")
            + self.metric("deltaward_mirror_requests_total{route=\"object\",code=\"206\"}")
    }

    /// Sends a signal; waits for the exit.
    pub fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        ok(&Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .output()
            .expect("kill"));
        self.child.wait().expect("wait")
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl with `args` (`-s` added).
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .arg("-s")
        .args(args)
        .output()
        .expect("curl (apt install curl)")
}

/// Status code of a GET of `url` with extra curl `args`, body to `out` (or /dev/null).
pub fn status(url: &str, args: &[&str]) -> u16 {
    let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    a.extend_from_slice(args);
    a.push(url);
    let o = curl(&a);
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The body of a GET that must succeed.
pub fn get(url: &str) -> Vec<u8> {
    let o = curl(&["-f", url]);
    assert!(
        o.status.success(),
        "GET {url}: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

pub fn get_text(url: &str) -> String {
    String::from_utf8(get(url)).expect("utf-8")
}

/// Polls `cond` every 50 ms for up to `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

pub const NOTES: &str = r#"hardware_ids = ["pump-a1"]
[compatibility]
statement = "For pump A1 on 1.x."
applies_from = ["1.0"]
[support]
class = "required"
end_of_support = "2030-01-01"
[approval]
approved = true
[installation]
instructions = "IFU section 4"
"#;

/// A published repository: keys and images of a [`Fixture`], a root, and release
/// 2.0 (counter 2) of product `pump` with a patch from base 1.0 (the old image).
pub struct Published {
    pub fx: Fixture,
    pub repo: PathBuf,
    pub notes: PathBuf,
}

impl Published {
    pub fn new(mib: usize) -> Self {
        let fx = Fixture::new(bin(), mib);
        let repo = fx.path("repo");
        let notes = fx.path("NOTES.toml");
        std::fs::write(&notes, NOTES).expect("notes");
        let k = s(&fx.public);
        ok(&deltaward(&[
            "root",
            "--repo",
            s(&repo),
            "--root-pub",
            k,
            "--release-pub",
            k,
            "--channel-pub",
            k,
            "-s",
            s(&fx.key),
        ]));
        let p = Self { fx, repo, notes };
        p.release("2.0", "2", &[]);
        p
    }

    /// `deltaward release` of `version` (image: the fixture's new image) from base
    /// 1.0, at level fast.
    pub fn release(&self, version: &str, counter: &str, extra: &[&str]) {
        self.release_image(version, counter, &self.fx.new, extra);
    }

    /// As [`Self::release`], of the image `image`.
    pub fn release_image(&self, version: &str, counter: &str, image: &Path, extra: &[&str]) {
        let base = format!("1.0={}", s(&self.fx.old));
        let mut args = vec![
            "release",
            "--product",
            "pump",
            "--version",
            version,
            "--counter",
            counter,
            "--image",
            s(image),
            "--base",
            &base,
            "--notes",
            s(&self.notes),
            "--repo",
            s(&self.repo),
            "-s",
            s(&self.fx.key),
            "--level",
            "fast",
        ];
        args.extend_from_slice(extra);
        ok(&deltaward(&args));
    }

    /// The work directory.
    pub fn dir(&self) -> &Path {
        self.fx.dir.path()
    }

    /// The trusted root for mirrors.
    pub fn trust(&self) -> PathBuf {
        self.repo.join("root.json")
    }

    /// `objects/<hash>` names in the repository, largest first (the full image first).
    pub fn objects(&self) -> Vec<String> {
        let mut v: Vec<(u64, String)> = std::fs::read_dir(self.repo.join("objects"))
            .expect("objects")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.metadata().expect("md").len(),
                    e.file_name().to_string_lossy().into_owned(),
                )
            })
            .collect();
        v.sort();
        v.reverse();
        v.into_iter().map(|(_, n)| n).collect()
    }

    /// Fetches channel.json and release 2.0 through `url`, so that the mirror knows
    /// the objects.
    pub fn prime(&self, url: &str, version: &str) {
        get(&format!("{url}/products/pump/channel.json"));
        get(&format!(
            "{url}/products/pump/releases/{version}/release.json"
        ));
    }
}

/// A device: its state directory (provisioned with the repository's root) and its
/// current image.
pub struct Device {
    pub state: PathBuf,
    pub image: PathBuf,
    pub out: PathBuf,
}

impl Device {
    pub fn new(p: &Published, name: &str, image: &Path) -> Self {
        let dir = p.fx.path(name);
        fs::create_dir_all(&dir).expect("device dir");
        let state = dir.join("state");
        let img = dir.join("current.img");
        fs::copy(image, &img).expect("image");
        Self {
            state,
            image: img,
            out: dir.join("new.img"),
        }
    }

    /// `deltaward update` through `mirrors`, with `extra` flags, `--json`.
    pub fn update(&self, p: &Published, mirrors: &[&str], extra: &[&str]) -> Output {
        let trust = p.trust();
        let mut args = vec!["update"];
        for m in mirrors {
            args.extend(["--mirror", m]);
        }
        args.extend([
            "--product",
            "pump",
            "--hardware",
            "pump-a1",
            "--image",
            s(&self.image),
            "-o",
            s(&self.out),
            "--state",
            s(&self.state),
            "--init-root",
            s(&trust),
            "--device-id",
            "pump-17",
            "--json",
        ]);
        args.extend_from_slice(extra);
        deltaward(&args)
    }

    pub fn state_json(&self) -> String {
        fs::read_to_string(self.state.join("state.json")).unwrap_or_default()
    }
}

/// The final `result` event of `--json` output.
pub fn result(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "last line {last:?}: {e}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["event"], "result", "{v}");
    v["report"].clone()
}

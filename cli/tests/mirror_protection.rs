//! `deltaward mirror serve` under hostile or demanding clients: path traversal and
//! links out of the repository, oversized headers, slowloris and the connection cap,
//! TLS and mutual TLS, tiers of mirrors, the SIGTERM drain and the per-client rate
//! limit. Real processes on 127.0.0.1, curl and raw sockets as the clients.
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures (configs, certificates, a secret) directly

mod common;

use std::{
    fs,
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::net::*;
use common::s;

/// Writes a `--config` file with `text` (a `[limits]` table and the like).
fn config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).expect("config file");
    p
}

/// `127.0.0.1:PORT` of a server URL.
fn addr(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, a)| a)
}

/// The `/metrics` text, polling until it is served (the rate limit or the
/// connection cap may refuse the first tries).
fn metrics_when_served(url: &str) -> String {
    let mut text = String::new();
    wait_for(5, "/metrics to be served", || {
        let o = curl(&["-f", &format!("{url}/metrics")]);
        if o.status.success() {
            text = String::from_utf8_lossy(&o.stdout).into_owned();
        }
        o.status.success()
    });
    text
}

/// The value of `name` in a metrics text (0 when absent).
fn metric_in(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Sends `sig` to `server` without waiting for it to exit.
fn send_signal(server: &Server, sig: &str) {
    let o = Command::new("kill")
        .args([&format!("-{sig}"), &server.child.id().to_string()])
        .output()
        .expect("kill");
    assert!(o.status.success(), "kill -{sig}: {o:?}");
}

// ---------------------------------------------------------------------------
// 1. Traversal

#[test]
fn traversal_and_links_out_of_the_repository_are_not_served() {
    let p = Published::new(1);
    let dir = p.dir();
    let secret = b"TOP-SECRET: the hospital's VPN password is hunter2\n";
    fs::write(dir.join("secret.txt"), secret).expect("secret");
    // Links in the origin's repository that point out of it: a file link, a link to
    // a directory outside, and an object named by the secret's own hash.
    let evil = p.repo.join("products/evil");
    fs::create_dir_all(&evil).expect("evil dir");
    std::os::unix::fs::symlink("../../../secret.txt", evil.join("channel.json")).expect("link");
    std::os::unix::fs::symlink("../../../secret.txt", evil.join("channel.json.minisig"))
        .expect("link");
    let outside = dir.join("outside");
    fs::create_dir_all(&outside).expect("outside dir");
    fs::write(outside.join("channel.json"), secret).expect("outside channel");
    std::os::unix::fs::symlink("../../outside", p.repo.join("products/leak")).expect("dir link");
    let secret_name = deltaward_engine::Digest::of(secret).to_string();
    std::os::unix::fs::symlink(
        "../../secret.txt",
        p.repo.join("objects").join(&secret_name),
    )
    .expect("object link");
    // The links do reach the secret: the test would see it if the server followed them.
    assert_eq!(
        fs::read(evil.join("channel.json")).expect("via link"),
        secret
    );
    assert_eq!(
        fs::read(p.repo.join("products/leak/channel.json")).expect("via dir link"),
        secret
    );

    let origin = Server::origin(dir, &p.repo);
    let m = Server::mirror(
        dir,
        "mirror",
        &origin.url,
        &p.fx.path("cache"),
        &p.trust(),
        &[],
    );
    for server in [&origin, &m] {
        assert_eq!(
            status(&format!("{}/root.json", server.url), &[]),
            200,
            "{}",
            server.url
        );
        for path in [
            "/../root.json",
            "/products/../root.json",
            "/products/%2e%2e/channel.json",
            "/products/%2E%2E/channel.json",
            "/products/pump%2fchannel.json",
            "/objects/../root.json",
            "//root.json",
            "/products/pump/./channel.json",
            "/%00",
            "/root.json%00",
            "/../secret.txt",
            "/products/pump/../../../secret.txt",
            "/products/..%2f..%2f..%2fsecret.txt",
        ] {
            let url = format!("{}{path}", server.url);
            let o = curl(&["--path-as-is", "-w", "\n%{http_code}", &url]);
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            let code = out.rsplit('\n').next().unwrap_or("");
            assert_eq!(code, "404", "{url}: {out}");
            assert!(!out.contains("TOP-SECRET"), "{url} served the secret");
        }
    }
    // The links: never the secret's bytes, never a 200.
    for path in [
        "/products/evil/channel.json".to_owned(),
        "/products/evil/channel.json.minisig".to_owned(),
        "/products/leak/channel.json".to_owned(),
        format!("/objects/{secret_name}"),
    ] {
        let url = format!("{}{path}", origin.url);
        let o = curl(&["-w", "\n%{http_code}", &url]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let code: u16 = out.rsplit('\n').next().unwrap_or("").parse().unwrap_or(0);
        assert!(code >= 400, "{url}: {code}: {out}");
        assert!(
            !out.contains("TOP-SECRET"),
            "{url} served the secret: {out}"
        );
    }
    // Nor did the mirror relay it under any name (it has not verified a release
    // naming that object).
    let o = curl(&[&format!("{}/objects/{secret_name}", m.url)]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("TOP-SECRET"));
}

// ---------------------------------------------------------------------------
// 2. Oversized headers

#[test]
fn an_oversized_header_is_refused_and_the_server_keeps_serving() {
    let p = Published::new(1);
    let origin = Server::origin(p.dir(), &p.repo);
    let url = format!("{}/root.json", origin.url);
    let big = format!("X-Big: {}", "a".repeat(64 << 10));
    for extra in [&[][..], &["--http2-prior-knowledge"][..]] {
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}", "-H", &big];
        args.extend_from_slice(extra);
        args.push(&url);
        let o = curl(&args);
        let code = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        assert!(
            matches!(code.as_str(), "431" | "400" | "000"),
            "{extra:?}: {code}"
        );
        // Still serving, over the same kind of connection.
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        args.push(&url);
        assert_eq!(
            String::from_utf8_lossy(&curl(&args).stdout),
            "200",
            "{extra:?}"
        );
    }
    // A header just under the cap is fine.
    let ok_header = format!("X-Ok: {}", "a".repeat(8 << 10));
    assert_eq!(status(&url, &["-H", &ok_header]), 200);
    assert_eq!(get(&url), fs::read(p.repo.join("root.json")).expect("root"));
}

// ---------------------------------------------------------------------------
// 3. Slowloris and the connection cap

/// Reads (and, with `drip`, writes one header byte before each read) until the
/// server closes the connection; how long after `start` that was, or `None` when it
/// was still open at `limit`.
fn until_closed(mut s: TcpStream, start: Instant, drip: bool, limit: Duration) -> Option<Duration> {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        if drip && s.write_all(b"a").is_err() {
            return Some(start.elapsed());
        }
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            // An error response, say; the close follows.
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn slow_headers_are_cut_at_the_header_timeout_while_others_are_served() {
    let p = Published::new(1);
    let cfg = config(
        p.dir(),
        "slow.toml",
        "[limits]\nheader_read_timeout = \"2s\"\nmax_connections = 40\n",
    );
    let origin = Server::start(
        p.dir(),
        "origin",
        &["--root", s(&p.repo), "--config", s(&cfg)],
    );
    let root = fs::read(p.repo.join("root.json")).expect("root");
    let start = Instant::now();
    let slow: Vec<JoinHandle<Option<Duration>>> = (0..20)
        .map(|i| {
            let mut c = TcpStream::connect(addr(&origin.url)).expect("connect");
            c.write_all(format!("GET /root.json HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ").as_bytes())
                .expect("request line");
            std::thread::spawn(move || until_closed(c, start, true, Duration::from_secs(8)))
        })
        .collect();
    // Everyone else is served meanwhile.
    wait_for(5, "the 20 slow connections to be accepted", || {
        origin.metric("deltaward_mirror_open_connections") >= 20
    });
    for _ in 0..10 {
        assert_eq!(get(&format!("{}/root.json", origin.url)), root);
    }
    assert!(
        slow.iter().all(|h| !h.is_finished()),
        "a slow connection was closed before the others were served ({:?})",
        start.elapsed()
    );
    for h in slow {
        let closed = h
            .join()
            .expect("slow client")
            .expect("a slow connection was still open after 8 s");
        assert!(
            closed >= Duration::from_millis(1500) && closed <= Duration::from_secs(7),
            "a slow connection was closed after {closed:?} (header timeout 2 s)"
        );
    }
    wait_for(5, "the open connection gauge to drop", || {
        origin.metric("deltaward_mirror_open_connections") <= 1
    });
}

#[test]
fn the_connection_cap_closes_extra_connections_until_idle_ones_time_out() {
    let p = Published::new(1);
    let cfg = config(
        p.dir(),
        "cap.toml",
        "[limits]\nheader_read_timeout = \"2s\"\nmax_connections = 5\n",
    );
    let origin = Server::start(
        p.dir(),
        "origin",
        &["--root", s(&p.repo), "--config", s(&cfg)],
    );
    let url = format!("{}/root.json", origin.url);
    assert_eq!(status(&url, &[]), 200);
    // That connection's slot is given back once its task ends.
    wait_for(5, "the first connection to be released", || {
        origin.metric("deltaward_mirror_open_connections") <= 1
    });
    let start = Instant::now();
    // Five connections that send nothing at all hold every slot.
    let idle: Vec<JoinHandle<Option<Duration>>> = (0..5)
        .map(|_| {
            let c = TcpStream::connect(addr(&origin.url)).expect("connect");
            std::thread::spawn(move || until_closed(c, start, false, Duration::from_secs(8)))
        })
        .collect();
    // The sixth is accepted by the kernel and closed by the server at once.
    let mut sixth = TcpStream::connect(addr(&origin.url)).expect("connect 6th");
    sixth
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let _ = sixth.write_all(b"GET /root.json HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 1024];
    match sixth.read(&mut buf) {
        Ok(0) => {}
        Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!(
            "the 6th connection was not closed at once: {other:?} {:?}",
            String::from_utf8_lossy(&buf)
        ),
    }
    // The idle ones are closed at the header timeout, and then curl is served again.
    for h in idle {
        let closed = h.join().expect("idle client").expect(
            "an idle connection (no bytes sent) was still open after 8 s; header timeout 2 s",
        );
        assert!(
            closed <= Duration::from_secs(5),
            "an idle connection was closed after {closed:?}"
        );
    }
    let mut code = 0;
    wait_for(5, "a request to be served again", || {
        code = status(&url, &[]);
        code == 200
    });
    let text = metrics_when_served(&origin.url);
    assert!(
        metric_in(&text, "deltaward_mirror_refused_connections_total") >= 1,
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// 4. TLS and mutual TLS

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (p.self_signed(&key).expect("CA cert"), key)
}

fn leaf(
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
    issuer: &(rcgen::Certificate, rcgen::KeyPair),
) -> (rcgen::Certificate, rcgen::KeyPair) {
    use rcgen::{CertificateParams, DnType, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut p = CertificateParams::new(names).expect("leaf params");
    p.distinguished_name
        .push(DnType::CommonName, "deltaward test");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    (
        p.signed_by(&key, &issuer.0, &issuer.1).expect("leaf cert"),
        key,
    )
}

fn pki(dir: &Path) -> Pki {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        fs::write(&p, text).expect("pem");
        p
    };
    let good = ca("deltaward test CA");
    let rogue = ca("some other CA");
    let (server, server_key) = leaf(&["127.0.0.1", "localhost"], ServerAuth, &good);
    let (client, client_key) = leaf(&["device-1"], ClientAuth, &good);
    let (rogue_client, rogue_client_key) = leaf(&["device-1"], ClientAuth, &rogue);
    Pki {
        ca: write("ca.pem", good.0.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
        rogue_cert: write("rogue.pem", rogue_client.pem()),
        rogue_key: write("rogue.key", rogue_client_key.serialize_pem()),
    }
}

/// curl's exit status and `%{http_code}` for `url` with `args`.
fn try_get(url: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    a.extend_from_slice(args);
    a.push(url);
    let o = curl(&a);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).trim().to_owned(),
    )
}

#[test]
fn tls_and_mutual_tls_serve_only_the_clients_they_should() {
    let p = Published::new(1);
    let dir = p.dir();
    let k = pki(dir);
    let root = fs::read(p.repo.join("root.json")).expect("root");
    let origin = Server::start(
        dir,
        "origin-tls",
        &[
            "--root",
            s(&p.repo),
            "--tls-cert",
            s(&k.server_cert),
            "--tls-key",
            s(&k.server_key),
        ],
    );
    assert!(
        origin.url.starts_with("https://127.0.0.1:"),
        "{}",
        origin.url
    );
    let url = format!("{}/root.json", origin.url);
    assert_eq!(get_with(&url, &["--cacert", s(&k.ca)]), root);
    let by_name = url.replace("127.0.0.1", "localhost");
    assert_eq!(get_with(&by_name, &["--cacert", s(&k.ca)]), root);
    let o = curl(&[
        "--cacert",
        s(&k.ca),
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "2", "{o:?}");
    let o = curl(&[
        "--cacert",
        s(&k.ca),
        "--http1.1",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1.1", "{o:?}");
    // Not trusted without the CA; plain HTTP on the TLS port is no request either.
    let (code, http) = try_get(&url, &[]);
    assert!(
        code != Some(0) && http != "200",
        "without --cacert: {code:?} {http}"
    );
    let (code, http) = try_get(&url.replace("https://", "http://"), &[]);
    assert_ne!(http, "200", "plain HTTP to the TLS port: {code:?}");

    // Mutual TLS.
    let mtls = Server::start(
        dir,
        "origin-mtls",
        &[
            "--root",
            s(&p.repo),
            "--tls-cert",
            s(&k.server_cert),
            "--tls-key",
            s(&k.server_key),
            "--client-ca",
            s(&k.ca),
        ],
    );
    let murl = format!("{}/root.json", mtls.url);
    let (code, http) = try_get(&murl, &["--cacert", s(&k.ca)]);
    assert!(
        code != Some(0) && http != "200",
        "no client certificate: {code:?} {http}"
    );
    let (code, http) = try_get(
        &murl,
        &[
            "--cacert",
            s(&k.ca),
            "--cert",
            s(&k.rogue_cert),
            "--key",
            s(&k.rogue_key),
        ],
    );
    assert!(
        code != Some(0) && http != "200",
        "untrusted client certificate: {code:?} {http}"
    );
    // The server's own certificate is no client certificate (no clientAuth usage).
    let (code, http) = try_get(
        &murl,
        &[
            "--cacert",
            s(&k.ca),
            "--cert",
            s(&k.server_cert),
            "--key",
            s(&k.server_key),
        ],
    );
    assert!(
        code != Some(0) && http != "200",
        "server certificate as client: {code:?} {http}"
    );
    let good = [
        "--cacert",
        s(&k.ca),
        "--cert",
        s(&k.client_cert),
        "--key",
        s(&k.client_key),
    ];
    assert_eq!(get_with(&murl, &good), root);
    let mut h2 = good.to_vec();
    h2.extend_from_slice(&["--http2", "-o", "/dev/null", "-w", "%{http_version}", &murl]);
    assert_eq!(String::from_utf8_lossy(&curl(&h2).stdout), "2");

    // A mirror of the TLS origin trusts it only with --upstream-ca.
    let m = Server::mirror(
        dir,
        "mirror",
        &origin.url,
        &p.fx.path("cache"),
        &p.trust(),
        &["--upstream-ca", s(&k.ca)],
    );
    p.prime(&m.url, "2.0");
    for o in p.objects() {
        let want = fs::read(p.repo.join("objects").join(&o)).expect("object");
        assert_eq!(get(&format!("{}/objects/{o}", m.url)), want, "{o}");
    }
    let text = String::from_utf8(get_with(
        &format!("{}/metrics", origin.url),
        &["--cacert", s(&k.ca)],
    ))
    .expect("metrics");
    let served = metric_in(
        &text,
        "deltaward_mirror_requests_total{route=\"object\",code=\"200\"}",
    );
    assert_eq!(served, p.objects().len() as u64, "{text}");
    let cfg = config(
        dir,
        "fast-fail.toml",
        "[limits]\nupstream_tries = 1\nupstream_timeout = \"3s\"\n",
    );
    let untrusting = Server::mirror(
        dir,
        "mirror-untrusting",
        &origin.url,
        &p.fx.path("cache2"),
        &p.trust(),
        &["--config", s(&cfg)],
    );
    let code = status(
        &format!("{}/products/pump/channel.json", untrusting.url),
        &[],
    );
    assert!(
        code >= 500,
        "a mirror without --upstream-ca got {code} from the TLS origin"
    );
}

/// The body of a GET with extra curl `args` that must succeed.
fn get_with(url: &str, args: &[&str]) -> Vec<u8> {
    let mut a = vec!["-f"];
    a.extend_from_slice(args);
    a.push(url);
    let o = curl(&a);
    assert!(
        o.status.success(),
        "GET {url} {args:?}: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

// ---------------------------------------------------------------------------
// 5. Tiers

#[test]
fn tiers_of_mirrors_fetch_each_object_once_from_the_origin() {
    let p = Published::new(2);
    let dir = p.dir();
    let origin = Server::origin(dir, &p.repo);
    let regional = Server::mirror(
        dir,
        "regional",
        &origin.url,
        &p.fx.path("regional"),
        &p.trust(),
        &[],
    );
    let site_a = Server::mirror(
        dir,
        "site-a",
        &regional.url,
        &p.fx.path("site-a"),
        &p.trust(),
        &[],
    );
    let site_b = Server::mirror(
        dir,
        "site-b",
        &regional.url,
        &p.fx.path("site-b"),
        &p.trust(),
        &[],
    );
    let objects = p.objects();
    assert!(objects.len() >= 2, "{objects:?}");
    for site in [&site_a, &site_b] {
        p.prime(&site.url, "2.0");
        for o in &objects {
            let want = fs::read(p.repo.join("objects").join(o)).expect("object");
            assert_eq!(
                get(&format!("{}/objects/{o}", site.url)),
                want,
                "{} {o}",
                site.url
            );
        }
    }
    let n = objects.len() as u64;
    assert_eq!(
        origin.objects_served(),
        n,
        "objects fetched from the origin"
    );
    assert!(regional.metric("deltaward_mirror_cache_hits_total") >= n);
    assert_eq!(regional.metric("deltaward_mirror_cache_misses_total"), n);
    // Each site filled from the regional once.
    assert_eq!(site_a.metric("deltaward_mirror_cache_misses_total"), n);
    assert_eq!(site_b.metric("deltaward_mirror_cache_misses_total"), n);
}

// ---------------------------------------------------------------------------
// 6. SIGTERM drains

/// A download over a raw HTTP/1.1 connection that the test paces: it reads the head
/// and the first `first` body bytes, says so on `started`, and reads the rest only
/// when `go` is sent, so the response is still open at the server meanwhile (more
/// than the socket buffers hold is left). Returns the head and the body.
struct HeldDownload {
    started: std::sync::mpsc::Receiver<()>,
    go: std::sync::mpsc::Sender<()>,
    done: JoinHandle<(String, Vec<u8>)>,
}

fn held_download(addr: &str, path: &str, first: usize) -> HeldDownload {
    let (started_tx, started) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let mut c = TcpStream::connect(addr).expect("connect");
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("request");
    let done = std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(c);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = std::io::BufRead::read_line(&mut r, &mut line).expect("head");
            assert!(n > 0, "connection closed in the head: {head}");
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no Content-Length: {head}"));
        let mut body = vec![0u8; len];
        r.read_exact(&mut body[..first.min(len)])
            .expect("first bytes");
        let _ = started_tx.send(());
        let _ = go_rx.recv();
        let mut got = first.min(len);
        while got < len {
            match r.read(&mut body[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        body.truncate(got);
        (head, body)
    });
    HeldDownload { started, go, done }
}

#[test]
fn sigterm_finishes_open_downloads_and_refuses_new_connections() {
    let p = Published::new(8);
    let dir = p.dir();
    let full = p.objects()[0].clone();
    let want = fs::read(p.repo.join("objects").join(&full)).expect("object");
    assert!(
        want.len() >= 6 << 20,
        "full image object of {} bytes",
        want.len()
    );
    let mut origin = Server::origin(dir, &p.repo);
    let cfg = config(dir, "drain.toml", "[limits]\ndrain_timeout = \"20s\"\n");
    let mut m = Server::mirror(
        dir,
        "mirror",
        &origin.url,
        &p.fx.path("cache"),
        &p.trust(),
        &["--config", s(&cfg)],
    );
    p.prime(&m.url, "2.0");
    // One download straight from the origin, one through the mirror (a cold
    // object: its fill from the origin runs while both drain).
    let path = format!("/objects/{full}");
    let downloads: Vec<(String, HeldDownload)> = [&origin, &m]
        .iter()
        .map(|server| {
            (
                server.url.clone(),
                held_download(addr(&server.url), &path, 64 << 10),
            )
        })
        .collect();
    for (url, d) in &downloads {
        d.started
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    send_signal(&m, "TERM");
    send_signal(&origin, "TERM");
    // New connections are refused while the open downloads are held...
    for server in [&origin, &m] {
        wait_for(5, "the listener to close", || {
            TcpStream::connect(addr(&server.url)).is_err()
        });
    }
    // ... and the servers wait for them.
    for server in [&mut origin, &mut m] {
        assert!(
            server.child.try_wait().expect("try_wait").is_none(),
            "{} exited with a download open:\n{}",
            server.url,
            server.log_text()
        );
    }
    for (url, d) in downloads {
        d.go.send(()).expect("go");
        let (head, body) = d.done.join().expect("download");
        assert!(head.starts_with("HTTP/1.1 200"), "{url}: {head}");
        assert!(
            body == want,
            "download from {url}: {} of {} bytes, or different",
            body.len(),
            want.len()
        );
    }
    for server in [&mut m, &mut origin] {
        let st = server.child.wait().expect("wait");
        assert!(
            st.success(),
            "{} exited with {st:?}:\n{}",
            server.url,
            server.log_text()
        );
    }
}

// ---------------------------------------------------------------------------
// 7. Rate limit

#[test]
fn the_per_client_rate_limit_answers_429_and_spares_other_clients() {
    let p = Published::new(1);
    let cfg = config(
        p.dir(),
        "rate.toml",
        "[limits]\nclient_rate = 5\nclient_burst = 5\n",
    );
    let origin = Server::start(
        p.dir(),
        "origin",
        &["--root", s(&p.repo), "--config", s(&cfg)],
    );
    let url = format!("{}/root.json", origin.url);
    let mut args = vec!["-w", "%{http_code}\n"];
    for _ in 0..20 {
        args.extend_from_slice(&["-o", "/dev/null", &url]);
    }
    let o = curl(&args);
    let codes: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(codes.len(), 20, "{codes:?}");
    let ok = codes.iter().filter(|c| *c == "200").count();
    let limited = codes.iter().filter(|c| *c == "429").count();
    assert_eq!(ok + limited, 20, "{codes:?}");
    assert!(ok >= 5, "the burst of 5 was not allowed: {codes:?}");
    assert!(limited >= 1, "no request was limited: {codes:?}");
    // Another client address is not limited by this one's use.
    let (code, http) = try_get(&url, &["--interface", "127.0.0.2"]);
    assert_eq!((code, http.as_str()), (Some(0), "200"), "from 127.0.0.2");
    // A 429 says when to come back.
    let mut args = vec!["-D", "-"];
    for _ in 0..7 {
        args.extend_from_slice(&["-o", "/dev/null", &url]);
    }
    let o = curl(&args);
    let head = String::from_utf8_lossy(&o.stdout).to_ascii_lowercase();
    assert!(
        head.contains(" 429") && head.contains("retry-after: 1"),
        "{head}"
    );
    let text = metrics_when_served(&origin.url);
    assert!(
        metric_in(&text, "deltaward_mirror_rate_limited_total") >= limited as u64,
        "{text}"
    );
}

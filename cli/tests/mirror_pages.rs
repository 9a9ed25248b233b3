//! The mirror's operator pages on real origin and mirror processes, after real
//! devices updated through the mirror: the Atom feed read back by an XML reader
//! against the rules of RFC 4287, the JSON notices against the signed release, and
//! the HTML page as headless Chromium renders it (DOM and a screenshot, kept as
//! `target/test-artifacts/mirror-index.png`).
#![allow(clippy::disallowed_methods)] // reason: tests write their fixtures directly

mod common;

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::{bin, deltaward, net::*, s};
use quick_xml::{events::Event, name::ResolveResult, NsReader};

const ATOM_NS: &str = "http://www.w3.org/2005/Atom";

/// Release notes of 2.1: a security fix, and markup in the statement that must
/// reach every page as text.
const NOTES_21: &str = r#"hardware_ids = ["pump-a1"]
[compatibility]
statement = "For pump A1 on 1.x <script>alert(1)</script> & 2.0."
applies_from = ["1.0", "2.0"]
[[security_fixes]]
id = "CVE-2026-12345"
severity = "high"
summary = "Bolus limit bypass over the network"
[support]
class = "required"
end_of_support = "2030-01-01"
[approval]
approved = true
[installation]
instructions = "IFU section 4"
"#;

const STATEMENT_21: &str = "For pump A1 on 1.x <script>alert(1)</script> & 2.0.";

/// `deltaward update` of a copy of `image` through `mirror`, as device `id` with
/// hardware `hw`; its JSON output.
fn update(p: &Published, mirror: &str, id: &str, hw: &str, image: &Path) -> Output {
    let dir = p.fx.path(id);
    fs::create_dir_all(&dir).expect("device dir");
    let img = dir.join("current.img");
    fs::copy(image, &img).expect("image");
    deltaward(&[
        "update",
        "--mirror",
        mirror,
        "--product",
        "pump",
        "--hardware",
        hw,
        "--image",
        s(&img),
        "-o",
        s(&dir.join("new.img")),
        "--state",
        s(&dir.join("state")),
        "--init-root",
        s(&p.trust()),
        "--device-id",
        id,
        "--current-version",
        "1.0",
        "--json",
    ])
}

/// Status, headers (names lower-cased) and body of a request with curl.
fn request(method: &str, url: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let dir = tempfile::tempdir().expect("dir");
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let mut args = vec!["-D", s(&head), "-o", s(&body)];
    if method == "HEAD" {
        args.push("-I");
    } else {
        args.extend(["-X", method]);
    }
    args.push(url);
    let out = curl(&args);
    assert!(out.status.success(), "curl {url}: {out:?}");
    let head = fs::read_to_string(&head).expect("headers");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, fs::read(&body).unwrap_or_default())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// The repository, an origin, a mirror, two devices through it (one installs 2.1,
/// one with other hardware is refused), and the site's approval of 2.1.
struct Site {
    p: Published,
    _origin: Server,
    origin_url: String,
    mirror: Server,
}

fn site() -> Site {
    let p = Published::new(2);
    fs::write(&p.notes, NOTES_21).expect("notes");
    p.release("2.1", "3", &[]);
    let origin = Server::origin(p.dir(), &p.repo);
    let cache = p.fx.path("cache");
    let (key, logs) = (p.fx.path("mirror.key"), p.fx.path("logs"));
    common::ok(&common::deltaward(&[
        "keygen",
        "-s",
        common::s(&key),
        "-p",
        common::s(&p.fx.path("mirror.pub")),
        "--unencrypted",
    ]));
    let mirror = Server::mirror(
        p.dir(),
        "mirror",
        &origin.url,
        &cache,
        &p.trust(),
        &["--log-dir", common::s(&logs), "--log-key", common::s(&key)],
    );
    let out = update(&p, &mirror.url, "bed-12-pump", "pump-a1", &p.fx.old);
    common::ok(&out);
    // Other hardware: refused, and reported.
    let out = update(&p, &mirror.url, "icu-3-pump", "pump-b2", &p.fx.old);
    assert!(!out.status.success(), "{out:?}");
    // The site approves 2.1 (signed with the mirror's key); 2.0 stays unapproved.
    common::ok(&common::deltaward(&[
        "mirror",
        "approve",
        "--cache",
        common::s(&cache),
        "--log-dir",
        common::s(&logs),
        "--log-key",
        common::s(&key),
        "--product",
        "pump",
        "--version",
        "2.1",
        "--by",
        "Biomed J. Doe",
        "--note",
        "validated on ward 3",
    ]));
    let origin_url = origin.url.clone();
    Site {
        p,
        _origin: origin,
        origin_url,
        mirror,
    }
}

#[test]
fn the_pages_are_served_in_mirror_mode_only_with_their_types() {
    let site = site();
    for (path, ty) in [
        ("/", "text/html; charset=utf-8"),
        ("/feed.atom", "application/atom+xml"),
        ("/v1/notices.json", "application/json"),
    ] {
        let url = format!("{}{path}", site.mirror.url);
        let (code, h, body) = request("GET", &url);
        assert_eq!(code, 200, "{path}");
        assert_eq!(header(&h, "content-type"), ty, "{path}");
        assert_eq!(header(&h, "cache-control"), "no-cache", "{path}");
        assert_eq!(header(&h, "content-length"), body.len().to_string());
        assert!(header(&h, "etag").starts_with('"'), "{path}: {h:?}");
        assert!(
            header(&h, "content-security-policy").contains("default-src 'none'"),
            "{path}: {h:?}"
        );
        let (code, h, body) = request("HEAD", &url);
        assert_eq!(code, 200, "HEAD {path}");
        // With -I curl writes the head where the body would go: nothing else came.
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.starts_with("HTTP/") && !text.contains('<') && !text.contains('{'),
            "HEAD {path}: {text}"
        );
        assert!(header(&h, "content-length").parse::<u64>().expect("length") > 0);
        assert_eq!(header(&h, "content-type"), ty, "HEAD {path}");
        let (code, h, _) = request("POST", &url);
        assert_eq!(code, 405, "POST {path}");
        assert_eq!(header(&h, "allow"), "GET, HEAD");
        // An origin has no operator pages.
        assert_eq!(
            status(&format!("{}{path}", site.origin_url), &[]),
            404,
            "{path} at the origin"
        );
    }
    for other in ["/index.html", "/feed.atom.minisig", "/v1/notices", "//"] {
        assert_eq!(status(&format!("{}{other}", site.mirror.url), &[]), 404);
    }
}

/// Texts of the children of `<feed>` and of each `<entry>`, by local name (an
/// empty element's text is ""); every element must be in the Atom namespace, and
/// the root must be `<feed>`.
type Fields = Vec<(String, String)>;

fn read_feed(xml: &str) -> (Fields, Vec<Fields>) {
    let mut r = NsReader::from_str(xml);
    let atom = ResolveResult::Bound(quick_xml::name::Namespace(ATOM_NS));
    let (mut feed, mut entries) = (Fields::new(), Vec::<Fields>::new());
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut close =
        |path: &[String], name: String, text: String, entries: &mut Vec<Fields>| match path {
            [_] => feed.push((name, text)),
            [_, e] if e == "entry" => entries.last_mut().expect("entry").push((name, text)),
            _ => {}
        };
    loop {
        let (ns, ev) = r.read_resolved_event().expect("well-formed XML");
        if let Event::Start(e) | Event::Empty(e) = &ev {
            let name = e.local_name().as_ref().to_owned();
            assert_eq!(ns, atom, "<{name}> outside the Atom namespace");
            if path.is_empty() {
                assert_eq!(name, "feed", "the root element");
            }
        }
        match ev {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_owned();
                if name == "entry" && path.len() == 1 {
                    entries.push(Fields::new());
                }
                path.push(name);
                text.clear();
            }
            Event::Empty(e) => {
                close(
                    &path,
                    e.local_name().as_ref().to_owned(),
                    String::new(),
                    &mut entries,
                );
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(g) => match g.resolve_char_ref().expect("character reference") {
                Some(c) => text.push(c),
                None => text.push_str(
                    quick_xml::escape::resolve_xml_entity(&g.xml10_content())
                        .expect("a predefined entity"),
                ),
            },
            Event::End(_) => {
                let name = path.pop().expect("an open element");
                close(&path, name, std::mem::take(&mut text), &mut entries);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(path.is_empty(), "unclosed: {path:?}");
    (feed, entries)
}

fn field<'a>(f: &'a Fields, name: &str) -> Vec<&'a str> {
    f.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// An Atom date: RFC 3339.
fn atom_date(s: &str) {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s:?} is not an RFC 3339 time: {e}"));
}

#[test]
fn the_feed_follows_rfc_4287() {
    let site = site();
    let xml = get_text(&format!("{}/feed.atom", site.mirror.url));
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>"),
        "{xml}"
    );
    let (feed, entries) = read_feed(&xml);
    // atom:feed: exactly one id, title, updated; an author (no entry has one).
    for name in ["id", "title", "updated", "author"] {
        assert_eq!(field(&feed, name).len(), 1, "feed <{name}>: {feed:?}");
    }
    let id = field(&feed, "id")[0];
    assert!(id.starts_with("urn:deltaward:mirror:"), "{id}");
    atom_date(field(&feed, "updated")[0]);
    assert!(!field(&feed, "link").is_empty(), "a self link");
    assert!(xml.contains("rel=\"self\""), "{xml}");
    // The id is stable: the same on the next request.
    let again = get_text(&format!("{}/feed.atom", site.mirror.url));
    assert_eq!(field(&read_feed(&again).0, "id"), [id]);
    // atom:entry: exactly one id, title, updated each; ids unique.
    assert_eq!(entries.len(), 2, "{xml}");
    let mut ids = HashSet::new();
    for e in &entries {
        for name in ["id", "title", "updated"] {
            assert_eq!(field(e, name).len(), 1, "entry <{name}>: {e:?}");
        }
        atom_date(field(e, "updated")[0]);
        assert!(ids.insert(field(e, "id")[0].to_owned()), "ids are unique");
    }
    assert!(ids.contains("urn:deltaward:release:pump:2.1:3"), "{ids:?}");
    assert!(ids.contains("urn:deltaward:release:pump:2.0:2"), "{ids:?}");
    // Newest first: 2.1, its updated time the release's issue time.
    let release: serde_json::Value = serde_json::from_slice(
        &fs::read(site.p.repo.join("products/pump/releases/2.1/release.json")).expect("release"),
    )
    .expect("json");
    let first = &entries[0];
    assert!(field(first, "title")[0].contains("pump 2.1"), "{first:?}");
    assert_eq!(
        humantime::parse_rfc3339(field(first, "updated")[0]).expect("time"),
        humantime::parse_rfc3339(release["issued"].as_str().expect("issued")).expect("issued")
    );
    assert_eq!(field(first, "summary"), [STATEMENT_21], "read back as text");
    let content = field(first, "content")[0];
    for want in [
        "CVE-2026-12345 [high]: Bolus limit bypass over the network",
        "approved by the manufacturer",
        "approved on site by Biomed J. Doe at 20",
    ] {
        assert!(content.contains(want), "{want}: {content}");
    }
    assert!(
        field(&entries[1], "content")[0].contains("not approved on site"),
        "{:?}",
        entries[1]
    );
}

#[test]
fn the_json_notices_are_the_signed_releases() {
    let site = site();
    let v: serde_json::Value =
        serde_json::from_slice(&get(&format!("{}/v1/notices.json", site.mirror.url)))
            .expect("json");
    let notices = v["notices"].as_array().expect("notices");
    assert_eq!(notices.len(), 2, "{v:#}");
    for (n, version) in notices.iter().zip(["2.1", "2.0"]) {
        let release: serde_json::Value = serde_json::from_slice(
            &fs::read(
                site.p
                    .repo
                    .join(format!("products/pump/releases/{version}/release.json")),
            )
            .expect("release"),
        )
        .expect("json");
        for key in [
            "product",
            "version",
            "counter",
            "issued",
            "expires",
            "hardware_ids",
            "compatibility",
            "security_fixes",
            "support",
            "approval",
        ] {
            assert_eq!(n[key], release[key], "{version} {key}");
        }
    }
    assert_eq!(notices[0]["compatibility"]["statement"], STATEMENT_21);
    assert_eq!(notices[0]["security_fixes"][0]["id"], "CVE-2026-12345");
    assert_eq!(notices[0]["site_approval"]["approved"], true);
    assert_eq!(notices[0]["site_approval"]["by"], "Biomed J. Doe");
    assert!(notices[0]["site_approval"]["time"]
        .as_str()
        .expect("time")
        .starts_with("20"));
    assert_eq!(notices[1]["site_approval"]["approved"], false);
}

/// Headless Chromium with a profile of its own in `dir`: `args` then `url`.
fn chromium(dir: &Path, args: &[&str], url: &str) -> Output {
    let found = Command::new("chromium").arg("--version").output();
    assert!(
        found.as_ref().is_ok_and(|o| o.status.success()),
        "headless Chromium is needed to check the operator page as a browser shows it, \
         and `chromium` could not be run ({found:?}): install it (apt-get install chromium; \
         .ci/run does)"
    );
    let profile = dir.join("chromium-profile");
    Command::new("timeout")
        .arg("180")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium")
}

/// `target/test-artifacts`, beside the binary under test's profile directory.
fn artifacts() -> PathBuf {
    let target = Path::new(bin())
        .parent()
        .and_then(Path::parent)
        .expect("the target directory");
    let dir = target.join("test-artifacts");
    fs::create_dir_all(&dir).expect("test-artifacts");
    dir
}

#[test]
fn chromium_shows_the_releases_and_the_devices() {
    let site = site();
    let url = format!("{}/", site.mirror.url);
    let out = chromium(site.p.dir(), &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium --dump-dom: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "<html lang=\"en\">",
        "<title>deltaward mirror: updates and devices</title>",
        "Product pump",
        "pump 2.1",
        "pump 2.0",
        // The statement's markup stayed text: escaped in the DOM, no script element.
        "For pump A1 on 1.x &lt;script&gt;alert(1)&lt;/script&gt; &amp; 2.0.",
        "CVE-2026-12345",
        "Bolus limit bypass over the network",
        "required (the manufacturer requires this update); end of support 2030-01-01",
        "approved on site by Biomed J. Doe at 20",
        "not approved on site",
        "<th scope=\"row\">bed-12-pump</th>",
        "<th scope=\"row\">icu-3-pump</th>",
        "installed",
        "refused",
        "Objects cached",
        "<span class=\"ok\">reachable</span>",
    ] {
        assert!(dom.contains(want), "{want:?} not in the DOM:\n{dom}");
    }
    assert!(!dom.contains("<script"), "{dom}");
    // The installing device runs 2.1 now; the refused one still 1.0.
    let row = |id: &str| {
        dom.split("<tr>")
            .find(|r| r.contains(&format!(">{id}</th>")))
            .unwrap_or_default()
            .to_owned()
    };
    let bed = row("bed-12-pump");
    assert!(
        bed.contains("<td>2.1</td>") && bed.contains("installed"),
        "{bed}"
    );
    let icu = row("icu-3-pump");
    assert!(
        icu.contains("<td>1.0</td>") && icu.contains("refused"),
        "{icu}"
    );
    assert!(icu.contains("<td>pump-b2</td>"), "{icu}");

    let png = site.p.fx.path("mirror-index.png");
    let out = chromium(
        site.p.dir(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,2000",
        ],
        &url,
    );
    assert!(
        out.status.success(),
        "chromium --screenshot: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = fs::read(&png).expect("the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        bytes.len() > 10 * 1024,
        "a screenshot of {} bytes is blank",
        bytes.len()
    );
    let kept = artifacts().join("mirror-index.png");
    fs::copy(&png, &kept).expect("keep the screenshot");
    eprintln!("screenshot: {}", kept.display());

    // Printed (A4 by the page's own @page rule), kept beside it.
    let pdf = site.p.fx.path("mirror-index.pdf");
    let out = chromium(
        site.p.dir(),
        &[
            &format!("--print-to-pdf={}", pdf.display()),
            "--no-pdf-header-footer",
        ],
        &url,
    );
    assert!(
        out.status.success(),
        "chromium --print-to-pdf: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = fs::read(&pdf).expect("the PDF");
    assert!(bytes.starts_with(b"%PDF-"), "a PDF");
    // A4 is 595 x 842 points.
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("/MediaBox [0 0 595") || text.contains("/MediaBox [0 0 594"),
        "printed on A4"
    );
    fs::copy(&pdf, artifacts().join("mirror-index.pdf")).expect("keep the PDF");
}

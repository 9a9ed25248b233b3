//! The operator pages of a mirror: what a hospital's biomedical engineer reads
//! about the updates the mirror relays and the devices that took them.
//!
//! - `/`: one plain HTML page (no JavaScript, prints on A4): each cached product's
//!   releases as its cached channel lists them, newest first, with the update notice
//!   (compatibility, security fixes, support, manufacturer approval) and the site's
//!   own approval (`CACHE/approvals/<product>/<version>.json`), then the cache and
//!   the upstream link, then every device that reported, by its latest report
//!   (`CACHE/reports/*.json`).
//! - `/feed.atom`: the same notices as an Atom 1.0 feed (RFC 4287), one entry per
//!   release, written with an XML writer.
//! - `/v1/notices.json`: the same notices as JSON.
//!
//! Everything shown comes from documents the mirror verified, reports devices sent
//! and files an operator wrote: every string is cleaned of control characters
//! ([`printable`]) and escaped for its format ([`html_escape`] for HTML, the XML
//! writer for Atom, serde for JSON).

use std::{
    cmp::Reverse,
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use deltaward_engine::Digest;
use deltaward_release::{
    model::Release,
    notice::{html_text, printable, severity, support},
    repo::check_name,
};
use quick_xml::{events::BytesText, Writer};
use serde::{Deserialize, Serialize};

use crate::{
    docs::Parsed,
    metrics::Metrics,
    mirror::Mirror,
    report::{read_stored as read_reports, DeviceReports as Device, Outcome},
    route::{Doc, Route},
};

/// Most releases of one product shown (the newest by counter): each is one
/// document the mirror keeps verified.
pub const MAX_RELEASES_SHOWN: usize = 50;

/// Largest site approval file read.
pub const SITE_APPROVAL_MAX_BYTES: u64 = 64 << 10;

/// The Atom namespace.
pub const ATOM_NS: &str = "http://www.w3.org/2005/Atom";

/// A site's own approval of a release, as an operator recorded it in
/// `CACHE/approvals/<product>/<version>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteApproval {
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Who approved it.
    pub by: String,
    /// A note.
    #[serde(default)]
    pub note: String,
    /// When (RFC 3339).
    pub time: String,
    /// Whether the site accepted the manufacturer's mitigations (a release the
    /// manufacturer did not approve).
    #[serde(default)]
    pub accept_mitigations: bool,
}

/// What the site's approval file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// No approval file: not approved on site.
    NotApproved,
    /// Approved on site.
    Approved(SiteApproval),
    /// A file that is not a valid approval of this release (shown, counted as not
    /// approved).
    Unreadable(String),
}

/// One release's notice.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The verified release.
    pub release: Box<Release>,
    /// The site's approval.
    pub site: Site,
}

/// One product with a cached channel.
#[derive(Debug, Clone)]
pub struct Product {
    /// Its name.
    pub name: String,
    /// The channel document's version, when it could be had.
    pub channel_version: Option<u64>,
    /// Why the channel could not be had.
    pub error: Option<String>,
    /// Releases, newest (highest counter) first.
    pub notices: Vec<Notice>,
    /// Releases listed but not shown: older than the newest
    /// [`MAX_RELEASES_SHOWN`], or not verifiable now.
    pub not_shown: Vec<(String, String)>,
}

/// Everything the pages show.
#[derive(Debug, Clone)]
pub struct Overview {
    /// When it was gathered.
    pub generated: SystemTime,
    /// The feed's id: stable while the upstream and the cache directory stay.
    pub feed_id: String,
    /// The upstream URL (without any user information).
    pub upstream: String,
    /// Since when the upstream has been unreachable.
    pub down_since: Option<SystemTime>,
    /// Objects cached.
    pub cache_objects: i64,
    /// Bytes of objects cached.
    pub cache_bytes: i64,
    /// Products with a cached channel, by name.
    pub products: Vec<Product>,
    /// Devices, by id.
    pub devices: Vec<Device>,
    /// Report files read.
    pub reports: usize,
    /// Report files that could not be read or parsed.
    pub bad_reports: usize,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// An RFC 3339 time as Atom wants it (seconds, UTC), or `None`.
fn atom_time(s: &str) -> Option<String> {
    humantime::parse_rfc3339_weak(s).ok().map(rfc3339)
}

/// The URL without `user:password@`.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Gathers what the pages show: the documents through [`crate::docs::Docs::get`]
/// (verified as for devices), then the approval files and, with `devices`, the
/// reports, on a blocking thread.
pub async fn overview(m: &Arc<Mirror>, metrics: &Metrics, devices: bool) -> Overview {
    let mut products = Vec::new();
    for name in m.docs.products() {
        let mut p = Product {
            name: name.clone(),
            channel_version: None,
            error: None,
            notices: Vec::new(),
            not_shown: Vec::new(),
        };
        let channel = match m.docs.get(&Doc::Channel(name.clone())).await {
            Ok(e) => match &e.parsed {
                Parsed::Channel(c) => c.clone(),
                _ => continue,
            },
            Err(e) => {
                p.error = Some(e.to_string());
                products.push(p);
                continue;
            }
        };
        p.channel_version = Some(channel.version);
        let mut entries = channel.releases;
        entries.sort_by_key(|r| Reverse(r.counter));
        for (i, r) in entries.into_iter().enumerate() {
            if i >= MAX_RELEASES_SHOWN {
                p.not_shown.push((r.version, "older".into()));
                continue;
            }
            match m
                .docs
                .get(&Doc::Release(name.clone(), r.version.clone()))
                .await
            {
                Ok(e) => {
                    if let Parsed::Release(rel) = &e.parsed {
                        p.notices.push(Notice {
                            release: rel.clone(),
                            site: Site::NotApproved,
                        });
                    }
                }
                Err(e) => {
                    tracing::debug!("operator pages: {name} {}: {e}", r.version);
                    p.not_shown.push((r.version, e.to_string()));
                }
            }
        }
        products.push(p);
    }
    let cache = m.cache_dir().to_path_buf();
    let feed_id = format!(
        "urn:deltaward:mirror:{}",
        &Digest::of(format!("{}\n{}", m.upstream().base(), cache.display()).as_bytes()).to_string()
            [..32]
    );
    let mirror = m.clone();
    let read = tokio::task::spawn_blocking(move || {
        for p in &mut products {
            for n in &mut p.notices {
                n.site = match site_approval(&cache, &n.release.product, &n.release.version) {
                    // Shown as approved only when it verifies under the mirror's key.
                    Site::Approved(a) if !mirror.site_approval_verifies(&a.product, &a.version) => {
                        Site::Unreadable("not signed by this mirror's key".into())
                    }
                    s => s,
                };
            }
        }
        let reports = if devices {
            read_reports(&cache.join("reports"))
        } else {
            (Vec::new(), 0, 0)
        };
        (products, reports)
    })
    .await;
    let (products, (devices, reports, bad_reports)) = read.unwrap_or_else(|e| {
        tracing::warn!("operator pages: {e}");
        (Vec::new(), (Vec::new(), 0, 0))
    });
    Overview {
        generated: SystemTime::now(),
        feed_id,
        upstream: without_userinfo(m.upstream().base()),
        down_since: m.upstream().down_since(),
        cache_objects: metrics.cache_objects.get(),
        cache_bytes: metrics.cache_bytes.get(),
        products,
        devices,
        reports,
        bad_reports,
    }
}

/// The site's approval of `product` `version`.
pub fn site_approval(cache: &Path, product: &str, version: &str) -> Site {
    if check_name(product).is_err() || check_name(version).is_err() {
        return Site::NotApproved;
    }
    let path: PathBuf = cache
        .join("approvals")
        .join(product)
        .join(format!("{version}.json"));
    let bytes = match crate::config::read_capped(&path, SITE_APPROVAL_MAX_BYTES) {
        Ok(Some(b)) => b,
        Ok(None) => return Site::NotApproved,
        Err(e) => return Site::Unreadable(e),
    };
    match serde_json::from_slice::<SiteApproval>(&bytes) {
        Ok(a) if a.product == product && a.version == version => Site::Approved(a),
        Ok(a) => Site::Unreadable(format!(
            "the file approves {} {}, not this release",
            a.product, a.version
        )),
        Err(e) => Site::Unreadable(e.to_string()),
    }
}

/// A page's body and `Content-Type`.
pub async fn render(
    m: &Arc<Mirror>,
    metrics: &Metrics,
    route: &Route,
) -> (bytes::Bytes, &'static str) {
    let o = overview(m, metrics, *route == Route::Index).await;
    match route {
        Route::Feed => (atom(&o).into(), "application/atom+xml"),
        Route::Notices => {
            let mut s = notices_json(&o).to_string();
            s.push('\n');
            (s.into(), "application/json")
        }
        _ => (html(&o).into(), "text/html; charset=utf-8"),
    }
}

/// Cleaned and escaped for HTML.
fn esc(s: &str) -> String {
    html_text(s)
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Installed => "installed",
        Outcome::UpToDate => "up to date",
        Outcome::WaitingForApproval => "waiting for site approval",
        Outcome::Refused => "refused",
        Outcome::Failed => "failed",
    }
}

fn bytes_text(n: i64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {} ({n} bytes)", units[u])
    }
}

/// The manufacturer approval, as plain text lines.
fn manufacturer_text(r: &Release) -> String {
    if r.approval.approved {
        "approved by the manufacturer".to_owned()
    } else if r.approval.mitigations.is_empty() {
        "NOT approved by the manufacturer".to_owned()
    } else {
        format!(
            "NOT approved by the manufacturer; mitigations: {}",
            r.approval.mitigations.join("; ")
        )
    }
}

/// The site approval, as plain text.
fn site_text(s: &Site) -> String {
    match s {
        Site::NotApproved => "not approved on site".to_owned(),
        Site::Approved(a) => {
            let mut t = format!("approved on site by {} at {}", a.by, a.time);
            if a.accept_mitigations {
                t.push_str(" (mitigations accepted)");
            }
            if !a.note.is_empty() {
                let _ = write!(t, ": {}", a.note);
            }
            t
        }
        Site::Unreadable(e) => format!("not approved on site (approval file unreadable: {e})"),
    }
}

const CSS: &str = "\
body{font:15px/1.45 system-ui,-apple-system,\"Segoe UI\",sans-serif;color:#111;background:#fff;max-width:72rem;margin:1.5rem auto;padding:0 1rem}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.3rem;margin:2rem 0 .5rem;border-bottom:2px solid #333}
h3{font-size:1.15rem;margin:1.5rem 0 .4rem}h4{font-size:1rem;margin:1rem 0 .3rem}
table{border-collapse:collapse;width:100%;margin:.3rem 0 1rem}
th,td{border:1px solid #888;padding:.25rem .5rem;text-align:left;vertical-align:top}
td{overflow-wrap:anywhere}td p{margin:0 0 .3rem}td p:last-child{margin:0}.t{white-space:nowrap}
thead th{background:#e8e8e8}tbody th{background:#f6f6f6;font-weight:600}
caption{text-align:left;font-weight:600;padding:.2rem 0}
.kv th{width:13rem}.warn{color:#8a1c00;font-weight:700}.ok{color:#0b5a1e;font-weight:700}
.meta{color:#333}ul{margin:.2rem 0;padding-left:1.3rem}
a{color:#0645ad}
@page{size:A4;margin:14mm}
@media print{body{font-size:9.5pt;max-width:none;margin:0;padding:0}nav{display:none}
article,tr{break-inside:avoid}h2,h3,h4{break-after:avoid}a{color:inherit;text-decoration:none}
thead{display:table-header-group}}
";

/// The HTML page. Every string from a document, a report or a file is escaped.
pub fn html(o: &Overview) -> String {
    let mut h = String::new();
    let generated = rfc3339(o.generated);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>deltaward mirror: updates and devices</title>\n\
         <link rel=\"alternate\" type=\"application/atom+xml\" title=\"Update notices\" href=\"/feed.atom\">\n\
         <style>\n{CSS}</style>\n</head>\n<body>\n<header>\n<h1>deltaward mirror: updates and devices</h1>\n\
         <p class=\"meta\">Page generated at <time datetime=\"{g}\">{g}</time> from the documents this mirror \
         verified, the site approvals in its cache directory and the reports its devices sent. \
         Also as an <a href=\"/feed.atom\">Atom feed</a> and as <a href=\"/v1/notices.json\">JSON</a>.</p>\n\
         <nav aria-label=\"Sections\"><ul><li><a href=\"#releases\">Releases</a></li>\
         <li><a href=\"#mirror\">Cache and upstream</a></li><li><a href=\"#devices\">Devices</a></li></ul></nav>\n\
         </header>\n<main>\n",
        g = esc(&generated),
    );
    releases_html(&mut h, o);
    mirror_html(&mut h, o);
    devices_html(&mut h, o);
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

fn releases_html(h: &mut String, o: &Overview) {
    h.push_str("<section aria-labelledby=\"releases\">\n<h2 id=\"releases\">Releases</h2>\n");
    if o.products.is_empty() {
        h.push_str(
            "<p>No product yet: the mirror caches a product's channel when a device first asks for it.</p>\n",
        );
    }
    for (pi, p) in o.products.iter().enumerate() {
        let _ = write!(
            h,
            "<section aria-labelledby=\"product-{pi}\">\n<h3 id=\"product-{pi}\">Product {}</h3>\n",
            esc(&p.name)
        );
        if let Some(e) = &p.error {
            let _ = writeln!(
                h,
                "<p class=\"warn\">The channel could not be verified now: {}</p>",
                esc(e)
            );
        }
        if let Some(v) = p.channel_version {
            let _ = writeln!(
                h,
                "<p class=\"meta\">Channel version {v}: {} release(s) listed, newest first.</p>",
                p.notices.len() + p.not_shown.len()
            );
        }
        for (ri, n) in p.notices.iter().enumerate() {
            release_html(h, n, &format!("release-{pi}-{ri}"));
        }
        if !p.not_shown.is_empty() {
            h.push_str("<p>Listed but not shown:</p>\n<ul>\n");
            for (v, why) in &p.not_shown {
                let _ = writeln!(h, "<li>{}: {}</li>", esc(v), esc(why));
            }
            h.push_str("</ul>\n");
        }
        h.push_str("</section>\n");
    }
    h.push_str("</section>\n");
}

fn release_html(h: &mut String, n: &Notice, id: &str) {
    let r = &n.release;
    let c = &r.compatibility;
    let _ = write!(
        h,
        "<article aria-labelledby=\"{id}\">\n<h4 id=\"{id}\">{} {}</h4>\n\
         <table class=\"kv\">\n<caption>Update notice of {} {}</caption>\n<tbody>\n",
        esc(&r.product),
        esc(&r.version),
        esc(&r.product),
        esc(&r.version),
    );
    let row = |h: &mut String, k: &str, v: &str| {
        let _ = writeln!(h, "<tr><th scope=\"row\">{k}</th><td>{v}</td></tr>");
    };
    row(h, "Version", &esc(&r.version));
    row(h, "Release counter", &r.counter.to_string());
    row(
        h,
        "Issued / valid until",
        &format!("{} / {}", esc(&r.issued), esc(&r.expires)),
    );
    let mut compat = format!("<p>{}</p>", esc(&c.statement));
    for (k, v) in [
        ("Applies from", &c.applies_from),
        ("Hardware", &c.hardware),
        ("Requires", &c.requires),
        ("Incompatible with", &c.incompatible_with),
    ] {
        if !v.is_empty() {
            let list: Vec<String> = v.iter().map(|x| esc(x)).collect();
            let _ = write!(compat, "<p>{k}: {}</p>", list.join(", "));
        }
    }
    row(h, "Compatibility", &compat);
    let hw: Vec<String> = r.hardware_ids.iter().map(|x| esc(x)).collect();
    row(h, "Hardware ids", &hw.join(", "));
    row(
        h,
        "Support",
        &format!(
            "{}; end of support {}",
            support(r.support.class),
            esc(&r.support.end_of_support)
        ),
    );
    let manufacturer = if r.approval.approved {
        "<span class=\"ok\">Approved</span> by the manufacturer".to_owned()
    } else {
        let mut s = "<span class=\"warn\">NOT approved</span> by the manufacturer".to_owned();
        if r.approval.mitigations.is_empty() {
            s.push_str("; no mitigations stated");
        } else {
            s.push_str(". Mitigations:<ul>");
            for m in &r.approval.mitigations {
                let _ = write!(s, "<li>{}</li>", esc(m));
            }
            s.push_str("</ul>");
        }
        s
    };
    row(h, "Manufacturer approval", &manufacturer);
    let site = match &n.site {
        Site::Approved(_) => format!("<span class=\"ok\">{}</span>", esc(&site_text(&n.site))),
        s => format!("<span class=\"warn\">{}</span>", esc(&site_text(s))),
    };
    row(h, "Site approval", &site);
    h.push_str("</tbody>\n</table>\n");
    if r.security_fixes.is_empty() {
        h.push_str("<p>No security fixes in this release.</p>\n");
    } else {
        let mut fixes: Vec<_> = r.security_fixes.iter().collect();
        fixes.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(&b.id)));
        let _ = write!(
            h,
            "<table>\n<caption>Security fixes in {} {}</caption>\n<thead><tr><th scope=\"col\">Id</th>\
             <th scope=\"col\">Severity</th><th scope=\"col\">Summary</th></tr></thead>\n<tbody>\n",
            esc(&r.product),
            esc(&r.version)
        );
        for f in fixes {
            let _ = writeln!(
                h,
                "<tr><th scope=\"row\">{}</th><td>{}{}</td><td>{}</td></tr>",
                esc(&f.id),
                severity(f.severity),
                f.cvss_vector
                    .as_deref()
                    .map(|v| format!(" ({})", esc(v)))
                    .unwrap_or_default(),
                esc(&f.summary)
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("</article>\n");
}

fn mirror_html(h: &mut String, o: &Overview) {
    let upstream = match o.down_since {
        Some(t) => format!(
            "<span class=\"warn\">unreachable since {}</span>: verified documents are served from the cache until their signed expiry",
            esc(&rfc3339(t))
        ),
        None => "<span class=\"ok\">reachable</span> (the last request got an answer)".to_owned(),
    };
    let _ = write!(
        h,
        "<section aria-labelledby=\"mirror\">\n<h2 id=\"mirror\">Cache and upstream</h2>\n\
         <table class=\"kv\">\n<caption>State of this mirror</caption>\n<tbody>\n\
         <tr><th scope=\"row\">Objects cached</th><td>{}</td></tr>\n\
         <tr><th scope=\"row\">Bytes cached</th><td>{}</td></tr>\n\
         <tr><th scope=\"row\">Products with a cached channel</th><td>{}</td></tr>\n\
         <tr><th scope=\"row\">Upstream</th><td>{}</td></tr>\n\
         <tr><th scope=\"row\">Upstream link</th><td>{upstream}</td></tr>\n\
         </tbody>\n</table>\n</section>\n",
        o.cache_objects,
        esc(&bytes_text(o.cache_bytes)),
        o.products.len(),
        esc(&o.upstream),
    );
}

fn devices_html(h: &mut String, o: &Overview) {
    let _ = write!(
        h,
        "<section aria-labelledby=\"devices\">\n<h2 id=\"devices\">Devices</h2>\n\
         <p class=\"meta\">{} device(s), each by its latest delivery report; {} report file(s) read{}.</p>\n",
        o.devices.len(),
        o.reports,
        if o.bad_reports > 0 {
            format!(", {} unreadable", o.bad_reports)
        } else {
            String::new()
        }
    );
    if o.devices.is_empty() {
        h.push_str("<p>No device has sent a delivery report to this mirror yet.</p>\n</section>\n");
        return;
    }
    h.push_str(
        "<table>\n<caption>Devices by their latest report</caption>\n<thead><tr>\
         <th scope=\"col\">Device</th><th scope=\"col\">Product</th><th scope=\"col\">Hardware</th>\
         <th scope=\"col\">Runs version</th><th scope=\"col\">Last outcome</th>\
         <th scope=\"col\">Finished</th><th scope=\"col\">Reason</th></tr></thead>\n<tbody>\n",
    );
    for d in &o.devices {
        let r = &d.latest;
        let class = match r.outcome {
            Outcome::Installed | Outcome::UpToDate => "ok",
            Outcome::WaitingForApproval | Outcome::Refused | Outcome::Failed => "warn",
        };
        let _ = writeln!(
            h,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td>\
             <td><span class=\"{class}\">{}</span></td><td class=\"t\">{}</td><td>{}</td></tr>",
            esc(&r.device_id),
            esc(&r.product),
            esc(&r.hardware_id),
            esc(r.runs_version().unwrap_or("unknown")),
            outcome(r.outcome),
            esc(&r.finished),
            esc(r.reason.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

/// Every notice, newest first (by issue time, then product and counter).
fn all_notices(o: &Overview) -> Vec<&Notice> {
    let mut v: Vec<&Notice> = o.products.iter().flat_map(|p| &p.notices).collect();
    v.sort_by(|a, b| {
        let t = |n: &Notice| humantime::parse_rfc3339_weak(&n.release.issued).ok();
        t(b).cmp(&t(a))
            .then_with(|| a.release.product.cmp(&b.release.product))
            .then_with(|| b.release.counter.cmp(&a.release.counter))
    });
    v
}

/// The text of a feed entry: compatibility, fixes, support, approvals.
fn entry_text(n: &Notice) -> String {
    let r = &n.release;
    let mut t = format!("Compatibility: {}\n", r.compatibility.statement);
    if r.security_fixes.is_empty() {
        t.push_str("Security fixes: none\n");
    } else {
        t.push_str("Security fixes:\n");
        for f in &r.security_fixes {
            let _ = writeln!(t, "- {} [{}]: {}", f.id, severity(f.severity), f.summary);
        }
    }
    let _ = writeln!(
        t,
        "Support: {}; end of support {}",
        support(r.support.class),
        r.support.end_of_support
    );
    let _ = writeln!(t, "Manufacturer approval: {}", manufacturer_text(r));
    let _ = write!(t, "Site approval: {}", site_text(&n.site));
    // Control characters are not XML 1.0 text: cleaned line by line.
    t.lines().map(printable).collect::<Vec<_>>().join("\n")
}

/// The Atom 1.0 feed (RFC 4287): one entry per release, `updated` its issue time.
pub fn atom(o: &Overview) -> String {
    let notices = all_notices(o);
    let generated = rfc3339(o.generated);
    let updated = notices
        .iter()
        .filter_map(|n| atom_time(&n.release.issued))
        .max()
        .unwrap_or_else(|| generated.clone());
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let text = |s: &str| BytesText::new(s).into_owned();
    let r = w
        .create_element("feed")
        .with_attribute(("xmlns", ATOM_NS))
        .write_inner_content(|w| {
            w.create_element("id")
                .write_text_content(text(&o.feed_id))?;
            w.create_element("title")
                .write_text_content(text("deltaward mirror: update notices"))?;
            w.create_element("subtitle")
                .write_text_content(text(&printable(&format!(
                    "Releases verified by the mirror of {}, with manufacturer and site approval",
                    o.upstream
                ))))?;
            w.create_element("updated")
                .write_text_content(text(&updated))?;
            w.create_element("link")
                .with_attributes([("rel", "self"), ("href", "/feed.atom")])
                .with_attribute(("type", "application/atom+xml"))
                .write_empty()?;
            w.create_element("link")
                .with_attributes([("rel", "alternate"), ("href", "/")])
                .with_attribute(("type", "text/html"))
                .write_empty()?;
            w.create_element("author").write_inner_content(|w| {
                w.create_element("name")
                    .write_text_content(text("deltaward mirror"))?;
                Ok(())
            })?;
            w.create_element("generator")
                .write_text_content(text("deltaward-mirror"))?;
            for n in &notices {
                let r = &n.release;
                let id = format!(
                    "urn:deltaward:release:{}:{}:{}",
                    r.product, r.version, r.counter
                );
                let title = printable(&format!(
                    "{} {} (release counter {}){}",
                    r.product,
                    r.version,
                    r.counter,
                    if r.approval.approved {
                        ""
                    } else {
                        ": NOT approved by the manufacturer"
                    }
                ));
                let when = atom_time(&r.issued).unwrap_or_else(|| generated.clone());
                let href = format!(
                    "/products/{}/releases/{}/release.json",
                    r.product, r.version
                );
                w.create_element("entry").write_inner_content(|w| {
                    w.create_element("id").write_text_content(text(&id))?;
                    w.create_element("title")
                        .with_attribute(("type", "text"))
                        .write_text_content(text(&title))?;
                    w.create_element("updated")
                        .write_text_content(text(&when))?;
                    w.create_element("published")
                        .write_text_content(text(&when))?;
                    w.create_element("link")
                        .with_attributes([("rel", "alternate"), ("href", href.as_str())])
                        .with_attribute(("type", "application/json"))
                        .write_empty()?;
                    w.create_element("category")
                        .with_attribute(("term", r.product.as_str()))
                        .write_empty()?;
                    w.create_element("summary")
                        .with_attribute(("type", "text"))
                        .write_text_content(text(&printable(&r.compatibility.statement)))?;
                    w.create_element("content")
                        .with_attribute(("type", "text"))
                        .write_text_content(text(&entry_text(n)))?;
                    Ok(())
                })?;
            }
            Ok(())
        });
    if let Err(e) = r {
        // Writing into a Vec cannot fail.
        tracing::error!("writing the feed: {e}");
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str(&String::from_utf8_lossy(&w.into_inner()));
    out.push('\n');
    out
}

/// The notices as JSON: one object per release, newest first.
pub fn notices_json(o: &Overview) -> serde_json::Value {
    let notices: Vec<serde_json::Value> = all_notices(o)
        .into_iter()
        .map(|n| {
            let r = &n.release;
            let site = match &n.site {
                Site::NotApproved => serde_json::json!({ "approved": false }),
                Site::Approved(a) => serde_json::json!({
                    "approved": true,
                    "by": a.by,
                    "time": a.time,
                    "note": a.note,
                    "accept_mitigations": a.accept_mitigations,
                }),
                Site::Unreadable(e) => serde_json::json!({ "approved": false, "error": e }),
            };
            serde_json::json!({
                "product": r.product,
                "version": r.version,
                "counter": r.counter,
                "issued": r.issued,
                "expires": r.expires,
                "hardware_ids": r.hardware_ids,
                "compatibility": r.compatibility,
                "security_fixes": r.security_fixes,
                "support": r.support,
                "approval": r.approval,
                "site_approval": site,
            })
        })
        .collect();
    serde_json::json!({
        "generated": rfc3339(o.generated),
        "upstream": o.upstream,
        "notices": notices,
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // reason: tests write their fixture files directly
mod tests {
    use std::fs;

    use crate::report::Report;
    use deltaward_release::model::{
        Approval, Compatibility, FullImage, Installation, Object, SecurityFix, Support, Target,
    };
    use quick_xml::{events::Event, name::ResolveResult, NsReader};

    use super::*;
    use crate::report::{Image, REPORT_TYPE};

    fn release(version: &str, counter: u64, statement: &str) -> Release {
        let d = Digest::of(b"x");
        Release {
            kind: "deltaward-release".into(),
            spec_version: 1,
            product: "pump".into(),
            hardware_ids: vec!["pump-a1".into()],
            version: version.into(),
            counter,
            issued: format!("2026-0{counter}-01T10:00:00Z"),
            expires: "2027-01-01T00:00:00Z".into(),
            target: Target {
                length: 1,
                blake3: d,
                sha256: d,
            },
            bases: vec![],
            full_image: FullImage {
                object: Object {
                    path: format!("objects/{d}"),
                    blake3: d,
                    length: 1,
                },
                compression: "zstd".into(),
                window_log: 20,
            },
            compatibility: Compatibility {
                statement: statement.into(),
                ..Compatibility::default()
            },
            security_fixes: vec![SecurityFix {
                id: "CVE-2026-0001".into(),
                severity: deltaward_release::model::Severity::High,
                cvss_vector: None,
                summary: "Fixes <b>&amp; a\u{1b}[31m \"quoted\" overflow".into(),
            }],
            support: Support {
                class: deltaward_release::model::SupportClass::Required,
                end_of_support: "2030-01-01".into(),
            },
            approval: Approval {
                approved: false,
                mitigations: vec!["Isolate the <pump> network".into()],
            },
            installation: Installation {
                instructions: "IFU".into(),
            },
        }
    }

    fn overview() -> Overview {
        let evil = "For A1 <script>alert(1)</script> & \"friends\"";
        let device = Report {
            kind: REPORT_TYPE.into(),
            spec_version: 1,
            device_id: "bed-<7>".into(),
            product: "pump".into(),
            hardware_id: "pump-a1".into(),
            finished: "2026-03-02T10:00:00Z".into(),
            from: Image {
                version: Some("1.0".into()),
                ..Image::default()
            },
            outcome: Outcome::Refused,
            reason: Some("<img src=x onerror=alert(1)>".into()),
            ..Report::default()
        };
        Overview {
            generated: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
            feed_id: "urn:deltaward:mirror:0123".into(),
            upstream: "http://origin.example/<repo>".into(),
            down_since: None,
            cache_objects: 3,
            cache_bytes: 3 << 20,
            products: vec![Product {
                name: "pump".into(),
                channel_version: Some(4),
                error: None,
                notices: vec![
                    Notice {
                        release: Box::new(release("2.1", 3, evil)),
                        site: Site::Approved(SiteApproval {
                            product: "pump".into(),
                            version: "2.1".into(),
                            by: "Dr <i>Who</i>".into(),
                            note: String::new(),
                            time: "2026-03-03T08:00:00Z".into(),
                            accept_mitigations: true,
                        }),
                    },
                    Notice {
                        release: Box::new(release("2.0", 2, "For A1 on 1.x.")),
                        site: Site::NotApproved,
                    },
                ],
                not_shown: vec![],
            }],
            devices: vec![Device {
                latest: device,
                reports: 2,
            }],
            reports: 2,
            bad_reports: 0,
        }
    }

    #[test]
    fn every_string_is_escaped_in_the_page() {
        let h = html(&overview());
        assert!(!h.contains("<script"), "{h}");
        assert!(
            h.contains("For A1 &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;friends&quot;"),
            "{h}"
        );
        assert!(!h.contains("<img"), "{h}");
        assert!(h.contains("&lt;img src=x onerror=alert(1)&gt;"), "{h}");
        assert!(h.contains("bed-&lt;7&gt;"), "{h}");
        assert!(h.contains("Dr &lt;i&gt;Who&lt;/i&gt;"), "{h}");
        assert!(h.contains("Isolate the &lt;pump&gt; network"), "{h}");
        assert!(h.contains("http://origin.example/&lt;repo&gt;"), "{h}");
        // Control characters are gone, the escape sequence with them.
        assert!(!h.contains('\u{1b}'));
        assert!(h.contains("&lt;b&gt;&amp;amp; a [31m &quot;quoted&quot; overflow"));
        // The facts are there.
        for want in [
            "<html lang=\"en\">",
            "<title>",
            "CVE-2026-0001",
            "approved on site by Dr &lt;i&gt;Who&lt;/i&gt; at 2026-03-03T08:00:00Z (mitigations accepted)",
            "not approved on site",
            "NOT approved</span> by the manufacturer",
            "<th scope=\"col\">Device</th>",
            "<td>1.0</td>",
            "refused",
        ] {
            assert!(h.contains(want), "{want}: {h}");
        }
    }

    #[test]
    fn the_page_has_no_script_and_no_event_handlers() {
        let h = html(&overview()).to_lowercase();
        assert!(!h.contains("<script"));
        assert!(!h.contains("javascript:"));
        for tag in h
            .split('<')
            .skip(1)
            .filter_map(|t| t.split_once('>'))
            .map(|t| t.0)
        {
            assert!(
                !tag.split_whitespace().skip(1).any(|a| a.starts_with("on")),
                "an event handler attribute: <{tag}>"
            );
        }
    }

    /// Text of the direct children of `<feed>` and of each `<entry>`, by name.
    type Fields = Vec<(String, String)>;

    fn parse_feed(xml: &str) -> (Fields, Vec<Fields>) {
        let mut r = NsReader::from_str(xml);
        let (mut feed, mut entries) = (Vec::new(), Vec::<Fields>::new());
        let mut path: Vec<String> = Vec::new();
        let mut text = String::new();
        let atom_ns = ResolveResult::Bound(quick_xml::name::Namespace(ATOM_NS));
        loop {
            let (ns, ev) = r.read_resolved_event().expect("well-formed XML");
            match ev {
                Event::Start(e) => {
                    assert_eq!(ns, atom_ns, "every element is in the Atom namespace");
                    let name = e.local_name().as_ref().to_owned();
                    if name == "entry" {
                        entries.push(Vec::new());
                    }
                    path.push(name);
                    text.clear();
                }
                Event::Empty(e) => {
                    assert_eq!(ns, atom_ns, "every element is in the Atom namespace");
                    let name = e.local_name().as_ref().to_owned();
                    match path.as_slice() {
                        [_] => feed.push((name, String::new())),
                        [_, e] if e == "entry" => entries
                            .last_mut()
                            .expect("entry")
                            .push((name, String::new())),
                        _ => {}
                    }
                }
                Event::Text(t) => text.push_str(&t.xml10_content()),
                Event::GeneralRef(g) => {
                    let c = g.resolve_char_ref().expect("char ref");
                    match c {
                        Some(c) => text.push(c),
                        None => text.push_str(
                            quick_xml::escape::resolve_xml_entity(&g.xml10_content())
                                .expect("predefined entity"),
                        ),
                    }
                }
                Event::End(_) => {
                    let name = path.pop().expect("open element");
                    match path.as_slice() {
                        [_] => feed.push((name, std::mem::take(&mut text))),
                        [_, e] if e == "entry" => entries
                            .last_mut()
                            .expect("entry")
                            .push((name, std::mem::take(&mut text))),
                        _ => text.clear(),
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        (feed, entries)
    }

    fn field<'a>(f: &'a Fields, name: &str) -> Vec<&'a str> {
        f.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn the_feed_is_atom() {
        let xml = atom(&overview());
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>"));
        assert!(!xml.contains('\u{1b}'));
        let (feed, entries) = parse_feed(&xml);
        for name in ["id", "title", "updated"] {
            assert_eq!(field(&feed, name).len(), 1, "feed {name}: {feed:?}");
        }
        assert_eq!(field(&feed, "id"), ["urn:deltaward:mirror:0123"]);
        // The newest release's issue time.
        assert_eq!(field(&feed, "updated"), ["2026-03-01T10:00:00Z"]);
        assert_eq!(field(&feed, "link").len(), 2);
        assert_eq!(entries.len(), 2);
        let mut ids = Vec::new();
        for e in &entries {
            for name in ["id", "title", "updated", "summary", "content"] {
                assert_eq!(field(e, name).len(), 1, "entry {name}: {e:?}");
            }
            ids.push(field(e, "id")[0].to_owned());
        }
        assert_eq!(
            ids,
            [
                "urn:deltaward:release:pump:2.1:3",
                "urn:deltaward:release:pump:2.0:2"
            ]
        );
        let first = &entries[0];
        assert_eq!(field(first, "updated"), ["2026-03-01T10:00:00Z"]);
        assert_eq!(
            field(first, "summary"),
            ["For A1 <script>alert(1)</script> & \"friends\""],
            "escaped by the writer, read back whole"
        );
        let content = field(first, "content")[0];
        for want in [
            "CVE-2026-0001 [high]",
            "NOT approved by the manufacturer; mitigations: Isolate the <pump> network",
            "approved on site by Dr <i>Who</i>",
        ] {
            assert!(content.contains(want), "{want}: {content}");
        }
        assert!(xml.contains("&lt;script&gt;"), "{xml}");
    }

    #[test]
    fn the_notices_are_json() {
        let v = notices_json(&overview());
        let n = &v["notices"];
        assert_eq!(n.as_array().map(Vec::len), Some(2));
        assert_eq!(n[0]["version"], "2.1");
        assert_eq!(n[0]["counter"], 3);
        assert_eq!(n[0]["security_fixes"][0]["id"], "CVE-2026-0001");
        assert_eq!(n[0]["approval"]["approved"], false);
        assert_eq!(n[0]["site_approval"]["approved"], true);
        assert_eq!(n[0]["site_approval"]["by"], "Dr <i>Who</i>");
        assert_eq!(n[1]["site_approval"]["approved"], false);
    }

    #[test]
    fn site_approvals_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(site_approval(dir.path(), "pump", "2.0"), Site::NotApproved);
        assert_eq!(site_approval(dir.path(), "..", "2.0"), Site::NotApproved);
        let d = dir.path().join("approvals/pump");
        fs::create_dir_all(&d).expect("mkdir");
        let a = |p: &str, v: &str| {
            serde_json::json!({"product": p, "version": v, "by": "biomed", "note": "ok",
                "time": "2026-03-03T08:00:00Z", "accept_mitigations": false})
            .to_string()
        };
        fs::write(d.join("2.0.json"), a("pump", "2.0")).expect("write");
        assert!(
            matches!(site_approval(dir.path(), "pump", "2.0"), Site::Approved(x) if x.by == "biomed")
        );
        fs::write(d.join("2.1.json"), a("pump", "2.0")).expect("write");
        assert!(matches!(
            site_approval(dir.path(), "pump", "2.1"),
            Site::Unreadable(_)
        ));
        fs::write(d.join("2.2.json"), "{").expect("write");
        assert!(matches!(
            site_approval(dir.path(), "pump", "2.2"),
            Site::Unreadable(_)
        ));
    }

    #[test]
    fn the_latest_report_of_each_device_counts() {
        let dir = tempfile::tempdir().expect("dir");
        let rep = |id: &str, finished: &str, outcome: Outcome, to: Option<&str>| Report {
            kind: REPORT_TYPE.into(),
            spec_version: 1,
            device_id: id.into(),
            finished: finished.into(),
            outcome,
            from: Image {
                version: Some("1.0".into()),
                ..Image::default()
            },
            to: to.map(|v| Image {
                version: Some(v.into()),
                ..Image::default()
            }),
            ..Report::default()
        };
        for (i, r) in [
            rep("a", "2026-03-01T10:00:00Z", Outcome::Failed, Some("2.0")),
            rep("a", "2026-03-02T10:00:00Z", Outcome::Installed, Some("2.0")),
            rep("a", "2026-02-01T10:00:00Z", Outcome::Refused, None),
            rep("b", "2026-03-02T10:00:00Z", Outcome::Refused, Some("2.0")),
        ]
        .iter()
        .enumerate()
        {
            fs::write(
                dir.path().join(format!("{i}.json")),
                serde_json::to_vec(r).expect("json"),
            )
            .expect("write");
        }
        fs::write(dir.path().join("bad.json"), "{}").expect("write");
        let (devices, read, bad) = read_reports(dir.path());
        assert_eq!((read, bad), (5, 1));
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].reports, 3);
        assert_eq!(devices[0].latest.outcome, Outcome::Installed);
        assert_eq!(devices[0].latest.runs_version(), Some("2.0"));
        assert_eq!(
            devices[1].latest.runs_version(),
            Some("1.0"),
            "refused: still 1.0"
        );
    }

    #[test]
    fn user_information_is_not_shown() {
        assert_eq!(
            without_userinfo("https://u:p@updates.example/repo"),
            "https://updates.example/repo"
        );
        assert_eq!(
            without_userinfo("http://127.0.0.1:8/a@b"),
            "http://127.0.0.1:8/a@b"
        );
    }
}

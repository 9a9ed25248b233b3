//! Request paths, normalised once: the repository layout and the mirror's own
//! endpoints, nothing else.
//!
//! A path is accepted only in its one canonical spelling: ASCII, `/`-separated,
//! every component a safe name (letters, digits, `.`, `_`, `+`, `-`, not starting
//! with `.`), no empty component, and no `%` at all, so that no encoded `.`, `/` or
//! NUL can reach a file name. Anything else, `/../`, `%2e%2e`, `%2f`, `//`, a
//! backslash, is not a route (404). The one exception to "no empty component" is
//! `/` itself, the operator page. The query string is ignored.

use deltaward_engine::Digest;
use deltaward_release::repo::check_name;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`.
    Health,
    /// `/metrics` (Prometheus text).
    Metrics,
    /// `/v1/reports`: devices POST their delivery reports.
    Reports,
    /// A signed document, or its `.minisig` when `sig`.
    Document {
        /// Which document.
        doc: Doc,
        /// The `.minisig` beside it.
        sig: bool,
    },
    /// `/objects/<blake3>`.
    Object(Digest),
    /// `/`: the operator page (mirror mode).
    Index,
    /// `/feed.atom`: the update notices as an Atom feed (mirror mode).
    Feed,
    /// `/v1/notices.json`: the update notices as JSON (mirror mode).
    Notices,
}

/// A signed document of the repository layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Doc {
    /// `/root.json`: the newest root.
    Root,
    /// `/roots/N.root.json`.
    RootVersion(u64),
    /// `/products/P/channel.json`.
    Channel(String),
    /// `/products/P/releases/V/release.json`.
    Release(String, String),
}

impl Doc {
    /// Its path in the repository (no leading `/`).
    pub fn rel(&self) -> String {
        match self {
            Self::Root => "root.json".to_owned(),
            Self::RootVersion(n) => format!("roots/{n}.root.json"),
            Self::Channel(p) => format!("products/{p}/channel.json"),
            Self::Release(p, v) => format!("products/{p}/releases/{v}/release.json"),
        }
    }
}

impl Route {
    /// The route of a request path (without the query), or `None`: 404.
    pub fn parse(path: &str) -> Option<Self> {
        if path == "/" {
            return Some(Self::Index);
        }
        let rest = path.strip_prefix('/')?;
        if rest.contains('%') || !rest.is_ascii() {
            return None;
        }
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| check_name(p).is_err()) {
            return None;
        }
        let (last, sig) = match parts.last()?.strip_suffix(".minisig") {
            Some(base) => (base, true),
            None => (*parts.last()?, false),
        };
        let doc = match (parts.as_slice(), last) {
            (["healthz"], _) if !sig => return Some(Self::Health),
            (["metrics"], _) if !sig => return Some(Self::Metrics),
            (["v1", "reports"], _) if !sig => return Some(Self::Reports),
            (["v1", "notices.json"], _) if !sig => return Some(Self::Notices),
            (["feed.atom"], _) if !sig => return Some(Self::Feed),
            (["objects", name], _) if !sig => {
                // Lower-case hex only: one spelling per object.
                if name.bytes().any(|b| b.is_ascii_uppercase()) {
                    return None;
                }
                return Digest::from_hex(name).map(Self::Object);
            }
            ([_], "root.json") => Doc::Root,
            (["roots", _], file) => {
                let n = file.strip_suffix(".root.json")?;
                // Digits only (u64's parser takes a leading `+`), no leading zero.
                if n.starts_with('0') || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Doc::RootVersion(n.parse().ok()?)
            }
            (["products", p, _], "channel.json") => Doc::Channel((*p).to_owned()),
            (["products", p, "releases", v, _], "release.json") => {
                Doc::Release((*p).to_owned(), (*v).to_owned())
            }
            _ => return None,
        };
        Some(Self::Document { doc, sig })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_routed() {
        let d = Digest::of(b"x").to_string();
        assert_eq!(
            Route::parse(&format!("/objects/{d}")),
            Some(Route::Object(Digest::of(b"x")))
        );
        assert_eq!(
            Route::parse("/root.json"),
            Some(Route::Document {
                doc: Doc::Root,
                sig: false
            })
        );
        assert_eq!(
            Route::parse("/roots/12.root.json.minisig"),
            Some(Route::Document {
                doc: Doc::RootVersion(12),
                sig: true
            })
        );
        assert_eq!(
            Route::parse("/products/pump/channel.json"),
            Some(Route::Document {
                doc: Doc::Channel("pump".into()),
                sig: false
            })
        );
        let r = Route::parse("/products/pump/releases/2.0+b1/release.json.minisig");
        assert_eq!(
            r,
            Some(Route::Document {
                doc: Doc::Release("pump".into(), "2.0+b1".into()),
                sig: true
            })
        );
        assert_eq!(Route::parse("/healthz"), Some(Route::Health));
        assert_eq!(Route::parse("/metrics"), Some(Route::Metrics));
        assert_eq!(Route::parse("/"), Some(Route::Index));
        assert_eq!(Route::parse("/feed.atom"), Some(Route::Feed));
        assert_eq!(Route::parse("/v1/notices.json"), Some(Route::Notices));
    }

    #[test]
    fn traversal_and_other_spellings_are_not_routes() {
        let d = Digest::of(b"x").to_string();
        for p in [
            "/../root.json",
            "/products/../root.json",
            "/products/%2e%2e/channel.json",
            "/products/pump%2fchannel.json",
            "/products/pump/./channel.json",
            "//root.json",
            "/products//channel.json",
            "root.json",
            "/products\\pump/channel.json",
            "/products/pump/channel.json/",
            "/products/.hidden/channel.json",
            "/roots/01.root.json",
            "/roots/+1.root.json",
            "/roots/+4444444544444444441.root.json",
            "/roots/99999999999999999999.root.json",
            "/roots/x.root.json",
            "/roots/1.root.json.minisig.minisig",
            "/objects/abc",
            "/objects/../objects",
            "/healthz.minisig",
            "/etc/passwd",
            "/products/p\u{e9}/channel.json",
            "/products/p\0/channel.json",
            "",
            "//",
            "/index.html",
            "/feed.atom/",
            "/feed.atom.minisig",
            "/feed%2eatom",
            "/v1/notices.json.minisig",
            "/v1/notices.json/",
            "/v1//notices.json",
            "/v1/notices",
            "/products/feed.atom",
        ] {
            assert_eq!(Route::parse(p), None, "{p}");
        }
        assert_eq!(
            Route::parse(&format!("/objects/{}", d.to_uppercase())),
            None
        );
        assert_eq!(Route::parse(&format!("/objects/{d}.minisig")), None);
    }
}

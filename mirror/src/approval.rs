//! Site approval: the hospital's change management. With `--require-approval`, the
//! mirror serves a release's `release.json` and objects only once the site has
//! approved that release (`deltaward mirror approve`); until then devices get `403`
//! with a JSON reason and `deltaward update` reports "waiting for site approval".
//!
//! An approval is `CACHE/approvals/<product>/<version>.json` with its `.minisig`,
//! signed by the mirror's own log key (trusted comment
//! `deltaward-site-approval product=P version=V`); the mirror honours only approvals
//! that verify under that key, and writes each to the delivery log once. A release the
//! maker marked as not approved needs `--accept-mitigations`, and the approval carries
//! the maker's mitigations.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use deltaward_engine::{Digest, SecretKey, TrustedKeys};
use deltaward_release::{model::Release, repo::check_name};
use serde::{Deserialize, Serialize};

use crate::{
    cache::CacheDir,
    error::{ConfigError, Error, Result},
};

/// A site's approval of one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Product.
    pub product: String,
    /// Release version.
    pub version: String,
    /// Its release counter.
    pub counter: u64,
    /// BLAKE3 of the release.json approved (hex).
    pub release_blake3: String,
    /// Who approved.
    pub by: String,
    /// Why, or under which change ticket.
    pub note: Option<String>,
    /// When (RFC 3339).
    pub time: String,
    /// Whether the maker approved the release.
    pub maker_approved: bool,
    /// Whether the site accepted the maker's mitigations (a release the maker did not approve).
    pub accept_mitigations: bool,
    /// The maker's mitigations, as the release states them.
    pub mitigations: Vec<String>,
}

/// The trusted comment of an approval's signature.
pub fn comment(product: &str, version: &str) -> String {
    format!("deltaward-site-approval product={product} version={version}")
}

fn paths(cache: &Path, product: &str, version: &str) -> (PathBuf, PathBuf) {
    let p = cache
        .join("approvals")
        .join(product)
        .join(format!("{version}.json"));
    let sig = p.with_extension("json.minisig");
    (p, sig)
}

/// Records the site's approval of `product` `version`, which the mirror must have
/// verified and cached already, signed with the mirror's `key`.
pub fn approve(
    cache: &Path,
    key: &SecretKey,
    product: &str,
    version: &str,
    by: &str,
    note: Option<&str>,
    accept_mitigations: bool,
) -> Result<Approval> {
    check_name(product)?;
    check_name(version)?;
    let rel = format!("products/{product}/releases/{version}/release.json");
    let env = CacheDir::read_doc_at(cache, &rel)?.ok_or_else(|| ConfigError::Invalid {
        setting: "--version",
        reason: format!(
            "the mirror has not verified {rel} (let a device or `mirror sync` fetch it first)"
        ),
    })?;
    let release = Release::from_json(env.doc.as_bytes())?;
    if !release.approval.approved && !accept_mitigations {
        return Err(Error::MakerNotApproved {
            product: product.to_owned(),
            version: version.to_owned(),
            mitigations: release.approval.mitigations.clone(),
        });
    }
    let a = Approval {
        product: product.to_owned(),
        version: version.to_owned(),
        counter: release.counter,
        release_blake3: Digest::of(env.doc.as_bytes()).to_string(),
        by: by.to_owned(),
        note: note.map(str::to_owned),
        time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        maker_approved: release.approval.approved,
        accept_mitigations,
        mitigations: release.approval.mitigations.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&a).map_err(|e| Error::Report(e.to_string()))?;
    let sig = key
        .sign(&bytes, &comment(product, version))
        .map_err(deltaward_engine::Error::from)?;
    let (p, s) = paths(cache, product, version);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // The signature first: an approval file is never there without it.
    deltaward_engine::write_file(&s, sig.as_bytes())?;
    deltaward_engine::write_file(&p, &bytes)?;
    Ok(a)
}

/// The site's approval of `product` `version`, if one is recorded and verifies under
/// `keys` (the mirror's own key) for the release cached now.
pub fn approved(
    cache: &Path,
    keys: &TrustedKeys,
    product: &str,
    version: &str,
    release_json: &[u8],
) -> Option<Approval> {
    let (p, s) = paths(cache, product, version);
    let bytes = crate::config::read_capped(&p, 64 << 10).ok()??;
    let sig = String::from_utf8(crate::config::read_capped(&s, 64 << 10).ok()??).ok()?;
    match keys.verify(&bytes, &sig) {
        Ok(c) if c == comment(product, version) => {}
        _ => {
            tracing::warn!("{}: not signed by this mirror's key; ignored", p.display());
            return None;
        }
    }
    let a: Approval = serde_json::from_slice(&bytes).ok()?;
    (a.product == product
        && a.version == version
        && a.release_blake3 == Digest::of(release_json).to_string())
    .then_some(a)
}

/// Whether this approval has been written to the delivery log (a marker beside it).
pub fn logged(cache: &Path, a: &Approval) -> bool {
    paths(cache, &a.product, &a.version)
        .0
        .with_extension("logged")
        .exists()
}

/// Marks an approval as written to the delivery log.
pub fn mark_logged(cache: &Path, a: &Approval) -> Result<()> {
    let p = paths(cache, &a.product, &a.version)
        .0
        .with_extension("logged");
    deltaward_engine::write_file(&p, b"")?;
    Ok(())
}

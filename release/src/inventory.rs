//! What a repository holds for readers, verified as a device would verify it, in
//! the order a publisher must upload it so that no reader ever sees a broken
//! repository: objects, then releases, then roots, then each product's channel.
//!
//! The documents are kept as the bytes that were verified, so that a publisher
//! uploads exactly those even if the repository changes meanwhile.

use std::time::{Duration, SystemTime};

use deltaward_engine::read_head;
use rayon::prelude::*;

use crate::{
    check::{newest, verify_channel, verify_object, verify_release},
    error::{
        invalid, Error, InvalidError, Mismatch, RefusedError, ReleaseId, Result, UnpublishableError,
    },
    limits::{CHANNEL_JSON_MAX_BYTES, RELEASE_JSON_MAX_BYTES, ROOT_JSON_MAX_BYTES},
    model::{ChannelEntry, Object, Release, Root},
    repo::{check_name, check_rel, parse_time, Repo},
    source::{read_signatures, read_signed},
    trust::{trusted_keys, verify_document, verify_rotation, RoleName},
};

/// Memory allowed for holding a patch's manifest while its signature is checked.
const PATCH_HEAD_MEMORY: u64 = 256 << 20;

/// A verified document: its path, its bytes and its `.minisig` text.
#[derive(Debug, Clone)]
pub struct Document {
    /// Repository path (`products/P/channel.json`).
    pub rel: String,
    /// The bytes that were verified.
    pub bytes: Vec<u8>,
    /// The signatures that were verified with them.
    pub sigs: String,
}

/// The files of a verified repository, each group in upload order.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Every object a listed release names (patches and full images), once each,
    /// smallest first.
    pub objects: Vec<Object>,
    /// `release.json` of every release a channel lists.
    pub releases: Vec<Document>,
    /// `roots/N.root.json` from 1 up, then `root.json`.
    pub roots: Vec<Document>,
    /// Each product's `channel.json`.
    pub channels: Vec<Document>,
}

impl Inventory {
    /// Every document in upload order.
    pub fn documents(&self) -> impl Iterator<Item = &Document> {
        self.releases
            .iter()
            .chain(&self.roots)
            .chain(&self.channels)
    }
}

fn refuse(file: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |source| {
        Error::Unpublishable(UnpublishableError {
            file: file.to_owned(),
            source: Box::new(source),
        })
    }
}

/// Verifies the repository in `repo` as a device would, and lists what it holds:
/// - the chain of roots from `roots/1.root.json` (self-signed), each the signed
///   rotation of the one before, and `root.json` (and its signatures) the newest
///   of them;
/// - each product's `channel.json` under the newest root, unexpired at `now`;
/// - each release the channel lists: its length and hash as the channel signs
///   them and its signatures; the newest unexpired under the newest root, older
///   ones as of their own issue time and under the newest root their signatures
///   meet;
/// - each patch those releases name: its signature under the release role of that
///   root (as the device checks it before applying), and that its manifest goes
///   from the base the release names to the release's image;
/// - each object: its length and BLAKE3 (hashed on the rayon pool).
///
/// Any failure is an [`Error::Unpublishable`] naming the file.
pub fn verify_repository(repo: &Repo, now: SystemTime) -> Result<Inventory> {
    let mut inv = Inventory::default();
    let (root, older) = root_documents(repo, &mut inv.roots)?;
    let mut roots: Vec<&Root> = older.iter().collect();
    roots.push(&root);

    let products_dir = repo.path("products");
    let mut products = Vec::new();
    if let Ok(dir) = std::fs::read_dir(&products_dir) {
        for entry in dir {
            let entry = entry.map_err(crate::error::io_err("listing", &products_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            check_name(&name).map_err(refuse("products/"))?;
            products.push(name);
        }
    }
    products.sort();
    let mut patches = Vec::new();
    for product in &products {
        let rel = Repo::channel_rel(product);
        if !repo.has(&rel) {
            return Err(refuse(&rel)(Error::Refused(RefusedError::NoChannel {
                product: product.clone(),
                dir: repo.dir().to_path_buf(),
            })));
        }
        let (bytes, sigs) =
            read_signed(repo, &rel, CHANNEL_JSON_MAX_BYTES).map_err(refuse(&rel))?;
        let (channel, _) =
            verify_channel(&root, product, &bytes, &sigs, now).map_err(refuse(&rel))?;
        let newest_counter = newest(&channel).map_err(refuse(&rel))?.counter;
        for entry in &channel.releases {
            let candidates: Vec<&Root> = if entry.counter == newest_counter {
                vec![&root]
            } else {
                roots.iter().rev().copied().collect()
            };
            let at_issue = entry.counter != newest_counter;
            let (doc, release, by) =
                listed_release(repo, &candidates, product, entry, now, at_issue)
                    .map_err(refuse(&entry.path))?;
            for base in &release.bases {
                patches.push((base.clone(), release.target.clone(), by));
            }
            for object in release
                .bases
                .iter()
                .map(|b| &b.patch)
                .chain([&release.full_image.object])
            {
                if !inv.objects.iter().any(|o| o.path == object.path) {
                    inv.objects.push(object.clone());
                }
            }
            inv.releases.push(doc);
        }
        inv.channels.push(Document { rel, bytes, sigs });
    }
    for (base, target, by) in &patches {
        let rel = &base.patch.path;
        check_patch(repo, roots[*by], base, target).map_err(refuse(rel))?;
    }
    inv.objects
        .par_iter()
        .map(|o| verify_object(repo, o).map_err(refuse(&o.path)).map(drop))
        .collect::<Result<Vec<()>>>()?;
    inv.objects
        .sort_by(|a, b| (a.length, &a.path).cmp(&(b.length, &b.path)));
    Ok(inv)
}

/// The chain of roots, from the bytes read once: `roots/1.root.json` self-signed,
/// each next one a signed rotation, then `root.json`, which must be the newest with
/// the same signatures. Pushes each as a document; returns the newest root and the
/// older ones.
fn root_documents(repo: &Repo, docs: &mut Vec<Document>) -> Result<(Root, Vec<Root>)> {
    let first = Repo::root_rel(1);
    let (bytes, sigs) = read_signed(repo, &first, ROOT_JSON_MAX_BYTES).map_err(refuse(&first))?;
    let mut current = Root::from_json(&bytes).map_err(refuse(&first))?;
    verify_document(&current, RoleName::Root, "root.json", 1, &bytes, &sigs)
        .map_err(refuse(&first))?;
    docs.push(Document {
        rel: first,
        bytes,
        sigs,
    });
    let mut older = Vec::new();
    while let Some(next) = current.version.checked_add(1) {
        let rel = Repo::root_rel(next);
        if !repo.has(&rel) {
            break;
        }
        let (bytes, sigs) = read_signed(repo, &rel, ROOT_JSON_MAX_BYTES).map_err(refuse(&rel))?;
        let root = verify_rotation(&current, &bytes, &sigs).map_err(refuse(&rel))?;
        older.push(std::mem::replace(&mut current, root));
        docs.push(Document { rel, bytes, sigs });
    }
    let (bytes, sigs) =
        read_signed(repo, "root.json", ROOT_JSON_MAX_BYTES).map_err(refuse("root.json"))?;
    if docs
        .last()
        .is_none_or(|d| d.bytes != bytes || d.sigs != sigs)
    {
        return Err(refuse("root.json")(invalid(
            "root.json",
            InvalidError::NotNewestRoot {
                version: current.version,
            },
        )));
    }
    docs.push(Document {
        rel: "root.json".into(),
        bytes,
        sigs,
    });
    Ok((current, older))
}

/// A release the channel lists, read once and verified against the entry under the
/// first of `roots` (newest first) its signatures meet: at `now`, or, for an older
/// release (`at_issue`), as of its own issue time (it may have expired since).
/// Returns the document, the release and the position in the chain (version - 1)
/// of the root that verified it.
fn listed_release(
    repo: &Repo,
    roots: &[&Root],
    product: &str,
    entry: &ChannelEntry,
    now: SystemTime,
    at_issue: bool,
) -> Result<(Document, Release, usize)> {
    if entry.length > RELEASE_JSON_MAX_BYTES {
        return Err(Error::Limit {
            file: entry.path.clone(),
            limit: crate::error::LimitError::TooLarge {
                max: RELEASE_JSON_MAX_BYTES,
            },
        });
    }
    check_rel(&entry.path)?;
    let bytes = repo.read(&entry.path, entry.length)?;
    let sigs = read_signatures(repo, &entry.path)?;
    let at = if at_issue {
        let issued = Release::from_json(&bytes)?.issued;
        parse_time(&entry.path, &issued)? + Duration::from_secs(1)
    } else {
        now
    };
    let id = ReleaseId {
        product: product.to_owned(),
        version: entry.version.clone(),
        counter: entry.counter,
    };
    let mut last = None;
    for root in roots {
        match verify_release(root, &id, Some(entry), &bytes, &sigs, at) {
            Ok((release, _)) => {
                let by = root.version.saturating_sub(1) as usize;
                let doc = Document {
                    rel: entry.path.clone(),
                    bytes,
                    sigs,
                };
                return Ok((doc, release, by));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| crate::check::missing_file(&entry.path)))
}

/// A patch a release names, as the device checks it before applying: signed by
/// the release role of `root`, from the base the release names to its image.
fn check_patch(
    repo: &Repo,
    root: &Root,
    base: &crate::model::Base,
    target: &crate::model::Target,
) -> Result<()> {
    let keys = trusted_keys(root, RoleName::Release)?;
    let mut file = repo.open(&base.patch.path)?;
    let head = read_head(&mut file, &keys, PATCH_HEAD_MEMORY)?;
    let m = &head.manifest;
    let what = base.patch.path.clone();
    if m.source_hash != base.blake3 || m.source_size != base.length {
        return Err(Error::MixAndMatch {
            what,
            mismatch: Mismatch::Blake3 {
                expected: base.blake3,
                found: m.source_hash,
            },
        });
    }
    if m.target_hash != target.blake3 || m.target_size != target.length {
        return Err(Error::MixAndMatch {
            what,
            mismatch: Mismatch::Blake3 {
                expected: target.blake3,
                found: m.target_hash,
            },
        });
    }
    Ok(())
}

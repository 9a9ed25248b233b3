//! What a repository holds for readers, verified as a device would verify it, in
//! the order a publisher must upload it so that no reader ever sees a broken
//! repository: objects, then releases, then roots, then each product's channel.

use std::time::{Duration, SystemTime};

use rayon::prelude::*;

use crate::{
    check::{load_release, missing_file, newest, verify_channel, verify_object},
    error::{Error, RefusedError, Result, UnpublishableError},
    limits::{CHANNEL_JSON_MAX_BYTES, ROOT_JSON_MAX_BYTES},
    model::{ChannelEntry, Object, Root},
    repo::{check_name, parse_time, root_chain, Repo},
    source::read_signed,
};

/// The files of a verified repository, each group in upload order. Documents are
/// named without their `.minisig`, which goes up just before each.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Every object a listed release names (patches and full images), once each,
    /// smallest first.
    pub objects: Vec<Object>,
    /// `release.json` of every release a channel lists.
    pub releases: Vec<String>,
    /// `roots/N.root.json` from 1 up, then `root.json`.
    pub roots: Vec<String>,
    /// Each product's `channel.json`.
    pub channels: Vec<String>,
}

impl Inventory {
    /// Every document (without `.minisig`) in upload order.
    pub fn documents(&self) -> impl Iterator<Item = &str> {
        self.releases
            .iter()
            .chain(&self.roots)
            .chain(&self.channels)
            .map(String::as_str)
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
///   rotation of the one before, and `root.json` the newest of them;
/// - each product's `channel.json` under the newest root, unexpired at `now`;
/// - each release the channel lists: its length and hash as the channel signs
///   them and its signatures; the newest unexpired under the newest root, older
///   ones as of their own issue time and under the root that signed them;
/// - each object those releases name: its length and BLAKE3 (hashed on the rayon
///   pool).
///
/// Any failure is an [`Error::Unpublishable`] naming the file.
pub fn verify_repository(repo: &Repo, now: SystemTime) -> Result<Inventory> {
    let (root, older) = root_chain(repo).map_err(refuse("roots/1.root.json"))?;
    let (current, _) =
        read_signed(repo, "root.json", ROOT_JSON_MAX_BYTES).map_err(refuse("root.json"))?;
    let (newest_bytes, _) = read_signed(repo, &Repo::root_rel(root.version), ROOT_JSON_MAX_BYTES)
        .map_err(refuse("root.json"))?;
    if current != newest_bytes {
        return Err(refuse("root.json")(Error::Invalid {
            file: "root.json".into(),
            reason: crate::error::InvalidError::NotNewestRoot {
                version: root.version,
            },
        }));
    }
    let mut inv = Inventory {
        roots: (1..=root.version)
            .map(Repo::root_rel)
            .chain(["root.json".to_owned()])
            .collect(),
        ..Inventory::default()
    };

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
    let mut roots: Vec<&Root> = older.iter().collect();
    roots.push(&root);
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
            let release = if entry.counter == newest_counter {
                load_release(repo, &root, product, entry.clone(), now)
            } else {
                older_release(repo, &roots, product, entry)
            }
            .map_err(refuse(&entry.path))?
            .0;
            inv.releases.push(entry.path.clone());
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
        }
        inv.channels.push(rel);
    }
    inv.objects
        .par_iter()
        .map(|o| verify_object(repo, o).map_err(refuse(&o.path)).map(drop))
        .collect::<Result<Vec<()>>>()?;
    inv.objects
        .sort_by(|a, b| (a.length, &a.path).cmp(&(b.length, &b.path)));
    Ok(inv)
}

/// A release the channel lists that is not its newest: verified as of its own issue
/// time (it may have expired since), under the newest root that its signatures
/// meet (its keys may have been rotated out since).
fn older_release(
    repo: &Repo,
    roots: &[&Root],
    product: &str,
    entry: &ChannelEntry,
) -> Result<crate::check::SignedRelease> {
    let bytes = repo.read(&entry.path, entry.length)?;
    let issued = crate::model::Release::from_json(&bytes)?.issued;
    let at = parse_time(&entry.path, &issued)? + Duration::from_secs(1);
    let mut last = None;
    for root in roots.iter().rev() {
        match load_release(repo, root, product, entry.clone(), at) {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| missing_file(&entry.path)))
}

//! Prefetch for a maintenance window: every release the current channels list, with
//! every patch and full image, through the same verified fills as serving.

use std::sync::Arc;

use deltaward_engine::Digest;

use crate::{
    docs::Parsed,
    error::Result,
    mirror::{Mirror, ObjectAnswer},
    route::Doc,
};

/// What a sync reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// The objects to have, and their total bytes.
    Planned {
        /// Objects.
        objects: usize,
        /// Bytes.
        bytes: u64,
    },
    /// Bytes of objects in hand so far (cached before, or fetched).
    Progress {
        /// Bytes.
        bytes: u64,
    },
    /// Something could not be fetched or verified (the sync goes on).
    Failed {
        /// What.
        what: String,
        /// Why.
        reason: String,
    },
}

/// The outcome of a sync.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Products synced.
    pub products: Vec<String>,
    /// Releases listed by their channels.
    pub releases: usize,
    /// Objects those releases name.
    pub objects: usize,
    /// Of which already cached.
    pub already_cached: usize,
    /// Of which fetched now.
    pub fetched: usize,
    /// Bytes fetched now.
    pub fetched_bytes: u64,
    /// What failed, with why.
    pub failures: Vec<(String, String)>,
}

/// Syncs `products` (or, with none, every product the cache has a channel of).
pub async fn sync(
    mirror: &Arc<Mirror>,
    products: &[String],
    on: &(dyn Fn(Event) + Send + Sync),
) -> Result<Summary> {
    let mut s = Summary {
        products: if products.is_empty() {
            mirror.docs.products()
        } else {
            products.to_vec()
        },
        ..Summary::default()
    };
    let fail = |s: &mut Summary, what: String, reason: String| {
        on(Event::Failed {
            what: what.clone(),
            reason: reason.clone(),
        });
        s.failures.push((what, reason));
    };
    if let Err(e) = mirror.docs.get(&Doc::Root).await {
        fail(&mut s, "root.json".into(), e.to_string());
    }
    let mut wanted: Vec<(Digest, u64)> = Vec::new();
    for p in s.products.clone() {
        let channel = match mirror.docs.get(&Doc::Channel(p.clone())).await {
            Ok(e) => match &e.parsed {
                Parsed::Channel(c) => c.clone(),
                _ => continue,
            },
            Err(e) => {
                fail(&mut s, Doc::Channel(p.clone()).rel(), e.to_string());
                continue;
            }
        };
        for entry in &channel.releases {
            s.releases += 1;
            let doc = Doc::Release(p.clone(), entry.version.clone());
            match mirror.docs.get(&doc).await {
                Ok(e) => {
                    if let Parsed::Release(r) = &e.parsed {
                        for o in r
                            .bases
                            .iter()
                            .map(|b| &b.patch)
                            .chain([&r.full_image.object])
                        {
                            if !wanted.iter().any(|(d, _)| *d == o.blake3) {
                                wanted.push((o.blake3, o.length));
                            }
                        }
                    }
                }
                Err(e) => fail(&mut s, doc.rel(), e.to_string()),
            }
        }
    }
    // What devices on site need for the current releases first (patches for the bases
    // they run, the full image for the others), then the rest.
    let needed = mirror.needed_by_devices();
    wanted.sort_by_key(|(d, _)| !needed.contains(d));
    s.objects = wanted.len();
    on(Event::Planned {
        objects: wanted.len(),
        bytes: wanted.iter().map(|(_, n)| n).sum(),
    });
    let mut done = 0u64;
    for (d, len) in wanted {
        if mirror.objects.contains(&d) {
            s.already_cached += 1;
            done += len;
            on(Event::Progress { bytes: done });
            continue;
        }
        let ok = match mirror.object(&d) {
            Ok(ObjectAnswer::Cached(_)) => {
                s.already_cached += 1;
                true
            }
            Ok(ObjectAnswer::Filling(f)) => {
                let base = done;
                let watched = f.clone();
                let ok = f
                    .finished(|| {
                        on(Event::Progress {
                            bytes: base + watched.written(),
                        })
                    })
                    .await;
                if ok {
                    s.fetched += 1;
                    s.fetched_bytes += len;
                }
                ok
            }
            Ok(ObjectAnswer::NotNamed) => false,
            Err(e) => {
                fail(&mut s, format!("objects/{d}"), e.to_string());
                continue;
            }
        };
        if !ok {
            fail(
                &mut s,
                format!("objects/{d}"),
                "could not be fetched and verified (see the log)".into(),
            );
        }
        done += len;
        on(Event::Progress { bytes: done });
        tokio::task::yield_now().await;
    }
    Ok(s)
}

//! Origin mode: a repository made by `deltaward release`, served as it is (the
//! maker's own server, or a test's). Paths are confined to the repository; links and
//! special files are refused.

use std::{collections::HashMap, path::Path, sync::Mutex};

use bytes::Bytes;
use deltaward_engine::{Digest, Image};
use deltaward_release::{limits::SIGNATURE_FILE_MAX_BYTES, repo::Repo};

use crate::{
    error::{ConfigError, Error, Result},
    route::Doc,
};

/// Most object maps kept open between requests.
const MAPS_KEPT: usize = 4096;

/// A repository directory served as it is.
#[derive(Debug)]
pub struct Origin {
    repo: Repo,
    maps: Mutex<HashMap<Digest, Bytes>>,
}

impl Origin {
    /// Serves the repository at `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ConfigError::Invalid {
                setting: "--root",
                reason: format!("{} is not a directory", dir.display()),
            }
            .into());
        }
        Ok(Self {
            repo: Repo::new(dir),
            maps: Mutex::default(),
        })
    }

    /// A document or its signatures; `None` when the repository has none.
    pub async fn document(&self, doc: &Doc, sig: bool) -> Result<Option<Bytes>> {
        let mut rel = doc.rel();
        let max = if sig {
            rel.push_str(".minisig");
            SIGNATURE_FILE_MAX_BYTES
        } else {
            crate::docs::max_bytes(doc)
        };
        let repo = self.repo.clone();
        tokio::task::spawn_blocking(move || {
            if !repo.has(&rel) {
                return Ok(None);
            }
            Ok(Some(Bytes::from(repo.read(&rel, max)?)))
        })
        .await
        .map_err(|e| Error::Io {
            action: "reading",
            path: self.repo.dir().to_path_buf(),
            source: std::io::Error::other(e),
        })?
    }

    /// An object's bytes, mapped; `None` when the repository has none.
    pub async fn object(&self, d: &Digest) -> Result<Option<Bytes>> {
        if let Some(b) = self.lock().get(d) {
            return Ok(Some(b.clone()));
        }
        let rel = format!("objects/{d}");
        let repo = self.repo.clone();
        let path = repo.path(&rel);
        let img = tokio::task::spawn_blocking(move || {
            if !repo.has(&rel) {
                return Ok(None);
            }
            // Confined and regular (no link, no FIFO); the file opened so is the one mapped.
            let file = repo.open(&rel)?;
            Image::from_file(&file, &repo.path(&rel))
                .map(Some)
                .map_err(Error::from)
        })
        .await
        .map_err(|e| Error::Io {
            action: "mapping",
            path,
            source: std::io::Error::other(e),
        })??;
        let Some(img) = img else { return Ok(None) };
        let b = Bytes::from_owner(img);
        let mut maps = self.lock();
        if maps.len() >= MAPS_KEPT {
            maps.clear();
        }
        maps.insert(*d, b.clone());
        Ok(Some(b))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Bytes>> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

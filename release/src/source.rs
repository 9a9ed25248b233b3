//! Where a device reads a repository from: a directory ([`Repo`]) here, HTTP in the
//! mirror crate. The checks in [`crate::check`] read through this trait only, so a
//! device that updates over the network is checked exactly as `check-release` checks
//! a directory.

use std::path::PathBuf;

use crate::{
    error::{io_err, Error, LimitError, Result},
    limits::SIGNATURE_FILE_MAX_BYTES,
    repo::{check_rel, read_up_to, Repo},
};

/// A read-only view of a repository.
pub trait Source {
    /// Reads the file at `rel`: `Ok(None)` when the repository has none, otherwise
    /// at most `max + 1` bytes (enough for the caller to tell a longer file).
    fn read_up_to(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>>;
}

impl Source for Repo {
    fn read_up_to(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>> {
        check_rel(rel)?;
        if !self.has(rel) {
            return Ok(None);
        }
        read_up_to(self.open(rel)?, &self.path(rel), max).map(Some)
    }
}

/// The file at `rel`, which must exist and be at most `max` bytes.
pub(crate) fn read_required(src: &dyn Source, rel: &str, max: u64) -> Result<Vec<u8>> {
    read_optional(src, rel, max)?.ok_or_else(|| missing(rel))
}

/// The file at `rel` if the repository has it; at most `max` bytes.
pub(crate) fn read_optional(src: &dyn Source, rel: &str, max: u64) -> Result<Option<Vec<u8>>> {
    let Some(b) = src.read_up_to(rel, max)? else {
        return Ok(None);
    };
    if b.len() as u64 > max {
        return Err(Error::Limit {
            file: rel.to_owned(),
            limit: LimitError::TooLarge { max },
        });
    }
    Ok(Some(b))
}

/// A document (at most `max` bytes) and its `.minisig` text.
pub(crate) fn read_signed(src: &dyn Source, rel: &str, max: u64) -> Result<(Vec<u8>, String)> {
    let bytes = read_required(src, rel, max)?;
    Ok((bytes, read_signatures(src, rel)?))
}

/// The `.minisig` text of a document (at most [`SIGNATURE_FILE_MAX_BYTES`], UTF-8).
pub(crate) fn read_signatures(src: &dyn Source, rel: &str) -> Result<String> {
    let sig_rel = format!("{rel}.minisig");
    let b = read_required(src, &sig_rel, SIGNATURE_FILE_MAX_BYTES)?;
    String::from_utf8(b).map_err(|e| {
        io_err("reading", &PathBuf::from(&sig_rel))(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.utf8_error(),
        ))
    })
}

fn missing(rel: &str) -> Error {
    io_err("reading", &PathBuf::from(rel))(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "the repository has no such file",
    ))
}

//! Atomic file replacement: the one place where deltaward writes a file that must
//! never be seen half-written under its final name.
//!
//! The protocol is: create a temporary file beside the destination (same
//! directory, so the rename cannot cross file systems), write, `fsync` the file,
//! rename it over the destination, then `fsync` the directory so the rename
//! itself survives a power cut. Until [`AtomicFile::commit`] returns, the
//! destination is untouched; a temporary file is removed when the writer is
//! dropped uncommitted, unless it was opened as resumable.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// A file being written that replaces `dest` atomically on [`commit`](Self::commit).
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    keep_on_drop: bool,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The directory that holds `path` ("." for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The hidden sibling `dir/.name.suffix` of `dest`.
pub fn sibling(dest: &Path, suffix: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_owned());
    parent_dir(dest).join(format!(".{name}.{suffix}"))
}

impl AtomicFile {
    /// Starts a new temporary file beside `dest`. Fails (and creates nothing) when the
    /// directory of `dest` is missing or not writable.
    pub fn create(dest: &Path) -> Result<Self> {
        let dir = parent_dir(dest);
        if !dir.is_dir() {
            return Err(Error::Io {
                action: "writing into",
                path: dir.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotFound, "directory does not exist"),
            });
        }
        let mut n = 0u32;
        loop {
            let tmp = sibling(dest, &format!("tmp-{}-{n}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(file) => {
                    return Ok(Self {
                        file,
                        tmp,
                        dest: dest.to_path_buf(),
                        keep_on_drop: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(io_err("creating", &tmp)(e)),
            }
        }
    }

    /// Opens (or creates) a named, resumable temporary file `tmp` for `dest`. It
    /// survives a drop without commit, so an interrupted writer can continue.
    pub fn resumable(dest: &Path, tmp: PathBuf, keep_existing: bool) -> Result<Self> {
        let dir = parent_dir(dest);
        if !dir.is_dir() {
            return Err(Error::Io {
                action: "writing into",
                path: dir.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotFound, "directory does not exist"),
            });
        }
        // Never follow a link planted at the partial file's name: resume only a plain
        // file, otherwise start afresh with a file created here (O_EXCL).
        let plain =
            fs::symlink_metadata(&tmp).map(|m| m.file_type().is_file() && link_count(&m) == 1);
        let reuse = keep_existing && matches!(plain, Ok(true));
        if !reuse && plain.is_ok() {
            fs::remove_file(&tmp).map_err(io_err("removing stale", &tmp))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(!reuse)
            .open(&tmp)
            .map_err(io_err("opening", &tmp))?;
        // One writer at a time: a second apply to the same destination would corrupt
        // the bytes under the first one's hash.
        file.try_lock().map_err(|e| Error::Io {
            action: "locking",
            path: tmp.clone(),
            source: match e {
                std::fs::TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "another deltaward apply is writing this output",
                ),
                std::fs::TryLockError::Error(e) => e,
            },
        })?;
        Ok(Self {
            file,
            tmp,
            dest: dest.to_path_buf(),
            keep_on_drop: true,
        })
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Path of the temporary file.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Removes the temporary file now, even a resumable one.
    pub fn discard(mut self) {
        let _ = fs::remove_file(&self.tmp);
        self.keep_on_drop = true; // already removed
    }

    /// Flushes and fsyncs the temporary file, renames it over the destination and
    /// fsyncs the directory.
    pub fn commit(mut self) -> Result<()> {
        self.file.flush().map_err(io_err("flushing", &self.tmp))?;
        self.file.sync_all().map_err(io_err("syncing", &self.tmp))?;
        fs::rename(&self.tmp, &self.dest).map_err(io_err("renaming into place", &self.dest))?;
        self.keep_on_drop = true; // nothing left to remove
        sync_dir(parent_dir(&self.dest))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.keep_on_drop {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(unix)]
fn link_count(m: &fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::nlink(m)
}

#[cfg(not(unix))]
fn link_count(_: &fs::Metadata) -> u64 {
    1
}

/// Writes `bytes` to `dest` atomically with permissions for the owner only (secret
/// keys): the temporary file is created that way, so the bytes are never readable
/// by others, not even before the rename.
pub fn write_private_file(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = AtomicFile::create(dest)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        out.file
            .set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err("restricting", &out.tmp))?;
    }
    out.file()
        .write_all(bytes)
        .map_err(io_err("writing", dest))?;
    out.commit()
}

/// Fsyncs a directory so that renames inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    // Directories can be opened read-only and fsynced on Unix; elsewhere this is a no-op.
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `dest` atomically (temporary file, fsync, rename, fsync dir).
pub fn write_file(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = AtomicFile::create(dest)?;
    out.file()
        .write_all(bytes)
        .map_err(io_err("writing", dest))?;
    out.commit()
}

/// Writes `bytes` to `dest` atomically, refusing to replace an existing file.
pub fn write_new_file(dest: &Path, bytes: &[u8]) -> Result<()> {
    if dest.exists() {
        return Err(Error::Io {
            action: "creating",
            path: dest.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "file exists; refusing to overwrite",
            ),
        });
    }
    write_file(dest, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_destination_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.img");
        fs::write(&dest, b"old").expect("seed");
        {
            let mut f = AtomicFile::create(&dest).expect("create");
            f.write_all(b"new but unfinished").expect("write");
        }
        assert_eq!(fs::read(&dest).expect("read"), b"old");
        let names: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(names.len(), 1, "temporary file was not cleaned up");
    }

    #[test]
    fn commit_replaces_destination() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.img");
        fs::write(&dest, b"old").expect("seed");
        write_file(&dest, b"new").expect("write");
        assert_eq!(fs::read(&dest).expect("read"), b"new");
    }

    #[test]
    fn a_second_writer_of_a_resumable_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.img");
        let tmp = sibling(&dest, "partial");
        let _first = AtomicFile::resumable(&dest, tmp.clone(), false).expect("first");
        let err = AtomicFile::resumable(&dest, tmp, true).expect_err("second writer allowed");
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock),
            "{err:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_link_at_the_partial_name_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").expect("seed");
        let dest = dir.path().join("out.img");
        let tmp = sibling(&dest, "partial");
        std::os::unix::fs::symlink(&victim, &tmp).expect("symlink");
        let mut f = AtomicFile::resumable(&dest, tmp.clone(), true).expect("open");
        f.file().set_len(0).expect("truncate");
        f.write_all(b"image").expect("write");
        f.commit().expect("commit");
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
        assert_eq!(fs::read(&dest).expect("dest"), b"image");
        assert!(!fs::symlink_metadata(&dest)
            .expect("meta")
            .file_type()
            .is_symlink());
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("missing/out.img");
        let err = AtomicFile::create(&dest).expect_err("must fail");
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(!dir.path().join("missing").exists());
    }
}

//! Atomic file replacement: the one place where deltaward writes a file that must
//! never be seen half-written under its final name.
//!
//! The protocol is: create a temporary file beside the destination (same
//! directory, so the rename cannot cross file systems), write, `fsync` the file,
//! rename it over the destination, then `fsync` the directory so the rename
//! itself survives a power cut. Until [`AtomicFile::commit`] returns, the
//! destination is untouched; a temporary file is removed when the writer is
//! dropped uncommitted. The resumable output of an apply is [`PartialFile`].

#![allow(clippy::disallowed_methods)] // reason: the one module that creates, writes and renames files

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

mod partial;

pub use partial::{PartialFile, PartialPaths};

/// A file being written that replaces `dest` atomically on [`commit`](Self::commit).
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

/// Fsyncs the directory after `dest` was renamed into place. A failure here is
/// reported as [`Error::NotDurable`]: `dest` is replaced, but the rename may not
/// survive a power cut.
fn sync_renamed(dest: &Path) -> Result<()> {
    sync_dir(parent_dir(dest)).map_err(|e| match e {
        Error::Io { source, .. } => Error::NotDurable {
            path: dest.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// Options for files only this process may have made: never through a link,
/// created exclusively, owner-only.
fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .mode(0o600);
    }
    o
}

/// Opens (creating if missing, mode 0600, never through a link) the lock file
/// `path` and locks it exclusively, waiting for another holder.
pub fn lock_file(path: &Path) -> io::Result<File> {
    let mut o = private_options();
    o.create(true).truncate(false);
    let f = o.open(path)?;
    f.lock()?;
    Ok(f)
}

/// Like [`lock_file`], without waiting: `None` when another holder has the lock.
pub fn try_lock_file(path: &Path) -> io::Result<Option<File>> {
    let mut o = private_options();
    o.create(true).truncate(false);
    let f = o.open(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Opens (creating if missing, mode 0640, never through a link) the log file `path`
/// for appending: each write lands at the end, whoever else appends. Logs are
/// append-only records, not files replaced whole, so they are the one kind of file
/// written in place.
pub fn open_append(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o640)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    o.open(path)
}

/// Opens `path` for reading without following a link at its name, and only if it
/// is a regular file (not a FIFO, device or directory). A link gives the OS's
/// "too many levels of symbolic links" error, anything else not regular
/// [`io::ErrorKind::InvalidInput`].
pub fn open_regular(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO must not wait for a writer.
        o.custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32);
    }
    let f = o.open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
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

/// The directory of `dest`, which must exist: nothing is created otherwise.
pub(crate) fn existing_parent(dest: &Path) -> Result<()> {
    let dir = parent_dir(dest);
    if !dir.is_dir() {
        return Err(Error::Io {
            action: "writing into",
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "directory does not exist"),
        });
    }
    Ok(())
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
        Self::create_with_mode(dest, 0o666)
    }

    /// Like [`create`](Self::create), with the temporary file created with `mode`
    /// (less the umask) from the start: 0600 for secrets, so that no other user can
    /// open it before, or while, the bytes are written.
    pub fn create_with_mode(dest: &Path, mode: u32) -> Result<Self> {
        existing_parent(dest)?;
        let mut n = 0u32;
        loop {
            let tmp = sibling(dest, &format!("tmp-{}-{n}", std::process::id()));
            let mut o = OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, mode);
            #[cfg(not(unix))]
            let _ = mode;
            match o.open(&tmp) {
                Ok(file) => {
                    return Ok(Self {
                        file,
                        tmp,
                        dest: dest.to_path_buf(),
                        committed: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(io_err("creating", &tmp)(e)),
            }
        }
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Path of the temporary file.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes and fsyncs the temporary file, renames it over the destination and
    /// fsyncs the directory.
    pub fn commit(self) -> Result<()> {
        self.commit_with(true)
    }

    /// Like [`commit`](Self::commit), but never replaces an existing destination:
    /// the rename itself refuses (`RENAME_NOREPLACE`), so a file that appears
    /// between an earlier check and now is not overwritten.
    pub fn commit_new(self) -> Result<()> {
        self.commit_with(false)
    }

    fn commit_with(mut self, replace: bool) -> Result<()> {
        self.file.flush().map_err(io_err("flushing", &self.tmp))?;
        self.file.sync_all().map_err(io_err("syncing", &self.tmp))?;
        if replace {
            fs::rename(&self.tmp, &self.dest).map_err(io_err("renaming into place", &self.dest))?;
        } else {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &self.tmp,
                rustix::fs::CWD,
                &self.dest,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(|e| {
                let source = match e {
                    rustix::io::Errno::EXIST => io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "file exists; refusing to overwrite",
                    ),
                    e => e.into(),
                };
                io_err("renaming into place", &self.dest)(source)
            })?;
        }
        self.committed = true; // nothing left to remove
        sync_renamed(&self.dest)
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
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `dest` atomically with permissions for the owner only (secret
/// keys): the temporary file is created that way, so the bytes are never readable
/// by others, not even before the rename.
pub fn write_private_file(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = AtomicFile::create_with_mode(dest, 0o600)?;
    out.file()
        .write_all(bytes)
        .map_err(io_err("writing", dest))?;
    out.commit()
}

/// Starts writing `len` bytes of `file` at `offset` to disk without waiting for
/// them, so that the fsync before a rename finds little left to write: the disk
/// works while the writer goes on. Advice only; nothing fails for it.
///
/// On Linux `POSIX_FADV_DONTNEED` starts writeback of the range's dirty pages
/// (`WB_SYNC_NONE`) and then drops only its clean pages, so bytes just written
/// stay cached for the read-back that follows (`sync_file_range`, the call made
/// for this, has no safe binding, and this crate allows no `unsafe` beyond
/// mapping files). Measured on the kernel pairs, apply's wall time fell 11 to
/// 21 % (docs/BENCHMARKS.md).
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(len) = std::num::NonZeroU64::new(len) {
        let _ = rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (file, offset, len);
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
    let mut out = AtomicFile::create(dest)?;
    out.file()
        .write_all(bytes)
        .map_err(io_err("writing", dest))?;
    out.commit_new()
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
    fn commit_new_never_replaces_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.img");
        write_new_file(&dest, b"first").expect("first");
        let err = write_new_file(&dest, b"second").expect_err("replaced");
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err:?}"
        );
        assert_eq!(fs::read(&dest).expect("read"), b"first");
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
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

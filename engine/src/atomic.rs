//! Atomic file replacement: the one place where deltaward writes a file that must
//! never be seen half-written under its final name.
//!
//! The protocol is: create a temporary file beside the destination (same
//! directory, so the rename cannot cross file systems), write, `fsync` the file,
//! rename it over the destination, then `fsync` the directory so the rename
//! itself survives a power cut. Until [`AtomicFile::commit`] returns, the
//! destination is untouched; a temporary file is removed when the writer is
//! dropped uncommitted, unless it was opened as resumable.

#![allow(clippy::disallowed_methods)] // reason: the one module that creates, writes and renames files

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
        o.custom_flags(libc::O_NOFOLLOW).mode(0o600);
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
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
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

/// The partial output of an apply: a file beside the destination that only this
/// process created and writes, kept after an interruption so that a later apply
/// can resume it.
///
/// The guarantees, each against a defect found by an adversarial review:
/// - one apply per destination: the lock file `DIR/.NAME.deltaward-lock` (created
///   if missing, never removed, never followed if a link) is locked exclusively
///   before anything else is looked at or removed;
/// - the partial file is never opened through a link (`O_NOFOLLOW`); a fresh one is
///   created exclusively (`O_EXCL`) with mode 0600; an existing one is reused only
///   if it is a regular file owned by this user, with mode 0600 and one link,
///   otherwise it is removed and created afresh;
/// - every operation after opening goes through the descriptor; [`commit`] renames
///   only while the name still refers to the descriptor's file, after setting its
///   final mode on the descriptor.
///
/// [`commit`]: Self::commit
#[derive(Debug)]
pub struct PartialFile {
    file: File,
    lock: File,
    lock_path: PathBuf,
    path: PathBuf,
    dest: PathBuf,
}

/// Whether `path` names the open file `file` (same device and inode).
fn names(path: &Path, file: &File) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::symlink_metadata(path), file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, file);
        true
    }
}

fn would_block(e: std::fs::TryLockError) -> io::Error {
    match e {
        std::fs::TryLockError::WouldBlock => io::Error::new(
            io::ErrorKind::WouldBlock,
            "another deltaward apply is writing this output",
        ),
        std::fs::TryLockError::Error(e) => e,
    }
}

/// Whether an existing partial file may be resumed: only one that this process's
/// user made the way [`PartialFile`] makes them.
fn trustworthy(m: &fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        #[allow(unsafe_code)]
        // SAFETY: geteuid takes no arguments, touches no memory and always succeeds.
        let uid = unsafe { libc::geteuid() };
        m.file_type().is_file() && m.nlink() == 1 && m.uid() == uid && m.mode() & 0o7777 == 0o600
    }
    #[cfg(not(unix))]
    {
        m.file_type().is_file()
    }
}

impl PartialFile {
    /// Takes the lock for `dest`, then opens the partial file `path`: the existing
    /// one when `reuse` is set and it is trustworthy, a new empty one otherwise.
    /// Returns the file and whether an existing one was kept.
    ///
    /// `before_open` runs while the lock is held and before the partial file is
    /// touched (the applier reads its checkpoint there); it decides `reuse`.
    pub fn open(
        dest: &Path,
        path: PathBuf,
        lock: &Path,
        before_open: impl FnOnce() -> bool,
    ) -> Result<(Self, bool)> {
        existing_parent(dest)?;
        let lock_file = {
            let mut o = private_options();
            o.create(true).truncate(false);
            o.open(lock).map_err(io_err("opening lock", lock))?
        };
        lock_file
            .try_lock()
            .map_err(|e| io_err("locking", lock)(would_block(e)))?;
        // The lock file is removed when an apply ends; a lock taken on a file that
        // was removed meanwhile excludes no one, so it counts as contended.
        if !names(lock, &lock_file) {
            return Err(io_err("locking", lock)(would_block(
                std::fs::TryLockError::WouldBlock,
            )));
        }
        let reuse = before_open();
        let existing = reuse
            .then(|| private_options().open(&path).ok())
            .flatten()
            .filter(|f| f.metadata().is_ok_and(|m| trustworthy(&m)));
        let reused = existing.is_some();
        let file = match existing {
            Some(file) => file,
            None => {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("removing stale", &path)(e)),
                }
                private_options()
                    .create_new(true)
                    .open(&path)
                    .map_err(io_err("creating", &path))?
            }
        };
        Ok((
            Self {
                file,
                lock: lock_file,
                lock_path: lock.to_path_buf(),
                path,
                dest: dest.to_path_buf(),
            },
            reused,
        ))
    }

    /// The open partial file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Path of the partial file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the partial file (a bad patch leaves nothing worth resuming).
    pub fn discard(self) {
        if self.still_named() {
            let _ = fs::remove_file(&self.path);
        }
    }

    /// Whether the partial file's name still refers to the open file.
    fn still_named(&self) -> bool {
        names(&self.path, &self.file)
    }

    /// Fsyncs the file, sets `mode` on the descriptor, and renames it over the
    /// destination if its name still refers to it; then fsyncs the directory.
    pub fn commit(self, mode: u32) -> Result<()> {
        self.file
            .sync_all()
            .map_err(io_err("syncing", &self.path))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            self.file
                .set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io_err("setting the mode of", &self.path))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        if !self.still_named() {
            return Err(Error::Io {
                action: "renaming into place",
                path: self.path.clone(),
                source: io::Error::other("the partial file was replaced by another file"),
            });
        }
        fs::rename(&self.path, &self.dest).map_err(io_err("renaming into place", &self.dest))?;
        sync_renamed(&self.dest)
    }
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
        existing_parent(dest)?;
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
    pub fn commit(mut self) -> Result<()> {
        self.file.flush().map_err(io_err("flushing", &self.tmp))?;
        self.file.sync_all().map_err(io_err("syncing", &self.tmp))?;
        fs::rename(&self.tmp, &self.dest).map_err(io_err("renaming into place", &self.dest))?;
        self.keep_on_drop = true; // nothing left to remove
        sync_renamed(&self.dest)
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        // Still holding the lock: remove the lock file if it is ours, so that no
        // file is left beside the destination (a waiting apply that opened it
        // notices the removal and counts the lock as contended).
        if names(&self.lock_path, &self.lock) {
            let _ = fs::remove_file(&self.lock_path);
        }
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

    fn open(dest: &Path, reuse: bool) -> Result<(PartialFile, bool)> {
        PartialFile::open(
            dest,
            sibling(dest, "partial"),
            &sibling(dest, "lock"),
            || reuse,
        )
    }

    #[test]
    fn a_second_apply_does_not_remove_the_first_ones_partial_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.img");
        let (first, _) = open(&dest, false).expect("first");
        first.file().write_all(b"first").expect("write");
        for reuse in [false, true] {
            let err = open(&dest, reuse).expect_err("second writer allowed");
            assert!(
                matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock),
                "{err:?}"
            );
        }
        assert_eq!(fs::read(first.path()).expect("partial"), b"first");
        first.commit(0o644).expect("commit");
        assert_eq!(fs::read(&dest).expect("dest"), b"first");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_at_the_partial_name_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").expect("seed");
        let dest = dir.path().join("out.img");
        std::os::unix::fs::symlink(&victim, sibling(&dest, "partial")).expect("symlink");
        let (f, reused) = open(&dest, true).expect("open");
        assert!(!reused);
        f.file().write_all(b"image").expect("write");
        f.commit(0o644).expect("commit");
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
        assert_eq!(fs::read(&dest).expect("dest"), b"image");
        assert!(!fs::symlink_metadata(&dest)
            .expect("meta")
            .file_type()
            .is_symlink());
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_partial_file_is_not_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.img");
        let partial = sibling(&dest, "partial");
        fs::write(&partial, b"planted").expect("plant");
        fs::set_permissions(&partial, fs::Permissions::from_mode(0o666)).expect("chmod");
        let (f, reused) = open(&dest, true).expect("open");
        assert!(!reused, "a world-writable partial file was resumed");
        assert_eq!(f.file().metadata().expect("meta").len(), 0);
        let mode = f.file().metadata().expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A partial file made here is resumed.
        f.file().write_all(b"ours").expect("write");
        drop(f);
        let (f, reused) = open(&dest, true).expect("reopen");
        assert!(reused);
        f.commit(0o644).expect("commit");
        let mode = fs::metadata(&dest).expect("dest").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[cfg(unix)]
    #[test]
    fn commit_refuses_when_the_name_was_swapped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.img");
        let (f, _) = open(&dest, false).expect("open");
        f.file().write_all(b"verified").expect("write");
        fs::remove_file(f.path()).expect("unlink");
        fs::write(f.path(), b"EVIL").expect("swap");
        f.commit(0o644)
            .expect_err("renamed a file that was not verified");
        assert!(!dest.exists());
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

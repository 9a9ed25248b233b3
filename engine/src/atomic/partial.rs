//! The partial output of an apply, kept for resume, in a private directory beside
//! the destination.
//!
//! Applying to `DIR/NAME` works in the directory `DIR/.NAME.deltaward/` (mode 0700,
//! owned by the applying user, never a link), which holds `lock`, `partial` (the
//! image being written, mode 0600) and `resume` (the checkpoint). Every operation
//! goes through descriptors: the destination's directory and the private directory
//! are opened once, and files inside are opened, renamed and removed relative to
//! them (`openat`, `renameat`, `unlinkat`). No other user can create, replace or
//! rename anything inside the private directory, so what is renamed over `NAME` is
//! the file this process wrote and verified, even in a directory others may write
//! to, and even if the names in `DIR` are swapped meanwhile.
//!
//! Each guarantee answers a defect an adversarial review found (issue 7):
//! - one apply per destination: `lock` is locked exclusively before anything is
//!   read or removed; a second apply fails at once;
//! - the private directory is created 0700 or, if it exists, must be a directory
//!   (not a link) owned by this user with no access for others;
//! - `partial` is created exclusively (`O_EXCL|O_NOFOLLOW`, mode 0600); an existing
//!   one is resumed only if it is a regular file owned by this user, mode 0600,
//!   with one link;
//! - the checkpoint is read through no link, only from a regular file and only up
//!   to a bound, and written atomically inside the private directory;
//! - the final mode is set on the descriptor before the rename, and after it the
//!   destination is checked to be the written file.

use std::{
    ffi::OsString,
    fs::File,
    io::{self, Read, Write},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use rustix::fs::{self as fs, AtFlags, FileType, Mode, OFlags, Stat};

use crate::error::{Error, Result};

/// Name of the partial image inside the private directory.
const PARTIAL: &str = "partial";
/// Name of the checkpoint inside the private directory.
const RESUME: &str = "resume";
/// Name of the checkpoint being written.
const RESUME_TMP: &str = "resume.tmp";
/// Name of the lock file inside the private directory.
const LOCK: &str = "lock";
/// Largest checkpoint read: a real one is about 120 bytes.
const MAX_CHECKPOINT_LEN: u64 = 4096;

/// Where an apply to a destination keeps its partial output and checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialPaths {
    /// The private directory, `DIR/.NAME.deltaward`.
    pub dir: PathBuf,
    /// The partial image inside it.
    pub partial: PathBuf,
    /// The checkpoint inside it.
    pub resume: PathBuf,
}

impl PartialPaths {
    /// The paths for destination `dest`.
    pub fn of(dest: &Path) -> Self {
        let dir = super::sibling(dest, "deltaward");
        Self {
            partial: dir.join(PARTIAL),
            resume: dir.join(RESUME),
            dir,
        }
    }
}

/// The partial output of an apply (see the module docs).
#[derive(Debug)]
pub struct PartialFile {
    file: File,
    /// The locked lock file: held, not read, for as long as this value lives.
    _lock: File,
    /// The destination's directory.
    parent: OwnedFd,
    /// The private directory.
    dir: OwnedFd,
    /// The private directory's name in `parent`.
    dir_name: OsString,
    /// The destination's name in `parent`.
    dest_name: OsString,
    paths: PartialPaths,
    dest: PathBuf,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn owned_by_me(st: &Stat) -> bool {
    st.st_uid == rustix::process::geteuid().as_raw()
}

fn same_file(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Whether an existing partial image may be resumed: only one that this process's
/// user made the way [`PartialFile`] makes them.
fn trustworthy(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
        && st.st_nlink == 1
        && owned_by_me(st)
        && st.st_mode & 0o7777 == 0o600
}

fn private_file_flags() -> OFlags {
    OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl PartialFile {
    /// Takes the lock for `dest` in its private directory, then opens the partial
    /// image: the existing one when `before_open` (run under the lock, with the
    /// checkpoint's text if there is a usable one) says to resume and it is
    /// trustworthy, a new empty one otherwise. An error from `before_open` is
    /// returned before anything in the directory changes. Returns the file and
    /// whether an existing image was kept.
    pub fn open(
        dest: &Path,
        before_open: impl FnOnce(Option<&str>) -> Result<bool>,
    ) -> Result<(Self, bool)> {
        super::existing_parent(dest)?;
        let paths = PartialPaths::of(dest);
        let (dest_name, dir_name) = match (dest.file_name(), paths.dir.file_name()) {
            (Some(d), Some(p)) => (d.to_owned(), p.to_owned()),
            _ => {
                return Err(Error::InvalidOption {
                    name: "output",
                    reason: "must name a file",
                })
            }
        };
        let (parent, dir) = open_private_dir(super::parent_dir(dest), &dir_name, &paths)?;
        let lock = take_lock(&parent, &dir, &dir_name, &paths, dest)?;
        let checkpoint = read_checkpoint(&dir);
        let reuse = match before_open(checkpoint.as_deref()) {
            Ok(reuse) => reuse,
            Err(e) => {
                // Still holding the lock: leave the directory as it was found.
                let _ = fs::unlinkat(&dir, LOCK, AtFlags::empty());
                let _ = fs::unlinkat(&parent, &dir_name, AtFlags::REMOVEDIR);
                return Err(e);
            }
        };
        let existing = reuse
            .then(|| fs::openat(&dir, PARTIAL, private_file_flags(), Mode::empty()).ok())
            .flatten()
            .filter(|fd| fs::fstat(fd).is_ok_and(|st| trustworthy(&st)));
        let reused = existing.is_some();
        let file = match existing {
            Some(fd) => File::from(fd),
            None => create_image(&dir, &paths)?,
        };
        Ok((
            Self {
                file,
                _lock: lock,
                parent,
                dir,
                dir_name,
                dest_name,
                paths,
                dest: dest.to_path_buf(),
            },
            reused,
        ))
    }

    /// The open partial image.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The paths this apply works with.
    pub fn paths(&self) -> &PartialPaths {
        &self.paths
    }

    /// Replaces the checkpoint atomically (inside the private directory: a
    /// temporary file, fsync, rename, fsync of the directory).
    pub fn write_checkpoint(&self, text: &[u8]) -> Result<()> {
        let err = |action| io_err(action, &self.paths.resume);
        let mut tmp: File = fs::openat(
            &self.dir,
            RESUME_TMP,
            private_file_flags() | OFlags::CREATE | OFlags::TRUNC,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| err("creating")(e.into()))?
        .into();
        tmp.write_all(text).map_err(err("writing"))?;
        tmp.sync_all().map_err(err("syncing"))?;
        fs::renameat(&self.dir, RESUME_TMP, &self.dir, RESUME)
            .map_err(|e| err("renaming into place")(e.into()))?;
        fs::fsync(&self.dir).map_err(|e| err("syncing the directory of")(e.into()))
    }

    /// Removes the partial image and the checkpoint (a bad patch leaves nothing
    /// worth resuming), then the private directory.
    pub fn discard(self) {
        let _ = fs::unlinkat(&self.dir, PARTIAL, AtFlags::empty());
        let _ = fs::unlinkat(&self.dir, RESUME, AtFlags::empty());
        // Drop removes the lock file and the directory.
    }

    /// Fsyncs the image, sets `mode` on its descriptor, renames it over the
    /// destination (relative to the two directories' descriptors), fsyncs the
    /// destination's directory, checks that the destination is the written file,
    /// and removes the checkpoint and the private directory.
    pub fn commit(self, mode: u32) -> Result<()> {
        let partial = &self.paths.partial;
        self.file.sync_all().map_err(io_err("syncing", partial))?;
        fs::fchmod(&self.file, Mode::from_raw_mode(mode))
            .map_err(|e| io_err("setting the mode of", partial)(e.into()))?;
        fs::renameat(&self.dir, PARTIAL, &self.parent, &self.dest_name)
            .map_err(|e| io_err("renaming into place", &self.dest)(e.into()))?;
        let _ = fs::unlinkat(&self.dir, RESUME, AtFlags::empty());
        let renamed = match (
            fs::statat(&self.parent, &self.dest_name, AtFlags::SYMLINK_NOFOLLOW),
            fs::fstat(&self.file),
        ) {
            (Ok(a), Ok(b)) => same_file(&a, &b),
            _ => false,
        };
        if !renamed {
            return Err(Error::OutputReplaced {
                dest: self.dest.clone(),
            });
        }
        fs::fsync(&self.parent).map_err(|e| Error::NotDurable {
            path: self.dest.clone(),
            source: e.into(),
        })
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        // Still holding the lock: remove it, and the private directory if nothing
        // is left in it to resume.
        let _ = fs::unlinkat(&self.dir, LOCK, AtFlags::empty());
        let _ = fs::unlinkat(&self.dir, RESUME_TMP, AtFlags::empty());
        let _ = fs::unlinkat(&self.parent, &self.dir_name, AtFlags::REMOVEDIR);
    }
}

/// Opens the destination's directory, and the private directory in it (created
/// 0700 if missing), which must be a directory of this user's that no one else
/// may use.
fn open_private_dir(
    parent_path: &Path,
    dir_name: &OsString,
    paths: &PartialPaths,
) -> Result<(OwnedFd, OwnedFd)> {
    let parent = fs::open(
        parent_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("opening", parent_path)(e.into()))?;
    match fs::mkdirat(&parent, dir_name, Mode::RWXU) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(io_err("creating", &paths.dir)(e.into())),
    }
    let dir = fs::openat(
        &parent,
        dir_name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => Error::NotPrivate {
            path: paths.dir.clone(),
        },
        e => io_err("opening", &paths.dir)(e.into()),
    })?;
    let st = fs::fstat(&dir).map_err(|e| io_err("inspecting", &paths.dir)(e.into()))?;
    if !owned_by_me(&st) || st.st_mode & 0o077 != 0 {
        return Err(Error::NotPrivate {
            path: paths.dir.clone(),
        });
    }
    Ok((parent, dir))
}

/// Takes the exclusive lock of the private directory. The holder removes the lock
/// file and the directory when it is done: a lock taken on a file, or in a
/// directory, that lost its name excludes no one, so it counts as busy.
fn take_lock(
    parent: &OwnedFd,
    dir: &OwnedFd,
    dir_name: &OsString,
    paths: &PartialPaths,
    dest: &Path,
) -> Result<File> {
    let lock_path = paths.dir.join(LOCK);
    let lock: File = fs::openat(
        dir,
        LOCK,
        private_file_flags() | OFlags::CREATE,
        Mode::RUSR | Mode::WUSR,
    )
    .map_err(|e| io_err("opening", &lock_path)(e.into()))?
    .into();
    let busy = || Error::OutputBusy {
        dest: dest.to_path_buf(),
    };
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => busy(),
        std::fs::TryLockError::Error(e) => io_err("locking", &lock_path)(e),
    })?;
    let named = |at: &OwnedFd, name: &std::ffi::OsStr, fd: &dyn std::os::fd::AsFd| match (
        fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW),
        fs::fstat(fd),
    ) {
        (Ok(a), Ok(b)) => same_file(&a, &b),
        _ => false,
    };
    if !named(dir, LOCK.as_ref(), &lock) || !named(parent, dir_name, dir) {
        return Err(busy());
    }
    Ok(lock)
}

/// Creates a fresh, empty partial image (exclusively, mode 0600), removing
/// whatever had its name.
fn create_image(dir: &OwnedFd, paths: &PartialPaths) -> Result<File> {
    match fs::unlinkat(dir, PARTIAL, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(io_err("removing stale", &paths.partial)(e.into())),
    }
    let fd = fs::openat(
        dir,
        PARTIAL,
        private_file_flags() | OFlags::CREATE | OFlags::EXCL,
        Mode::RUSR | Mode::WUSR,
    )
    .map_err(|e| io_err("creating", &paths.partial)(e.into()))?;
    Ok(fd.into())
}

/// The checkpoint's text, if there is a usable one: a regular file (not a link,
/// FIFO or device), read up to a small bound.
fn read_checkpoint(dir: &OwnedFd) -> Option<String> {
    let fd = fs::openat(
        dir,
        RESUME,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = fs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    let mut text = String::new();
    File::from(fd)
        .take(MAX_CHECKPOINT_LEN)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use std::{fs as stdfs, os::unix::fs::PermissionsExt};

    use super::*;

    fn open(dest: &Path, reuse: bool) -> Result<(PartialFile, bool)> {
        PartialFile::open(dest, |_| Ok(reuse))
    }

    fn busy(r: Result<(PartialFile, bool)>) -> bool {
        matches!(r, Err(Error::OutputBusy { .. }))
    }

    #[test]
    fn a_second_apply_does_not_remove_the_first_ones_partial_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.img");
        let (first, _) = open(&dest, false).expect("first");
        first.file().write_all(b"first").expect("write");
        for reuse in [false, true] {
            assert!(busy(open(&dest, reuse)), "second writer allowed");
        }
        assert_eq!(
            stdfs::read(&first.paths().partial).expect("partial"),
            b"first"
        );
        first.commit(0o644).expect("commit");
        assert_eq!(stdfs::read(&dest).expect("dest"), b"first");
        let left: Vec<_> = stdfs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "left behind: {left:?}");
    }

    #[test]
    fn a_link_at_the_partial_name_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        stdfs::write(&victim, b"precious").expect("seed");
        let dest = dir.path().join("out.img");
        let paths = PartialPaths::of(&dest);
        stdfs::create_dir(&paths.dir).expect("mkdir");
        stdfs::set_permissions(&paths.dir, stdfs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::symlink(&victim, &paths.partial).expect("symlink");
        let (f, reused) = open(&dest, true).expect("open");
        assert!(!reused);
        f.file().write_all(b"image").expect("write");
        f.commit(0o644).expect("commit");
        assert_eq!(stdfs::read(&victim).expect("victim"), b"precious");
        assert_eq!(stdfs::read(&dest).expect("dest"), b"image");
    }

    #[test]
    fn a_private_directory_that_is_a_link_or_open_to_others_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.img");
        let paths = PartialPaths::of(&dest);
        let elsewhere = dir.path().join("elsewhere");
        stdfs::create_dir(&elsewhere).expect("mkdir");
        stdfs::set_permissions(&elsewhere, stdfs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::symlink(&elsewhere, &paths.dir).expect("symlink");
        assert!(matches!(open(&dest, false), Err(Error::NotPrivate { .. })));
        stdfs::remove_file(&paths.dir).expect("rm link");
        stdfs::create_dir(&paths.dir).expect("mkdir");
        stdfs::set_permissions(&paths.dir, stdfs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(matches!(open(&dest, false), Err(Error::NotPrivate { .. })));
        assert_eq!(stdfs::read_dir(&elsewhere).expect("ls").count(), 0);
    }

    #[test]
    fn a_planted_partial_file_is_not_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.img");
        let (f, _) = open(&dest, false).expect("open");
        f.file().write_all(b"ours").expect("write");
        let partial = f.paths().partial.clone();
        drop(f);
        // A partial image made here is resumed.
        let (f, reused) = open(&dest, true).expect("reopen");
        assert!(reused);
        drop(f);
        // One that another writer replaced, world-writable, is not.
        stdfs::remove_file(&partial).expect("rm");
        stdfs::write(&partial, b"planted").expect("plant");
        stdfs::set_permissions(&partial, stdfs::Permissions::from_mode(0o666)).expect("chmod");
        let (f, reused) = open(&dest, true).expect("open");
        assert!(!reused, "a world-writable partial file was resumed");
        assert_eq!(f.file().metadata().expect("meta").len(), 0);
        let mode = f.file().metadata().expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        f.commit(0o644).expect("commit");
        let mode = stdfs::metadata(&dest).expect("dest").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn the_renamed_file_is_the_one_written_even_if_names_are_swapped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.img");
        let (f, _) = open(&dest, false).expect("open");
        f.file().write_all(b"verified").expect("write");
        // Swapping the private directory's name for another after it was opened
        // does not redirect the rename: it is relative to the opened directory.
        let paths = f.paths().clone();
        let moved = dir.path().join("moved");
        stdfs::rename(&paths.dir, &moved).expect("move away");
        stdfs::create_dir(&paths.dir).expect("mkdir");
        stdfs::write(paths.dir.join(PARTIAL), b"EVIL").expect("plant");
        f.commit(0o644).expect("commit");
        assert_eq!(stdfs::read(&dest).expect("dest"), b"verified");
    }

    #[test]
    fn the_checkpoint_is_written_and_read_inside_the_private_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.img");
        let (f, _) = open(&dest, false).expect("open");
        f.write_checkpoint(b"deltaward-resume 1\n").expect("write");
        drop(f);
        let mut seen = None;
        let (f, _) = PartialFile::open(&dest, |cp| {
            seen = cp.map(str::to_owned);
            Ok(false)
        })
        .expect("reopen");
        assert_eq!(seen.as_deref(), Some("deltaward-resume 1\n"));
        f.discard();
        assert!(!PartialPaths::of(&dest).dir.exists());
    }
}

//! Access to images on disk: memory maps for the diff, positioned reads for apply.
//!
//! # Mapping and truncation
//! A mapped file that another process truncates raises `SIGBUS` on access. deltaward
//! maps only images named by the caller for the duration of a diff, which are
//! expected to be finished, immutable files; it never maps files it is writing, or
//! cache entries before they are renamed into place. The applier does not map at
//! all: it reads the old image with positioned reads, so that its memory stays
//! bounded (mapped pages would count against the process's resident set).

use std::{
    fs::File,
    io,
    ops::{Deref, Range},
    path::Path,
};

use crate::error::{Error, Result};

/// Random read access to an old image.
pub trait Source: Sync {
    /// Length in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; fails if the range passes the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Ranges known to read as zeros (holes of a sparse file), in order; reading
    /// them may be skipped. None by default.
    fn holes(&self) -> Vec<Range<u64>> {
        Vec::new()
    }
}

impl Source for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Opens a file and reads its length.
fn open_sized(path: &Path) -> Result<(File, u64)> {
    let err = |action| {
        move |source| Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = File::open(path).map_err(err("opening"))?;
    let len = file.metadata().map_err(err("reading metadata of"))?.len();
    Ok((file, len))
}

/// An image file read with positioned reads.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    size: u64,
}

impl FileSource {
    /// Opens an image file.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, size) = open_sized(path)?;
        Ok(Self { file, size })
    }
}

impl Source for FileSource {
    fn size(&self) -> u64 {
        self.size
    }
    fn holes(&self) -> Vec<Range<u64>> {
        find_holes(&self.file, self.size)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
        }
        #[cfg(windows)]
        {
            let mut done = 0;
            while done < buf.len() {
                let n = std::os::windows::fs::FileExt::seek_read(
                    &self.file,
                    &mut buf[done..],
                    offset + done as u64,
                )?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                done += n;
            }
            Ok(())
        }
    }
}

/// A whole image in memory: mapped when possible, read otherwise, with the holes of
/// a sparse file (found with `SEEK_DATA`/`SEEK_HOLE`), which read as zeros and
/// which the diff never touches: an 8 GiB image with 600 MiB of data costs the
/// pages of its data, not of its holes.
#[derive(Debug)]
pub struct Image {
    data: Data,
    holes: Vec<Range<u64>>,
}

#[derive(Debug)]
enum Data {
    /// A read-only memory map, and the file (for a private writable map of it).
    Mapped(memmap2::Mmap, File),
    /// The file's bytes, read because mapping was refused (pipes, some file systems)
    /// or the file is empty.
    Read(Vec<u8>),
}

/// Holes shorter than this are left as data: not worth a boundary.
const MIN_HOLE: u64 = 64 << 10;

/// The holes of `file` (`len` bytes) of at least [`MIN_HOLE`] bytes, in order, as
/// the file system reports them; none where it cannot tell.
pub(crate) fn find_holes(file: &File, len: u64) -> Vec<Range<u64>> {
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "freebsd"
    ))]
    {
        use rustix::fs::{seek, SeekFrom};
        let mut holes = Vec::new();
        let mut pos = 0u64;
        while pos < len {
            let data = match seek(file, SeekFrom::Data(pos)) {
                Ok(d) => d.min(len),
                Err(rustix::io::Errno::NXIO) => len,
                Err(_) => return Vec::new(),
            };
            if data >= pos.saturating_add(MIN_HOLE) {
                holes.push(pos..data);
            }
            if data >= len {
                break;
            }
            pos = match seek(file, SeekFrom::Hole(data)) {
                Ok(h) if h > data => h,
                _ => return holes,
            };
        }
        holes
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "freebsd"
    )))]
    {
        let _ = (file, len);
        Vec::new()
    }
}

impl Image {
    /// Maps `path`, falling back to reading it.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, _) = open_sized(path)?;
        Self::from_file(&file, path)
    }

    /// Maps an open file (`path` names it in errors), falling back to reading it:
    /// for callers that opened the file with their own checks (no link, regular).
    ///
    /// A character device (/dev/zero, /dev/urandom, a terminal) is refused: read
    /// to its end, it would never end. Block devices and pipes are read.
    pub fn from_file(file: &File, path: &Path) -> Result<Self> {
        let io_err = |action| {
            move |source| Error::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let meta = file.metadata().map_err(io_err("reading metadata of"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_char_device() {
                return Err(io_err("reading")(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a character device never ends: give an image file, a block device or a pipe",
                )));
            }
        }
        let len = meta.len();
        if len > 0 {
            // SAFETY: the map is read-only and lives no longer than this value. The
            // images deltaward maps are finished files named by the caller; if one is
            // truncated while mapped, access raises SIGBUS (see the module docs).
            #[allow(unsafe_code)]
            if let (Ok(map), Ok(dup)) = (unsafe { memmap2::Mmap::map(file) }, file.try_clone()) {
                let holes = find_holes(file, map.len() as u64);
                return Ok(Self {
                    data: Data::Mapped(map, dup),
                    holes,
                });
            }
        }
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut &*file, &mut buf).map_err(io_err("reading"))?;
        Ok(Self {
            data: Data::Read(buf),
            holes: Vec::new(),
        })
    }

    /// A private, writable map of a mapped image's file: writes stay in this
    /// process, and only the pages written take memory of their own. `None` for an
    /// image that was read rather than mapped.
    pub(crate) fn private_map(&self) -> Option<memmap2::MmapMut> {
        match &self.data {
            // SAFETY: as for the read-only map; the map is copy-on-write, so writing
            // it never reaches the file.
            #[allow(unsafe_code)]
            Data::Mapped(m, file) => {
                unsafe { memmap2::MmapOptions::new().len(m.len()).map_copy(file) }.ok()
            }
            Data::Read(_) => None,
        }
    }

    /// The holes of the file (ranges that read as zeros, each at least 64 KiB), in
    /// order; empty for a file that has none or a file system that cannot tell.
    pub fn holes(&self) -> &[Range<u64>] {
        &self.holes
    }
}

impl AsRef<[u8]> for Image {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Deref for Image {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.data {
            Data::Mapped(m, _) => m,
            Data::Read(v) => v,
        }
    }
}

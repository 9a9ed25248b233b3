//! Access to images on disk: memory maps for the diff, positioned reads for apply.
//!
//! # Mapping and truncation
//! A mapped file that another process truncates raises `SIGBUS` on access. deltaward
//! maps only images named by the caller for the duration of a diff, which are
//! expected to be finished, immutable files; it never maps files it is writing, or
//! cache entries before they are renamed into place. The applier does not map at
//! all: it reads the old image with positioned reads, so that its memory stays
//! bounded (mapped pages would count against the process's resident set).

use std::{fs::File, io, ops::Deref, path::Path};

use crate::error::{Error, Result};

/// Random read access to an old image.
pub trait Source {
    /// Length in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; fails if the range passes the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
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

/// A whole image in memory: mapped when possible, read otherwise.
#[derive(Debug)]
pub enum Image {
    /// A read-only memory map.
    Mapped(memmap2::Mmap),
    /// The file's bytes, read because mapping was refused (pipes, some file systems)
    /// or the file is empty.
    Read(Vec<u8>),
}

impl Image {
    /// Maps `path`, falling back to reading it.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, _) = open_sized(path)?;
        Self::from_file(&file, path)
    }

    /// Maps an open file (`path` names it in errors), falling back to reading it:
    /// for callers that opened the file with their own checks (no link, regular).
    pub fn from_file(file: &File, path: &Path) -> Result<Self> {
        let len = file
            .metadata()
            .map_err(|source| Error::Io {
                action: "reading metadata of",
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if len > 0 {
            // SAFETY: the map is read-only and lives no longer than this value. The
            // images deltaward maps are finished files named by the caller; if one is
            // truncated while mapped, access raises SIGBUS (see the module docs).
            #[allow(unsafe_code)]
            if let Ok(map) = unsafe { memmap2::Mmap::map(file) } {
                return Ok(Self::Mapped(map));
            }
        }
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut &*file, &mut buf).map_err(|source| Error::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::Read(buf))
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
        match self {
            Self::Mapped(m) => m,
            Self::Read(v) => v,
        }
    }
}

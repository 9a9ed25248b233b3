//! Where verified frames go: a hashing stream, or the partial output file with its
//! checkpoints.

use std::{
    fs::File,
    io::{self, Seek, SeekFrom, Write},
};

use crate::{
    atomic::PartialFile,
    error::{Error, Result},
    format::{Digest, Manifest},
};

use super::{decode::FrameSink, resume::Checkpoint};

/// A sink that hashes what it is given and forwards it to a writer.
pub(super) struct HashingSink<'a, W: Write> {
    pub(super) hasher: blake3::Hasher,
    pub(super) out: &'a mut W,
}

impl<W: Write> FrameSink for HashingSink<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update_rayon(bytes);
        self.out.write_all(bytes).map_err(|source| Error::Stream {
            action: "writing output",
            source,
        })
    }
    fn frame_done(&mut self, _: usize, _: u64) -> Result<()> {
        Ok(())
    }
}

/// Compares the hash of the whole output with the manifest's target hash.
pub(super) fn check_target(m: &Manifest, hasher: &blake3::Hasher) -> Result<()> {
    let actual = Digest::from(hasher.finalize());
    if actual != m.target_hash {
        return Err(Error::TargetMismatch {
            expected: m.target_hash,
            actual,
        });
    }
    Ok(())
}

/// Writes frames into the partial file and checkpoints them. Frames arrive whole
/// (copy and zero frames in chunks of `COPY_CHUNK`), so writes go straight to the
/// file, with no buffer beyond the applier's working memory. Copy frames are copied
/// inside the kernel where the file system allows it.
///
/// It keeps no hash of the whole output: every delta and zero frame is checked
/// before it is written, and the whole file is hashed again from disk after it is
/// synced (copied frames included), which is the check that counts.
pub(super) struct FileSink<'a> {
    pub(super) target: &'a PartialFile,
    pub(super) manifest: Digest,
    /// Cleared once the file system refuses `copy_file_range`.
    pub(super) kernel_copy: bool,
    pub(super) since_checkpoint: u64,
    pub(super) checkpoint_bytes: u64,
    pub(super) frames: usize,
}

impl FileSink<'_> {
    fn io(&self, action: &'static str) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            action,
            path: self.target.paths().partial.clone(),
            source,
        }
    }
}

impl FrameSink for FileSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.since_checkpoint += bytes.len() as u64;
        let mut file = self.target.file();
        file.write_all(bytes).map_err(self.io("writing"))
    }

    fn write_zeros(&mut self, zeros: &[u8]) -> Result<()> {
        // Zero runs become holes: image files are often mostly empty space.
        self.since_checkpoint += zeros.len() as u64;
        let mut file = self.target.file();
        file.seek(SeekFrom::Current(zeros.len() as i64))
            .map_err(self.io("seeking"))?;
        Ok(())
    }

    fn copy_range(&mut self, file: &File, offset: u64, len: u64) -> Result<bool> {
        if !self.kernel_copy {
            return Ok(false);
        }
        match kernel_copy(file, offset, len, self.target.file()) {
            Ok(true) => {
                self.since_checkpoint += len;
                Ok(true)
            }
            Ok(false) => {
                self.kernel_copy = false;
                Ok(false)
            }
            Err(e) => Err(self.io("copying into")(e)),
        }
    }

    fn frame_done(&mut self, index: usize, end: u64) -> Result<()> {
        let last = index + 1 == self.frames;
        if self.since_checkpoint < self.checkpoint_bytes && !last {
            return Ok(());
        }
        // After zero frames the file may end before `end` (a hole not yet given its
        // length): extend it, so the output is whole and the checkpoint resumable.
        let file = self.target.file();
        file.set_len(end).map_err(self.io("extending"))?;
        file.sync_data().map_err(self.io("syncing"))?;
        let cp = Checkpoint {
            manifest: self.manifest,
            frames: index + 1,
            offset: end,
        };
        self.target.write_checkpoint(cp.to_text().as_bytes())?;
        self.since_checkpoint = 0;
        Ok(())
    }
}

/// Copies `len` bytes of `from` at `offset` to `to` at its current position (which
/// advances), inside the kernel. `Ok(false)`, with nothing written, where the system
/// or the file systems do not offer it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn kernel_copy(from: &File, offset: u64, len: u64, to: &File) -> io::Result<bool> {
    use rustix::io::Errno;
    let mut off = offset;
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::copy_file_range(from, Some(&mut off), to, None, n) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(done) => left -= done as u64,
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) if left == len => {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn kernel_copy(_: &File, _: u64, _: u64, _: &File) -> io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn kernel_copy_appends_the_range_at_the_current_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut from = tempfile::tempfile_in(dir.path()).expect("tempfile");
        from.write_all(&data).expect("write");
        let mut to = tempfile::tempfile_in(dir.path()).expect("tempfile");
        to.write_all(b"head").expect("write");
        let copied = kernel_copy(&from, 1_000, 200_000, &to).expect("copy");
        if !copied {
            // Not offered here: nothing may have been written.
            assert_eq!(to.stream_position().expect("pos"), 4);
            return;
        }
        assert_eq!(to.stream_position().expect("pos"), 200_004);
        to.write_all(b"tail").expect("write");
        let mut got = Vec::new();
        to.seek(SeekFrom::Start(0)).expect("seek");
        to.read_to_end(&mut got).expect("read");
        let mut want = b"head".to_vec();
        want.extend_from_slice(&data[1_000..201_000]);
        want.extend_from_slice(b"tail");
        assert!(got == want, "copied bytes differ");
        // Past the end of the source: an error, never a short copy taken as done.
        assert!(kernel_copy(&from, 299_000, 2_000, &to).is_err());
    }
}

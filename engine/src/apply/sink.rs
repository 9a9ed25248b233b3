//! Where verified frames go: a hashing stream, or the partial output file with its
//! checkpoints.

use std::io::{self, Seek, SeekFrom, Write};

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
/// file, with no buffer beyond the applier's working memory.
///
/// It keeps no running hash of the whole output: every frame is checked before it
/// is written, and after the last one the whole file is synced and read back
/// through its descriptor and hashed, which is the whole-output check.
pub(super) struct FileSink<'a> {
    pub(super) target: &'a PartialFile,
    pub(super) manifest: Digest,
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
        file.write_all(bytes).map_err(self.io("writing"))?;
        if let Ok(end) = file.stream_position() {
            crate::atomic::start_writeback(
                file,
                end.saturating_sub(bytes.len() as u64),
                bytes.len() as u64,
            );
        }
        Ok(())
    }

    fn write_zeros(&mut self, zeros: &[u8]) -> Result<()> {
        // Zero runs become holes: image files are often mostly empty space.
        self.since_checkpoint += zeros.len() as u64;
        let mut file = self.target.file();
        file.seek(SeekFrom::Current(zeros.len() as i64))
            .map_err(self.io("seeking"))?;
        Ok(())
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
        if last {
            // The whole file is synced, read back and renamed next; a checkpoint
            // here would save a resume at most one interval of frames, for an
            // fdatasync, a file write, two fsyncs and a rename on every apply
            // (a tenth of a small image's apply time).
            return Ok(());
        }
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

//! Resuming an interrupted apply: the checkpoint file, the partial output's name,
//! and re-verifying the frames a checkpoint claims are done.

use std::{
    fs::File,
    io::{self, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use crate::{
    atomic,
    format::{Digest, Manifest, COPY_CHUNK},
};

/// The resume checkpoint of an apply in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checkpoint {
    pub(super) manifest: Digest,
    pub(super) frames: usize,
    pub(super) offset: u64,
}

impl Checkpoint {
    pub(super) fn to_text(&self) -> String {
        format!(
            "deltaward-resume 1\nmanifest {}\nframes {}\noffset {}\n",
            self.manifest, self.frames, self.offset
        )
    }

    pub(super) fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != "deltaward-resume 1" {
            return None;
        }
        let manifest_hex = lines.next()?.strip_prefix("manifest ")?;
        let frames = lines.next()?.strip_prefix("frames ")?.parse().ok()?;
        let offset = lines.next()?.strip_prefix("offset ")?.parse().ok()?;
        let manifest = Digest::from_hex(manifest_hex)?;
        Some(Self {
            manifest,
            frames,
            offset,
        })
    }
}

/// Largest checkpoint file read: a real one is about 120 bytes.
const MAX_CHECKPOINT_LEN: u64 = 4096;

/// Reads the checkpoint at `path`, if there is a usable one: a regular file (not a
/// link, FIFO or device), read up to a small bound, that parses.
pub(super) fn read_checkpoint(path: &Path) -> Option<Checkpoint> {
    let file = atomic::open_regular(path).ok()?;
    let mut text = String::new();
    file.take(MAX_CHECKPOINT_LEN)
        .read_to_string(&mut text)
        .ok()?;
    Checkpoint::parse(&text)
}

/// BLAKE3 of the first `len` bytes of `file`, read back through the descriptor.
pub(super) fn hash_file(file: &File, len: u64) -> io::Result<Digest> {
    let mut reader = BufReader::with_capacity(COPY_CHUNK as usize, file);
    reader.seek(SeekFrom::Start(0))?;
    let mut h = blake3::Hasher::new();
    let copied = io::copy(&mut reader.take(len), &mut h)?;
    if copied != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(h.finalize().into())
}

/// Paths of the partial output and its resume state for destination `out`.
pub fn resume_paths(out: &Path) -> (PathBuf, PathBuf) {
    (
        atomic::sibling(out, "deltaward-partial"),
        atomic::sibling(out, "deltaward-resume"),
    )
}

/// Re-verifies the frames a checkpoint claims are done, reading them back from the
/// partial file. Returns the hasher over them, or `None` if they do not verify.
pub(super) fn verify_done(file: &File, m: &Manifest, cp: &Checkpoint) -> Option<blake3::Hasher> {
    let done = m.frames.get(..cp.frames)?;
    let end = done.last().map_or(0, |f| f.target_offset + f.target_len);
    if end != cp.offset || file.metadata().ok()?.len() < end {
        return None;
    }
    let mut reader = BufReader::with_capacity(COPY_CHUNK as usize, file);
    reader.seek(SeekFrom::Start(0)).ok()?;
    let mut total = blake3::Hasher::new();
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    for f in done {
        let mut h = blake3::Hasher::new();
        let mut left = f.target_len;
        while left > 0 {
            let n = left.min(COPY_CHUNK) as usize;
            reader.read_exact(&mut buf[..n]).ok()?;
            h.update(&buf[..n]);
            total.update(&buf[..n]);
            left -= n as u64;
        }
        if Digest::from(h.finalize()) != f.output_hash {
            return None;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_garbage() {
        let cp = Checkpoint {
            manifest: Digest([0xab; 32]),
            frames: 12,
            offset: 1 << 33,
        };
        assert_eq!(Checkpoint::parse(&cp.to_text()), Some(cp));
        assert_eq!(Checkpoint::parse("deltaward-resume 1\nmanifest zz\n"), None);
        assert_eq!(Checkpoint::parse(""), None);
    }
}

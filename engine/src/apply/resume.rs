//! Resuming an interrupted apply: the checkpoint's text, re-verifying the frames a
//! checkpoint claims are done, and hashing the written image back from disk.

use std::{fs::File, io, os::unix::fs::FileExt};

use crate::format::{Digest, Manifest, COPY_CHUNK};

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

/// Reads `len` bytes of `file` from `start` through its descriptor, in chunks of
/// `buf`'s length, passing each chunk to `each`.
fn read_chunks(
    file: &File,
    start: u64,
    len: u64,
    buf: &mut [u8],
    mut each: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let chunk = &mut buf[..n];
        file.read_exact_at(chunk, start + done)?;
        each(chunk);
        done += n as u64;
    }
    Ok(())
}

/// BLAKE3 of the first `len` bytes of `file`, read back through the descriptor
/// (its holes, as the file system reports them, hashed as the zeros they read as).
pub(super) fn hash_file(file: &File, len: u64) -> io::Result<Digest> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    let holes = crate::image::find_holes(file, len);
    let feed = |b: &[u8]| {
        h.update_rayon(b);
    };
    crate::sparse::hash_sparse(feed, len, &holes, &mut buf, |off, b| {
        file.read_exact_at(b, off)
    })?;
    Ok(h.finalize().into())
}

/// Re-verifies the frames a checkpoint claims are done, reading them back from the
/// partial file: whether they all do.
pub(super) fn verify_done(file: &File, m: &Manifest, cp: &Checkpoint) -> bool {
    let Some(done) = m.frames.get(..cp.frames) else {
        return false;
    };
    let end = done.last().map_or(0, |f| f.target_offset + f.target_len);
    if end != cp.offset || file.metadata().map_or(true, |md| md.len() < end) {
        return false;
    }
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    done.iter().all(|f| {
        let mut h = blake3::Hasher::new();
        read_chunks(file, f.target_offset, f.target_len, &mut buf, |c| {
            h.update_rayon(c);
        })
        .is_ok()
            && Digest::from(h.finalize()) == f.output_hash
    })
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

//! Synthetic firmware images for the demo: a deterministic pair of images laid out
//! like a device's file system (code with absolute addresses, configuration text,
//! incompressible blobs), where the new one changes some files, relocates code and
//! moves files around, as a real update does.

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One file of the synthetic image.
#[derive(Clone)]
enum Content {
    /// Machine-code-like bytes: opcodes with 32-bit absolute addresses.
    Code { seed: u64, len: usize, base: u32 },
    /// Configuration-like text.
    Text { seed: u64, len: usize },
    /// Incompressible data (a compressed kernel or blob).
    Blob { seed: u64, len: usize },
}

const WORDS: &[&str] = &[
    "pump",
    "rate",
    "alarm",
    "threshold",
    "infusion",
    "channel",
    "enable",
    "disable",
    "limit",
    "ml/h",
    "sensor",
    "calibration",
    "firmware",
    "version",
    "0x1f",
    "true",
    "false",
    "timeout",
    "retry",
    "log",
];

impl Content {
    fn render(&self, edit: Option<u64>) -> Vec<u8> {
        match *self {
            Content::Code { seed, len, base } => {
                let mut r = Rng(seed | 1);
                let mut e = Rng(edit.unwrap_or(1) | 1);
                let shift = if edit.is_some() { 0x40 } else { 0 };
                let mut out = Vec::with_capacity(len + 64);
                while out.len() < len {
                    let op = [0x48u8, 0x8b, 0xe8, 0xff, 0x0f, 0x89, 0xc3][r.below(7) as usize];
                    out.push(op);
                    out.push(r.below(16) as u8);
                    let addr = base + (r.below(1 << 16) as u32) * 4;
                    // The new version relinks: addresses move, a few instructions change.
                    let addr = if edit.is_some() && e.below(100) == 0 {
                        addr ^ 0x5a5a
                    } else {
                        addr + shift
                    };
                    out.extend_from_slice(&addr.to_le_bytes());
                    if edit.is_some() && e.below(2000) == 0 {
                        out.extend_from_slice(b"\x90\x90\x90\x90\x90\x90\x90\x90");
                    }
                }
                out.truncate(len);
                out
            }
            Content::Text { seed, len } => {
                let mut r = Rng(seed | 1);
                let mut e = Rng(edit.unwrap_or(1) | 1);
                let mut out = Vec::with_capacity(len + 32);
                while out.len() < len {
                    let w = WORDS[r.below(WORDS.len() as u64) as usize];
                    out.extend_from_slice(w.as_bytes());
                    out.push(if r.below(8) == 0 { b'\n' } else { b' ' });
                    if edit.is_some() && e.below(500) == 0 {
                        out.extend_from_slice(b"# changed in 2.1 ");
                    }
                }
                out.truncate(len);
                out
            }
            Content::Blob { seed, len } => {
                let mut r = Rng((seed ^ edit.unwrap_or(0)) | 1);
                (0..len).map(|_| r.next() as u8).collect()
            }
        }
    }
}

/// Lays files out on 4 KiB boundaries, with free (zero) space between some of them.
fn layout(files: &[Vec<u8>], size: usize, rng: &mut Rng) -> Vec<u8> {
    let mut img = vec![0u8; size];
    let mut at = 64 << 10; // a superblock-sized gap
    for f in files {
        let end = at + f.len();
        if end > size {
            break;
        }
        img[at..end].copy_from_slice(f);
        at = end.next_multiple_of(4096);
        if rng.below(6) == 0 {
            at += 4096 * rng.below(16) as usize;
        }
    }
    img
}

/// Builds an old and a new firmware image of `size` bytes: code and text files that
/// change a little (relinked addresses, edits, inserted bytes), a kernel blob that
/// changes completely, files that move, and free space.
pub fn images(size: usize) -> (Vec<u8>, Vec<u8>) {
    let mut r = Rng(0x0de1_7a3a_4d00_0001);
    let budget = size * 6 / 10;
    let mut files = Vec::new();
    let mut used = 0;
    while used < budget {
        let len = 4096 + r.below(400 << 10) as usize;
        let seed = r.next();
        let c = match r.below(10) {
            0..=5 => Content::Code {
                seed,
                len,
                base: 0x0040_0000 + (r.below(64) as u32) * 0x10000,
            },
            6..=8 => Content::Text { seed, len: len / 4 },
            _ => Content::Blob { seed, len: len / 2 },
        };
        used += len;
        files.push(c);
    }
    let old_files: Vec<Vec<u8>> = files.iter().map(|c| c.render(None)).collect();
    let mut new_files: Vec<Vec<u8>> = Vec::with_capacity(files.len() + 1);
    for (i, c) in files.iter().enumerate() {
        // About a third of the files stay as they were; the rest are rebuilt.
        if r.below(3) == 0 {
            new_files.push(old_files[i].clone());
        } else {
            new_files.push(c.render(Some(r.next())));
        }
    }
    // A new file in the middle shifts everything after it; two files swap places.
    let at = new_files.len() / 2;
    new_files.insert(
        at,
        Content::Text {
            seed: 99,
            len: 10_000,
        }
        .render(None),
    );
    let n = new_files.len();
    if n > 8 {
        new_files.swap(3, n - 3);
    }
    let old = layout(&old_files, size, &mut Rng(7));
    let new = layout(&new_files, size, &mut Rng(7));
    (old, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_deterministic_and_differ() {
        let (a, b) = images(4 << 20);
        let (c, d) = images(4 << 20);
        assert!(a == c && b == d);
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 << 20);
    }
}

#![doc = include_str!("../FORMAT.md")]

use std::fmt;

pub use crate::transform::{AddressMap, ExactMap, RegionKind, Remap, SourceTransform};

/// Magic bytes at the start of every patch file.
pub const MAGIC: [u8; 8] = *b"DELTAWRD";
/// Magic bytes at the start of the signed manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"DWMANIFS";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 32;
/// Length of the manifest's fixed part, before the two text fields.
pub const MANIFEST_FIXED_LEN: usize = 128;
/// Manifest flag: a source transform follows the frame table.
pub const MANIFEST_FLAG_TRANSFORM: u16 = 1;
/// Length of one frame entry in the manifest.
pub const FRAME_ENTRY_LEN: usize = 120;
/// Largest manifest accepted (64 MiB, about 550 000 frames).
pub const MAX_MANIFEST_LEN: u32 = 64 << 20;
/// Largest signature text accepted.
pub const MAX_SIGNATURE_LEN: u32 = 4096;
/// Largest output of one frame.
pub const MAX_FRAME_LEN: u64 = 256 << 20;
/// Largest reference window of one frame.
pub const MAX_WINDOW: u64 = 1 << 30;
/// Largest text field (tool name or build options).
pub const MAX_TEXT_LEN: usize = 1024;
/// The applier copies and zero-fills in chunks of this many bytes: the working memory
/// of a copy or zero frame.
pub const COPY_CHUNK: u64 = 1 << 20;
/// Memory that holding a manifest of `manifest_len` bytes takes: the bytes and, at
/// most, one parsed [`Frame`] per frame entry they can hold. The applier counts it
/// in its memory limit, before the bytes are read.
pub fn manifest_memory(manifest_len: u32) -> u64 {
    let frames = u64::from(manifest_len) / FRAME_ENTRY_LEN as u64;
    u64::from(manifest_len) + frames * std::mem::size_of::<Frame>() as u64
}

/// Memory the applier uses besides the manifest and the frames' working memory: its
/// 64 KiB patch read buffer, the 64 KiB buffer of the old image's check (which runs
/// beside the frames), the BLAKE3 hashers and small bookkeeping. Counted in the
/// memory limit.
pub const APPLY_OVERHEAD: u64 = 256 << 10;

/// Length of the stream-length header at the start of a decoded bsdiff payload.
pub const BSDIFF_HEADER_LEN: u64 = 12;

/// Largest decoded bsdiff payload for a frame of `target_len` bytes: the stream
/// header, a control stream of at most `target_len + 64` bytes, and add and extra
/// streams of `target_len` bytes together.
pub fn bsdiff_max_decoded_len(target_len: u64) -> u64 {
    BSDIFF_HEADER_LEN + 64 + target_len.saturating_mul(2)
}

/// Largest control stream of a bsdiff frame of `target_len` bytes.
pub fn bsdiff_max_control_len(target_len: u64) -> u64 {
    target_len.saturating_add(64)
}

/// A 32-byte digest: BLAKE3 everywhere in the format (release metadata also carries
/// SHA-256 in this type). `Display` prints it as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// BLAKE3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16);
            let (hi, lo) = (digit(pair[0])?, digit(pair[1])?);
            *o = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A region of the patch file, named in truncation errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Region {
    /// The fixed header.
    Header,
    /// The manifest bytes.
    Manifest,
    /// The frame table inside the manifest.
    FrameTable,
    /// The signature text.
    Signature,
    /// A frame's payload: a patch that ends here was cut short (resumable).
    FramePayload,
    /// The source transform inside the manifest.
    Transform,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Header => "header",
            Self::Manifest => "manifest",
            Self::FrameTable => "frame table",
            Self::Signature => "signature",
            Self::FramePayload => "frame payload",
            Self::Transform => "source transform",
        })
    }
}

/// A limit of the format or of the applier's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`MAX_MANIFEST_LEN`].
    ManifestLen,
    /// [`MAX_SIGNATURE_LEN`].
    SignatureLen,
    /// [`MAX_WINDOW`].
    Window,
    /// [`MAX_FRAME_LEN`].
    FrameLen,
    /// [`MAX_TEXT_LEN`], for the tool field.
    ToolLen,
    /// [`MAX_TEXT_LEN`], for the options field.
    OptionsLen,
    /// The applier's output-size limit.
    TargetSize,
    /// [`MAX_TRANSFORM_LEN`](crate::transform::MAX_TRANSFORM_LEN) stored, or
    /// [`MAX_TRANSFORM_DECODED`](crate::transform::MAX_TRANSFORM_DECODED) decoded.
    TransformLen,
}

impl Limit {
    /// Whether the limit is one the applier's options set (rather than the format).
    pub fn is_configurable(self) -> bool {
        matches!(self, Self::TargetSize)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ManifestLen => "manifest length",
            Self::SignatureLen => "signature length",
            Self::Window => "max window",
            Self::FrameLen => "max frame length",
            Self::ToolLen => "tool",
            Self::OptionsLen => "options",
            Self::TargetSize => "target size",
            Self::TransformLen => "source transform length",
        })
    }
}

/// Ways the patch container or manifest can be malformed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The file does not start with the deltaward magic.
    #[error("not a deltaward patch (bad magic)")]
    BadMagic,
    /// The format version is not one this build reads.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
        /// Version supported.
        supported: u16,
    },
    /// The input ended before a region was complete.
    #[error("truncated in {region} at byte {offset}")]
    Truncated {
        /// Region being read.
        region: Region,
        /// Byte offset where data ran out.
        offset: u64,
    },
    /// A length or count exceeds what the format or the caller allows.
    #[error("{limit} is {value}, above the limit of {max}")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// Value found.
        value: u64,
        /// The limit's value.
        max: u64,
    },
    /// A reserved field or flag is not zero.
    #[error("reserved field {field} is not zero")]
    Reserved {
        /// Field name.
        field: &'static str,
    },
    /// A frame kind byte is unknown.
    #[error("frame {frame}: unknown kind {kind}")]
    UnknownFrameKind {
        /// Frame index.
        frame: u32,
        /// Kind byte.
        kind: u8,
    },
    /// A frame's fields contradict each other or the manifest.
    #[error("frame {frame}: {problem}")]
    BadFrame {
        /// Frame index.
        frame: u32,
        /// What is inconsistent.
        problem: &'static str,
    },
    /// A manifest-level field contradicts the others.
    #[error("manifest: {0}")]
    Inconsistent(&'static str),
    /// A text field is not valid UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// Bytes follow the last frame payload.
    #[error("{extra} unexpected bytes after the last frame")]
    TrailingBytes {
        /// Count of extra bytes (counted up to a bound; at least this many).
        extra: u64,
    },
}

/// How a frame produces its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Copy `target_len` bytes from the source image at `source_offset`. No payload.
    Copy = 0,
    /// Write `target_len` zero bytes. No payload.
    Zero = 1,
    /// A zstd frame that decodes with the source window as its reference prefix.
    Zstd = 2,
    /// A bsdiff-style add/extra stream against the source window, zstd-compressed.
    Bsdiff = 3,
    /// As [`Bsdiff`](Self::Bsdiff), with the add bytes as runs of zero and nonzero
    /// bytes, and each stream its own zstd frame.
    BsdiffRuns = 4,
}

impl FrameKind {
    /// Parses the kind byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Copy),
            1 => Some(Self::Zero),
            2 => Some(Self::Zstd),
            3 => Some(Self::Bsdiff),
            4 => Some(Self::BsdiffRuns),
            _ => None,
        }
    }

    /// Name used in `inspect` output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Copy => "copy",
            Self::Zero => "zero",
            Self::Zstd => "zstd",
            Self::Bsdiff => "bsdiff",
            Self::BsdiffRuns => "bsdiff-runs",
        }
    }

    /// Whether the frame carries payload bytes.
    pub fn has_payload(self) -> bool {
        matches!(self, Self::Zstd | Self::Bsdiff | Self::BsdiffRuns)
    }
}

/// One frame entry of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// How the output is produced.
    pub kind: FrameKind,
    /// Where the output goes in the target image.
    pub target_offset: u64,
    /// Length of the output.
    pub target_len: u64,
    /// Start of the source range (copy source or reference window).
    pub source_offset: u64,
    /// Length of the source range (0 for zero frames).
    pub source_len: u64,
    /// Offset of the payload, counted from the start of the payload section.
    pub payload_offset: u64,
    /// Length of the payload.
    pub payload_len: u64,
    /// BLAKE3 of the payload bytes (BLAKE3 of nothing for frames without payload).
    pub payload_hash: Digest,
    /// BLAKE3 of the output.
    pub output_hash: Digest,
}

impl Frame {
    /// Working memory needed to apply this frame, in bytes: what the applier holds at
    /// once (window, payload, decoded streams and output).
    pub fn apply_memory(&self) -> u64 {
        match self.kind {
            FrameKind::Copy | FrameKind::Zero => COPY_CHUNK,
            FrameKind::Zstd => self.source_len + self.payload_len + self.target_len,
            FrameKind::Bsdiff | FrameKind::BsdiffRuns => {
                self.source_len
                    + self.payload_len
                    + self.target_len
                    + bsdiff_max_decoded_len(self.target_len)
            }
        }
    }
}

/// The fixed header that locates the manifest, signature and payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the manifest.
    pub manifest_len: u32,
    /// Length of the signature text.
    pub signature_len: u32,
    /// Total length of all payloads.
    pub payload_len: u64,
}

impl Header {
    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.signature_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.payload_len.to_le_bytes());
        b
    }

    /// Parses and bounds-checks a header.
    pub fn parse(b: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(b, Region::Header);
        if r.preamble(&MAGIC)? != 0 {
            return Err(FormatError::Reserved {
                field: "header flags",
            });
        }
        let manifest_len = r.u32()?;
        let signature_len = r.u32()?;
        if r.u32()? != 0 {
            return Err(FormatError::Reserved {
                field: "header reserved",
            });
        }
        let payload_len = r.u64()?;
        limit(
            Limit::ManifestLen,
            manifest_len.into(),
            MAX_MANIFEST_LEN.into(),
        )?;
        limit(
            Limit::SignatureLen,
            signature_len.into(),
            MAX_SIGNATURE_LEN.into(),
        )?;
        if (manifest_len as usize) < MANIFEST_FIXED_LEN {
            return Err(FormatError::Truncated {
                region: Region::Manifest,
                offset: manifest_len.into(),
            });
        }
        Ok(Self {
            manifest_len,
            signature_len,
            payload_len,
        })
    }
}

/// The signed description of a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Size of the source (old) image.
    pub source_size: u64,
    /// BLAKE3 of the source image.
    pub source_hash: Digest,
    /// Size of the target (new) image.
    pub target_size: u64,
    /// BLAKE3 of the target image.
    pub target_hash: Digest,
    /// Block size of the index used to build the patch.
    pub block_size: u32,
    /// Largest `source_len` of any delta frame.
    pub max_window: u64,
    /// Largest `target_len` of any frame.
    pub max_frame_len: u64,
    /// Total payload length.
    pub payload_len: u64,
    /// Tool name and version that built the patch.
    pub tool: String,
    /// Build options, as `key=value` pairs separated by spaces.
    pub options: String,
    /// The frames, in target order, covering the target exactly once.
    pub frames: Vec<Frame>,
    /// The source transform delta frames see the old image through (manifest flag
    /// bit 0; see FORMAT.md, "Source transform").
    pub transform: Option<SourceTransform>,
}

impl Manifest {
    /// Encodes the manifest (the bytes that are signed).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_with(None)
    }

    /// [`to_bytes`](Self::to_bytes) with the source transform's stored form, if
    /// already made from this manifest's transform.
    pub(crate) fn to_bytes_with(&self, stored_transform: Option<&[u8]>) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            MANIFEST_FIXED_LEN
                + self.tool.len()
                + self.options.len()
                + 4
                + self.frames.len() * FRAME_ENTRY_LEN,
        );
        b.extend_from_slice(&MANIFEST_MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        let flags = if self.transform.is_some() {
            MANIFEST_FLAG_TRANSFORM
        } else {
            0
        };
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.source_size.to_le_bytes());
        b.extend_from_slice(self.source_hash.as_bytes());
        b.extend_from_slice(&self.target_size.to_le_bytes());
        b.extend_from_slice(self.target_hash.as_bytes());
        b.extend_from_slice(&self.block_size.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&self.max_window.to_le_bytes());
        b.extend_from_slice(&self.max_frame_len.to_le_bytes());
        b.extend_from_slice(&self.payload_len.to_le_bytes());
        debug_assert_eq!(b.len(), MANIFEST_FIXED_LEN);
        for text in [&self.tool, &self.options] {
            b.extend_from_slice(&(text.len() as u16).to_le_bytes());
            b.extend_from_slice(text.as_bytes());
        }
        for f in &self.frames {
            b.push(f.kind as u8);
            b.extend_from_slice(&[0u8; 7]);
            for v in [
                f.target_offset,
                f.target_len,
                f.source_offset,
                f.source_len,
                f.payload_offset,
                f.payload_len,
            ] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(f.payload_hash.as_bytes());
            b.extend_from_slice(f.output_hash.as_bytes());
        }
        if let Some(t) = &self.transform {
            let stored = match stored_transform {
                Some(s) => {
                    debug_assert_eq!(
                        SourceTransform::parse(s, self.source_size).as_ref(),
                        Ok(t),
                        "the stored form is of another transform"
                    );
                    s.into()
                }
                None => std::borrow::Cow::Owned(t.to_bytes()),
            };
            b.extend_from_slice(&(stored.len() as u32).to_le_bytes());
            b.extend_from_slice(&stored);
        }
        b
    }

    /// Parses a manifest and checks every invariant the applier relies on: frames
    /// contiguous and in order, every range inside its image, payloads contiguous,
    /// lengths within the format limits and the declared maxima exact.
    pub fn parse(b: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(b, Region::Manifest);
        let flags = r.preamble(&MANIFEST_MAGIC)?;
        if flags & !MANIFEST_FLAG_TRANSFORM != 0 {
            return Err(FormatError::Reserved {
                field: "manifest flags",
            });
        }
        let frame_count = r.u32()?;
        let source_size = r.u64()?;
        let source_hash = r.digest()?;
        let target_size = r.u64()?;
        let target_hash = r.digest()?;
        let block_size = r.u32()?;
        if r.u32()? != 0 {
            return Err(FormatError::Reserved {
                field: "manifest reserved",
            });
        }
        let max_window = r.u64()?;
        let max_frame_len = r.u64()?;
        let payload_len = r.u64()?;
        let tool = r.text("tool", Limit::ToolLen)?;
        let options = r.text("options", Limit::OptionsLen)?;
        limit(Limit::Window, max_window, MAX_WINDOW)?;
        limit(Limit::FrameLen, max_frame_len, MAX_FRAME_LEN)?;
        let entries = (frame_count as usize)
            .checked_mul(FRAME_ENTRY_LEN)
            .ok_or(FormatError::Inconsistent("frame count overflows"))?;
        if r.remaining() < entries || (flags == 0 && r.remaining() != entries) {
            return if r.remaining() < entries {
                Err(FormatError::Truncated {
                    region: Region::FrameTable,
                    offset: b.len() as u64,
                })
            } else {
                Err(FormatError::Inconsistent("bytes after the frame table"))
            };
        }
        let mut frames = Vec::with_capacity(frame_count as usize);
        let mut tiling = Tiling {
            source_size,
            max_window,
            max_frame_len,
            ..Tiling::default()
        };
        for i in 0..frame_count {
            let f = r.frame(i)?;
            tiling.check(i, &f)?;
            frames.push(f);
        }
        tiling.finish(target_size, payload_len)?;
        let transform = if flags & MANIFEST_FLAG_TRANSFORM != 0 {
            let len = r.u32()?;
            limit(
                Limit::TransformLen,
                u64::from(len),
                u64::from(crate::transform::MAX_TRANSFORM_LEN),
            )?;
            let stored = r.bytes(len as usize)?;
            if r.remaining() != 0 {
                return Err(FormatError::Inconsistent(
                    "bytes after the source transform",
                ));
            }
            Some(SourceTransform::parse(stored, source_size)?)
        } else {
            None
        };
        Ok(Self {
            source_size,
            source_hash,
            target_size,
            target_hash,
            block_size,
            max_window,
            max_frame_len,
            payload_len,
            tool,
            options,
            frames,
            transform,
        })
    }

    /// Working memory the applier needs: the most demanding frame's (see
    /// [`frame_memory`](Self::frame_memory)) and the parsed source transform.
    pub fn apply_memory(&self) -> u64 {
        self.working_memory() + self.transform.as_ref().map_or(0, SourceTransform::memory)
    }

    /// The most demanding frame's [`frame_memory`](Self::frame_memory).
    pub fn working_memory(&self) -> u64 {
        let scratch = self.transform_scratch();
        self.frames
            .iter()
            .map(|f| Self::frame_memory(f, scratch))
            .max()
            .unwrap_or(0)
    }

    /// Room a delta frame needs for a transform region its window cuts: the longest
    /// region, 0 without a transform.
    pub fn transform_scratch(&self) -> u64 {
        self.transform
            .as_ref()
            .map_or(0, SourceTransform::scratch_len)
    }

    /// Working memory of one frame: [`Frame::apply_memory`] and, for delta frames,
    /// `scratch` ([`transform_scratch`](Self::transform_scratch)).
    pub fn frame_memory(f: &Frame, scratch: u64) -> u64 {
        f.apply_memory() + if f.kind.has_payload() { scratch } else { 0 }
    }

    /// The trusted comment that a signature over this manifest must carry.
    pub fn trusted_comment(&self) -> String {
        format!(
            "deltaward-patch v{VERSION} role=patch source={} target={} size={}",
            self.source_hash, self.target_hash, self.target_size
        )
    }
}

/// The frame checks of [`Manifest::parse`]: frames in target order tiling the target,
/// ranges inside their images, payloads contiguous, lengths within bounds.
#[derive(Default)]
struct Tiling {
    source_size: u64,
    max_window: u64,
    max_frame_len: u64,
    next_target: u64,
    next_payload: u64,
    seen_window: u64,
    seen_frame: u64,
}

impl Tiling {
    /// Checks frame `i` against the manifest and the frames before it.
    fn check(&mut self, i: u32, f: &Frame) -> Result<(), FormatError> {
        let bad = |problem| FormatError::BadFrame { frame: i, problem };
        if f.target_offset != self.next_target {
            return Err(bad("does not start where the previous frame ended"));
        }
        if f.target_len == 0 {
            return Err(bad("is empty"));
        }
        if f.target_len > self.max_frame_len {
            return Err(bad("is longer than the declared maximum frame length"));
        }
        self.next_target = f
            .target_offset
            .checked_add(f.target_len)
            .ok_or(bad("target range overflows"))?;
        let source_end = f
            .source_offset
            .checked_add(f.source_len)
            .ok_or(bad("source range overflows"))?;
        if source_end > self.source_size {
            return Err(bad("source range ends past the source image"));
        }
        match f.kind {
            FrameKind::Copy => {
                if f.source_len != f.target_len {
                    return Err(bad("copy source and target lengths differ"));
                }
            }
            FrameKind::Zero => {
                if f.source_len != 0 || f.source_offset != 0 {
                    return Err(bad("zero frame names a source range"));
                }
            }
            FrameKind::Zstd | FrameKind::Bsdiff | FrameKind::BsdiffRuns => {
                if f.source_len > self.max_window {
                    return Err(bad("window is larger than the declared maximum"));
                }
                self.seen_window = self.seen_window.max(f.source_len);
            }
        }
        if f.kind.has_payload() {
            if f.payload_offset != self.next_payload || f.payload_len == 0 {
                return Err(bad("payload is not contiguous with the previous one"));
            }
            self.next_payload = self
                .next_payload
                .checked_add(f.payload_len)
                .ok_or(bad("payload range overflows"))?;
            if f.payload_len
                > f.target_len
                    .saturating_add(f.target_len / 8)
                    .saturating_add(1 << 16)
            {
                return Err(bad("payload is larger than its output could need"));
            }
        } else if f.payload_offset != 0 || f.payload_len != 0 || f.payload_hash != empty_hash() {
            return Err(bad("frame without payload names one"));
        }
        self.seen_frame = self.seen_frame.max(f.target_len);
        Ok(())
    }

    /// After the last frame: the frames cover the target and the payloads add up,
    /// and the declared maxima are the real ones.
    fn finish(&self, target_size: u64, payload_len: u64) -> Result<(), FormatError> {
        if self.next_target != target_size {
            return Err(FormatError::Inconsistent(
                "frames do not cover the target size exactly",
            ));
        }
        if self.next_payload != payload_len {
            return Err(FormatError::Inconsistent(
                "frame payloads do not add up to the payload length",
            ));
        }
        if self.seen_window != self.max_window || self.seen_frame != self.max_frame_len {
            return Err(FormatError::Inconsistent(
                "declared maxima differ from the frames",
            ));
        }
        Ok(())
    }
}

/// BLAKE3 of the empty string, the payload hash of frames without payload.
pub fn empty_hash() -> Digest {
    Digest::of(&[])
}

fn limit(limit: Limit, value: u64, max: u64) -> Result<(), FormatError> {
    if value > max {
        Err(FormatError::LimitExceeded { limit, value, max })
    } else {
        Ok(())
    }
}

/// A bounds-checked little-endian reader over untrusted bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    region: Region,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], region: Region) -> Self {
        Self {
            buf,
            pos: 0,
            region,
        }
    }

    /// Magic and version, then the flags, returned: the first 12 bytes of the
    /// header and the manifest.
    fn preamble(&mut self, magic: &[u8; 8]) -> Result<u16, FormatError> {
        if self.bytes(8)? != magic {
            return Err(FormatError::BadMagic);
        }
        let version = self.u16()?;
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        self.u16()
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.pos.checked_add(n);
        let out =
            end.and_then(|end| self.buf.get(self.pos..end))
                .ok_or(FormatError::Truncated {
                    region: self.region,
                    offset: self.buf.len() as u64,
                })?;
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn digest(&mut self) -> Result<Digest, FormatError> {
        self.array().map(Digest)
    }

    /// Frame entry `i` (kind and reserved bytes checked, nothing else).
    fn frame(&mut self, i: u32) -> Result<Frame, FormatError> {
        let kind_byte = self.u8()?;
        let kind = FrameKind::from_byte(kind_byte).ok_or(FormatError::UnknownFrameKind {
            frame: i,
            kind: kind_byte,
        })?;
        if self.bytes(7)?.iter().any(|&x| x != 0) {
            return Err(FormatError::Reserved {
                field: "frame reserved",
            });
        }
        Ok(Frame {
            kind,
            target_offset: self.u64()?,
            target_len: self.u64()?,
            source_offset: self.u64()?,
            source_len: self.u64()?,
            payload_offset: self.u64()?,
            payload_len: self.u64()?,
            payload_hash: self.digest()?,
            output_hash: self.digest()?,
        })
    }
    fn text(&mut self, field: &'static str, max: Limit) -> Result<String, FormatError> {
        let len = self.u16()? as usize;
        limit(max, len as u64, MAX_TEXT_LEN as u64)?;
        let bytes = self.bytes(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FormatError::NotUtf8(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let payload = b"abc";
        Manifest {
            source_size: 100,
            source_hash: Digest([1; 32]),
            target_size: 30,
            target_hash: Digest([2; 32]),
            block_size: 4096,
            max_window: 50,
            max_frame_len: 10,
            payload_len: 3,
            tool: "deltaward test".into(),
            options: "level=default".into(),
            frames: vec![
                Frame {
                    kind: FrameKind::Copy,
                    target_offset: 0,
                    target_len: 10,
                    source_offset: 90,
                    source_len: 10,
                    payload_offset: 0,
                    payload_len: 0,
                    payload_hash: empty_hash(),
                    output_hash: Digest([3; 32]),
                },
                Frame {
                    kind: FrameKind::Zero,
                    target_offset: 10,
                    target_len: 10,
                    source_offset: 0,
                    source_len: 0,
                    payload_offset: 0,
                    payload_len: 0,
                    payload_hash: empty_hash(),
                    output_hash: Digest([4; 32]),
                },
                Frame {
                    kind: FrameKind::Zstd,
                    target_offset: 20,
                    target_len: 10,
                    source_offset: 0,
                    source_len: 50,
                    payload_offset: 0,
                    payload_len: 3,
                    payload_hash: Digest::of(payload),
                    output_hash: Digest([5; 32]),
                },
            ],
            transform: None,
        }
    }

    #[test]
    fn manifest_round_trips() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_bytes()), Ok(m));
    }

    fn with_transform() -> Manifest {
        let mut m = sample();
        m.transform = Some(SourceTransform {
            regions: vec![(0..64, RegionKind::ModVersions)],
            types: Remap::new(vec![(5, 1)]).expect("sorted"),
            strings: Remap::default(),
            crcs: ExactMap::new(vec![(1, 2)]).expect("sorted"),
            spaces: Vec::new(),
        });
        m
    }

    #[test]
    fn a_manifest_with_a_transform_round_trips_and_sets_flag_bit_0() {
        let m = with_transform();
        let b = m.to_bytes();
        assert_eq!(u16::from_le_bytes([b[10], b[11]]), MANIFEST_FLAG_TRANSFORM);
        assert_eq!(Manifest::parse(&b), Ok(m));
        // Every cut inside the transform section is refused.
        let plain = sample().to_bytes().len();
        for cut in plain..b.len() {
            assert!(Manifest::parse(&b[..cut]).is_err(), "cut at {cut}");
        }
        // Bytes after it, another flag bit, and the flag without a section.
        let mut longer = b.clone();
        longer.push(0);
        assert!(Manifest::parse(&longer).is_err());
        let mut flag = b.clone();
        flag[10] |= 2;
        assert_eq!(
            Manifest::parse(&flag),
            Err(FormatError::Reserved {
                field: "manifest flags"
            })
        );
        let mut bare = sample().to_bytes();
        bare[10] = 1;
        assert!(Manifest::parse(&bare).is_err());
        // A region past the source image.
        let mut far = with_transform();
        if let Some(t) = far.transform.as_mut() {
            t.regions = vec![(
                far.source_size..far.source_size + 64,
                RegionKind::ModVersions,
            )];
        }
        assert!(Manifest::parse(&far.to_bytes()).is_err());
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = sample().to_bytes();
        for n in 0..bytes.len() {
            assert!(
                Manifest::parse(&bytes[..n]).is_err(),
                "prefix of {n} bytes accepted"
            );
        }
    }

    #[test]
    fn frame_past_source_is_rejected() {
        let mut m = sample();
        m.frames[0].source_offset = 95;
        assert!(matches!(
            Manifest::parse(&m.to_bytes()),
            Err(FormatError::BadFrame { frame: 0, .. })
        ));
    }

    #[test]
    fn absurd_window_is_rejected() {
        let mut m = sample();
        m.max_window = u64::MAX;
        assert!(matches!(
            Manifest::parse(&m.to_bytes()),
            Err(FormatError::LimitExceeded {
                limit: Limit::Window,
                ..
            })
        ));
    }

    #[test]
    fn header_limits_are_inclusive() {
        let at = |manifest_len, signature_len| {
            Header::parse(
                &Header {
                    manifest_len,
                    signature_len,
                    payload_len: 0,
                }
                .to_bytes(),
            )
        };
        assert!(at(MAX_MANIFEST_LEN, MAX_SIGNATURE_LEN).is_ok());
        assert!(matches!(
            at(MAX_MANIFEST_LEN + 1, 1),
            Err(FormatError::LimitExceeded {
                limit: Limit::ManifestLen,
                ..
            })
        ));
        assert!(matches!(
            at(1 << 10, MAX_SIGNATURE_LEN + 1),
            Err(FormatError::LimitExceeded {
                limit: Limit::SignatureLen,
                ..
            })
        ));
    }

    #[test]
    fn text_fields_at_the_limit_parse_and_one_byte_more_is_refused() {
        let mut m = sample();
        m.tool = "t".repeat(MAX_TEXT_LEN);
        assert!(Manifest::parse(&m.to_bytes()).is_ok());
        m.tool.push('t');
        assert!(matches!(
            Manifest::parse(&m.to_bytes()),
            Err(FormatError::LimitExceeded {
                limit: Limit::ToolLen,
                ..
            })
        ));
    }

    #[test]
    fn header_round_trips_and_rejects_bad_magic() {
        let h = Header {
            manifest_len: 200,
            signature_len: 300,
            payload_len: 7,
        };
        let mut b = h.to_bytes();
        assert_eq!(Header::parse(&b), Ok(h));
        b[0] ^= 1;
        assert_eq!(Header::parse(&b), Err(FormatError::BadMagic));
    }
}

//! The patch as a file: the built patch, its signing, writing the container
//! (header, manifest, signature, payloads) and splitting one into its sections.

use std::io::{self, Read, Write};

use crate::{
    error::{Error, Result, SignatureError},
    format::{FormatError, Header, Manifest, Region, HEADER_LEN},
    sign,
};

/// A built, unsigned patch.
#[derive(Debug, Clone)]
pub struct Patch {
    pub(crate) manifest: Manifest,
    pub(crate) payloads: Vec<Vec<u8>>,
    /// The manifest's source transform in its stored form, made while the frames
    /// were encoded (the manifest cannot change after the build).
    pub(crate) stored_transform: Option<Vec<u8>>,
}

impl Patch {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Signs the manifest.
    pub fn sign(self, key: &sign::SecretKey) -> Result<SignedPatch> {
        let manifest_bytes = self
            .manifest
            .to_bytes_with(self.stored_transform.as_deref());
        let signature = key.sign(&manifest_bytes, &self.manifest.trusted_comment())?;
        Ok(SignedPatch {
            patch: self,
            manifest_bytes,
            signature,
        })
    }
}

/// A patch with its signature, ready to write.
#[derive(Debug, Clone)]
pub struct SignedPatch {
    patch: Patch,
    manifest_bytes: Vec<u8>,
    signature: String,
}

impl SignedPatch {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.patch.manifest
    }

    /// Total length of the patch file.
    pub fn len(&self) -> u64 {
        (HEADER_LEN + self.manifest_bytes.len() + self.signature.len()) as u64
            + self.patch.manifest.payload_len
    }

    /// Always false: a patch has at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the patch file.
    pub fn write_to<W: Write>(&self, mut w: W) -> Result<()> {
        let header = Header {
            manifest_len: self.manifest_bytes.len() as u32,
            signature_len: self.signature.len() as u32,
            payload_len: self.patch.manifest.payload_len,
        };
        let err = |source| Error::Stream {
            action: "writing patch",
            source,
        };
        w.write_all(&header.to_bytes()).map_err(err)?;
        w.write_all(&self.manifest_bytes).map_err(err)?;
        w.write_all(self.signature.as_bytes()).map_err(err)?;
        for p in &self.patch.payloads {
            w.write_all(p).map_err(err)?;
        }
        w.flush().map_err(err)
    }
}

/// Reads exactly `buf.len()` bytes, reporting a short read as truncation of `region`.
pub(crate) fn read_region<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    region: Region,
    offset: u64,
) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::Format(FormatError::Truncated { region, offset }),
        _ => Error::Stream {
            action: "reading patch",
            source: e,
        },
    })
}

/// The start of a patch, read without trusting anything: nothing here is verified.
#[derive(Debug, Clone)]
pub struct UnverifiedHead {
    /// The parsed, bounds-checked header.
    pub header: Header,
    /// The manifest bytes, exactly as stored (the signed bytes).
    pub manifest_bytes: Vec<u8>,
    /// The signature text, exactly as stored.
    pub signature: String,
}

impl UnverifiedHead {
    /// File offset of the payload section.
    pub fn payload_start(&self) -> u64 {
        payload_start(&self.header)
    }
}

/// File offset of the payload section for `h`.
pub(crate) fn payload_start(h: &Header) -> u64 {
    HEADER_LEN as u64 + u64::from(h.manifest_len) + u64::from(h.signature_len)
}

/// Reads the header, manifest and signature of a patch without verifying them (the
/// applier checks the signature against its trusted keys before parsing the
/// manifest). The header's lengths are bounded before anything is allocated.
///
/// `memory_limit` bounds what holding the manifest takes
/// ([`manifest_memory`](crate::format::manifest_memory)), checked before the
/// manifest is allocated: a hostile header cannot make the reader allocate 64 MiB
/// before any signature is checked.
pub fn read_unverified<R: Read>(r: &mut R, memory_limit: u64) -> Result<UnverifiedHead> {
    let mut hb = [0u8; HEADER_LEN];
    read_region(r, &mut hb, Region::Header, 0)?;
    let header = Header::parse(&hb)?;
    if header.signature_len == 0 {
        return Err(SignatureError::Unsigned.into());
    }
    let needed = crate::format::manifest_memory(header.manifest_len);
    if needed > memory_limit {
        return Err(Error::MemoryLimit {
            needed,
            limit: memory_limit,
        });
    }
    let mut manifest_bytes = vec![0u8; header.manifest_len as usize];
    read_region(r, &mut manifest_bytes, Region::Manifest, HEADER_LEN as u64)?;
    let mut sig = vec![0u8; header.signature_len as usize];
    read_region(
        r,
        &mut sig,
        Region::Signature,
        HEADER_LEN as u64 + u64::from(header.manifest_len),
    )?;
    let signature = String::from_utf8(sig).map_err(|_| SignatureError::Malformed)?;
    Ok(UnverifiedHead {
        header,
        manifest_bytes,
        signature,
    })
}

/// A whole patch in memory, split into its four sections (nothing verified).
#[derive(Debug, Clone, Copy)]
pub struct Sections<'a> {
    /// The header.
    pub header: Header,
    /// The manifest bytes.
    pub manifest: &'a [u8],
    /// The signature text's bytes.
    pub signature: &'a [u8],
    /// The payload section (exactly `header.payload_len` bytes).
    pub payloads: &'a [u8],
}

impl<'a> Sections<'a> {
    /// Splits `patch` at the lengths its header gives. Fails when the header is
    /// malformed, a section is cut short, or bytes follow the payloads.
    pub fn split(patch: &'a [u8]) -> Result<Self, FormatError> {
        let header = Header::parse(patch.get(..HEADER_LEN).ok_or(FormatError::Truncated {
            region: Region::Header,
            offset: patch.len() as u64,
        })?)?;
        let mut rest = patch.get(HEADER_LEN..).unwrap_or_default();
        let mut take = |len: u64, region| -> Result<&'a [u8], FormatError> {
            let truncated = FormatError::Truncated {
                region,
                offset: patch.len() as u64,
            };
            let len = usize::try_from(len).map_err(|_| truncated.clone())?;
            if rest.len() < len {
                return Err(truncated);
            }
            let (head, tail) = rest.split_at(len);
            rest = tail;
            Ok(head)
        };
        let manifest = take(header.manifest_len.into(), Region::Manifest)?;
        let signature = take(header.signature_len.into(), Region::Signature)?;
        let payloads = take(header.payload_len, Region::FramePayload)?;
        if !rest.is_empty() {
            return Err(FormatError::TrailingBytes {
                extra: rest.len() as u64,
            });
        }
        Ok(Self {
            header,
            manifest,
            signature,
            payloads,
        })
    }

    /// Joins sections back into a patch file, with a header giving their lengths
    /// (the header's other fields are rewritten to match). For tests and tools that
    /// re-sign or alter a patch.
    pub fn join(manifest: &[u8], signature: &[u8], payloads: &[u8]) -> Vec<u8> {
        let header = Header {
            manifest_len: manifest.len() as u32,
            signature_len: signature.len() as u32,
            payload_len: payloads.len() as u64,
        };
        let mut out =
            Vec::with_capacity(HEADER_LEN + manifest.len() + signature.len() + payloads.len());
        out.extend_from_slice(&header.to_bytes());
        out.extend_from_slice(manifest);
        out.extend_from_slice(signature);
        out.extend_from_slice(payloads);
        out
    }
}

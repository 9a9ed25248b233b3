//! The start of a patch: the header's bounds, the signature over the manifest bytes
//! against the trusted keys, and only then the manifest and its trusted comment.

use std::io::Read;

use crate::{
    container::{read_unverified, UnverifiedHead},
    error::{Result, SignatureError},
    format::{FormatError, Header, Manifest},
    sign::TrustedKeys,
};

/// The verified start of a patch.
#[derive(Debug, Clone)]
pub struct VerifiedHead {
    /// The header.
    pub header: Header,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The manifest bytes, exactly as signed.
    pub manifest_bytes: Vec<u8>,
    /// The signature text.
    pub signature: String,
    /// The key that signed it.
    pub key_id: String,
}

/// Reads and verifies the start of a patch: signature first, then the manifest.
/// Holding the manifest may take at most `memory_limit` bytes.
pub fn read_head<R: Read>(
    r: &mut R,
    keys: &TrustedKeys,
    memory_limit: u64,
) -> Result<VerifiedHead> {
    let UnverifiedHead {
        header,
        manifest_bytes,
        signature,
    } = read_unverified(r, memory_limit)?;
    let comment = keys.verify_canonical(&manifest_bytes, &signature)?;
    let manifest = Manifest::parse(&manifest_bytes)?;
    let expected = manifest.trusted_comment();
    if comment != expected {
        return Err(SignatureError::CommentMismatch {
            expected,
            found: comment,
        }
        .into());
    }
    if header.payload_len != manifest.payload_len {
        return Err(FormatError::Inconsistent(
            "header and manifest disagree on the payload length",
        )
        .into());
    }
    // The signature verified, so its key id names a trusted key.
    let key_id = crate::sign::signature_key_id(&signature)?;
    Ok(VerifiedHead {
        header,
        manifest,
        manifest_bytes,
        signature,
        key_id,
    })
}

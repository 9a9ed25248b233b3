//! Signing and verifying role documents k-of-n, in the manner of TUF.
//!
//! A document `X.json` is signed in `X.json.minisig`: one or more minisign
//! signatures (four lines each) one after another, at most
//! [`MAX_SIGNATURE_BLOCKS`]. The reference `minisign -V` checks the first; deltaward
//! checks all and counts valid signatures from distinct Ed25519 keys the trusted root
//! lists for the role. The trusted comment of each is
//! `deltaward role=ROLE file=FILE version=N` and is checked.
//!
//! Minisign signs the BLAKE2b-512 hash of a document (prehashed `ED` mode); deltaward
//! computes that hash once per document, however many blocks it carries, and checks
//! each block's Ed25519 signatures over it.

use std::collections::{BTreeMap, BTreeSet};

use blake2::Digest;
use ct_codecs::{Base64, Decoder, Encoder};
use deltaward_engine::{format_key_id, SecretKey, SignatureError};

use crate::{
    error::{invalid, Error, InvalidError, LimitError, Result, RootRotationError},
    limits::{MAX_SIGNATURE_BLOCKS, SIGNATURE_FILE_MAX_BYTES},
    model::{Role, Root},
};

/// The roles of `root.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleName {
    /// Signs `root.json`.
    Root,
    /// Signs `release.json`.
    Release,
    /// Signs `channel.json`.
    Channel,
}

impl RoleName {
    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Release => "release",
            Self::Channel => "channel",
        }
    }

    /// The role's definition in `root`.
    pub fn of(self, root: &Root) -> &Role {
        match self {
            Self::Root => &root.roles.root,
            Self::Release => &root.roles.release,
            Self::Channel => &root.roles.channel,
        }
    }
}

/// The trusted comment of a role document.
pub fn comment(role: RoleName, file: &str, version: u64) -> String {
    format!(
        "deltaward role={} file={file} version={version}",
        role.name()
    )
}

/// Signs `bytes` with each key, returning the `.minisig` text.
pub fn sign_document(
    bytes: &[u8],
    keys: &[&SecretKey],
    role: RoleName,
    file: &str,
    version: u64,
) -> Result<String> {
    let c = comment(role, file, version);
    let mut out = String::new();
    for k in keys {
        out.push_str(&k.sign(bytes, &c).map_err(deltaward_engine::Error::from)?);
    }
    Ok(out)
}

/// The raw 32-byte Ed25519 key and the key id inside a minisign public key (its
/// base64 line, as `root.json` lists it).
pub fn raw_key(b64: &str) -> Result<([u8; 32], String), deltaward_engine::KeyError> {
    let malformed = || deltaward_engine::KeyError::Malformed(deltaward_engine::KeyKind::Public);
    let raw = Base64::decode_to_vec(b64.trim(), None).map_err(|_| malformed())?;
    let (alg, rest) = raw.split_first_chunk::<2>().ok_or_else(malformed)?;
    let (keynum, key) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
    let key: [u8; 32] = key.try_into().map_err(|_| malformed())?;
    if alg != b"Ed" && alg != b"ED" {
        return Err(malformed());
    }
    Ok((key, format_key_id(keynum)))
}

/// Checks a root before it is written: every key is a minisign public key listed under
/// its own key number, no Ed25519 key is listed under two ids, every role names listed
/// keys, and each threshold is between 1 and the role's number of distinct keys (and
/// at most [`MAX_SIGNATURE_BLOCKS`]).
pub fn validate_root(root: &Root) -> Result<()> {
    let mut seen: BTreeMap<[u8; 32], &str> = BTreeMap::new();
    for (id, b64) in &root.keys {
        let (key, actual) = raw_key(b64).map_err(|source| {
            invalid(
                "root.json",
                InvalidError::Key {
                    key_id: id.clone(),
                    error: source,
                },
            )
        })?;
        if actual != *id {
            return Err(invalid(
                "root.json",
                InvalidError::KeyIdMismatch {
                    listed: id.clone(),
                    actual,
                },
            ));
        }
        if let Some(first) = seen.insert(key, id) {
            return Err(invalid(
                "root.json",
                InvalidError::DuplicateKey {
                    first: first.to_owned(),
                    second: id.clone(),
                },
            ));
        }
    }
    for role in [RoleName::Root, RoleName::Release, RoleName::Channel] {
        let def = role.of(root);
        let mut ids = BTreeSet::new();
        for id in &def.keyids {
            if !root.keys.contains_key(id) {
                return Err(invalid(
                    "root.json",
                    InvalidError::MissingKey {
                        role: role.name(),
                        key_id: id.clone(),
                    },
                ));
            }
            ids.insert(id);
        }
        if def.threshold == 0
            || def.threshold as usize > ids.len()
            || def.threshold as usize > MAX_SIGNATURE_BLOCKS
        {
            return Err(invalid(
                "root.json",
                InvalidError::BadThreshold {
                    role: role.name(),
                    threshold: def.threshold,
                    keys: ids.len(),
                },
            ));
        }
    }
    Ok(())
}

/// The keys of `role` in `root`, as the engine verifies with them (a patch's
/// signature, for the release role).
pub fn trusted_keys(root: &Root, role: RoleName) -> Result<deltaward_engine::TrustedKeys> {
    let mut keys = deltaward_engine::TrustedKeys::new();
    for id in &role.of(root).keyids {
        if let Some(k) = root.keys.get(id) {
            keys.add_text(k).map_err(deltaward_engine::Error::from)?;
        }
    }
    Ok(keys)
}

/// The raw Ed25519 keys the root trusts for a role (keys that do not decode, or that
/// are listed under another id than their own, are left out: they can verify nothing).
pub fn role_keys(root: &Root, role: RoleName) -> BTreeSet<[u8; 32]> {
    role.of(root)
        .keyids
        .iter()
        .filter_map(|id| {
            let (key, actual) = raw_key(root.keys.get(id)?).ok()?;
            (actual == *id).then_some(key)
        })
        .collect()
}

/// One signature block of a `.minisig` file, as read (unverified).
struct Block<'a> {
    lines: [&'a str; 4],
    key_id: String,
    prehashed: bool,
    /// Algorithm, key number and Ed25519 signature, decoded from the second line.
    raw: Vec<u8>,
}

/// Splits a `.minisig` text into its signature blocks, refusing more than
/// [`MAX_SIGNATURE_BLOCKS`] before parsing any.
fn blocks<'a>(file: &str, text: &'a str) -> Result<Vec<Block<'a>>> {
    if text.len() as u64 > SIGNATURE_FILE_MAX_BYTES {
        return Err(Error::Limit {
            file: format!("{file}.minisig"),
            limit: LimitError::TooLarge {
                max: SIGNATURE_FILE_MAX_BYTES,
            },
        });
    }
    let malformed = |_| Error::Signature {
        file: file.to_owned(),
        source: SignatureError::Malformed,
    };
    // Blocks exactly as minisign writes them (the reference `minisign -V` must read
    // what a device accepts): four lines each, no carriage returns, the comment
    // prefixes, and both base64 lines in their one canonical encoding. Only empty
    // lines between blocks are passed over.
    if text.contains('\r') {
        return Err(malformed(()));
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    if lines.len() > MAX_SIGNATURE_BLOCKS * 4 {
        return Err(Error::Limit {
            file: format!("{file}.minisig"),
            limit: LimitError::TooManySignatures {
                max: MAX_SIGNATURE_BLOCKS,
            },
        });
    }
    let canonical = |line: &str| -> Option<Vec<u8>> {
        let raw = Base64::decode_to_vec(line, None).ok()?;
        (Base64::encode_to_string(&raw).ok()? == line).then_some(raw)
    };
    lines
        .chunks(4)
        .map(|c| {
            let lines: [&str; 4] = c.try_into().map_err(|_| malformed(()))?;
            if !lines[0].starts_with("untrusted comment: ")
                || !lines[2].starts_with("trusted comment: ")
                || canonical(lines[3]).is_none()
            {
                return Err(malformed(()));
            }
            let raw = canonical(lines[1]).ok_or_else(|| malformed(()))?;
            let prehashed = match raw.get(0..2) {
                Some(b"ED") => true,
                Some(b"Ed") => false,
                _ => {
                    return Err(Error::Signature {
                        file: file.to_owned(),
                        source: SignatureError::Malformed,
                    })
                }
            };
            let key_id = format_key_id(raw.get(2..10).ok_or(Error::Signature {
                file: file.to_owned(),
                source: SignatureError::Malformed,
            })?);
            Ok(Block {
                lines,
                key_id,
                prehashed,
                raw,
            })
        })
        .collect()
}

#[cfg(test)]
thread_local! {
    /// How many times a document was hashed for verification (unit tests only).
    static PREHASHES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The BLAKE2b-512 hash minisign's prehashed mode signs.
fn prehash(bytes: &[u8]) -> Vec<u8> {
    #[cfg(test)]
    PREHASHES.with(|c| c.set(c.get() + 1));
    blake2::Blake2b512::digest(bytes).to_vec()
}

/// Checks one prehashed block's Ed25519 signatures over `hash` with `public` (the
/// base64 key line): minisign's prehashed check is the plain Ed25519 check of the
/// document's BLAKE2b-512 hash, so the block is handed to the verifier in plain form
/// with that hash as the message. Returns the trusted comment.
fn verify_block(block: &Block<'_>, public: &str, hash: &[u8]) -> Result<String, SignatureError> {
    let mut raw = block.raw.clone();
    if let Some(alg) = raw.get_mut(0..2) {
        alg.copy_from_slice(b"Ed");
    }
    let line = Base64::encode_to_string(&raw).map_err(|_| SignatureError::Malformed)?;
    let text = format!(
        "{}\n{line}\n{}\n{}\n",
        block.lines[0], block.lines[2], block.lines[3]
    );
    let sig = minisign_verify::Signature::decode(&text).map_err(|_| SignatureError::Malformed)?;
    let key = minisign_verify::PublicKey::from_base64(public.trim())
        .map_err(|_| SignatureError::Invalid)?;
    key.verify(hash, &sig, true)
        .map_err(|_| SignatureError::Invalid)?;
    Ok(sig.trusted_comment().to_owned())
}

/// Verifies `bytes` against its `.minisig` text for `role` under `root`, requiring
/// the role's threshold of valid signatures from distinct Ed25519 keys the role lists
/// (a key listed under two ids counts once), each with the trusted comment for `file`
/// at `version`. The document is hashed once for all its blocks. Returns the ids of
/// the keys whose signatures verified.
pub fn verify_document(
    root: &Root,
    role: RoleName,
    file: &str,
    version: u64,
    bytes: &[u8],
    sigs: &str,
) -> Result<Vec<String>> {
    let def = role.of(root);
    let expected = comment(role, file, version);
    let mut valid: BTreeSet<[u8; 32]> = BTreeSet::new();
    let mut signers = Vec::new();
    let mut unknown = None;
    let mut hash = None;
    for block in blocks(file, sigs)? {
        let Some(public) = root
            .keys
            .get(&block.key_id)
            .filter(|_| def.keyids.contains(&block.key_id))
        else {
            unknown = Some(block.key_id);
            continue;
        };
        let (key, actual) = raw_key(public).map_err(|source| {
            invalid(
                "root.json",
                InvalidError::Key {
                    key_id: block.key_id.clone(),
                    error: source,
                },
            )
        })?;
        if actual != block.key_id {
            return Err(invalid(
                "root.json",
                InvalidError::KeyIdMismatch {
                    listed: block.key_id,
                    actual,
                },
            ));
        }
        if !block.prehashed {
            return Err(Error::Signature {
                file: file.to_owned(),
                source: SignatureError::Legacy,
            });
        }
        // Count distinct Ed25519 keys, not ids or key strings: minisign does not sign
        // the key id, so one key under two ids must not count twice.
        if valid.contains(&key) {
            continue;
        }
        let hash = hash.get_or_insert_with(|| prehash(bytes));
        match verify_block(&block, public, hash) {
            Ok(found) if found == expected => {
                valid.insert(key);
                signers.push(block.key_id);
            }
            Ok(found) => {
                return Err(Error::Comment {
                    file: file.to_owned(),
                    expected,
                    found,
                })
            }
            // An invalid signature counts for nothing.
            Err(_) => {}
        }
    }
    if valid.len() >= def.threshold as usize && def.threshold > 0 {
        return Ok(signers);
    }
    match unknown {
        Some(key_id) if valid.is_empty() => Err(Error::UnknownKey {
            file: file.to_owned(),
            role: role.name(),
            key_id,
        }),
        _ => Err(Error::Threshold {
            file: file.to_owned(),
            role: role.name(),
            valid: valid.len(),
            needed: def.threshold,
        }),
    }
}

/// Verifies root version N+1 (`next`, with its signatures) against the trusted
/// version N: it must be numbered N+1 and signed by the threshold of N's root keys
/// and by the threshold of its own.
pub fn verify_rotation(trusted: &Root, next_bytes: &[u8], next_sigs: &str) -> Result<Root> {
    let next = Root::from_json(next_bytes).map_err(|e| match e {
        Error::Invalid {
            reason: InvalidError::WrongKind {
                kind, spec_version, ..
            },
            ..
        } => Error::RootRotation(RootRotationError::WrongKind { kind, spec_version }),
        e => e,
    })?;
    if Some(next.version) != trusted.version.checked_add(1) {
        return Err(Error::RootRotation(RootRotationError::VersionNotNext {
            trusted: trusted.version,
            offered: next.version,
        }));
    }
    verify_document(
        trusted,
        RoleName::Root,
        "root.json",
        next.version,
        next_bytes,
        next_sigs,
    )
    .map_err(|e| Error::RootRotation(RootRotationError::NotSignedByOld(Box::new(e))))?;
    verify_document(
        &next,
        RoleName::Root,
        "root.json",
        next.version,
        next_bytes,
        next_sigs,
    )
    .map_err(|e| Error::RootRotation(RootRotationError::NotSignedByNew(Box::new(e))))?;
    Ok(next)
}

/// Whether a rotation from `old` to `new` revokes trust the old root gave `role`: a key
/// of the role is no longer listed, or the threshold went up. Devices then forget the
/// versions that role vouched for (TUF 5.3.11), so that numbers a stolen key pushed
/// to the top cannot freeze the device after the maker rotated that key out.
pub fn rotation_revokes(old: &Root, new: &Root, role: RoleName) -> bool {
    !role_keys(old, role).is_subset(&role_keys(new, role))
        || role.of(new).threshold > role.of(old).threshold
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Roles, SPEC_VERSION};

    #[test]
    fn document_is_hashed_once_for_all_its_signatures() {
        let kp = deltaward_engine::generate_keypair(None).expect("keygen");
        let sk = SecretKey::from_text(&kp.secret, None).expect("secret");
        let kp2 = deltaward_engine::generate_keypair(None).expect("keygen");
        let sk2 = SecretKey::from_text(&kp2.secret, None).expect("secret");
        let line = |t: &str| t.lines().nth(1).expect("line").to_owned();
        let role = Role {
            keyids: vec![kp.key_id.clone(), kp2.key_id.clone()],
            threshold: 2,
        };
        let root = Root {
            kind: "deltaward-root".into(),
            spec_version: SPEC_VERSION,
            version: 1,
            expires: "2099-01-01T00:00:00Z".into(),
            keys: [
                (kp.key_id.clone(), line(&kp.public)),
                (kp2.key_id.clone(), line(&kp2.public)),
            ]
            .into_iter()
            .collect(),
            roles: Roles {
                root: role.clone(),
                release: role.clone(),
                channel: role,
            },
        };
        let doc = vec![7u8; 1 << 20];
        let sigs = sign_document(
            &doc,
            &[&sk, &sk, &sk, &sk2],
            RoleName::Release,
            "release.json",
            3,
        )
        .expect("sign");
        PREHASHES.with(|c| c.set(0));
        verify_document(&root, RoleName::Release, "release.json", 3, &doc, &sigs).expect("valid");
        assert_eq!(PREHASHES.with(|c| c.get()), 1);
    }
}

//! Signing and verifying role documents k-of-n, in the manner of TUF.
//!
//! A document `X.json` is signed in `X.json.minisig`: one or more minisign
//! signatures (four lines each) one after another. The reference `minisign -V`
//! checks the first; deltaward checks all and counts valid signatures from distinct
//! keys the trusted root lists for the role. The trusted comment of each is
//! `deltaward role=ROLE file=FILE version=N` and is checked.

use std::collections::BTreeSet;

use deltaward_engine::{signature_key_id, SecretKey, TrustedKeys};

use crate::{
    error::{Error, Result},
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

    fn of(self, root: &Root) -> &Role {
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

/// Splits a `.minisig` text into its signatures.
fn blocks(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .chunks(4)
        .map(|c| format!("{}\n", c.join("\n")))
        .collect()
}

/// Verifies `bytes` against its `.minisig` text for `role` under `root`, requiring
/// the role's threshold of valid signatures from distinct listed keys, each with
/// the trusted comment for `file` at `version`.
pub fn verify_document(
    root: &Root,
    role: RoleName,
    file: &str,
    version: u64,
    bytes: &[u8],
    sigs: &str,
) -> Result<()> {
    let def = role.of(root);
    let expected = comment(role, file, version);
    let mut valid = BTreeSet::new();
    let mut unknown = None;
    for block in blocks(sigs) {
        let key_id = signature_key_id(&block).map_err(|source| Error::Signature {
            file: file.to_owned(),
            source,
        })?;
        let Some(public) = root
            .keys
            .get(&key_id)
            .filter(|_| def.keyids.contains(&key_id))
        else {
            unknown = Some(key_id);
            continue;
        };
        let mut keys = TrustedKeys::new();
        keys.add_text(public).map_err(|e| Error::Invalid {
            file: "root.json".into(),
            reason: format!("key {key_id}: {e}"),
        })?;
        match keys.verify(bytes, &block) {
            // Count distinct public keys, not ids: a root listing one key under two
            // ids must not let one signature count twice.
            Ok(found) if found == expected => {
                valid.insert(public.clone());
            }
            Ok(found) => {
                return Err(Error::Comment {
                    file: file.to_owned(),
                    expected,
                    found,
                })
            }
            Err(deltaward_engine::SignatureError::Legacy) => {
                return Err(Error::Signature {
                    file: file.to_owned(),
                    source: deltaward_engine::SignatureError::Legacy,
                })
            }
            // An invalid signature counts for nothing.
            Err(_) => {}
        }
    }
    if valid.len() >= def.threshold as usize && def.threshold > 0 {
        return Ok(());
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
    let next: Root = serde_json::from_slice(next_bytes).map_err(|e| Error::Invalid {
        file: "root.json".into(),
        reason: e.to_string(),
    })?;
    if next.kind != "deltaward-root" || next.spec_version != crate::model::SPEC_VERSION {
        return Err(Error::RootRotation(format!(
            "the offered root is {} version {}, not deltaward-root version {}",
            next.kind,
            next.spec_version,
            crate::model::SPEC_VERSION
        )));
    }
    if Some(next.version) != trusted.version.checked_add(1) {
        return Err(Error::RootRotation(format!(
            "trusted root is version {}, the offered root is version {} (versions may not be skipped)",
            trusted.version, next.version
        )));
    }
    verify_document(
        trusted,
        RoleName::Root,
        "root.json",
        next.version,
        next_bytes,
        next_sigs,
    )
    .map_err(|e| Error::RootRotation(format!("not signed by the old root's keys: {e}")))?;
    verify_document(
        &next,
        RoleName::Root,
        "root.json",
        next.version,
        next_bytes,
        next_sigs,
    )
    .map_err(|e| Error::RootRotation(format!("not signed by the new root's own keys: {e}")))?;
    Ok(next)
}

//! Shared by the release fuzz targets: a trusted root over two fixed fuzz-only keys
//! (fuzz/fixtures/{k,l}.pub), in which key K is listed a second time under a forged
//! id, and an independent check of what the release crate accepted.
#![allow(dead_code)] // reason: each fuzz target uses a different part of this module

use std::collections::BTreeSet;

use ct_codecs::{Base64, Decoder, Encoder};
use deltaward_release::{
    model::{Role, Roles, Root, SPEC_VERSION},
    trust::{comment, raw_key, RoleName},
};

const K_PUB: &str = include_str!("../../fixtures/k.pub");
const L_PUB: &str = include_str!("../../fixtures/l.pub");
/// The forged key number under which K is listed again.
pub const ALIAS: [u8; 8] = [0x5a; 8];

fn line(text: &str) -> String {
    text.lines().nth(1).unwrap_or_default().trim().to_owned()
}

/// Rewrites the key number inside a base64 key or signature line.
pub fn with_keynum(b64: &str, keynum: [u8; 8]) -> Option<String> {
    let mut raw = Base64::decode_to_vec(b64, None).ok()?;
    raw.get_mut(2..10)?.copy_from_slice(&keynum);
    Base64::encode_to_string(&raw).ok()
}

/// Root version 1: K (under its own id and under ALIAS) and L for every role,
/// threshold 2, so only K and L together meet it.
pub fn trusted() -> Root {
    let (k, l) = (line(K_PUB), line(L_PUB));
    let alias = with_keynum(&k, ALIAS).unwrap_or_default();
    let id = |b64: &str| raw_key(b64).map(|(_, id)| id).unwrap_or_default();
    let ids = vec![id(&k), id(&alias), id(&l)];
    let role = Role {
        keyids: ids.clone(),
        threshold: 2,
    };
    Root {
        kind: "deltaward-root".into(),
        spec_version: SPEC_VERSION,
        version: 1,
        expires: "2099-01-01T00:00:00Z".into(),
        keys: ids.into_iter().zip([k, alias, l]).collect(),
        roles: Roles {
            root: role.clone(),
            release: role.clone(),
            channel: role,
        },
    }
}

/// Splits a fuzz input into a document and its signature text at the first NUL.
pub fn split(data: &[u8]) -> (&[u8], Option<&str>) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], std::str::from_utf8(&data[i + 1..]).ok()),
        None => (data, None),
    }
}

/// The independent check: the distinct raw Ed25519 keys of `root`'s `role` that the
/// reference minisign verifier finds a valid prehashed signature from, over exactly
/// `doc`, with the expected trusted comment. Whatever the release crate accepts must
/// reach the role's threshold here too.
pub fn reference_signers(
    root: &Root,
    role: RoleName,
    file: &str,
    version: u64,
    doc: &[u8],
    sigs: &str,
) -> usize {
    let expected = comment(role, file, version);
    let lines: Vec<&str> = sigs.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut keys = BTreeSet::new();
    for block in lines.chunks(4) {
        let text = format!("{}\n", block.join("\n"));
        let Ok(sig) = minisign_verify::Signature::decode(&text) else {
            continue;
        };
        if sig.trusted_comment() != expected {
            continue;
        }
        for id in &role.of(root).keyids {
            let Some(b64) = root.keys.get(id) else {
                continue;
            };
            let Ok((raw, _)) = raw_key(b64) else { continue };
            let Ok(pk) = minisign_verify::PublicKey::from_base64(b64) else {
                continue;
            };
            if pk.verify(doc, &sig, false).is_ok() {
                keys.insert(raw);
            }
        }
    }
    keys.len()
}

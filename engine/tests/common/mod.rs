//! Shared helpers for the engine's integration tests.
#![allow(dead_code)]

use deltaward_engine::{
    apply::{self, ApplyOptions},
    sign::{self, SecretKey, TrustedKeys},
    BuildOptions, Manifest, Patch,
};

#[derive(Debug)]
pub struct Keys {
    pub secret: SecretKey,
    pub trusted: TrustedKeys,
    pub public_text: String,
}

pub fn keys() -> Keys {
    let kp = sign::generate_keypair(None).expect("keygen");
    let mut trusted = TrustedKeys::new();
    trusted.add_text(&kp.public).expect("public key");
    Keys {
        secret: SecretKey::from_text(&kp.secret, None).expect("secret key"),
        trusted,
        public_text: kp.public,
    }
}

pub fn build(old: &[u8], new: &[u8], key: &SecretKey, opts: &BuildOptions) -> Vec<u8> {
    let patch = Patch::build(old, new, opts)
        .expect("build")
        .sign(key)
        .expect("sign");
    let mut bytes = Vec::new();
    patch.write_to(&mut bytes).expect("write");
    assert_eq!(bytes.len() as u64, patch.len());
    bytes
}

pub fn apply(old: &[u8], patch: &[u8], trusted: &TrustedKeys) -> deltaward_engine::Result<Vec<u8>> {
    let mut out = Vec::new();
    apply::apply(
        &old,
        &mut &patch[..],
        &mut out,
        trusted,
        &ApplyOptions::default(),
        &|_| {},
    )?;
    Ok(out)
}

/// Deterministic pseudo-random bytes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Re-signs a modified manifest into a patch with the same payloads.
pub fn resign(patch: &[u8], m: &Manifest, key: &SecretKey) -> Vec<u8> {
    use deltaward_engine::format::{Header, HEADER_LEN};
    let h = Header::parse(&patch[..HEADER_LEN]).expect("header");
    let payload_start = HEADER_LEN + h.manifest_len as usize + h.signature_len as usize;
    let mb = m.to_bytes();
    let sig = key.sign(&mb, &m.trusted_comment()).expect("sign");
    let nh = Header {
        manifest_len: mb.len() as u32,
        signature_len: sig.len() as u32,
        payload_len: m.payload_len,
    };
    let mut out = nh.to_bytes().to_vec();
    out.extend_from_slice(&mb);
    out.extend_from_slice(sig.as_bytes());
    out.extend_from_slice(&patch[payload_start..]);
    out
}

//! Keys and signatures in minisign's format (Ed25519, prehashed `ED` signatures).
//!
//! Signing uses the `minisign` crate; verification uses `minisign-verify`. Key files
//! are the ones the reference `minisign` program reads and writes: deltaward's keys
//! work with `minisign -S`/`-V`, and keys made by `minisign -G` work with deltaward.
//! Legacy `Ed` signatures (non-prehashed) are refused.

use ct_codecs::{Base64, Decoder, Encoder};

use crate::error::{KeyError, KeyKind, SignatureError};

/// Offset of the two-byte KDF algorithm in a decoded minisign secret key.
const KDF_ALG_OFFSET: usize = 2;
/// Offset of the 32-byte checksum (the last field) in a decoded secret key.
const CHK_OFFSET: usize = 126;
/// Length of a decoded minisign secret key.
const SECRET_KEY_LEN: usize = 158;
/// Length of a decoded minisign public key.
const PUBLIC_KEY_LEN: usize = 42;

/// The decoded key line of a key file's text, checked to be a key of the `wanted`
/// kind: a key of the other kind gets its own error, so that a public key given as
/// a secret key (or the reverse) is named as such.
fn decode_key(text: &str, wanted: KeyKind) -> Result<Vec<u8>, KeyError> {
    let raw = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .and_then(decode_b64)
        .ok_or(KeyError::Malformed(wanted))?;
    match (raw.len(), wanted) {
        (SECRET_KEY_LEN, KeyKind::Secret) | (PUBLIC_KEY_LEN, KeyKind::Public) => Ok(raw),
        (PUBLIC_KEY_LEN, _) | (SECRET_KEY_LEN, _) => Err(KeyError::WrongKind { wanted }),
        _ => Err(KeyError::Malformed(wanted)),
    }
}

/// A freshly generated key pair, as the text of the two key files.
#[derive(Debug, Clone)]
pub struct KeyPairText {
    /// Public key file contents.
    pub public: String,
    /// Secret key file contents.
    pub secret: String,
    /// Key id as minisign prints it.
    pub key_id: String,
}

/// Generates a key pair. With `password` `None` the secret key is stored
/// unencrypted, marked the way `minisign -G -W` marks it so that the reference
/// program uses it without asking for a password.
pub fn generate_keypair(password: Option<&str>) -> Result<KeyPairText, KeyError> {
    let gen_err = KeyError::Generate;
    let kp = match password {
        Some(pw) if !pw.is_empty() => {
            minisign::KeyPair::generate_encrypted_keypair(Some(pw.to_owned()))
        }
        // An empty password writes the checksum but leaves the key in clear.
        _ => minisign::KeyPair::generate_encrypted_keypair(Some(String::new())),
    }
    .map_err(gen_err)?;
    let key_id = format_key_id(kp.pk.keynum());
    let public = kp.pk.to_box().map_err(gen_err)?.into_string();
    let mut secret = kp
        .sk
        .to_box(Some(&format!("deltaward secret key {key_id}")))
        .map_err(gen_err)?
        .into_string();
    if password.is_none_or(str::is_empty) {
        secret = mark_unencrypted(&secret)?;
    }
    Ok(KeyPairText {
        public,
        secret,
        key_id,
    })
}

/// Rewrites the KDF algorithm of an unencrypted secret key box to "none" (two zero bytes).
fn mark_unencrypted(secret_box: &str) -> Result<String, KeyError> {
    let mut lines = secret_box.lines();
    let comment = lines.next().ok_or(KeyError::Malformed(KeyKind::Secret))?;
    let mut raw = decode_b64(lines.next().ok_or(KeyError::Malformed(KeyKind::Secret))?)
        .ok_or(KeyError::Malformed(KeyKind::Secret))?;
    let kdf = raw
        .get_mut(KDF_ALG_OFFSET..KDF_ALG_OFFSET + 2)
        .ok_or(KeyError::Malformed(KeyKind::Secret))?;
    kdf.copy_from_slice(&[0, 0]);
    let b64 = Base64::encode_to_string(&raw).map_err(|_| KeyError::Malformed(KeyKind::Secret))?;
    Ok(format!("{comment}\n{b64}\n"))
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    Base64::decode_to_vec(s.trim(), None).ok()
}

/// Formats an 8-byte key number the way minisign prints key ids.
pub fn format_key_id(keynum: &[u8]) -> String {
    let mut id = [0u8; 8];
    for (d, s) in id.iter_mut().zip(keynum) {
        *d = *s;
    }
    format!("{:016X}", u64::from_le_bytes(id))
}

/// A secret key, ready to sign.
pub struct SecretKey {
    sk: minisign::SecretKey,
    pk: Option<minisign::PublicKey>,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// Whether a secret key file's text is encrypted with a password.
    pub fn is_encrypted(text: &str) -> Result<bool, KeyError> {
        let raw = decode_key(text, KeyKind::Secret)?;
        let kdf = raw
            .get(KDF_ALG_OFFSET..KDF_ALG_OFFSET + 2)
            .ok_or(KeyError::Malformed(KeyKind::Secret))?;
        Ok(kdf != [0, 0])
    }

    /// Reads a secret key from the text of a minisign secret key file. `password` is
    /// required for encrypted keys and ignored for unencrypted ones.
    pub fn from_text(text: &str, password: Option<&str>) -> Result<Self, KeyError> {
        let password = if Self::is_encrypted(text)? {
            match password {
                Some(p) if !p.is_empty() => p.to_owned(),
                _ => return Err(KeyError::PasswordRequired),
            }
        } else {
            String::new()
        };
        let raw = decode_key(text, KeyKind::Secret)?;
        if password.is_empty()
            && raw
                .get(CHK_OFFSET..)
                .is_some_and(|chk| chk.iter().all(|&b| b == 0))
        {
            // `minisign -G -W` leaves the checksum of an unencrypted key zeroed.
            let sk = minisign::SecretKey::from_bytes(&raw)
                .map_err(|_| KeyError::Malformed(KeyKind::Secret))?;
            let pk = minisign::PublicKey::from_secret_key(&sk).ok();
            return Ok(Self { sk, pk });
        }
        let sk_box = minisign::SecretKeyBox::from_string(text)
            .map_err(|_| KeyError::Malformed(KeyKind::Secret))?;
        // The box parsed, so what fails now is the key derivation or the checksum:
        // a wrong password, or a damaged file (the error says both).
        let sk = sk_box
            .into_secret_key(Some(password))
            .map_err(|_| KeyError::WrongPassword)?;
        let pk = minisign::PublicKey::from_secret_key(&sk).ok();
        Ok(Self { sk, pk })
    }

    /// Key id as minisign prints it.
    pub fn key_id(&self) -> String {
        format_key_id(self.sk.keynum())
    }

    /// The matching public key's base64 line (as a `.pub` file's second line), to
    /// verify this key's own signatures.
    pub fn public_base64(&self) -> Option<String> {
        self.pk.as_ref().map(|pk| pk.to_base64())
    }

    /// Signs `message`, returning the text of a minisign signature file whose trusted
    /// comment is `trusted_comment`.
    pub fn sign(&self, message: &[u8], trusted_comment: &str) -> Result<String, KeyError> {
        let untrusted = format!(
            "{}{}",
            UNTRUSTED_PREFIX.trim_start_matches("untrusted comment: "),
            self.key_id()
        );
        minisign::sign(
            self.pk.as_ref(),
            &self.sk,
            message,
            Some(trusted_comment),
            Some(&untrusted),
        )
        .map(|b| b.into_string())
        .map_err(KeyError::Sign)
    }
}

/// The set of public keys a verifier trusts.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, minisign_verify::PublicKey)>,
}

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(id, _)| id))
            .finish()
    }
}

impl TrustedKeys {
    /// An empty set (verifies nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key from the text of a minisign public key file, or from its bare
    /// base64 line. Returns the key id.
    pub fn add_text(&mut self, text: &str) -> Result<String, KeyError> {
        let raw = decode_key(text, KeyKind::Public)?;
        let line =
            Base64::encode_to_string(&raw).map_err(|_| KeyError::Malformed(KeyKind::Public))?;
        let key = minisign_verify::PublicKey::from_base64(&line)
            .map_err(|_| KeyError::Malformed(KeyKind::Public))?;
        let id = format_key_id(raw.get(2..10).ok_or(KeyError::Malformed(KeyKind::Public))?);
        self.keys.push((id.clone(), key));
        Ok(id)
    }

    /// Key ids of the trusted keys.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// Verifies a minisign signature over `message` and returns its trusted comment.
    /// Legacy signatures are refused; the signing key must be trusted.
    pub fn verify(&self, message: &[u8], signature: &str) -> Result<String, SignatureError> {
        let (key_id, prehashed) = signature_key(signature)?;
        if !prehashed {
            return Err(SignatureError::Legacy);
        }
        let sig =
            minisign_verify::Signature::decode(signature).map_err(|_| SignatureError::Malformed)?;
        // Several trusted keys may share a key id (it is not signed, and anyone can
        // make a key with a chosen id): try each of them.
        let mut candidates = self.keys.iter().filter(|(id, _)| *id == key_id).peekable();
        if candidates.peek().is_none() {
            return Err(SignatureError::UntrustedKey { key_id });
        }
        let mut failure = SignatureError::Invalid;
        let verified = candidates.any(|(_, key)| match key.verify(message, &sig, false) {
            Ok(()) => true,
            Err(minisign_verify::Error::UnexpectedAlgorithm) => {
                failure = SignatureError::Legacy;
                false
            }
            Err(_) => false,
        });
        if !verified {
            return Err(failure);
        }
        Ok(sig.trusted_comment().to_owned())
    }

    /// Like [`verify`](Self::verify), and also requires the signature text to be
    /// exactly as deltaward writes it, so that no byte of a patch can change
    /// unnoticed (minisign does not sign the untrusted comment or the encoding).
    pub fn verify_canonical(
        &self,
        message: &[u8],
        signature: &str,
    ) -> Result<String, SignatureError> {
        let comment = self.verify(message, signature)?;
        let (key_id, _) = signature_key(signature)?;
        let lines: Vec<&str> = signature.split('\n').collect();
        let reencode = |i: usize| -> Option<String> {
            let line = lines.get(i)?;
            let raw = Base64::decode_to_vec(line, None).ok()?;
            Base64::encode_to_string(raw).ok()
        };
        let canonical = format!(
            "{}{key_id}\n{}\ntrusted comment: {comment}\n{}\n",
            UNTRUSTED_PREFIX,
            reencode(1).ok_or(SignatureError::NotCanonical)?,
            reencode(3).ok_or(SignatureError::NotCanonical)?,
        );
        if canonical != signature {
            return Err(SignatureError::NotCanonical);
        }
        Ok(comment)
    }
}

/// The untrusted comment deltaward writes, followed by the key id.
const UNTRUSTED_PREFIX: &str = "untrusted comment: signature from deltaward secret key ";

/// The key id a signature names (unverified), as minisign prints it.
pub fn signature_key_id(signature: &str) -> Result<String, SignatureError> {
    signature_key(signature).map(|(id, _)| id)
}

/// The key id and prehash flag named by a signature's text.
fn signature_key(signature: &str) -> Result<(String, bool), SignatureError> {
    let line = signature.lines().nth(1).ok_or(SignatureError::Malformed)?;
    let raw = decode_b64(line).ok_or(SignatureError::Malformed)?;
    let alg = raw.get(0..2).ok_or(SignatureError::Malformed)?;
    let prehashed = match alg {
        b"ED" => true,
        b"Ed" => false,
        _ => return Err(SignatureError::Malformed),
    };
    let id = format_key_id(raw.get(2..10).ok_or(SignatureError::Malformed)?);
    Ok((id, prehashed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 7, apply defect 10: key ids are not signed and anyone can make a key
    /// with a chosen id; every trusted key with the signature's id is tried.
    #[test]
    fn several_trusted_keys_with_one_key_id_are_each_tried() {
        let real = generate_keypair(None).expect("keygen");
        let other = generate_keypair(None).expect("keygen");
        let line = |t: &str| t.lines().nth(1).expect("key line").to_owned();
        let real_raw = decode_b64(&line(&real.public)).expect("b64");
        let mut decoy = decode_b64(&line(&other.public)).expect("b64");
        decoy[2..10].copy_from_slice(&real_raw[2..10]);
        let decoy = Base64::encode_to_string(&decoy).expect("b64");
        let sk = SecretKey::from_text(&real.secret, None).expect("secret");
        let sig = sk.sign(b"manifest", "comment").expect("sign");
        for order in [
            [decoy.as_str(), real.public.as_str()],
            [real.public.as_str(), decoy.as_str()],
        ] {
            let mut keys = TrustedKeys::new();
            for k in order {
                assert_eq!(keys.add_text(k).expect("add"), real.key_id);
            }
            assert_eq!(keys.verify(b"manifest", &sig).expect("verify"), "comment");
        }
        let mut only_decoy = TrustedKeys::new();
        only_decoy.add_text(&decoy).expect("add");
        assert_eq!(
            only_decoy.verify(b"manifest", &sig),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let kp = generate_keypair(None).expect("keygen");
        let sk = SecretKey::from_text(&kp.secret, None).expect("secret");
        let sig = sk.sign(b"hello", "role=test").expect("sign");
        let mut keys = TrustedKeys::new();
        assert_eq!(keys.add_text(&kp.public).expect("pub"), kp.key_id);
        assert_eq!(keys.verify(b"hello", &sig).expect("verify"), "role=test");
        assert_eq!(keys.verify(b"hellO", &sig), Err(SignatureError::Invalid));
    }

    #[test]
    fn unknown_key_is_untrusted() {
        let a = generate_keypair(None).expect("keygen");
        let b = generate_keypair(None).expect("keygen");
        let sig = SecretKey::from_text(&a.secret, None)
            .expect("sk")
            .sign(b"x", "c")
            .expect("sign");
        let mut keys = TrustedKeys::new();
        keys.add_text(&b.public).expect("pub");
        assert_eq!(
            keys.verify(b"x", &sig),
            Err(SignatureError::UntrustedKey { key_id: a.key_id })
        );
    }

    #[test]
    fn encrypted_key_needs_its_password() {
        let kp = generate_keypair(Some("correct horse")).expect("keygen");
        assert!(SecretKey::is_encrypted(&kp.secret).expect("parse"));
        assert!(matches!(
            SecretKey::from_text(&kp.secret, None),
            Err(KeyError::PasswordRequired)
        ));
        assert!(matches!(
            SecretKey::from_text(&kp.secret, Some("wrong")),
            Err(KeyError::WrongPassword)
        ));
        SecretKey::from_text(&kp.secret, Some("correct horse")).expect("right password");
    }
}

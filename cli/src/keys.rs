//! Reading key files and passwords.

use std::{io::IsTerminal, path::Path};

use anyhow::{bail, Context, Result};
use deltaward_engine::{SecretKey, TrustedKeys};

use crate::input::{read_text, KEY_FILE_MAX};

/// Reads a password from `file` (first line), or asks on the terminal.
pub fn password(file: Option<&Path>, prompt: &str, confirm: bool) -> Result<String> {
    if let Some(f) = file {
        let text = read_text(f, "password file", KEY_FILE_MAX)?;
        return Ok(text.lines().next().unwrap_or_default().to_owned());
    }
    if !std::io::stdin().is_terminal() {
        bail!("a password is needed but there is no terminal to ask on: pass --password-file FILE");
    }
    let pw = rpassword::prompt_password(prompt).context("reading password")?;
    if confirm {
        let again = rpassword::prompt_password("Password (again): ").context("reading password")?;
        if again != pw {
            bail!("the two passwords differ");
        }
    }
    if pw.is_empty() {
        bail!("empty password; use --unencrypted for a key without one");
    }
    Ok(pw)
}

/// Loads a secret key, asking for its password only when it is encrypted.
pub fn secret(path: &Path, password_file: Option<&Path>) -> Result<SecretKey> {
    let text = read_text(path, "secret key", KEY_FILE_MAX)?;
    let encrypted =
        SecretKey::is_encrypted(&text).with_context(|| format!("secret key {}", path.display()))?;
    let pw = if encrypted {
        Some(password(
            password_file,
            &format!("Password for {}: ", path.display()),
            false,
        )?)
    } else {
        None
    };
    SecretKey::from_text(&text, pw.as_deref())
        .with_context(|| format!("secret key {}", path.display()))
}

/// Loads several secret keys (a role's signers).
pub fn secrets(paths: &[impl AsRef<Path>], password_file: Option<&Path>) -> Result<Vec<SecretKey>> {
    paths
        .iter()
        .map(|p| secret(p.as_ref(), password_file))
        .collect()
}

/// Loads the trusted public keys.
pub fn trusted(paths: &[impl AsRef<Path>]) -> Result<TrustedKeys> {
    let mut keys = TrustedKeys::new();
    for p in paths {
        let p = p.as_ref();
        let text = read_text(p, "public key", KEY_FILE_MAX)?;
        keys.add_text(&text)
            .with_context(|| format!("public key {}", p.display()))?;
    }
    Ok(keys)
}

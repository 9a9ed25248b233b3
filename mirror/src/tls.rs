//! TLS through rustls with the ring provider: the server's configuration (HTTP/2 and
//! HTTP/1.1 by ALPN, optional client certificates for mutual TLS) and the upstream
//! client's (the built-in web roots plus any CA the site adds).

use std::{path::Path, sync::Arc};

use rustls::{
    crypto::ring::default_provider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    ClientConfig, RootCertStore, ServerConfig,
};

use crate::error::{ConfigError, Result};

fn pem_err(file: &Path, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Pem {
        file: file.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Most bytes of a PEM file read.
const PEM_MAX_BYTES: u64 = 1 << 20;

/// A PEM file's bytes: a regular file (no FIFO, device or link), at most 1 MiB.
fn pem_bytes(file: &Path) -> Result<Vec<u8>> {
    match crate::config::read_capped(file, PEM_MAX_BYTES) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(pem_err(file, "no such file").into()),
        Err(e) => Err(pem_err(file, e).into()),
    }
}

/// Every certificate in a PEM file (at least one).
fn certs(file: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(&pem_bytes(file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(file, e))?;
    if certs.is_empty() {
        return Err(pem_err(file, "no CERTIFICATE block").into());
    }
    Ok(certs)
}

fn roots(file: &Path) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for c in certs(file)? {
        store
            .add(c)
            .map_err(|e| pem_err(file, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// The server's TLS configuration: its chain and key, ALPN `h2` then `http/1.1`, and
/// with `client_ca`, client certificates required and verified against that CA.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>> {
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_slice(&pem_bytes(key)?).map_err(|e| pem_err(key, e))?;
    let provider = Arc::new(default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::Tls)?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
                    .build()
                    .map_err(|e| pem_err(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(ConfigError::Tls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The upstream client's TLS configuration.
pub fn client_config(extra_ca: Option<&Path>) -> Result<ClientConfig> {
    let mut store = RootCertStore::empty();
    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = extra_ca {
        for c in certs(ca)? {
            store
                .add(c)
                .map_err(|e| pem_err(ca, format!("not a usable CA certificate: {e}")))?;
        }
    }
    Ok(
        ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(ConfigError::Tls)?
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

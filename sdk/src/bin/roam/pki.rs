//! Certificates and keys from PEM files, with errors that name the file and the flag.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::Result;

/// Every certificate in the PEM file given with `flag` (leaf first for a chain).
pub fn certificates(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )
        .into());
    }
    Ok(certs)
}

/// The private key (PKCS#8, PKCS#1 or SEC1) in the PEM file given with `flag`.
pub fn private_key(flag: &str, path: &Path) -> Result<PrivateKeyDer<'static>> {
    let text = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        format!(
            "{flag} {}: no private key in it (expected -----BEGIN PRIVATE KEY-----): {e}",
            path.display()
        )
        .into()
    })
}

/// The file's bytes, or an error naming the flag and the file.
pub fn read(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()).into())
}

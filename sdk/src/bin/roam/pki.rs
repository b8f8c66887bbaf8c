//! Certificates and keys from PEM files, and the stateless-reset key file, with errors that
//! name the file and the flag.

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

/// How to make a stateless-reset key file, for `--help` and for errors.
pub const RESET_KEY_HOW: &str = "openssl rand -hex 32 > reset.key && chmod 600 reset.key";

/// The 32-byte stateless-reset key in the file given with `flag`: 64 hexadecimal digits
/// (what `openssl rand -hex 32` writes; surrounding whitespace ignored), or exactly 32 raw
/// bytes (`head -c 32 /dev/urandom`).
pub fn reset_key(flag: &str, path: &Path) -> Result<[u8; 32]> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read {flag} {}: {e}; create one with `{RESET_KEY_HOW}`",
            path.display()
        )
    })?;
    parse_reset_key(&bytes).map_err(|why| {
        format!(
            "{flag} {}: {why}; it must hold 64 hexadecimal digits (or exactly 32 raw bytes): \
             create one with `{RESET_KEY_HOW}` and give every run of this server the same file",
            path.display()
        )
        .into()
    })
}

/// [`reset_key`]'s parsing: why the bytes are not a key, if they are not.
fn parse_reset_key(bytes: &[u8]) -> std::result::Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    let text = bytes.trim_ascii();
    if text.len() == 64 && text.iter().all(u8::is_ascii_hexdigit) {
        for (k, pair) in key.iter_mut().zip(text.chunks(2)) {
            // Both are hex digits (checked above).
            let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            *k = digit(pair[0]) << 4 | digit(pair[1]);
        }
        return Ok(key);
    }
    if bytes.len() == 32 {
        key.copy_from_slice(bytes);
        return Ok(key);
    }
    if text.iter().all(u8::is_ascii_hexdigit) {
        Err(format!("{} hexadecimal digits", text.len()))
    } else {
        Err(format!("{} bytes, not hexadecimal", bytes.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_reset_key;

    #[test]
    fn a_reset_key_is_64_hex_digits_or_32_raw_bytes() {
        // As `openssl rand -hex 32` writes it: lower case, a newline.
        let hex = "00ff10a0".repeat(8) + "\n";
        let want: Vec<u8> = [0x00, 0xff, 0x10, 0xa0].repeat(8);
        assert_eq!(parse_reset_key(hex.as_bytes()).unwrap().to_vec(), want);
        assert_eq!(
            parse_reset_key(hex.to_uppercase().as_bytes())
                .unwrap()
                .to_vec(),
            want
        );
        let raw: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37)).collect();
        assert_eq!(parse_reset_key(&raw).unwrap().to_vec(), raw);

        assert_eq!(
            parse_reset_key(b"abcd\n").unwrap_err(),
            "4 hexadecimal digits"
        );
        assert_eq!(
            parse_reset_key(&[b'z'; 64]).unwrap_err(),
            "64 bytes, not hexadecimal"
        );
        assert_eq!(parse_reset_key(b"").unwrap_err(), "0 hexadecimal digits");
        // 31 raw bytes are not a key, nor 33.
        assert!(parse_reset_key(&raw[..31]).is_err());
        assert!(parse_reset_key(&[raw.clone(), vec![1]].concat()).is_err());
    }
}

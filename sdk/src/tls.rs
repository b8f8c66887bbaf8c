//! TLS for sessions: rustls 0.23 with the ring provider, TLS 1.3 (QUIC requires it), real
//! certificate verification, and ALPN `roam/1` ahead of the app's own protocols.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// The ALPN of roam's session protocol: the first bidirectional stream starts with a short
/// header naming the app (see [`crate::session`]).
pub const ALPN: &[u8] = b"roam/1";

/// Which certificates a client trusts.
#[derive(Debug, Clone, Default)]
pub enum ClientTls {
    /// The platform's verifier and trust store (`rustls-platform-verifier`).
    #[default]
    SystemRoots,
    /// Only these CA certificates (a private PKI, a test CA).
    Ca(Vec<CertificateDer<'static>>),
    /// A rustls configuration the app built; roam adds its ALPN list.
    Custom(Arc<rustls::ClientConfig>),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn alpn_list(app: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut v = vec![ALPN.to_vec()];
    v.extend(app.iter().filter(|p| p.as_slice() != ALPN).cloned());
    v
}

impl ClientTls {
    /// The rustls client configuration, with ALPN `roam/1` then `app_alpn`.
    pub fn build(&self, app_alpn: &[Vec<u8>]) -> Result<rustls::ClientConfig> {
        let builder = || {
            rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| Error::TlsConfig(e.to_string()))
        };
        let mut cfg = match self {
            ClientTls::SystemRoots => {
                use rustls_platform_verifier::BuilderVerifierExt;
                builder()?
                    .with_platform_verifier()
                    .map_err(|e| Error::TlsConfig(format!("platform verifier: {e}")))?
                    .with_no_client_auth()
            }
            ClientTls::Ca(cas) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in cas {
                    roots
                        .add(ca.clone())
                        .map_err(|e| Error::TlsConfig(format!("CA certificate: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(Error::TlsConfig(
                        "no CA certificate given; pass at least one or use system roots".into(),
                    ));
                }
                builder()?
                    .with_root_certificates(roots)
                    .with_no_client_auth()
            }
            ClientTls::Custom(cfg) => (**cfg).clone(),
        };
        cfg.alpn_protocols = alpn_list(app_alpn);
        Ok(cfg)
    }
}

/// What to do about a failed TLS handshake whose rustls error or alert reads `detail` (the
/// tail of [`crate::Error::Tls`]'s message).
pub(crate) fn advice(detail: &str) -> &'static str {
    // webpki's name for a certificate that is its own CA: `openssl req -x509` makes one.
    if detail.contains("CaUsedAsEndEntity") {
        return "the server's certificate is itself a CA (self-signed, as `openssl req -x509` \
                makes), which TLS refuses as a server's own: serve a leaf signed by a CA and pass \
                its CA (roam connect --ca, ClientTls::Ca); to make a CA and a leaf: openssl req \
                -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj \
                /CN=my-ca -keyout ca.key -out ca.pem && openssl req -newkey ec -pkeyopt \
                ec_paramgen_curve:P-256 -nodes -subj /CN=HOST -addext subjectAltName=DNS:HOST \
                -keyout key.pem -out leaf.csr && openssl x509 -req -in leaf.csr -CA ca.pem \
                -CAkey ca.key -days 365 -copy_extensions copy -out cert.pem (HOST: the name \
                clients connect to; the server uses cert.pem and key.pem, clients trust ca.pem)";
    }
    "check the CA the client trusts, the server name and the ALPN protocols"
}

/// A server configuration for a [`crate::Listener`]: `chain` (leaf first) and its `key`, TLS
/// 1.3, ALPN `roam/1` then `app_alpn`.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    app_alpn: &[Vec<u8>],
) -> Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::TlsConfig(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::TlsConfig(format!("server certificate or key: {e}")))?;
    cfg.alpn_protocols = alpn_list(app_alpn);
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roam_alpn_comes_first_once() {
        let l = alpn_list(&[b"h3".to_vec(), ALPN.to_vec()]);
        assert_eq!(l, [ALPN.to_vec(), b"h3".to_vec()]);
    }

    #[test]
    fn a_ca_used_as_a_server_certificate_gets_the_commands_that_fix_it() {
        let a = advice("invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))");
        assert!(a.contains("pass its CA"), "{a}");
        assert!(a.contains("openssl req -x509"), "{a}");
        assert!(a.contains("-CA ca.pem"), "{a}");
        let other = advice("invalid peer certificate: UnknownIssuer");
        assert!(other.contains("check the CA the client trusts"), "{other}");
    }

    #[test]
    fn an_empty_ca_list_is_an_error_that_says_what_to_do() {
        let e = ClientTls::Ca(vec![]).build(&[]).unwrap_err().to_string();
        assert!(e.contains("no CA certificate"), "{e}");
    }
}

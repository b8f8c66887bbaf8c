//! A throwaway PKI for QUIC: a test CA made with rcgen, a server certificate it signs, and
//! rustls configurations (ring provider, TLS 1.3) that really verify the chain and the name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The name in the server certificate; clients must ask for it.
pub const SERVER_NAME: &str = "server.roam.test";
/// ALPN both ends agree on (the baselines, and a roam session with a stock peer).
pub const ALPN: &[u8] = b"roam-bench";

/// A CA certificate and a server certificate chain with its key.
#[derive(Debug)]
pub struct TestPki {
    /// The CA certificate clients trust.
    pub ca: CertificateDer<'static>,
    /// The server's certificate (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    /// The leaf certificate and its key as PEM, for servers started from files.
    leaf_pem: String,
    key_pem: String,
}

impl TestPki {
    /// Makes a new CA and a server certificate for [`SERVER_NAME`] signed by it.
    pub fn generate() -> Result<Self> {
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "roam test CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, &ca_key);

        let leaf_key = KeyPair::generate().context("generating the server key")?;
        let mut leaf = CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.distinguished_name
            .push(DnType::CommonName, SERVER_NAME);
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
        Ok(TestPki {
            ca: ca_cert.der().clone(),
            chain: vec![leaf_cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
            leaf_pem: leaf_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
        })
    }

    /// Writes the server certificate and its key as PEM files `server.pem` and
    /// `server.key` in `dir` (for a server that reads files, as socat and aioquic do); returns
    /// their paths.
    pub fn write_pem(&self, dir: &std::path::Path) -> Result<(PathBuf, PathBuf)> {
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        std::fs::write(&cert, &self.leaf_pem)
            .with_context(|| format!("writing {}", cert.display()))?;
        std::fs::write(&key, &self.key_pem)
            .with_context(|| format!("writing {}", key.display()))?;
        Ok((cert, key))
    }

    /// A quinn server configuration with this certificate, connection migration on, and
    /// `idle_timeout` as the transport's idle timeout.
    pub fn quic_server(&self, idle_timeout: Duration) -> Result<quinn::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        cfg.migration(true);
        cfg.transport_config(Arc::new(transport(idle_timeout)?));
        Ok(cfg)
    }

    /// The rustls server configuration of a `roam::Listener` with this certificate (ALPN
    /// `roam/1`).
    pub fn roam_server(&self) -> Result<rustls::ServerConfig> {
        Ok(roam::tls::server_config(
            self.chain.clone(),
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
            &[],
        )?)
    }

    /// The server key, PKCS#8 DER (for a server started from files, as `roam serve` is).
    pub fn key_pkcs8_der(&self) -> &[u8] {
        self.key.secret_pkcs8_der()
    }

    /// What a roam session trusts: this CA only.
    pub fn roam_client(&self) -> roam::ClientTls {
        roam::ClientTls::Ca(vec![self.ca.clone()])
    }

    /// A quinn client configuration that trusts only this CA.
    pub fn quic_client(&self, idle_timeout: Duration) -> Result<quinn::ClientConfig> {
        client_trusting(&self.ca, idle_timeout)
    }
}

/// A quinn client configuration that trusts only `ca` (exposed so a test can show a wrong CA is
/// refused).
pub fn client_trusting(
    ca: &CertificateDer<'static>,
    idle_timeout: Duration,
) -> Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport(idle_timeout)?));
    Ok(cfg)
}

fn transport(idle_timeout: Duration) -> Result<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(quinn::IdleTimeout::try_from(idle_timeout)?));
    Ok(t)
}

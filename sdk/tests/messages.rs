//! Errors that say what to do, met in a handset against servers that are not roam's:
//! - tcp-resume against a plain TLS server: "the server does not speak roam/1: use transport
//!   mptcp or quic, or a roam Listener", and the server sees TLS closed properly
//!   (close_notify, then the end of the stream; no reset);
//! - a server presenting a lone self-signed CA certificate (what `openssl req -x509` makes)
//!   that the client trusts: rustls's `CaUsedAsEndEntity` comes with the hint to pass its CA or
//!   make a CA and a leaf, and the command that does.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use roam::TransportPreference;
use roam_tests::privilege::require_netns;
use roam_tests::topology::{SERVICE_V4, Topology};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How the plain TLS server's one connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The handshake finished and the client sent close_notify, then its FIN.
    Closed,
    /// The handshake failed (the client refused the certificate).
    HandshakeFailed(String),
    /// Anything else (a reset, an end without close_notify).
    Other(String),
}

/// A TLS server that is not roam's (no ALPN, the given certificate) on the service address,
/// in the server namespace: accepts one connection, reads it to its end, says how it ended.
fn plain_tls_server(
    topo: &Topology,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<std::thread::JoinHandle<Result<Ended>>> {
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    let cfg = Arc::new(cfg);
    let listener = topo.server().run(|| {
        std::net::TcpListener::bind(SocketAddr::new(SERVICE_V4.into(), PORT))
            .context("binding the plain TLS server")
    })??;
    topo.server().spawn("plain-tls", move || {
        let (sock, _) = listener.accept()?;
        sock.set_read_timeout(Some(EVENT_TIMEOUT))?;
        let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(cfg)?, sock);
        let mut sink = Vec::new();
        let mut buf = [0u8; 4096];
        // The handshake runs inside the first read.
        loop {
            match tls.read(&mut buf) {
                Ok(0) => {
                    return Ok(if tls.conn.is_handshaking() {
                        Ended::HandshakeFailed("the client went away".into())
                    } else {
                        Ended::Closed
                    });
                }
                Ok(n) => sink.extend_from_slice(&buf[..n]),
                Err(e) if tls.conn.is_handshaking() => {
                    return Ok(Ended::HandshakeFailed(e.to_string()));
                }
                Err(e) => return Ok(Ended::Other(e.to_string())),
            }
        }
    })
}

fn connect_err(topo: &Topology, builder: roam::SessionBuilder) -> Result<String> {
    let target = SocketAddr::new(SERVICE_V4.into(), PORT).to_string();
    let r = topo.handset().block_on(async move {
        tokio::time::timeout(Duration::from_secs(10), builder.connect(&target)).await
    })?;
    match r {
        Ok(Ok(_)) => anyhow::bail!("the session connected"),
        Ok(Err(e)) => Ok(e.to_string()),
        Err(_) => anyhow::bail!("connecting took over 10 s"),
    }
}

#[test]
fn tcp_resume_against_a_plain_tls_server_says_what_to_do_and_closes_tls() -> Result<()> {
    if !require_netns("tcp_resume_against_a_plain_tls_server_says_what_to_do_and_closes_tls") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let pki = TestPki::generate()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_pkcs8_der().to_vec()));
    let server = plain_tls_server(&topo, pki.chain.clone(), key)?;
    let builder = chat(roam::Session::builder(), &pki)
        .use_roamd(false)
        .transport(TransportPreference::TcpResume);
    let e = connect_err(&topo, builder)?;
    eprintln!("error: {e}");
    assert!(e.contains("does not speak roam/1"), "{e}");
    assert!(
        e.contains("use transport mptcp or quic, or a roam Listener"),
        "{e}"
    );
    assert!(!e.contains("session header"), "{e}");
    let ended = join(server, "the plain TLS server")?;
    assert_eq!(
        ended,
        Ended::Closed,
        "the client did not close TLS properly"
    );
    Ok(())
}

#[test]
fn a_lone_self_signed_server_certificate_gets_a_hint_with_the_command() -> Result<()> {
    if !require_netns("a_lone_self_signed_server_certificate_gets_a_hint_with_the_command") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    // What `openssl req -x509` makes: one certificate, its own CA, for the server's name.
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key)?;
    let der = cert.der().clone();
    let server = plain_tls_server(
        &topo,
        vec![der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )?;
    let builder = roam::Session::builder()
        .app(APP)
        .policy(POLICY)
        .use_roamd(false)
        .tls(roam::ClientTls::Ca(vec![der]))
        .server_name(SERVER_NAME)
        .transport(TransportPreference::TcpResume);
    let e = connect_err(&topo, builder)?;
    eprintln!("error: {e}");
    assert!(e.contains("CaUsedAsEndEntity"), "{e}");
    assert!(e.contains("pass its CA"), "{e}");
    assert!(e.contains("openssl req -x509"), "{e}");
    assert!(e.contains("openssl x509 -req"), "{e}");
    assert!(
        matches!(
            join(server, "the plain TLS server")?,
            Ended::HandshakeFailed(_)
        ),
        "the server saw a finished handshake"
    );
    Ok(())
}

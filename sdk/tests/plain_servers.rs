//! A roam session meeting servers that are not roam's, in a handset.
//!
//! `auto` races the transports (QUIC first, TCP 100 ms later):
//! - against a TLS-over-TCP server with no UDP listener it connects within 300 ms (it waited a
//!   third of the connect timeout for QUIC before);
//! - against a closed port the error names each transport's own failure;
//! - against a roam Listener QUIC wins alone and the listener queues exactly one session.
//!
//! Errors that say what to do:
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

/// Connects `builder` to the service address from the handset; the session (if any) with the
/// transport it chose and why, and the time connecting took.
type Connected = (roam::Session, roam::Transport, String);

fn connect_timed(
    topo: &Topology,
    builder: roam::SessionBuilder,
) -> Result<(roam::Result<Connected>, Duration)> {
    let target = SocketAddr::new(SERVICE_V4.into(), PORT).to_string();
    topo.handset().block_on(async move {
        let t0 = std::time::Instant::now();
        let r = builder.connect(&target).await;
        let took = t0.elapsed();
        let r = match r {
            Ok(s) => {
                let mut events = s.events();
                // The connect events are replayed first; TransportChosen is among them.
                let mut chosen = None;
                while let Ok(Some(e)) =
                    tokio::time::timeout(Duration::from_millis(100), events.next()).await
                {
                    if let roam::SessionEvent::TransportChosen { transport, why } = e {
                        chosen = Some((transport, why));
                        break;
                    }
                }
                let (t, why) = chosen.expect("no TransportChosen event");
                Ok((s, t, why))
            }
            Err(e) => Err(e),
        };
        (r, took)
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

#[test]
fn auto_against_a_tcp_only_server_connects_within_300_ms() -> Result<()> {
    if !require_netns("auto_against_a_tcp_only_server_connects_within_300_ms") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let pki = TestPki::generate()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_pkcs8_der().to_vec()));
    let _server = plain_tls_server(&topo, pki.chain.clone(), key)?;
    let builder = chat(roam::Session::builder(), &pki)
        .use_roamd(false)
        .transport(TransportPreference::Auto);
    let (s, took) = connect_timed(&topo, builder)?;
    let (_s, transport, why) = s?;
    eprintln!(
        "figure: auto against a TCP-only server connected in {took:?} over {transport}: {why}"
    );
    // MPTCP, which the server's plain TCP socket turned into TCP; QUIC never answered.
    assert_eq!(transport, roam::Transport::Tcp, "{why}");
    assert!(
        why.contains("quic was still connecting and was dropped"),
        "{why}"
    );
    assert!(
        took <= Duration::from_millis(300),
        "auto took {took:?}: {why}"
    );
    Ok(())
}

#[test]
fn auto_against_a_closed_port_names_each_transports_failure() -> Result<()> {
    if !require_netns("auto_against_a_closed_port_names_each_transports_failure") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let pki = TestPki::generate()?;
    let builder = chat(roam::Session::builder(), &pki)
        .use_roamd(false)
        .connect_timeout(Duration::from_secs(1))
        .transport(TransportPreference::Auto);
    let (r, took) = connect_timed(&topo, builder)?;
    let e = match r {
        Ok(_) => anyhow::bail!("a session connected to a closed port"),
        Err(e) => e.to_string(),
    };
    eprintln!("error after {took:?}: {e}");
    assert!(e.starts_with("no transport connected: "), "{e}");
    let quic = e.find("quic: ").context("no quic failure")?;
    let mptcp = e.find("mptcp: ").context("no mptcp failure")?;
    let resume = e.find("tcp-resume: ").context("no tcp-resume failure")?;
    // In the order they started; the TCP ones were refused, QUIC heard nothing.
    assert!(quic < mptcp && mptcp < resume, "{e}");
    assert!(e[mptcp..resume].contains("refused"), "{e}");
    assert!(e[resume..].contains("refused"), "{e}");
    assert!(e[quic..mptcp].contains("took longer than"), "{e}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    Ok(())
}

#[test]
fn auto_against_a_roam_listener_leaves_one_session_in_its_queue() -> Result<()> {
    if !require_netns("auto_against_a_roam_listener_leaves_one_session_in_its_queue") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let pki = TestPki::generate()?;
    let tls = pki.roam_server()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = topo
        .server()
        .spawn_async("roam-listener", move || async move {
            let listener = roam::Listener::bind(SocketAddr::new(SERVICE_V4.into(), PORT), tls)?;
            let _ = ready_tx.send(());
            let first = tokio::time::timeout(EVENT_TIMEOUT, listener.accept())
                .await
                .context("no session arrived")??;
            // A second session would be an abandoned race attempt.
            let second = tokio::time::timeout(Duration::from_millis(700), listener.accept()).await;
            anyhow::Ok((first.transport(), second.is_ok()))
        })?;
    ready_rx.recv_timeout(EVENT_TIMEOUT)?;
    let builder = chat(roam::Session::builder(), &pki)
        .use_roamd(false)
        .transport(TransportPreference::Auto);
    let target = SocketAddr::new(SERVICE_V4.into(), PORT).to_string();
    // The session lives on the handset's runtime until the listener has said what it queued.
    let (chose, served) = topo.handset().block_on(async move {
        let mut s = builder.connect(&target).await?;
        let mut events = s.events();
        let mut chose = None;
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(100), events.next()).await
        {
            if let roam::SessionEvent::TransportChosen { transport, why } = e {
                chose = Some((transport, why));
                break;
            }
        }
        // The session header goes out with the first write; the listener queues it then.
        use tokio::io::AsyncWriteExt;
        s.write_all(b"hello").await?;
        s.flush().await?;
        let served = tokio::task::spawn_blocking(move || join(server, "the listener")).await??;
        drop(s);
        anyhow::Ok((chose, served))
    })??;
    let (transport, why) = chose.context("no TransportChosen event")?;
    eprintln!("figure: auto against a roam Listener chose {transport}: {why}");
    assert_eq!(transport, roam::Transport::Quic, "{why}");
    let (served, second) = served;
    assert_eq!(served, roam::Transport::Quic);
    assert!(!second, "the listener queued a second session");
    Ok(())
}

//! The Listener under clients that stall: QUIC clients that finish their handshake and then
//! never open the session's stream hold up no other client (each handshake and header runs
//! on its own, bounded by the header timeout).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use anyhow::{Context, Result};
use common::*;
use roam_tests::privilege::require_netns;
use roam_tests::topology::SERVICE_V4;

/// How many silent clients connect before the real one: with one handshake at a time the
/// real session would wait for both header timeouts (2 x 10 s), past the server's wait.
const SILENT: usize = 2;

#[test]
fn clients_that_never_send_their_header_hold_up_no_other() -> Result<()> {
    if !require_netns("clients_that_never_send_their_header_hold_up_no_other") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let pki = TestPki::generate()?;
    let server = start_server_ready(&topo, &pki)?;

    // Silent clients: a QUIC handshake with roam's ALPN, then nothing.
    let (silent_tx, silent_rx) = mpsc::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let ca = pki.ca.clone();
    let silent = topo
        .handset()
        .spawn_async("silent-quic", move || async move {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca)?;
            let mut tls = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            tls.alpn_protocols = vec![roam::tls::ALPN.to_vec()];
            let cfg = quinn::ClientConfig::new(Arc::new(
                quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
            ));
            let ep = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))?;
            let mut conns = Vec::new();
            for _ in 0..SILENT {
                let c = ep
                    .connect_with(
                        cfg.clone(),
                        SocketAddr::new(SERVICE_V4.into(), PORT),
                        SERVER_NAME,
                    )?
                    .await
                    .context("silent client's handshake")?;
                conns.push(c);
            }
            let _ = silent_tx.send(());
            // Held open, silent, until the test is done.
            let _ = released.await;
            drop(conns);
            Ok(())
        })?;
    silent_rx
        .recv_timeout(EVENT_TIMEOUT)
        .context("the silent clients did not connect")?;

    // A real session now: the server (which takes one session, waiting at most EVENT_TIMEOUT
    // from when it listened) must get it while the silent ones still wait for their header.
    let t = Instant::now();
    let builder = chat(roam::Session::builder(), &pki).transport(roam::TransportPreference::Quic);
    let r = Run::connect(&topo, server, builder, None)?;
    r.wait_server_sees(topo.link("wlan0")?.handset_v4.into())?;
    eprintln!(
        "figure: session accepted and 1 MiB through {:?} after it started, with {SILENT} silent \
         clients connected before it",
        t.elapsed()
    );
    let s = r.finish()?;
    assert!(s.bytes > 0);
    let _ = release.send(());
    silent.join().expect("silent client thread")?;
    Ok(())
}

//! Names resolved through a real DNS server (Debian's dnsmasq) that the test starts in the
//! server namespace, listening on the server's end of every path. The session is given each
//! link's nameserver (`SessionBuilder::nameservers`) and asks it over that link: dnsmasq's
//! query log shows each question arriving from the handset's address on that link. A session
//! to the name connects and survives a handover; a name that does not exist, a refused
//! connection and a TLS failure are three distinct errors.

mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;

use anyhow::{Context, Result, bail};
use common::*;
use dnsmasq::Dnsmasq;
use roam::{Error, Listener, SessionBuilder, TransportPreference};
use roam_tests::privilege::require_netns;
use roam_tests::topology::{SERVICE_V4, SERVICE_V6, Topology};

const NAME: &str = "api.roam.test";

/// dnsmasq on the server's end of every path, answering [`NAME`] with the service addresses.
fn start_dns(topo: &Topology) -> Result<Dnsmasq> {
    let listen: Vec<IpAddr> = topo
        .links()
        .iter()
        .flat_map(|l| [IpAddr::from(l.server_v4), IpAddr::from(l.server_v6)])
        .collect();
    Dnsmasq::start(
        topo.server(),
        &listen,
        NAME,
        &[SERVICE_V4.into(), SERVICE_V6.into()],
    )
}

/// A QUIC session builder that resolves on each link through that link's end of the path
/// (IPv4 first, the IPv6 one if it does not answer), as a DHCP lease would say.
fn builder(topo: &Topology, pki: &TestPki) -> SessionBuilder {
    let mut b = roam::Session::builder()
        .app("com.example.chat")
        .policy(POLICY)
        .use_roamd(false)
        .transport(TransportPreference::Quic)
        .tls(pki.roam_client())
        .server_name(SERVER_NAME);
    for l in topo.links() {
        b = b.nameservers(
            l.name.clone(),
            [IpAddr::from(l.server_v4), IpAddr::from(l.server_v6)],
        );
    }
    b
}

/// The failure under a race of several candidates.
fn last(e: &Error) -> &Error {
    match e {
        Error::AllCandidatesFailed { last, .. } => last,
        e => e,
    }
}

#[test]
fn a_session_to_a_name_resolved_on_its_link_survives_a_handover() -> Result<()> {
    if !require_netns("a_session_to_a_name_resolved_on_its_link_survives_a_handover") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let mut dns = start_dns(&topo)?;
    let pki = TestPki::generate()?;
    // The shared server listens on IPv4 only: the AAAA candidate goes unanswered and the race
    // moves on to the A one after the attempt delay, as Happy Eyeballs should.
    let run = Run::start(
        &topo,
        &pki,
        builder(&topo, &pki),
        Some(format!("{NAME}:{PORT}")),
    )?;
    let wlan = topo.link("wlan0")?.handset_v4;
    let rmnet = topo.link("rmnet0")?.handset_v4;

    // Each link asked its own nameserver both questions, from its own address.
    let queries = dns.queries();
    for (link, from) in [("wlan0", wlan), ("rmnet0", rmnet)] {
        for t in ["A", "AAAA"] {
            assert!(
                queries
                    .iter()
                    .any(|(qt, n, f)| qt == t && n == NAME && *f == IpAddr::from(from)),
                "no {t} query for {NAME} over {link} (from {from}): {queries:?}"
            );
        }
    }
    eprintln!("figure: dnsmasq saw {} queries: {queries:?}", queries.len());

    wifi_goes_down(&topo, &run.client_rx, &run.server_rx, rmnet.into())?;
    let s = run.finish()?;
    let ips: Vec<IpAddr> = s.peers.iter().map(SocketAddr::ip).collect();
    assert_eq!(ips, [IpAddr::from(wlan), rmnet.into()], "{:?}", s.peers);
    Ok(())
}

/// WiFi goes down; the session moves to rmnet0 and the server sees it there.
fn wifi_goes_down(
    topo: &Topology,
    client_rx: &mpsc::Receiver<ClientNote>,
    server_rx: &mpsc::Receiver<ServerNote>,
    rmnet: IpAddr,
) -> Result<()> {
    topo.link_down("wlan0")?;
    let m = wait_moved(client_rx, "rmnet0")?;
    assert_eq!(m.reason, roam::path::MigrationReason::LinkLost);
    wait_server_sees(server_rx, rmnet)
}

#[test]
fn no_such_name_refused_and_tls_failure_are_distinct_errors() -> Result<()> {
    if !require_netns("no_such_name_refused_and_tls_failure_are_distinct_errors") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let _dns = start_dns(&topo)?;
    let pki = TestPki::generate()?;
    let refusing = PORT + 1;

    // The server: roam Listeners on both service addresses at PORT, and a QUIC endpoint that
    // refuses every connection at PORT + 1, until the test ends.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let tls = pki.roam_server()?;
    let server = topo.server().spawn_async("servers", move || async move {
        let mut tasks = tokio::task::JoinSet::new();
        for ip in [IpAddr::from(SERVICE_V4), SERVICE_V6.into()] {
            let l = Listener::bind(SocketAddr::new(ip, PORT), tls.clone())?;
            // A session that fails TLS never comes out of accept; one that does is a bug.
            tasks.spawn(async move { l.accept().await.map(drop) });
            let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.clone())?;
            let ep = quinn::Endpoint::server(
                quinn::ServerConfig::with_crypto(std::sync::Arc::new(crypto)),
                SocketAddr::new(ip, refusing),
            )?;
            tasks.spawn(async move {
                while let Some(incoming) = ep.accept().await {
                    incoming.refuse();
                }
                Ok(())
            });
        }
        ready_tx.send(())?;
        tokio::select! {
            _ = stop_rx => Ok(()),
            Some(r) = tasks.join_next() => bail!("a server ended early: {r:?}"),
        }
    })?;
    ready_rx
        .recv_timeout(EVENT_TIMEOUT)
        .context("the servers did not start")?;

    let outcome = topo.handset().block_on(async {
        let nxdomain = builder(&topo, &pki)
            .connect(&format!("nope.{}:{PORT}", dnsmasq::ZONE))
            .await;
        let refused = builder(&topo, &pki)
            .connect(&format!("{NAME}:{refusing}"))
            .await;
        let other_ca = TestPki::generate()?;
        let tls = builder(&topo, &pki)
            .tls(other_ca.roam_client())
            .connect(&format!("{NAME}:{PORT}"))
            .await;
        anyhow::Ok((nxdomain, refused, tls))
    })??;
    let _ = stop.send(());
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;

    let (nxdomain, refused, tls) = outcome;
    let e = nxdomain
        .err()
        .context("a name that does not exist connected")?;
    eprintln!("figure: no such name -> {e}");
    assert!(matches!(e, Error::Resolve { .. }), "{e:?}");
    assert!(e.to_string().contains("NXDOMAIN"), "{e}");
    assert_eq!(std::io::Error::from(e).kind(), std::io::ErrorKind::NotFound);

    let e = refused.err().context("a refusing server accepted")?;
    eprintln!("figure: refused -> {e}");
    assert!(matches!(last(&e), Error::Refused { .. }), "{e:?}");

    let e = tls
        .err()
        .context("a certificate from another CA was accepted")?;
    eprintln!("figure: TLS failure -> {e}");
    assert!(matches!(last(&e), Error::Tls { .. }), "{e:?}");
    Ok(())
}

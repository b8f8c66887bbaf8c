//! The handset topology: every link reaches the server over its own path, in IPv4 and IPv6,
//! and the namespaces go away on drop, also when a test panics.

use std::net::SocketAddr;
use std::time::Duration;

use roam_tests::netns;
use roam_tests::privilege::require_netns;
use roam_tests::probe::{EchoServer, ProbeSpec, probe};
use roam_tests::topology::{SERVICE_V4, SERVICE_V6, Topology};

const FEW: ProbeSpec = ProbeSpec {
    count: 5,
    burst: 5,
    interval: Duration::from_millis(1),
    linger: Duration::from_millis(500),
};

#[test]
fn each_link_reaches_the_server_over_its_own_path_in_both_families() {
    if !require_netns("each_link_reaches_the_server_over_its_own_path_in_both_families") {
        return;
    }
    let topo = Topology::phone().build().unwrap();
    let names: Vec<_> = topo.links().iter().map(|l| l.name.clone()).collect();
    assert_eq!(names, ["wlan0", "rmnet0", "bnep0"]);

    // Echo servers bind one address each: a wildcard socket would answer from the path address.
    let echo4 = EchoServer::start(topo.server(), SocketAddr::new(SERVICE_V4.into(), 7000)).unwrap();
    let echo6 = EchoServer::start(topo.server(), SocketAddr::new(SERVICE_V6.into(), 7000)).unwrap();
    let mut path_echoes = Vec::new();
    for l in topo.links() {
        for a in [
            SocketAddr::new(l.server_v4.into(), 7000),
            SocketAddr::new(l.server_v6.into(), 7000),
        ] {
            path_echoes.push(EchoServer::start(topo.server(), a).unwrap());
        }
    }
    for l in topo.links() {
        for (bind, target) in [
            (
                SocketAddr::new(l.handset_v4.into(), 0),
                SocketAddr::new(l.server_v4.into(), 7000),
            ),
            (
                SocketAddr::new(l.handset_v4.into(), 0),
                SocketAddr::new(SERVICE_V4.into(), 7000),
            ),
            (
                SocketAddr::new(l.handset_v6.into(), 0),
                SocketAddr::new(l.server_v6.into(), 7000),
            ),
            (
                SocketAddr::new(l.handset_v6.into(), 0),
                SocketAddr::new(SERVICE_V6.into(), 7000),
            ),
        ] {
            let before = topo.server_stats().unwrap();
            let r = probe(topo.handset(), Some(bind), target, FEW).unwrap();
            assert_eq!(r.received(), 5, "{} -> {target} over {}", bind, l.name);
            // The server's own counters say which path carried the probes.
            let after = topo.server_stats().unwrap();
            for ((name, b), (_, a)) in before.iter().zip(&after) {
                let grew = a.rx_packets >= b.rx_packets + 5;
                assert_eq!(
                    grew,
                    *name == l.name,
                    "probes from {bind} arrived on {name}: {grew}"
                );
            }
        }
    }
    let peers4 = echo4.peers();
    for l in topo.links() {
        assert!(
            peers4.iter().any(|p| p.ip() == l.handset_v4),
            "server never saw {}",
            l.handset_v4
        );
    }
    assert!(
        echo6
            .peers()
            .iter()
            .any(|p| p.ip() == topo.links()[2].handset_v6)
    );

    // An unbound socket follows the preferred link's default route.
    let r = probe(
        topo.handset(),
        None,
        SocketAddr::new(SERVICE_V4.into(), 7000),
        FEW,
    )
    .unwrap();
    assert_eq!(r.received(), 5);
    assert!(
        echo4
            .peers()
            .iter()
            .any(|p| p.ip() == topo.links()[0].handset_v4)
    );

    for ns in [topo.handset(), topo.server()] {
        let limits = ns.ip(&["mptcp", "limits", "show"]).unwrap();
        assert!(limits.contains("subflows 8"), "{limits}");
        assert!(limits.contains("add_addr_accepted 8"), "{limits}");
    }
}

#[test]
fn namespaces_are_removed_on_drop_and_on_panic() {
    if !require_netns("namespaces_are_removed_on_drop_and_on_panic") {
        return;
    }
    let topo = Topology::builder()
        .link("wlan0", roam_policy::LinkKind::Wifi)
        .build()
        .unwrap();
    let names = [
        topo.handset().name().to_owned(),
        topo.server().name().to_owned(),
    ];
    assert!(names.iter().all(|n| netns::exists(n)));
    drop(topo);
    assert!(names.iter().all(|n| !netns::exists(n)));

    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let topo = Topology::builder()
            .link("wlan0", roam_policy::LinkKind::Wifi)
            .build()
            .unwrap();
        tx.send(topo.handset().name().to_owned()).unwrap();
        panic!("a test failing half way");
    });
    assert!(result.is_err());
    let name = rx.recv().unwrap();
    assert!(!netns::exists(&name), "{name} survived the panic");
}

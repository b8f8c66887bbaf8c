//! Failure injection: each failure stops what it should stop, on the link it names only, and
//! the link comes back whole.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roam_tests::netlink::OperState;
use roam_tests::privilege::require_netns;
use roam_tests::probe::{EchoServer, ProbeSpec, probe};
use roam_tests::topology::{Direction, SERVICE_V4, Topology};

const FEW: ProbeSpec = ProbeSpec {
    count: 5,
    burst: 5,
    interval: Duration::from_millis(1),
    linger: Duration::from_millis(300),
};

struct Rig {
    topo: Arc<Topology>,
    echo: EchoServer,
    _path_echo: Vec<EchoServer>,
}

fn rig() -> Rig {
    let topo = Arc::new(Topology::phone().build().unwrap());
    let echo = EchoServer::start(topo.server(), SocketAddr::new(SERVICE_V4.into(), 7000)).unwrap();
    let path_echo = topo
        .links()
        .iter()
        .map(|l| {
            EchoServer::start(topo.server(), SocketAddr::new(l.server_v4.into(), 7000)).unwrap()
        })
        .collect();
    Rig {
        topo,
        echo,
        _path_echo: path_echo,
    }
}

impl Rig {
    /// Replies to probes sent from `link`'s address to the service address.
    fn bound_replies(&self, link: &str) -> u32 {
        let l = self.topo.link(link).unwrap();
        let bind = SocketAddr::new(l.handset_v4.into(), 0);
        probe(
            self.topo.handset(),
            Some(bind),
            SocketAddr::new(SERVICE_V4.into(), 7000),
            FEW,
        )
        .unwrap()
        .received()
    }

    /// Sends unbound probes and returns which link's server interface received them.
    fn unbound_path(&self) -> String {
        let before = self.topo.server_stats().unwrap();
        let r = probe(
            self.topo.handset(),
            None,
            SocketAddr::new(SERVICE_V4.into(), 7000),
            FEW,
        )
        .unwrap();
        assert_eq!(r.received(), 5);
        let after = self.topo.server_stats().unwrap();
        before
            .iter()
            .zip(&after)
            .find(|((_, b), (_, a))| a.rx_packets >= b.rx_packets + 5)
            .map(|((n, _), _)| n.clone())
            .expect("no path carried the probes")
    }
}

#[test]
fn link_down_moves_traffic_and_link_up_brings_it_back() {
    if !require_netns("link_down_moves_traffic_and_link_up_brings_it_back") {
        return;
    }
    let r = rig();
    assert_eq!(r.unbound_path(), "wlan0");
    r.topo.link_down("wlan0").unwrap();
    assert_eq!(r.unbound_path(), "rmnet0");
    assert_eq!(r.bound_replies("wlan0"), 0, "a dead link still answered");
    assert!(
        r.echo
            .peers()
            .iter()
            .any(|p| p.ip() == r.topo.link("rmnet0").unwrap().handset_v4)
    );
    r.topo.link_up("wlan0").unwrap();
    assert_eq!(r.bound_replies("wlan0"), 5);
    assert_eq!(
        r.unbound_path(),
        "wlan0",
        "the preferred link did not take traffic back"
    );
}

#[test]
fn far_side_carrier_loss_keeps_the_link_up_but_dead() {
    if !require_netns("far_side_carrier_loss_keeps_the_link_up_but_dead") {
        return;
    }
    let r = rig();
    r.topo.far_side_down("wlan0").unwrap();
    let info = r
        .topo
        .wait_link(r.topo.handset(), "wlan0", Duration::from_secs(1), |_| true)
        .unwrap();
    // veth reports DOWN or LOWERLAYERDOWN depending on the peer's ifindex; what matters is
    // that the interface is administratively up without a carrier.
    assert_ne!(info.operstate, OperState::Up);
    assert!(info.admin_up && !info.carrier, "{info:?}");
    assert_eq!(r.bound_replies("wlan0"), 0);
    assert_eq!(
        r.bound_replies("rmnet0"),
        5,
        "carrier loss on wlan0 hurt rmnet0"
    );
    r.topo.far_side_up("wlan0").unwrap();
    assert_eq!(r.bound_replies("wlan0"), 5);
}

#[test]
fn address_removal_takes_the_routes_with_it() {
    if !require_netns("address_removal_takes_the_routes_with_it") {
        return;
    }
    let r = rig();
    r.topo.remove_addresses("wlan0").unwrap();
    let addrs = r
        .topo
        .handset()
        .ip(&["addr", "show", "dev", "wlan0"])
        .unwrap();
    assert!(!addrs.contains("198.18.0.2"), "{addrs}");
    assert!(
        !addrs.contains("2001:db8:0:0::2") && !addrs.contains("2001:db8::2/64"),
        "{addrs}"
    );
    assert_eq!(r.unbound_path(), "rmnet0");
    r.topo.restore_addresses("wlan0").unwrap();
    assert_eq!(r.unbound_path(), "wlan0");
}

#[test]
fn silent_blackhole_drops_one_direction_while_the_link_stays_up() {
    if !require_netns("silent_blackhole_drops_one_direction_while_the_link_stays_up") {
        return;
    }
    let r = rig();
    let wlan = |topo: &Topology| topo.server_stats().unwrap()[0].1;

    // Traffic first, so the neighbour is resolved and packets (not only ARP) meet the drop.
    assert_eq!(r.bound_replies("wlan0"), 5);
    r.topo.blackhole("wlan0", Direction::Up).unwrap();
    let before = wlan(&r.topo);
    assert_eq!(r.bound_replies("wlan0"), 0);
    assert!(
        wlan(&r.topo).rx_packets < before.rx_packets + 5,
        "uplink blackhole let probes out"
    );
    assert!(r.topo.blackhole_drops("wlan0", Direction::Up).unwrap() >= 5);
    r.topo.clear_blackhole("wlan0", Direction::Up).unwrap();

    r.topo.blackhole("wlan0", Direction::Down).unwrap();
    let before = wlan(&r.topo);
    assert_eq!(r.bound_replies("wlan0"), 0);
    assert!(
        wlan(&r.topo).rx_packets >= before.rx_packets + 5,
        "downlink blackhole stopped the uplink"
    );
    assert!(r.topo.blackhole_drops("wlan0", Direction::Down).unwrap() >= 5);
    // Silent: routes and link state are untouched, so unbound traffic still picks wlan0.
    let info = r
        .topo
        .wait_link(r.topo.handset(), "wlan0", Duration::from_secs(1), |_| true)
        .unwrap();
    assert_eq!(info.operstate, OperState::Up);
    assert_eq!(r.bound_replies("rmnet0"), 5);
    r.topo.clear_blackhole("wlan0", Direction::Both).unwrap();
    assert_eq!(r.bound_replies("wlan0"), 5);
}

/// Bytes a TCP sender gets across in `window` from `link`'s address.
fn tcp_bytes_in(topo: &Topology, link: &str, window: Duration) -> u64 {
    let listener = topo
        .server()
        .run(|| TcpListener::bind(SocketAddr::new(SERVICE_V4.into(), 7100)))
        .unwrap()
        .unwrap();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let end = Instant::now() + window;
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut total = 0u64;
        let mut buf = vec![0u8; 65536];
        // Only what arrives within the window counts: the send buffer drains after it.
        while Instant::now() < end {
            let Ok(n) = s.read(&mut buf) else { continue };
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let bind = SocketAddr::new(topo.link(link).unwrap().handset_v4.into(), 0);
    let stream = topo
        .handset()
        .run(|| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            s.bind(&bind.into())?;
            s.connect(&SocketAddr::new(SERVICE_V4.into(), 7100).into())?;
            std::io::Result::Ok(TcpStream::from(s))
        })
        .unwrap()
        .unwrap();
    let mut stream = stream;
    stream
        .set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let chunk = vec![7u8; 16 * 1024];
    let end = Instant::now() + window;
    while Instant::now() < end {
        let _ = stream.write(&chunk);
    }
    drop(stream);
    sink.join().unwrap()
}

#[test]
fn rate_collapse_throttles_the_link() {
    if !require_netns("rate_collapse_throttles_the_link") {
        return;
    }
    let topo = Topology::phone().build().unwrap();
    let window = Duration::from_millis(500);
    let free = tcp_bytes_in(&topo, "wlan0", window);
    topo.rate_limit("wlan0", Direction::Up, 800).unwrap();
    let throttled = tcp_bytes_in(&topo, "wlan0", window);
    // 800 kbit/s for 0.5 s is 50 kB; allow the bucket and queued segments on top.
    assert!(
        throttled < 120_000,
        "tbf at 800 kbit let {throttled} bytes through in 0.5 s"
    );
    assert!(
        throttled > 10_000,
        "tbf starved the link: {throttled} bytes"
    );
    assert!(
        free > 10 * throttled,
        "unthrottled {free} vs throttled {throttled}"
    );
    topo.clear_rate_limit("wlan0", Direction::Up).unwrap();
}

#[test]
fn flapping_is_bounded_and_ends_with_the_link_up() {
    if !require_netns("flapping_is_bounded_and_ends_with_the_link_up") {
        return;
    }
    let r = rig();
    let start = Instant::now();
    let flap = r
        .topo
        .flap(
            "wlan0",
            Duration::from_millis(30),
            Duration::from_millis(30),
            4,
        )
        .unwrap();
    let events = flap.wait().unwrap();
    assert_eq!(events.len(), 8);
    assert_eq!(events.iter().filter(|(_, up)| *up).count(), 4);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(r.bound_replies("wlan0"), 5);
    assert_eq!(r.unbound_path(), "wlan0");
}

//! The app's socket binder (`SessionBuilder::socket_binder`, what the Android bridge uses to
//! put sockets on `Network`s) is called for every socket a session opens, with the path the
//! socket is for, before the socket is bound.

mod common;

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use common::*;
use roam::path::LocalPath;
use roam::{SessionBuilder, TransportPreference};
use roam_tests::privilege::require_netns;
use roam_tests::topology::Topology;

/// (interface, socket type, protocol, still unbound) of every call.
type Calls = Arc<Mutex<Vec<(String, i32, i32, bool)>>>;

fn opt(fd: BorrowedFd<'_>, name: i32) -> std::io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is a live socket for the call; `v` and `len` are valid for writes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&raw mut v).cast(),
            &raw mut len,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

fn recording(builder: SessionBuilder) -> (SessionBuilder, Calls) {
    let calls: Calls = Arc::default();
    let rec = calls.clone();
    let b = builder.socket_binder(Arc::new(move |path: &LocalPath, fd: BorrowedFd<'_>| {
        let ty = opt(fd, libc::SO_TYPE)?;
        let proto = opt(fd, libc::SO_PROTOCOL)?;
        let sock = socket2::SockRef::from(&fd);
        // Unbound: the local address is the wildcard with port 0.
        let unbound = sock
            .local_addr()?
            .as_socket()
            .is_none_or(|a| a.port() == 0 && a.ip().is_unspecified());
        rec.lock()
            .unwrap()
            .push((path.interface.clone(), ty, proto, unbound));
        Ok(())
    }));
    (b, calls)
}

/// A session made with `builder` (its embedded monitor, no roamd) on wlan0, 1 MiB through.
fn start(topo: &Topology, builder: SessionBuilder) -> anyhow::Result<Run> {
    let pki = TestPki::generate()?;
    Run::start(topo, &pki, chat(builder, &pki).use_roamd(false), None)
}

#[test]
fn quic_first_socket_warm_backup_and_rebind_go_through_the_binder() -> anyhow::Result<()> {
    if !require_netns("quic_first_socket_warm_backup_and_rebind_go_through_the_binder") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let (b, calls) = recording(
        roam::Session::builder()
            .transport(TransportPreference::Quic)
            .multipath(roam_policy::MultipathMode::Interactive),
    );
    let r = start(&topo, b)?;
    // Interactive: the backup socket on rmnet0 is made ahead of time.
    let udp = |c: &Calls, i: &str| {
        c.lock()
            .unwrap()
            .iter()
            .filter(|(n, ty, p, unbound)| {
                n == i && *ty == libc::SOCK_DGRAM && *p == libc::IPPROTO_UDP && *unbound
            })
            .count()
    };
    assert_eq!(udp(&calls, "wlan0"), 1, "{:?}", calls.lock().unwrap());
    assert_eq!(udp(&calls, "rmnet0"), 1, "{:?}", calls.lock().unwrap());
    topo.link_down("wlan0")?;
    wait_moved(&r.client_rx, "rmnet0")?;
    wait_server_sees(&r.server_rx, topo.link("rmnet0")?.handset_v4.into())?;
    // WiFi returns: after the hold the session rebinds there on a new socket.
    topo.link_up("wlan0")?;
    wait_moved(&r.client_rx, "wlan0")?;
    wait_server_sees(&r.server_rx, topo.link("wlan0")?.handset_v4.into())?;
    assert!(udp(&calls, "wlan0") >= 2, "{:?}", calls.lock().unwrap());
    r.finish()?;
    Ok(())
}

#[test]
fn mptcp_socket_and_tcp_resume_reconnects_go_through_the_binder() -> anyhow::Result<()> {
    if !require_netns("mptcp_socket_and_tcp_resume_reconnects_go_through_the_binder") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    // MPTCP stripped on wlan0: the MPTCP socket's connection goes on as tcp-resume, whose
    // reconnect after wlan0 goes down is a plain TCP socket on rmnet0.
    strip_mptcp(&topo, "wlan0")?;
    let (b, calls) = recording(roam::Session::builder().transport(TransportPreference::Mptcp));
    let r = start(&topo, b)?;
    topo.link_down("wlan0")?;
    wait_moved(&r.client_rx, "rmnet0")?;
    wait_server_sees(&r.server_rx, topo.link("rmnet0")?.handset_v4.into())?;
    r.finish()?;
    let calls = calls.lock().unwrap().clone();
    let stream = |i: &str, p: i32| {
        calls
            .iter()
            .any(|(n, ty, pr, unbound)| n == i && *ty == libc::SOCK_STREAM && *pr == p && *unbound)
    };
    assert!(stream("wlan0", libc::IPPROTO_MPTCP), "{calls:?}");
    assert!(stream("rmnet0", libc::IPPROTO_TCP), "{calls:?}");
    Ok(())
}

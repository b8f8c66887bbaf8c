//! The prober's sockets: one UDP socket per interface and address family, bound to the
//! interface (`SO_BINDTODEVICE`), so a probe leaves through the link it judges whatever the
//! routing table prefers. When to probe is the core's business (`crate::core`); this file only
//! sends what it is told and reports what comes back.
pub mod portal;
pub mod reflect;
pub mod wire;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use wire::{LEN, Probe};

/// A reply that came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReply {
    /// Interface index the probe was sent from.
    pub index: u32,
    /// Its sequence number.
    pub seq: u64,
    /// When the reply was read.
    pub at: Instant,
}

#[derive(Debug)]
struct Bound {
    socket: std::sync::Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The set of probe sockets.
#[derive(Debug)]
pub struct Prober {
    token: u64,
    sockets: HashMap<(u32, bool), Bound>,
    replies: mpsc::Sender<ProbeReply>,
}

impl Prober {
    /// A prober that reports replies on `replies` (bounded: when the daemon is behind, replies
    /// are dropped and count as loss rather than queueing without limit).
    pub fn new(replies: mpsc::Sender<ProbeReply>) -> Self {
        Prober {
            token: rand::random(),
            sockets: HashMap::new(),
            replies,
        }
    }

    /// Sends probe `seq` from interface `index`/`name` to `target`. An error means it did not
    /// leave (no route, interface gone): the caller counts it as missed.
    pub fn send(&mut self, index: u32, name: &str, target: SocketAddr, seq: u64) -> io::Result<()> {
        let key = (index, target.is_ipv6());
        if !self.sockets.contains_key(&key) {
            let bound = self.open(index, name, target.is_ipv6())?;
            self.sockets.insert(key, bound);
        }
        let Some(b) = self.sockets.get(&key) else {
            return Err(io::Error::other("probe socket vanished"));
        };
        let pkt = Probe {
            reply: false,
            token: self.token,
            seq,
        }
        .emit();
        // Straight to the kernel: tokio's try_send_to refuses (WouldBlock) until the reactor
        // has seen the new socket writable, which would count a fresh link's first probe lost.
        socket2::SockRef::from(&*b.socket)
            .send_to(&pkt, &target.into())
            .map(|_| ())
    }

    /// Closes the sockets of interface `index`.
    pub fn stop(&mut self, index: u32) {
        self.sockets.retain(|(i, _), _| *i != index);
    }

    fn open(&self, index: u32, name: &str, v6: bool) -> io::Result<Bound> {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        s.bind_device(Some(name.as_bytes())).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("SO_BINDTODEVICE {name}: {e} (roamd needs CAP_NET_RAW to bind probes to an interface)"),
            )
        })?;
        s.set_nonblocking(true)?;
        let any: IpAddr = if v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        s.bind(&SocketAddr::new(any, 0).into())?;
        let socket = std::sync::Arc::new(UdpSocket::from_std(s.into())?);
        let (token, replies, sock) = (self.token, self.replies.clone(), socket.clone());
        let span = tracing::debug_span!("probe", interface = %name, v6);
        let reader = tokio::spawn(
            async move {
                let mut buf = [0u8; LEN + 1];
                loop {
                    let n = match sock.recv(&mut buf).await {
                        Ok(n) => n,
                        Err(e) => {
                            // ICMP errors (port unreachable) surface here; the probe then times
                            // out like any other loss.
                            tracing::trace!(error = %e, "probe socket error");
                            continue;
                        }
                    };
                    let at = Instant::now();
                    match Probe::parse(&buf[..n]) {
                        Some(p) if p.reply && p.token == token => {
                            let _ = replies.try_send(ProbeReply {
                                index,
                                seq: p.seq,
                                at,
                            });
                        }
                        _ => tracing::trace!(n, "stray datagram ignored"),
                    }
                }
            }
            .instrument(span),
        );
        Ok(Bound { socket, reader })
    }
}

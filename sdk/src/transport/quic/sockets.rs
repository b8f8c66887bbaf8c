//! One UDP socket per interface under one QUIC endpoint: noq's [`AsyncUdpSocket`] over a set of
//! sockets, each bound to its path's interface and address. A datagram goes out from the socket
//! whose address is its source address (noq names the path's local address in every
//! [`Transmit`]); one without a source address goes out from the default socket. A received
//! datagram says which socket's address it came in on, so noq matches it to its path.
//!
//! So each path of a multipath connection stays on its own link whatever the routing table
//! says (no roamd source rules needed, embedded mode included), and a single-path connection
//! moves by making another socket the default. A path whose link died moves by an alias: its
//! old source address maps to a socket on another link, whose own address the datagrams then
//! carry (the peer sees that path migrate; noq learns the new address from the replies).
//!
//! The set also keeps a copy of what each source address sent recently ([`Recent`]), so a
//! path that moves off a dead or silent link can send its datagrams in flight again from the
//! new link at once ([`PathSockets::replay`]). noq has no way to be told "these packets are
//! lost": it finds out from acknowledgements on the new link (two round trips or more after
//! the move, with the peer's path validation) or, for a closed path, three probe timeouts
//! after the peer confirms the close. A replayed datagram is the same QUIC packet (same path,
//! same packet number), so the peer takes it as that packet arriving late from the path's new
//! address, and drops it as a duplicate if the original did arrive.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use noq::udp::{RecvMeta, Transmit, UdpSocketState};
use noq::{AsyncUdpSocket, UdpSender};
use tokio::io::Interest;

/// One bound socket of the set.
#[derive(Clone)]
struct Bound {
    ip: IpAddr,
    io: Arc<tokio::net::UdpSocket>,
    state: Arc<UdpSocketState>,
}

impl Bound {
    fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        let ip = socket.local_addr()?.ip();
        let state = Arc::new(UdpSocketState::new((&socket).into())?);
        Ok(Bound {
            ip,
            io: Arc::new(tokio::net::UdpSocket::from_std(socket)?),
            state,
        })
    }
}

/// How long a sent datagram is kept for a replay: past this, a datagram still unacknowledged
/// is noq's loss recovery's to repair (a stall is found within a few hundred ms even at
/// hundreds of ms of RTT: `path::manager`'s threshold).
const KEEP_FOR: Duration = Duration::from_millis(600);
/// The most bytes kept per source address (the oldest go first): 1 MiB is 160 ms at
/// 50 Mbit/s, and a handset session rarely has more in flight.
const KEEP_BYTES: usize = 1 << 20;

/// One datagram (or GSO batch) as it was handed to a socket.
struct Kept {
    at: Instant,
    destination: SocketAddr,
    ecn: Option<noq::udp::EcnCodepoint>,
    segment_size: Option<usize>,
    contents: Vec<u8>,
}

impl Kept {
    fn transmit(&self) -> Transmit<'_> {
        Transmit {
            destination: self.destination,
            ecn: self.ecn,
            contents: &self.contents,
            segment_size: self.segment_size,
            src_ip: None,
        }
    }
}

/// What [`PathSockets::replay`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Datagrams (or GSO batches) sent again at once.
    pub(crate) sent: usize,
    /// Their bytes.
    pub(crate) bytes: usize,
    /// Datagrams left to the task that sends them as the socket's buffer drains.
    pub(crate) later: usize,
}

/// The rest of a replay, sent as `b`'s buffer drains; what has grown older than
/// [`KEEP_FOR`] meanwhile is left to loss recovery.
async fn replay_rest(b: Bound, mut rest: VecDeque<Kept>) {
    while let Some(k) = rest.front() {
        if k.at.elapsed() > KEEP_FOR || b.io.writable().await.is_err() {
            break;
        }
        match b.io.try_io(Interest::WRITABLE, || {
            b.state.try_send((&*b.io).into(), &k.transmit())
        }) {
            Ok(()) => {
                rest.pop_front();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::debug!(ip = %b.ip, error = %e, "replay stopped");
                break;
            }
        }
    }
    tracing::trace!(ip = %b.ip, dropped = rest.len(), "replay finished");
}

/// What one source address sent recently, oldest first, and when it last received.
#[derive(Default)]
struct Recent {
    kept: VecDeque<Kept>,
    bytes: usize,
    /// When a datagram last came in on this address's socket (stamped as it was read).
    heard: Option<Instant>,
}

impl Recent {
    fn push(&mut self, now: Instant, t: &Transmit<'_>) {
        // Reuse the buffer of the oldest datagram when it has to go anyway.
        let mut contents = match self.kept.front() {
            Some(k)
                if now.saturating_duration_since(k.at) > KEEP_FOR
                    || self.bytes + t.contents.len() > KEEP_BYTES =>
            {
                let k = self.kept.pop_front().expect("front exists");
                self.bytes -= k.contents.len();
                k.contents
            }
            _ => Vec::new(),
        };
        contents.clear();
        contents.extend_from_slice(t.contents);
        self.bytes += contents.len();
        self.kept.push_back(Kept {
            at: now,
            destination: t.destination,
            ecn: t.ecn,
            segment_size: t.segment_size,
            contents,
        });
        while let Some(k) = self.kept.front()
            && (now.saturating_duration_since(k.at) > KEEP_FOR || self.bytes > KEEP_BYTES)
        {
            self.bytes -= k.contents.len();
            self.kept.pop_front();
        }
    }
}

#[derive(Default)]
struct Set {
    /// The default socket first.
    sockets: Vec<Bound>,
    /// Source addresses with no socket of their own, and the address of the socket their
    /// datagrams leave from instead.
    aliases: Vec<(IpAddr, IpAddr)>,
    /// The endpoint's receive task, woken when a socket is added so it polls that one too.
    recv_waker: Option<Waker>,
    /// Where the next receive starts, so no socket starves the others.
    next: usize,
    /// What each source address (as noq names it) sent recently, for [`PathSockets::replay`].
    recent: Vec<(IpAddr, Recent)>,
}

impl Set {
    fn keep(&mut self, src: Option<IpAddr>, t: &Transmit<'_>) {
        let Some(ip) = src.or_else(|| self.sockets.first().map(|b| b.ip)) else {
            return;
        };
        let now = Instant::now();
        // Other addresses' old datagrams age out here too (an address whose path is gone
        // sends nothing more to push them out).
        for (_, r) in &mut self.recent {
            while let Some(k) = r.kept.front()
                && now.saturating_duration_since(k.at) > KEEP_FOR
            {
                r.bytes -= k.contents.len();
                r.kept.pop_front();
            }
        }
        self.recent_of(ip).push(now, t);
    }

    fn recent_of(&mut self, ip: IpAddr) -> &mut Recent {
        let i = match self.recent.iter().position(|(a, _)| *a == ip) {
            Some(i) => i,
            None => {
                self.recent.push((ip, Recent::default()));
                self.recent.len() - 1
            }
        };
        &mut self.recent[i].1
    }
}

/// The handle the driver keeps to change the set under a running endpoint.
#[derive(Clone, Default)]
pub(crate) struct PathSockets(Arc<Mutex<Set>>);

impl fmt::Debug for PathSockets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ips: Vec<IpAddr> = self.lock().sockets.iter().map(|b| b.ip).collect();
        f.debug_tuple("PathSockets").field(&ips).finish()
    }
}

impl PathSockets {
    /// A set holding `socket` as its default.
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        let s = PathSockets::default();
        s.lock().sockets.push(Bound::new(socket)?);
        Ok(s)
    }

    fn lock(&self) -> MutexGuard<'_, Set> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint's view of the set (give it to `Endpoint::new_with_abstract_socket`).
    pub(crate) fn endpoint_socket(&self) -> Box<dyn AsyncUdpSocket> {
        Box::new(EndpointSocket(self.clone()))
    }

    /// Whether a socket with source address `ip` is in the set.
    pub(crate) fn has(&self, ip: IpAddr) -> bool {
        self.lock().sockets.iter().any(|b| b.ip == ip)
    }

    /// Adds `socket` (replacing one with the same address); `default` makes it the socket
    /// for datagrams without a source address. Returns its local address.
    pub(crate) fn add(&self, socket: std::net::UdpSocket, default: bool) -> io::Result<SocketAddr> {
        let local = socket.local_addr()?;
        let b = Bound::new(socket)?;
        let mut set = self.lock();
        set.sockets.retain(|s| s.ip != b.ip);
        set.aliases.retain(|(from, _)| *from != b.ip);
        if default {
            set.sockets.insert(0, b);
        } else {
            set.sockets.push(b);
        }
        if let Some(w) = set.recv_waker.take() {
            w.wake();
        }
        Ok(local)
    }

    /// Keeps only `socket`: what a single-path connection does when it moves (the old
    /// socket's late datagrams must not pull the connection's source address back).
    pub(crate) fn replace_all(&self, socket: std::net::UdpSocket) -> io::Result<SocketAddr> {
        let local = socket.local_addr()?;
        let b = Bound::new(socket)?;
        let mut set = self.lock();
        set.sockets = vec![b];
        set.aliases.clear();
        set.next = 0;
        if let Some(w) = set.recv_waker.take() {
            w.wake();
        }
        Ok(local)
    }

    /// Makes the socket with address `ip` the default (for datagrams without a source
    /// address).
    pub(crate) fn make_default(&self, ip: IpAddr) {
        let mut set = self.lock();
        if let Some(i) = set.sockets.iter().position(|b| b.ip == ip) {
            let b = set.sockets.remove(i);
            set.sockets.insert(0, b);
        }
    }

    /// Drops the socket with address `ip`, unless it is the last one.
    pub(crate) fn remove(&self, ip: IpAddr) {
        let mut set = self.lock();
        if set.sockets.len() > 1 {
            set.sockets.retain(|s| s.ip != ip);
        }
        if !set.aliases.iter().any(|(from, _)| *from == ip)
            && !set.sockets.iter().any(|b| b.ip == ip)
        {
            set.recent.retain(|(a, _)| *a != ip);
        }
    }

    /// When a datagram last came in on the socket of `ip` (while it had one): the last moment
    /// its link is known to have carried something back.
    pub(crate) fn heard(&self, ip: IpAddr) -> Option<Instant> {
        let set = self.lock();
        set.recent
            .iter()
            .find(|(a, _)| *a == ip)
            .and_then(|(_, r)| r.heard)
    }

    /// Sends again, from the socket with address `via` (the default socket if there is none),
    /// what was sent naming `from` since `since`, oldest first, and forgets it. What the socket's buffer cannot take at once (a link that resolves its
    /// next hop first holds the datagrams in the buffer) follows as it drains, on a task of
    /// its own, for as long as the datagrams are younger than [`KEEP_FOR`].
    pub(crate) fn replay(&self, from: IpAddr, via: IpAddr, since: Instant) -> Replayed {
        let mut rest: VecDeque<Kept> = {
            let mut set = self.lock();
            match set.recent.iter_mut().find(|(a, _)| *a == from) {
                Some((_, r)) => {
                    let start = r.kept.partition_point(|k| k.at < since);
                    let out: VecDeque<Kept> = r.kept.drain(start..).collect();
                    r.bytes -= out.iter().map(|k| k.contents.len()).sum::<usize>();
                    out
                }
                None => VecDeque::new(),
            }
        };
        let via = {
            let set = self.lock();
            set.sockets
                .iter()
                .find(|b| b.ip == via)
                .or(set.sockets.first())
                .cloned()
        };
        let mut done = Replayed::default();
        let Some(b) = via else { return done };
        while let Some(k) = rest.front() {
            // Straight to the socket: tokio's readiness of a socket added a moment ago (the
            // new link's) says "not writable" until its reactor has looked, and a replay
            // cannot wait for that. A full buffer says WouldBlock all the same.
            match b.state.try_send((&*b.io).into(), &k.transmit()) {
                Ok(()) => {
                    done.sent += 1;
                    done.bytes += k.contents.len();
                    rest.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(ip = %b.ip, error = %e, "replay stopped");
                    return done;
                }
            }
        }
        done.later = rest.len();
        if !rest.is_empty() {
            tokio::spawn(replay_rest(b, rest));
        }
        done
    }

    /// Sends what names `from` as its source from the socket of `to` (which must be in the
    /// set), as long as `from` has no socket of its own.
    pub(crate) fn alias(&self, from: IpAddr, to: IpAddr) {
        let mut set = self.lock();
        set.aliases.retain(|(f, _)| *f != from);
        if from != to {
            set.aliases.push((from, to));
        }
    }

    /// The local address of the socket with source address `ip`.
    pub(crate) fn local_addr_of(&self, ip: IpAddr) -> Option<SocketAddr> {
        let set = self.lock();
        let b = set.sockets.iter().find(|b| b.ip == ip)?;
        b.io.local_addr().ok()
    }

    /// The socket a datagram from `src` leaves on, and whether it keeps `src` as its source:
    /// the socket with that address; the socket an alias names (with that socket's own
    /// address); the default for none. `None` for an address with neither (a path being
    /// closed): sent from another link, the peer would take it for that path migrating there.
    fn route(&self, src: Option<IpAddr>) -> Option<(Bound, bool)> {
        let set = self.lock();
        let Some(ip) = src else {
            return set.sockets.first().map(|b| (b.clone(), true));
        };
        if let Some(b) = set.sockets.iter().find(|b| b.ip == ip) {
            return Some((b.clone(), true));
        }
        let (_, to) = set.aliases.iter().find(|(from, _)| *from == ip)?;
        set.sockets
            .iter()
            .find(|b| b.ip == *to)
            .map(|b| (b.clone(), false))
    }
}

/// What the endpoint holds.
struct EndpointSocket(PathSockets);

impl fmt::Debug for EndpointSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl AsyncUdpSocket for EndpointSocket {
    fn create_sender(&self) -> Pin<Box<dyn UdpSender>> {
        Box::pin(Sender {
            sockets: self.0.clone(),
            writable: None,
            kept: false,
        })
    }

    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut set = self.0.lock();
        set.recv_waker = Some(cx.waker().clone());
        let n = set.sockets.len();
        for k in 0..n {
            let i = (set.next + k) % n;
            let b = set.sockets[i].clone();
            loop {
                match b.io.poll_recv_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
                match b.io.try_io(Interest::READABLE, || {
                    b.state.recv((&*b.io).into(), bufs, meta)
                }) {
                    Ok(got) => {
                        for m in &mut meta[..got] {
                            // noq matches the datagram to its path by this address.
                            m.dst_ip.get_or_insert(b.ip);
                        }
                        set.recent_of(b.ip).heard = Some(Instant::now());
                        set.next = (i + 1) % n;
                        return Poll::Ready(Ok(got));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // A socket of a path whose link went away reports errors (ENETDOWN...):
                    // that path is lost, not the endpoint.
                    Err(e) => {
                        tracing::debug!(ip = %b.ip, error = %e, "receive error on a path socket");
                        break;
                    }
                }
            }
        }
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        let set = self.0.lock();
        match set.sockets.first() {
            Some(b) => b.io.local_addr(),
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    fn max_receive_segments(&self) -> NonZeroUsize {
        let set = self.0.lock();
        set.sockets
            .iter()
            .map(|b| b.state.gro_segments())
            .max()
            .unwrap_or(NonZeroUsize::MIN)
    }

    fn may_fragment(&self) -> bool {
        let set = self.0.lock();
        set.sockets.iter().any(|b| b.state.may_fragment())
    }
}

type Writable = Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>;

/// One of noq's senders: waits for the chosen socket to be writable with a future of its own,
/// so several senders never overwrite each other's wake-ups.
struct Sender {
    sockets: PathSockets,
    /// The socket waited on (by address) and the wait.
    writable: Option<(IpAddr, Writable)>,
    /// The transmit being sent is in the set's recent datagrams already (a send that waits
    /// for the socket is polled again with the same transmit).
    kept: bool,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PathSockets::Sender")
    }
}

impl UdpSender for Sender {
    fn poll_send(
        mut self: Pin<&mut Self>,
        transmit: &Transmit<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.kept {
            this.sockets.lock().keep(transmit.src_ip, transmit);
            this.kept = true;
        }
        loop {
            let Some((b, keep_src)) = this.sockets.route(transmit.src_ip) else {
                this.kept = false;
                tracing::trace!(src = ?transmit.src_ip, "no socket for that source: datagram dropped");
                return Poll::Ready(Ok(()));
            };
            let aliased;
            let transmit = if keep_src {
                transmit
            } else {
                aliased = Transmit {
                    destination: transmit.destination,
                    ecn: transmit.ecn,
                    contents: transmit.contents,
                    segment_size: transmit.segment_size,
                    src_ip: None,
                };
                &aliased
            };
            if this.writable.as_ref().is_none_or(|(ip, _)| *ip != b.ip) {
                let io = b.io.clone();
                this.writable = Some((b.ip, Box::pin(async move { io.writable().await })));
            }
            let (_, fut) = this.writable.as_mut().expect("set above");
            let ready = std::task::ready!(fut.as_mut().poll(cx));
            this.writable = None;
            ready?;
            match b.io.try_io(Interest::WRITABLE, || {
                b.state.try_send((&*b.io).into(), transmit)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // A datagram that cannot leave (its link is down, no route) is lost like any
                // other: the connection's loss recovery and roam's stall detection handle it.
                Err(e) => {
                    tracing::trace!(ip = %b.ip, to = %transmit.destination, error = %e, "datagram not sent");
                    this.kept = false;
                    return Poll::Ready(Ok(()));
                }
                Ok(()) => {
                    this.kept = false;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    fn max_transmit_segments(&self) -> NonZeroUsize {
        let set = self.sockets.lock();
        set.sockets
            .iter()
            .map(|b| b.state.max_gso_segments())
            .min()
            .unwrap_or(NonZeroUsize::MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(ip: &str) -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0)).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    fn transmit<'a>(to: SocketAddr, src: Option<IpAddr>, data: &'a [u8]) -> Transmit<'a> {
        Transmit {
            destination: to,
            ecn: None,
            contents: data,
            segment_size: None,
            src_ip: src,
        }
    }

    /// Each datagram leaves from the socket of its source address (the default without one;
    /// none for an address without a socket), and a received one is tagged with the address of
    /// the socket it came in on, which notes when it last heard something.
    #[tokio::test]
    async fn datagrams_leave_from_the_socket_of_their_source_address() {
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = peer.local_addr().unwrap();
        let set = PathSockets::new(udp("127.0.0.1")).unwrap();
        let second = set.add(udp("127.0.0.2"), false).unwrap();
        let mut ep = set.endpoint_socket();
        let mut sender = ep.create_sender();
        let mut buf = [0u8; 64];
        let dropped = transmit(to, Some("127.0.0.9".parse().unwrap()), b"no");
        std::future::poll_fn(|cx| sender.as_mut().poll_send(&dropped, cx))
            .await
            .unwrap();
        for (src, want) in [
            (Some("127.0.0.2".parse().unwrap()), second),
            (None, ep.local_addr().unwrap()),
        ] {
            std::future::poll_fn(|cx| sender.as_mut().poll_send(&transmit(to, src, b"hi"), cx))
                .await
                .unwrap();
            let (n, from) = peer.recv_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (&b"hi"[..], want), "source {src:?}");
        }

        assert_eq!(set.heard(second.ip()), None, "nothing received yet");
        let before = Instant::now();
        peer.send_to(b"back", second).await.unwrap();
        let mut data = [0u8; 1500];
        let mut meta = [RecvMeta::default()];
        let got = std::future::poll_fn(|cx| {
            ep.poll_recv(cx, &mut [IoSliceMut::new(&mut data)], &mut meta)
        })
        .await
        .unwrap();
        assert_eq!(got, 1);
        assert_eq!(&data[..meta[0].len], b"back");
        assert_eq!(meta[0].dst_ip, Some("127.0.0.2".parse().unwrap()));
        // Stamped as read, on the address it came in on only.
        assert!(set.heard(second.ip()).is_some_and(|t| t >= before));
        assert_eq!(set.heard("127.0.0.1".parse().unwrap()), None);

        // An alias: what names 127.0.0.7 (no socket) leaves from 127.0.0.2's socket.
        set.alias("127.0.0.7".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let aliased = transmit(to, Some("127.0.0.7".parse().unwrap()), b"al");
        std::future::poll_fn(|cx| sender.as_mut().poll_send(&aliased, cx))
            .await
            .unwrap();
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"al"[..], second));

        // A single-path move: only the new socket is left, and it is the default.
        let moved = set.replace_all(udp("127.0.0.3")).unwrap();
        assert_eq!(ep.local_addr().unwrap(), moved);
        assert!(!set.has("127.0.0.1".parse().unwrap()));
    }

    /// What a source address sent since a given instant goes out again, oldest first, from
    /// another link's socket, with that socket's address; what was sent before that instant does not, and nothing is sent twice.
    #[tokio::test]
    async fn a_replay_sends_what_a_dead_link_had_in_flight_again_from_the_new_link() {
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = peer.local_addr().unwrap();
        let set = PathSockets::new(udp("127.0.0.1")).unwrap();
        let ep = set.endpoint_socket();
        let mut sender = ep.create_sender();
        let mut buf = [0u8; 64];
        let old: IpAddr = "127.0.0.1".parse().unwrap();
        let send = |data: &'static [u8]| transmit(to, Some(old), data);

        std::future::poll_fn(|cx| sender.as_mut().poll_send(&send(b"acked"), cx))
            .await
            .unwrap();
        peer.recv_from(&mut buf).await.unwrap();
        let since = Instant::now();
        for d in [&b"one"[..], b"two"] {
            let t = transmit(to, Some(old), d);
            std::future::poll_fn(|cx| sender.as_mut().poll_send(&t, cx))
                .await
                .unwrap();
            peer.recv_from(&mut buf).await.unwrap();
        }

        // The old link dies: its address now leaves from the new link's socket.
        let new = set.add(udp("127.0.0.2"), false).unwrap();
        set.alias(old, new.ip());
        set.remove(old);
        let r = set.replay(old, new.ip(), since);
        assert_eq!((r.sent, r.bytes, r.later), (2, 6, 0));
        for want in [&b"one"[..], b"two"] {
            let (n, from) = peer.recv_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (want, new));
        }
        assert_eq!(
            set.replay(old, new.ip(), since),
            Replayed::default(),
            "replayed twice"
        );
    }
}

//! TCP and MPTCP sockets bound to the interface that carries them, and the Happy Eyeballs race
//! of the TCP transports over the decision's candidates (through [`super::race`]).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;

use super::socket::{SocketBinder, bind_to_path};
use crate::error::{Error, Result};
use crate::vocab::LocalPath;

/// Which stream protocol a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamProto {
    /// `IPPROTO_MPTCP`: the kernel falls back to TCP by itself when the peer or a middlebox
    /// does not carry MPTCP.
    Mptcp,
    /// Plain `IPPROTO_TCP`.
    Tcp,
}

/// Opens a stream socket of `proto` bound to `path` (device and address) and connects it to
/// `peer` without blocking the runtime.
pub(crate) async fn connect_bound(
    path: &LocalPath,
    peer: SocketAddr,
    proto: StreamProto,
    binder: Option<&SocketBinder>,
) -> io::Result<TcpStream> {
    let domain = Domain::for_address(peer);
    let p = match proto {
        StreamProto::Mptcp => Protocol::MPTCP,
        StreamProto::Tcp => Protocol::TCP,
    };
    let s = Socket::new(domain, Type::STREAM, Some(p))?;
    bind_to_path(&s, path, binder)?;
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)?;
    match s.connect(&peer.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(s))?;
    stream.writable().await?;
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    // A refused connection can also show as "not connected" once writable.
    stream.peer_addr()?;
    Ok(stream)
}

/// Races TCP (or MPTCP) connects over the candidates (see [`super::race::race`]).
pub(crate) async fn race(
    cands: &[(LocalPath, SocketAddr)],
    delay: Duration,
    proto: StreamProto,
    binder: Option<SocketBinder>,
) -> Result<(LocalPath, TcpStream)> {
    super::race::race(cands, delay, move |path, peer| {
        let binder = binder.clone();
        async move {
            tracing::debug!(%path, %peer, ?proto, "TCP candidate");
            match connect_bound(&path, peer, proto, binder.as_ref()).await {
                Ok(s) => Ok((path, s)),
                Err(e) => Err(stream_connect_error(&path, peer, e)),
            }
        }
    })
    .await
}

/// A failed TCP connect in the error an app reacts to.
pub(crate) fn stream_connect_error(path: &LocalPath, peer: SocketAddr, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        Error::Refused {
            peer,
            detail: format!("TCP connection from {path} refused"),
        }
    } else {
        Error::io(format!("connecting to {peer} from {path}"), e)
    }
}

/// The TCP handshakes a listener has under way (TLS and the session header), at most `cap` at
/// once, oldest first. Each accepted connection is admitted; past the cap, the oldest one is
/// evicted (its task ends and its socket closes). A new client thus always gets its turn, and
/// a flood of connections that never speak costs at most `cap` descriptors and tasks: they
/// are pushed out by newer ones instead of holding up everyone until their header timeout.
/// Sans I/O: `T` is whatever stops a handshake when dropped (a channel's sender).
#[derive(Debug)]
pub(crate) struct Handshakes<T> {
    cap: usize,
    next: u64,
    live: std::collections::BTreeMap<u64, T>,
}

impl<T> Handshakes<T> {
    /// An empty table for at most `cap` (at least 1) handshakes.
    pub(crate) fn new(cap: usize) -> Handshakes<T> {
        Handshakes {
            cap: cap.max(1),
            next: 0,
            live: std::collections::BTreeMap::new(),
        }
    }

    /// Admits a new handshake: its id, and the oldest one evicted to make room for it.
    pub(crate) fn admit(&mut self, stop: T) -> (u64, Option<T>) {
        let evicted = if self.live.len() >= self.cap {
            self.evict_oldest()
        } else {
            None
        };
        let id = self.next;
        self.next += 1;
        self.live.insert(id, stop);
        (id, evicted)
    }

    /// The handshake `id` finished (or failed): its slot frees. False when it had been
    /// evicted meanwhile (its result must be dropped).
    pub(crate) fn done(&mut self, id: u64) -> bool {
        self.live.remove(&id).is_some()
    }

    /// Removes the oldest handshake (to free a descriptor, say).
    pub(crate) fn evict_oldest(&mut self) -> Option<T> {
        self.live.pop_first().map(|(_, t)| t)
    }

    /// Handshakes under way.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Handshakes;

    #[test]
    fn a_full_table_evicts_its_oldest_handshake() {
        let mut h = Handshakes::new(3);
        let ids: Vec<u64> = ["a", "b", "c"]
            .into_iter()
            .map(|s| {
                let (id, ev) = h.admit(s);
                assert_eq!(ev, None);
                id
            })
            .collect();
        assert_eq!(h.len(), 3);
        // "b" finished: room again, no eviction.
        assert!(h.done(ids[1]));
        assert_eq!(h.admit("d").1, None);
        // Full: the oldest ("a") goes, then "c".
        assert_eq!(h.admit("e").1, Some("a"));
        assert_eq!(h.admit("f").1, Some("c"));
        assert_eq!(h.len(), 3);
        // An evicted handshake that finishes anyway is told so.
        assert!(!h.done(ids[0]));
        assert_eq!(h.evict_oldest(), Some("d"));
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn a_cap_of_zero_still_admits_one() {
        let mut h = Handshakes::new(0);
        let (a, _) = h.admit(1);
        let (b, ev) = h.admit(2);
        assert_eq!(ev, Some(1));
        assert!(!h.done(a));
        assert!(h.done(b));
        assert_eq!(h.len(), 0);
    }
}

//! [`Listener`]: the server side. QUIC with connection migration on, so a client that moves
//! to another interface keeps its session; and, on the same port number, a TCP listener
//! (an MPTCP socket, which accepts plain TCP too) for the MPTCP and tcp-resume transports.
//! Each accepted connection becomes a [`Session`].
//!
//! The listener owns the sockets and dispatches: QUIC connections go to the QUIC transport's
//! accept side; a TCP connection gets its TLS handshake here, and its first four bytes say
//! which transport takes it: `ROAM` the MPTCP one (which serves plain TCP too), `RRES`
//! tcp-resume's registry. Any other ALPN than `roam/1` is an app's stream over MPTCP or TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use noq::crypto::rustls::QuicServerConfig;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::net::tcp::Handshakes;
use crate::session::{Session, header};
use crate::transport::tls_stream::{self, TlsStream};
use crate::transport::{Connection, TaskHandle, mptcp, quic, resume};

/// How many accepted sessions may wait for [`Listener::accept`].
const BACKLOG: usize = 64;

/// How a [`Listener`] runs ([`Listener::bind_with`]); `Default` is what [`Listener::bind`]
/// uses.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// How long a detached tcp-resume session is kept for its client to come back (30 s).
    pub resume_grace: Duration,
    /// The key QUIC stateless resets are derived from. `None` (the default): a random key
    /// per listener, so after a restart the new listener's resets carry another key, clients
    /// rightly ignore them, and their sessions end only at their idle timeout. Give the same
    /// 32 secret bytes to every run of a server (kept like a TLS key: whoever has it can end
    /// that server's QUIC sessions) and a restarted server's resets end the old sessions at
    /// once, with "reset by peer".
    pub stateless_reset_key: Option<[u8; 32]>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            resume_grace: resume::DEFAULT_GRACE,
            stateless_reset_key: None,
        }
    }
}

/// The QUIC endpoint on `addr`: noq's own server endpoint, or with `reset_key` one whose
/// stateless resets (HMAC-SHA256) and connection IDs are keyed by it instead of by random keys.
fn quic_endpoint(
    cfg: noq::ServerConfig,
    addr: SocketAddr,
    reset_key: Option<&[u8; 32]>,
) -> std::io::Result<noq::Endpoint> {
    let Some(key) = reset_key else {
        return noq::Endpoint::server(cfg, addr);
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    // As noq's own server endpoint does: dual-stack where an IPv6 address allows it.
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    let runtime = noq::default_runtime()
        .ok_or_else(|| std::io::Error::other("no tokio runtime to run the QUIC listener on"))?;
    // The connection IDs are keyed too: a packet whose ID the generator cannot validate is
    // dropped before any reset, so the restarted listener must recognise its predecessor's.
    let tag = ring::hmac::sign(&key, b"roam listener connection ids");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&tag.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut endpoint = noq::EndpointConfig::new(Arc::new(key));
    endpoint.cid_generator(Arc::new(move || {
        Box::new(noq_proto::HashedConnectionIdGenerator::from_key(cid_key))
    }));
    noq::Endpoint::new(endpoint, Some(cfg), socket.into(), runtime)
}

/// Accepts sessions on one address: UDP for QUIC, TCP (MPTCP) for the other transports.
///
/// Handshakes run concurrently, each bounded by the header timeout: a client that stalls in
/// its handshake or never sends its session header holds up no other client. At most 256 TCP
/// handshakes are under way at once; a newer connection sheds the oldest, so a flood of
/// connections that never speak cannot use up the process's descriptors or hold up a new
/// client (QUIC handshakes past 256 wait in noq's queue).
///
/// # Limits
///
/// Nothing caps the number of established sessions; what runs out first is the process's:
/// - **descriptors**: an MPTCP or tcp-resume session holds its socket (a detached tcp-resume
///   session none, while it waits out its grace period); QUIC sessions share the endpoint's
///   one UDP socket. Raise `RLIMIT_NOFILE` (`ulimit -n`,
///   systemd's `LimitNOFILE=`) to the sessions you expect plus some room. When it runs out the TCP side logs `out of descriptors` with
///   the limit, sheds the oldest handshake and backs off; established sessions go on.
/// - **memory**: about 52 KiB per idle QUIC session (97 KiB when its client opened a second
///   path) and 98 KiB per idle tcp-resume session (its buffers, TLS and transport state;
///   `load-bench --no-roamd --sessions 10000`, 10,000 of each on an echo server), more for a
///   busy one.
/// - **waiting sessions**: at most 64 accepted sessions wait for [`Listener::accept`]; past
///   that, finished handshakes wait for room (an app that stops calling `accept` stops
///   admitting clients, it does not drop them).
/// - **handshakes**: 256 TCP and 256 QUIC handshakes under way at once, each bounded by the
///   10 s header timeout.
#[derive(Debug)]
pub struct Listener {
    endpoint: noq::Endpoint,
    tcp_local: SocketAddr,
    sessions: Mutex<mpsc::Receiver<Connection>>,
    /// Set when the QUIC endpoint stops accepting (closed).
    quic_closed: watch::Receiver<bool>,
    _tcp_task: TaskHandle,
    _quic_task: TaskHandle,
}

impl Listener {
    /// Binds `addr` with `tls` (see [`crate::tls::server_config`]; its ALPN list should
    /// start with `roam/1`). QUIC: idle timeout 30 s, keep-alive every 1 s, migration on.
    /// TCP: the same port number, an MPTCP socket when the kernel has MPTCP (it accepts plain
    /// TCP too), else a TCP one. A tcp-resume connection silent for 10 s (its client pings
    /// every keep-alive interval) or breaking the protocol is closed; a silent one's session
    /// detaches and waits 30 s for its client ([`Listener::bind_with_grace`] chooses), a
    /// violating one's ends at once (sdk/RESUME.md, Lifetime).
    pub fn bind(addr: SocketAddr, tls: rustls::ServerConfig) -> Result<Listener> {
        Listener::bind_with_grace(addr, tls, resume::DEFAULT_GRACE)
    }

    /// [`Listener::bind`] with the time a detached tcp-resume session is kept for its client
    /// to come back before it is freed.
    pub fn bind_with_grace(
        addr: SocketAddr,
        tls: rustls::ServerConfig,
        resume_grace: Duration,
    ) -> Result<Listener> {
        Listener::bind_with(
            addr,
            tls,
            ListenerConfig {
                resume_grace,
                ..ListenerConfig::default()
            },
        )
    }

    /// [`Listener::bind`] with every setting of [`ListenerConfig`].
    pub fn bind_with(
        addr: SocketAddr,
        tls: rustls::ServerConfig,
        config: ListenerConfig,
    ) -> Result<Listener> {
        let ListenerConfig {
            resume_grace,
            stateless_reset_key,
        } = config;
        let tls = Arc::new(tls);
        let crypto =
            QuicServerConfig::try_from(tls.clone()).map_err(|e| Error::TlsConfig(e.to_string()))?;
        let mut cfg = noq::ServerConfig::with_crypto(Arc::new(crypto));
        cfg.migration(true);
        // Multipath offered: a roam client opens a path per link; others migrate.
        let t = crate::transport::quic::transport_config(
            Duration::from_secs(30),
            Some(Duration::from_secs(1)),
        )?;
        cfg.transport_config(Arc::new(t));
        let endpoint = quic_endpoint(cfg, addr, stateless_reset_key.as_ref())
            .map_err(|e| Error::io(format!("binding the QUIC listener on {addr}"), e))?;
        let quic_local = endpoint
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))?;
        let tcp_addr = SocketAddr::new(addr.ip(), quic_local.port());
        let tcp = bind_stream_listener(tcp_addr)?;
        let tcp_local = tcp
            .local_addr()
            .map_err(|e| Error::io("reading the TCP listener's address", e))?;
        let (tx, rx) = mpsc::channel(BACKLOG);
        let header_timeout = Duration::from_secs(10);
        let span = tracing::info_span!("listener", %tcp_local);
        let tcp_task = tokio::spawn(
            tcp_accept_loop(tcp, tls, tx.clone(), header_timeout, resume_grace)
                .instrument(span.clone()),
        );
        let (closed_tx, quic_closed) = watch::channel(false);
        let quic_task = tokio::spawn(
            quic::accept_loop(endpoint.clone(), tx, header_timeout, closed_tx).instrument(span),
        );
        tracing::info!(%quic_local, %tcp_local, "listening");
        Ok(Listener {
            endpoint,
            tcp_local,
            sessions: Mutex::new(rx),
            quic_closed,
            _tcp_task: TaskHandle::new(tcp_task.abort_handle()),
            _quic_task: TaskHandle::new(quic_task.abort_handle()),
        })
    }

    /// The address the listener is bound to (with the port the kernel chose for port 0); the
    /// TCP listener has the same port number.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))
    }

    /// The TCP (MPTCP) listener's address.
    pub fn tcp_local_addr(&self) -> SocketAddr {
        self.tcp_local
    }

    /// Waits for the next session, QUIC or TCP. A client whose handshake or session header
    /// fails (or takes longer than the header timeout, 10 s) is logged and skipped; a
    /// tcp-resume client coming back joins its session and is not returned again; only the
    /// listener's own end is an error.
    pub async fn accept(&self) -> Result<Session> {
        let mut sessions = self.sessions.lock().await;
        let mut closed = self.quic_closed.clone();
        tokio::select! {
            biased;
            s = sessions.recv() => s.map(Session::from).ok_or_else(|| Error::io(
                "accepting sessions",
                std::io::Error::other("the listener stopped"),
            )),
            _ = closed.wait_for(|c| *c) => Err(Error::io(
                "accepting sessions",
                std::io::Error::other("the listener's endpoint was closed"),
            )),
        }
    }

    /// Stops accepting and closes every QUIC session of this listener.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"listener closed");
    }
}

/// How many TCP handshakes (TLS and the session header) may be under way at once, as for
/// QUIC; a connection past it evicts the oldest (see [`Handshakes`]).
const TCP_HANDSHAKES: usize = 256;
/// The first pause after the listener failed to accept with nothing left to shed; it doubles
/// up to [`ACCEPT_BACKOFF_MAX`] while accepting keeps failing.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The handshakes under way; dropping a sender stops its handshake.
type Pending = Arc<std::sync::Mutex<Handshakes<oneshot::Sender<()>>>>;

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, Handshakes<oneshot::Sender<()>>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts TCP (and MPTCP) connections: each gets its TLS handshake and header in a task of
/// its own (a slow client holds up no one), then becomes a session sent to `tx`, or joins the
/// detached tcp-resume session it proves it owns. At most [`TCP_HANDSHAKES`] are under way:
/// a newer connection evicts the oldest, so connections that never speak cannot use up the
/// process's descriptors. When accepting fails for want of descriptors anyway (the app's
/// sessions use them), the oldest handshake is shed at once, and with none left the loop
/// backs off (50 ms doubling to 1 s) instead of spinning.
async fn tcp_accept_loop(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    tx: mpsc::Sender<Connection>,
    header_timeout: Duration,
    resume_grace: Duration,
) {
    let registry = resume::Registry::new(resume_grace);
    let pending: Pending = Arc::new(std::sync::Mutex::new(Handshakes::new(TCP_HANDSHAKES)));
    let mut failures = 0u64;
    let mut backoff = ACCEPT_BACKOFF;
    let mut shed = 0u64;
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                failures += 1;
                let out_of_fds = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if failures == 1 {
                    match e.raw_os_error() {
                        Some(libc::EMFILE) => tracing::warn!(
                            error = %e,
                            limit = nofile_limit(),
                            "accepting TCP connections fails: out of descriptors (this process's RLIMIT_NOFILE); \
                             every TCP session holds one, raise the limit for more sessions"
                        ),
                        Some(libc::ENFILE) => tracing::warn!(
                            error = %e,
                            "accepting TCP connections fails: out of descriptors system-wide (fs.file-max)"
                        ),
                        Some(libc::ENOBUFS | libc::ENOMEM) => tracing::warn!(
                            error = %e,
                            "accepting TCP connections fails: the kernel is out of socket memory"
                        ),
                        _ => tracing::warn!(error = %e, "accepting TCP connections fails"),
                    }
                }
                if out_of_fds && lock(&pending).evict_oldest().is_some() {
                    // Its task closes its socket when it next runs.
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(failures, "accepting TCP connections again");
            failures = 0;
            backoff = ACCEPT_BACKOFF;
        }
        if tx.is_closed() {
            return;
        }
        let _ = sock.set_nodelay(true);
        let (stop, stopped) = oneshot::channel::<()>();
        let (id, evicted) = lock(&pending).admit(stop);
        if evicted.is_some() {
            shed += 1;
            if shed % 1000 == 1 {
                tracing::warn!(
                    shed,
                    "{TCP_HANDSHAKES} TCP handshakes under way: the oldest ones are shed"
                );
            }
        }
        drop(evicted);
        let (tls, tx, registry, pending) =
            (tls.clone(), tx.clone(), registry.clone(), pending.clone());
        tokio::spawn(
            async move {
                let handshake = async {
                    let t0 = tokio::time::Instant::now();
                    let mut s = tls_stream::accept(sock, tls)
                        .await
                        .map_err(|e| Error::io("TLS handshake", e))?;
                    tracing::debug!(%peer, tls = ?t0.elapsed(), kind = ?s.handshake_kind(), "TLS handshake done");
                    let roam = s.alpn() == crate::tls::ALPN;
                    if !roam {
                        return Ok(Some(mptcp::accept(s, false).await?));
                    }
                    let Some(magic) = read_magic(&mut s).await? else {
                        tracing::debug!(%peer, "TCP client closed before its session header (a replaced standby, or a race's loser)");
                        return Ok(None);
                    };
                    match &magic {
                        header::MAGIC => Ok(Some(mptcp::accept(s, true).await?)),
                        resume::MAGIC => registry.accept(s, peer).await,
                        other => Err(Error::Protocol(format!("bad magic {other:?}"))),
                    }
                };
                let r = tokio::select! {
                    r = tokio::time::timeout(header_timeout, handshake) => Some(r),
                    _ = stopped => None,
                };
                // Evicted meanwhile: the result goes with the slot.
                let r = r.filter(|_| lock(&pending).done(id));
                match r {
                    Some(Ok(Ok(Some(session)))) => {
                        tracing::info!(%peer, transport = %session.transport, app = session.app.as_deref().unwrap_or("default"), "session accepted");
                        let _ = tx.send(session).await;
                    }
                    Some(Ok(Ok(None))) => {}
                    Some(Ok(Err(e))) => tracing::info!(%peer, error = %e, "TCP session refused"),
                    Some(Err(_)) => tracing::info!(%peer, "TCP client sent no header in time"),
                    None => tracing::debug!(%peer, "TCP handshake shed for a newer one"),
                }
            }
            .in_current_span(),
        );
    }
}

/// This process's soft limit of open files, for the message that says it ran out.
fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    r.rlim_cur
}

/// Reads the 4-byte magic that says which protocol a TCP connection speaks.
async fn read_magic(tls: &mut TlsStream<TcpStream>) -> Result<Option<[u8; 4]>> {
    let mut m = [0u8; 4];
    let mut got = 0;
    while got < m.len() {
        let n = tls
            .read(&mut m[got..])
            .await
            .map_err(|e| Error::Protocol(format!("reading the session header: {e}")))?;
        if n == 0 && got == 0 {
            // A clean close before any byte: a tcp-resume standby connection replaced by a
            // fresh one, or the losing attempt of a client racing its transports.
            return Ok(None);
        }
        if n == 0 {
            return Err(Error::Protocol(format!(
                "reading the session header: the client closed after {got} of its 4 bytes"
            )));
        }
        got += n;
    }
    Ok(Some(m))
}

/// A listening stream socket on `addr`: MPTCP when the kernel has it, else TCP.
fn bind_stream_listener(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let what = || format!("binding the TCP listener on {addr}");
    let domain = Domain::for_address(addr);
    let sock = match Socket::new(domain, Type::STREAM, Some(Protocol::MPTCP)) {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(error = %e, "no MPTCP in this kernel; the TCP listener is plain TCP");
            Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
                .map_err(|e| Error::io(what(), e))?
        }
    };
    sock.set_reuse_address(true)
        .map_err(|e| Error::io(what(), e))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true).map_err(|e| Error::io(what(), e))?;
    }
    sock.bind(&addr.into()).map_err(|e| Error::io(what(), e))?;
    sock.listen(128).map_err(|e| Error::io(what(), e))?;
    sock.set_nonblocking(true)
        .map_err(|e| Error::io(what(), e))?;
    tokio::net::TcpListener::from_std(sock.into()).map_err(|e| Error::io(what(), e))
}

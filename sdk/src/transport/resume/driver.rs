//! The I/O around [`Core`]: one task per TCP connection (a reader and a writer, so neither
//! direction waits on the other), the client's supervisor that reconnects and resumes, and the
//! listener's side that keeps a detached session for its grace period.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::core::Core;
use super::wire::{Frame, Secret};
use crate::mptcp::sockopt;
use crate::transport::TaskHandle;
use crate::transport::tls_stream::TlsStream;
use crate::vocab::{LocalPath, PathInfo, Subflow};

/// The TLS exporter label of the resumption proof.
pub(crate) const PROOF_LABEL: &[u8] = b"EXPORTER-roam-resume";
/// Bytes of frames written at once.
const WRITE_BATCH: usize = 256 * 1024;
/// A fresh connection's first bytes go out in DATA frames of at most this many bytes, each in
/// a TLS record of its own ([`YOUNG_BYTES`])...
const YOUNG_CHUNK: usize = 4 * 1024;
/// ... for this many bytes of frames. TLS decrypts a record only once all of it is in, and a
/// fresh TCP connection sends 10 segments (about 14 KB) in its first round trip, twice that in
/// the next: a full 16 KiB record right behind RESUMED spans 12 segments, so its last two
/// waited a round trip for TCP's ACKs and held every byte of it (a download's resume at 50 ms
/// RTT: the resent data reached the app 67 ms after RESUMED). Records of about three segments
/// are readable as their segments arrive; past the first two round trips of slow start the
/// window is wide enough for whole 16 KiB records, whose overhead is four times smaller.
const YOUNG_BYTES: usize = 64 * 1024;

/// What the app and the driver share.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) core: Core,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// The session is over; reads and writes fail with this.
    pub(crate) error: Option<String>,
    /// The connection the session is on now, for `paths()`.
    pub(crate) conn: Option<ConnView>,
}

impl State {
    /// The connection is gone: nothing goes out until the session resumes, and `paths()`
    /// stops reading the old socket. The view never kept that socket open (it holds a
    /// [`Weak`] reference), so the kernel closed the connection when its task ended: the peer
    /// gets its FIN or RST at once, not when the grace period ends.
    pub(crate) fn detach(&mut self) {
        self.core.detach();
        if let Some(c) = &mut self.conn {
            c.sock = Weak::new();
        }
    }
}

/// One tcp-resume connection's TCP socket, shared by the TLS stream that carries the session
/// and the [`ConnView`] that reads its `TCP_INFO` (`paths()`, stall detection): one
/// descriptor per connection, where a duplicate for `TCP_INFO` would double what a listener
/// with thousands of sessions holds. The TLS stream owns it (`Arc`); the view only borrows it
/// while the connection lives (`Weak`), so a connection that ended is closed at once.
#[derive(Debug)]
pub(crate) struct Sock(Arc<TcpStream>);

/// TLS over a tcp-resume connection's socket.
pub(crate) type Tls = TlsStream<Sock>;

impl Sock {
    pub(crate) fn new(s: TcpStream) -> Sock {
        Sock(Arc::new(s))
    }

    pub(crate) fn get_ref(&self) -> &TcpStream {
        &self.0
    }
}

// The same readiness loops as tokio's own `TcpStream` impls (one waker per direction), through
// `&TcpStream`, which is what sharing the socket needs.
impl AsyncRead for Sock {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Bounded: a `WouldBlock` clears the readiness, so the next turn returns Pending.
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Sock {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Bounded as in `poll_read`.
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// How a connection ended, when it did not end with CLOSE.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// The connection failed (the network, TLS, the peer's TCP, or silence): the session may
    /// resume on another one.
    Lost(io::Error),
    /// The peer broke the protocol (a malformed frame, data leaving a gap or past the
    /// window, ...): the session is over, no resumption can repair it.
    Violation(String),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Lost(e) => write!(f, "{e}"),
            ConnError::Violation(why) => write!(f, "protocol violation: {why}"),
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> ConnError {
        ConnError::Lost(e)
    }
}

/// What `paths()` shows of the current connection.
#[derive(Debug)]
pub(crate) struct ConnView {
    pub(crate) path: Option<LocalPath>,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) remote: Option<SocketAddr>,
    /// The connection's socket while it lives, to read `TCP_INFO`; never keeps it open.
    sock: Weak<TcpStream>,
}

impl ConnView {
    pub(crate) fn of(sock: &Sock, path: Option<LocalPath>) -> ConnView {
        ConnView {
            path,
            local: sock.0.local_addr().ok(),
            remote: sock.0.peer_addr().ok(),
            sock: Arc::downgrade(&sock.0),
        }
    }

    /// `f` on the connection's socket, if the connection still lives.
    pub(crate) fn with_socket<T>(&self, f: impl FnOnce(&TcpStream) -> T) -> Option<T> {
        self.sock.upgrade().map(|s| f(&s))
    }
}

/// The state and the writer's doorbell, shared by the session, its connection tasks and its
/// supervisor.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    state: Arc<Mutex<State>>,
    /// Rung when there may be frames to send.
    pub(crate) doorbell: Arc<Notify>,
    /// Told when the session ends.
    ended: Arc<Notify>,
    /// The supervisor's path manager rests (`PathManager::resting`): the app's next write
    /// tells it through `woke`.
    pub(crate) resting: Arc<AtomicBool>,
    pub(crate) woke: Arc<Notify>,
}

impl Shared {
    pub(crate) fn new(core: Core) -> Shared {
        Shared {
            state: Arc::new(Mutex::new(State {
                core,
                read_waker: None,
                write_waker: None,
                error: None,
                conn: None,
            })),
            doorbell: Arc::new(Notify::new()),
            ended: Arc::new(Notify::new()),
            resting: Arc::new(AtomicBool::new(false)),
            woke: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the app's reader and writer and rings the doorbell.
    pub(crate) fn wake_all(&self, st: &mut State) {
        if let Some(w) = st.read_waker.take() {
            w.wake();
        }
        if let Some(w) = st.write_waker.take() {
            w.wake();
        }
        self.doorbell.notify_one();
    }

    /// Ends the session with `why`; its connection's duplicate descriptor closes.
    pub(crate) fn fail(&self, why: String) {
        let mut st = self.lock();
        st.detach();
        if st.error.is_none() {
            tracing::warn!(error = %why, "session over");
            st.error = Some(why);
        }
        self.wake_all(&mut st);
        self.ended.notify_waiters();
    }

    /// Waits until the session is over (CLOSE from the peer, a refusal, the grace or the
    /// give-up deadline) and says why.
    pub(crate) async fn ended(&self) -> String {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if let Some(e) = &self.lock().error {
                return e.clone();
            }
            ended.await;
        }
    }
}

/// Runs one connection until it fails: a reader feeding frames into the core and a writer
/// sending what the core has. `initial` holds bytes read past the handshake frame. With
/// `silence`, a connection that brings no byte for that long is lost (the peer vanished, or
/// stopped its keep-alive). `Ok` is CLOSE from the peer.
pub(crate) async fn run_connection(
    tls: Tls,
    initial: Vec<u8>,
    shared: Shared,
    silence: Option<Duration>,
) -> Result<(), ConnError> {
    let (mut rd, mut wr) = tokio::io::split(tls);
    let reader = {
        let shared = shared.clone();
        async move {
            let mut buf = initial;
            loop {
                let mut used = 0;
                {
                    let mut st = shared.lock();
                    let mut any = false;
                    while let Some((f, n)) = Frame::decode(&buf[used..])
                        .map_err(|e| ConnError::Violation(e.to_string()))?
                    {
                        used += n;
                        any = true;
                        let close = f == Frame::Close;
                        st.core
                            .handle(f)
                            .map_err(|e| ConnError::Violation(e.to_string()))?;
                        if close {
                            return Ok::<_, ConnError>(true);
                        }
                    }
                    if any {
                        shared.wake_all(&mut st);
                    }
                }
                buf.drain(..used);
                if buf.capacity() - buf.len() < 64 * 1024 {
                    buf.reserve(64 * 1024);
                }
                let read = rd.read_buf(&mut buf);
                let n = match silence {
                    Some(limit) => tokio::time::timeout(limit, read).await.map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the peer sent nothing for {limit:?}"),
                        )
                    })??,
                    None => read.await?,
                };
                if n == 0 {
                    return Err(ConnError::Lost(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the TCP connection",
                    )));
                }
            }
        }
    };
    let writer = async move {
        let mut out = Vec::with_capacity(WRITE_BATCH);
        // Where each frame of a young connection ends in `out` (one write, one record, each).
        let mut ends: Vec<usize> = Vec::new();
        let mut written = 0;
        loop {
            out.clear();
            ends.clear();
            {
                let mut st = shared.lock();
                while out.len() < WRITE_BATCH {
                    let young = written + out.len() < YOUNG_BYTES;
                    let f = if young {
                        st.core.poll_transmit_within(YOUNG_CHUNK)
                    } else {
                        st.core.poll_transmit()
                    };
                    match f {
                        Some(f) => f.encode(&mut out),
                        None => break,
                    }
                    if young {
                        ends.push(out.len());
                    }
                }
                // Room in the send buffer may have opened (ACKs): let the app write.
                if let Some(w) = st.write_waker.take() {
                    w.wake();
                }
            }
            if out.is_empty() {
                shared.doorbell.notified().await;
                continue;
            }
            let sent = async {
                let mut from = 0;
                for &end in &ends {
                    wr.write_all(&out[from..end]).await?;
                    from = end;
                }
                wr.write_all(&out[from..]).await?;
                wr.flush().await
            };
            if let Err(e) = sent.await {
                return Err::<(), _>(ConnError::Lost(e));
            }
            written += out.len();
        }
    };
    tokio::select! {
        r = reader => match r {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
        r = writer => r,
    }
}

/// The app's end of a tcp-resume session.
#[derive(Debug)]
pub(crate) struct ResumeStream {
    pub(crate) shared: Shared,
    pub(crate) _driver: TaskHandle,
}

fn over(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, why.to_owned())
}

impl AsyncRead for ResumeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let n = st.core.read(buf.initialize_unfilled());
        if n > 0 {
            buf.advance(n);
            self.shared.doorbell.notify_one();
            return Poll::Ready(Ok(()));
        }
        if st.core.is_finished_reading() {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &st.error {
            return Poll::Ready(Err(over(e)));
        }
        st.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for ResumeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.shared.lock();
        if let Some(e) = &st.error {
            return Poll::Ready(Err(over(e)));
        }
        let n = st.core.write(buf);
        if n == 0 && !buf.is_empty() {
            st.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        self.shared.doorbell.notify_one();
        if self.shared.resting.swap(false, Ordering::Relaxed) {
            self.shared.woke.notify_one();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are in the session's resumable buffer: they reach the peer across
        // reconnections, which is what a flush promises here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        st.core.shutdown();
        self.shared.doorbell.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl ResumeStream {
    pub(crate) fn paths(&self) -> Vec<Subflow> {
        let st = self.shared.lock();
        let Some(c) = &st.conn else {
            return Vec::new();
        };
        let tcp = c
            .with_socket(|s| sockopt::tcp_info(s.as_fd()).ok())
            .flatten()
            .unwrap_or_default();
        vec![Subflow {
            id: 0,
            local: c.local,
            remote: c.remote,
            interface: c.path.as_ref().map(|p| p.interface.clone()),
            backup: Some(false),
            rtt: Duration::from_micros(tcp.rtt_us.into()),
            bytes_sent: tcp.bytes_sent,
            bytes_acked: tcp.bytes_acked,
            bytes_received: tcp.bytes_received,
        }]
    }

    pub(crate) fn path(&self) -> PathInfo {
        let p = self.paths().into_iter().next();
        PathInfo {
            interface: p.as_ref().and_then(|p| p.interface.clone()),
            local: p.as_ref().and_then(|p| p.local),
            remote: p
                .as_ref()
                .and_then(|p| p.remote)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            rtt: p.as_ref().map(|p| p.rtt).unwrap_or_default(),
            bytes_sent: p.as_ref().and_then(|p| p.bytes_sent).unwrap_or(0),
            bytes_received: p.as_ref().and_then(|p| p.bytes_received).unwrap_or(0),
        }
    }

    pub(crate) fn abort(&self) {
        self.shared.fail("closed by the app".into());
    }
}

/// The proof of `secret` on this TLS connection: a TLS exporter value with the secret as its
/// context, so it is worthless on any other connection and reveals nothing of the secret.
pub(crate) fn proof(tls: &Tls, secret: &Secret) -> io::Result<[u8; 32]> {
    tls.export(PROOF_LABEL, secret)
}

/// Compares two proofs in constant time.
pub(crate) fn proofs_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads one handshake frame; returns it and the bytes read past it.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(tls: &mut R) -> io::Result<(Frame, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    // Bounded: a handshake frame is at most MAX_PAYLOAD; decode refuses longer ones.
    loop {
        if let Some((f, n)) =
            Frame::decode(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            return Ok((f, buf.split_off(n)));
        }
        if tls.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the resume handshake",
            ));
        }
    }
}

/// Writes one frame and flushes it.
pub(crate) async fn write_frame(tls: &mut Tls, f: &Frame) -> io::Result<()> {
    let mut out = Vec::new();
    f.encode(&mut out);
    tls.write_all(&out).await?;
    tls.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A connected pair on loopback: (ours, the peer's).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(TcpStream::connect(addr), l.accept());
        (ours.unwrap(), theirs.unwrap().0)
    }

    /// How many of this process's descriptors are `s` (its socket inode), counted in
    /// /proc/self/fd: other tests' descriptors do not count.
    fn descriptors_of(s: &TcpStream) -> usize {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", s.as_raw_fd())).unwrap();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|l| *l == link)
            .count()
    }

    /// A fresh connection's first bytes leave in TLS records a young TCP window carries whole,
    /// the rest in full ones: read on the wire, between the listener's TLS and the client's.
    #[tokio::test]
    async fn a_fresh_connection_sends_its_first_bytes_in_small_records() {
        let pki = roam_tests::tls::TestPki::generate().unwrap();
        let (ours, theirs) = pair().await;
        // The client's TLS runs over a pipe; the test relays the TCP bytes to it and reads
        // the length of every record the listener sends.
        let (client_io, relay_io) = tokio::io::duplex(1 << 20);
        let records = Arc::new(Mutex::new(Vec::<(u8, usize)>::new()));
        let relay = {
            let records = records.clone();
            async move {
                let (mut tcp_rd, mut tcp_wr) = tokio::io::split(theirs);
                let (mut pipe_rd, mut pipe_wr) = tokio::io::split(relay_io);
                let up = tokio::io::copy(&mut pipe_rd, &mut tcp_wr);
                let down = async {
                    let mut header = [0u8; 5];
                    let mut body = vec![0u8; 1 << 15];
                    // Bounded: the listener sends 256 KiB, about 70 records.
                    for _ in 0..10_000 {
                        if tcp_rd.read_exact(&mut header).await.is_err() {
                            break;
                        }
                        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
                        tcp_rd.read_exact(&mut body[..len]).await.unwrap();
                        records.lock().unwrap().push((header[0], len));
                        pipe_wr.write_all(&header).await.unwrap();
                        pipe_wr.write_all(&body[..len]).await.unwrap();
                    }
                };
                let _ = tokio::join!(up, down);
            }
        };
        tokio::spawn(relay);
        let server_cfg = Arc::new(pki.roam_server().unwrap());
        let client_cfg = Arc::new(
            crate::tls::ClientTls::Ca(vec![pki.ca.clone()])
                .build(&[])
                .unwrap(),
        );
        let (server, client) = tokio::join!(
            crate::transport::tls_stream::accept(Sock::new(ours), server_cfg),
            crate::transport::tls_stream::connect(
                client_io,
                client_cfg,
                roam_tests::tls::SERVER_NAME
            ),
        );
        let (server, mut client) = (server.unwrap(), client.unwrap());
        const DATA: usize = 256 * 1024;
        let mut core = Core::new(DATA, 1 << 20);
        assert_eq!(core.write(&vec![7u8; DATA]), DATA);
        let shared = Shared::new(core);
        tokio::spawn(run_connection(server, Vec::new(), shared, None));
        // Every byte reaches the client as DATA frames.
        let mut got = 0;
        let mut buf = Vec::new();
        while got < DATA {
            let mut chunk = [0u8; 1 << 14];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the listener's side closed at {got} bytes");
            buf.extend_from_slice(&chunk[..n]);
            let mut used = 0;
            while let Some((f, n)) = Frame::decode(&buf[used..]).unwrap() {
                used += n;
                if let Frame::Data { bytes, .. } = f {
                    got += bytes.len();
                }
            }
            buf.drain(..used);
        }
        let records = records.lock().unwrap().clone();
        // Application records (the handshake's encrypted flight and the session tickets
        // among them, all smaller than a young record): those within the first 60 KiB are
        // at most a young frame and the TLS overhead, the later ones full size.
        let app: Vec<usize> = records
            .iter()
            .filter(|(kind, _)| *kind == 0x17)
            .map(|(_, len)| *len)
            .collect();
        let young_record = YOUNG_CHUNK + 64;
        let mut total = 0;
        for len in &app {
            total += len;
            if total > 60 * 1024 {
                break;
            }
            assert!(
                *len <= young_record,
                "a record of {len} bytes at {total}: {app:?}"
            );
        }
        assert!(
            app.iter().any(|len| *len > 16 * 1024 - 64),
            "no full-size record once the connection is older: {app:?}"
        );
    }

    #[tokio::test]
    async fn the_view_reads_tcp_info_through_the_one_socket_and_never_keeps_it_open() {
        let (ours, mut theirs) = pair().await;
        let mut sock = Sock::new(ours);
        let view = ConnView::of(&sock, None);
        assert_eq!(
            descriptors_of(sock.get_ref()),
            1,
            "no descriptor of its own"
        );
        sock.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        theirs.read_exact(&mut buf).await.unwrap();
        let info = view
            .with_socket(|s| sockopt::tcp_info(s.as_fd()).unwrap())
            .expect("the connection lives");
        assert_eq!(info.bytes_sent, Some(4));
        // The connection ends with the stream that carried it: the peer sees the end at once,
        // and the view has nothing left to read.
        drop(sock);
        assert_eq!(theirs.read(&mut buf).await.unwrap(), 0);
        assert!(view.with_socket(|_| ()).is_none());
    }
}

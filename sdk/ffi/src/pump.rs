//! The pump: moves bytes between the library's end of a descriptor's socketpair and its roam
//! [`Session`], both ways, until both directions ended or the app closed the descriptor; and
//! answers the descriptor's requests (paths, events) on the way, as it alone holds the session.
//!
//! Ends: the app's `shutdown(SHUT_WR)` becomes the session's shutdown (the peer reads the end);
//! the session's end becomes end-of-stream on the descriptor. Once both directions ended the
//! session is closed; the descriptor then answers `roam_paths` with the session's last paths
//! until the app closes it. The app closing the descriptor
//! (the library's end sees `POLLHUP`, or `EPIPE` on a write) ends the session: what was read
//! from the descriptor is written and the writing side shut. Either way the session then
//! waits up to 2 s for the peer to close (so that its last bytes are acknowledged) before it
//! closes itself. A session error ends it too: the app reads
//! end-of-stream, and the events descriptor says why.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use roam_sdk::Session;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use crate::guard::FfiError;
use crate::{json, registry, sock};

/// How long a session that ended (or whose descriptor was closed) waits for its last bytes to
/// be delivered and the peer to close before it closes itself.
const LINGER: Duration = Duration::from_secs(2);

/// How many bytes each direction holds between a read and its write.
const BUF: usize = 256 * 1024;

/// What the app asks of a session through its descriptor.
#[derive(Debug)]
pub enum Request {
    /// The session's paths as JSON.
    Paths(std::sync::mpsc::SyncSender<String>),
    /// A receiver of the session's events, and the pump's end (its reason when it ends).
    Events(std::sync::mpsc::SyncSender<(roam_sdk::Events, watch::Receiver<Option<String>>)>),
}

/// Gives `session` a descriptor: returns the app's end, owned by the caller from now on.
pub fn start(handle: &Handle, session: Session) -> Result<RawFd, FfiError> {
    let (app, lib) = sock::pair()?;
    let identity = registry::identity(app.as_raw_fd())?;
    let lib = {
        let _in_runtime = handle.enter();
        // SAFETY: the AsyncFd owns `lib`, so the descriptor stays open and the same file for
        // the AsyncFd's whole life.
        unsafe { AsyncFd::register(lib) }
            .map_err(|e| FfiError::os("registering the descriptor", &e.into_parts().1))?
    };
    let (tx, requests) = mpsc::unbounded_channel();
    let (ended, _) = watch::channel(None);
    let fd = app.into_raw_fd();
    let id = registry::insert(fd, identity, registry::Kind::Session(tx));
    let mut pump = Pump {
        app: lib,
        session,
        requests,
        requests_open: true,
        ended,
        up: Buf::new(),
        up_eof: false,
        up_shut: false,
        down: Buf::new(),
        down_eof: false,
    };
    handle.spawn(async move {
        let end = (&mut pump).await;
        if let End::Finished = end {
            let paths = json::paths(&pump.session);
            registry::finish(fd, id, paths.clone());
            // Requests sent before the entry changed get the same last paths.
            pump.requests.close();
            while let Ok(req) = pump.requests.try_recv() {
                if let Request::Paths(tx) = req {
                    let _ = tx.try_send(paths.clone());
                }
            }
        } else {
            registry::remove(fd, id);
        }
        let reason = match &end {
            End::Finished => "finished: both directions ended".to_owned(),
            End::AppClosed => {
                // What the app wrote before closing still goes out, as with close(2) on TCP.
                let _ = tokio::time::timeout(LINGER, pump.session.shutdown()).await;
                "the descriptor was closed".to_owned()
            }
            End::Failed(why) => {
                tracing::info!(fd, error = %why, "a roam descriptor's session failed");
                why.clone()
            }
        };
        pump.ended.send_replace(Some(reason));
        // The descriptor's end and both buffers go now; only the session lingers.
        let Pump { session, .. } = pump;
        if !matches!(end, End::Failed(_)) {
            // Closing the connection at once could drop our last bytes before the peer
            // acknowledged them: give the peer the chance to close first (QUIC, tcp-resume;
            // an MPTCP session returns at once, the kernel delivers its tail).
            let _ = tokio::time::timeout(LINGER, session.closed()).await;
        }
        session.close_and_wait(0, b"descriptor closed").await;
    });
    Ok(fd)
}

/// A buffer of one direction: bytes `start..end` wait to be written.
struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            data: vec![0; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
    fn is_empty(&self) -> bool {
        self.start == self.end
    }
    fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
    fn filled(&mut self, n: usize) {
        self.start = 0;
        self.end = n;
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
    }
}

/// How a pump ended.
#[derive(Debug)]
enum End {
    /// Both directions ended.
    Finished,
    /// The app closed the descriptor.
    AppClosed,
    /// The session (or the descriptor) failed.
    Failed(String),
}

struct Pump {
    app: AsyncFd<OwnedFd>,
    session: Session,
    requests: mpsc::UnboundedReceiver<Request>,
    requests_open: bool,
    ended: watch::Sender<Option<String>>,
    /// App to session.
    up: Buf,
    /// The app shut its writing down (or closed).
    up_eof: bool,
    /// The session's writing is shut down after `up_eof`.
    up_shut: bool,
    /// Session to app.
    down: Buf,
    /// The session's peer ended its stream.
    down_eof: bool,
}

impl Pump {
    fn serve_requests(&mut self, cx: &mut Context<'_>) {
        while self.requests_open {
            match self.requests.poll_recv(cx) {
                Poll::Ready(Some(Request::Paths(tx))) => {
                    let _ = tx.try_send(json::paths(&self.session));
                }
                Poll::Ready(Some(Request::Events(tx))) => {
                    let _ = tx.try_send((self.session.events(), self.ended.subscribe()));
                }
                Poll::Ready(None) => self.requests_open = false,
                Poll::Pending => break,
            }
        }
    }

    /// Reads what the app wrote into `up` (empty): `Ok(0)` is the app's end.
    fn read_app(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Pump { app, up, .. } = self;
        loop {
            let mut g = ready!(app.poll_read_ready(cx))?;
            match g.try_io(|fd| sock::read(fd.as_raw_fd(), &mut up.data)) {
                Ok(Ok(n)) => {
                    up.filled(n);
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes from `down` (not empty) to the app.
    fn write_app(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Pump { app, down, .. } = self;
        loop {
            let mut g = ready!(app.poll_write_ready(cx))?;
            match g.try_io(|fd| sock::send(fd.as_raw_fd(), down.pending())) {
                Ok(Ok(n)) => {
                    down.consume(n);
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// One round over both directions: `Ready` when the pump is over, else whether anything
    /// moved (when nothing did, every source has a waker registered).
    fn step(&mut self, cx: &mut Context<'_>) -> Result<bool, End> {
        let mut moved = false;
        // App to session.
        if self.up.is_empty() && !self.up_eof {
            match self.read_app(cx) {
                Poll::Ready(Ok(0)) => {
                    // POLLHUP tells a close from a shutdown(SHUT_WR) only while the library's
                    // own writing is not shut down yet.
                    if !self.down_eof && sock::hung_up(self.app.as_raw_fd()) {
                        return Err(End::AppClosed);
                    }
                    self.up_eof = true;
                    moved = true;
                }
                Poll::Ready(Ok(_)) => moved = true,
                Poll::Ready(Err(e)) => {
                    return Err(End::Failed(format!("reading the descriptor: {e}")));
                }
                Poll::Pending => {}
            }
        }
        if !self.up.is_empty() {
            match Pin::new(&mut self.session).poll_write(cx, self.up.pending()) {
                Poll::Ready(Ok(n)) => {
                    self.up.consume(n);
                    moved = true;
                }
                Poll::Ready(Err(e)) => {
                    return Err(End::Failed(format!("writing to the session: {e}")));
                }
                Poll::Pending => {}
            }
        }
        if self.up_eof && self.up.is_empty() && !self.up_shut {
            match Pin::new(&mut self.session).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => {
                    self.up_shut = true;
                    moved = true;
                }
                Poll::Ready(Err(e)) => {
                    return Err(End::Failed(format!("ending the session's stream: {e}")));
                }
                Poll::Pending => {}
            }
        }
        // Session to app.
        if self.down.is_empty() && !self.down_eof {
            let mut rb = ReadBuf::new(&mut self.down.data);
            match Pin::new(&mut self.session).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.down_eof = true;
                        sock::shutdown_write(self.app.as_raw_fd());
                    } else {
                        self.down.filled(n);
                    }
                    moved = true;
                }
                Poll::Ready(Err(e)) => {
                    return Err(End::Failed(format!("reading from the session: {e}")));
                }
                Poll::Pending => {}
            }
        }
        if !self.down.is_empty() {
            match self.write_app(cx) {
                Poll::Ready(Ok(_)) => moved = true,
                Poll::Ready(Err(e))
                    if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) =>
                {
                    return Err(End::AppClosed);
                }
                Poll::Ready(Err(e)) => {
                    return Err(End::Failed(format!("writing to the descriptor: {e}")));
                }
                Poll::Pending => {}
            }
        }
        if self.up_shut && self.down_eof && self.down.is_empty() {
            return Err(End::Finished);
        }
        Ok(moved)
    }

    /// After the app's `shutdown(SHUT_WR)`, nothing is read from the descriptor any more:
    /// this watches it for the app closing it altogether (until the session's end is passed
    /// on, after which `POLLHUP` means only that both directions are shut).
    fn watch_hang_up(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            match self.app.poll_read_ready(cx) {
                Poll::Ready(Ok(mut g)) => {
                    if sock::hung_up(g.get_inner().as_raw_fd()) {
                        return Poll::Ready(End::AppClosed);
                    }
                    g.clear_ready();
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(End::Failed(format!("watching the descriptor: {e}")));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Future for Pump {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = self.get_mut();
        this.serve_requests(cx);
        // Bounded, so one busy descriptor cannot hold a runtime thread forever.
        for _ in 0..64 {
            match this.step(cx) {
                Err(end) => return Poll::Ready(end),
                Ok(true) => continue,
                Ok(false) => {
                    if this.up_eof && !this.down_eof {
                        return this.watch_hang_up(cx);
                    }
                    return Poll::Pending;
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Forwards a session's events to `sock` (the library's end of an events descriptor), one
/// JSON line each, until the session ends (a last line says so) or the app closes it.
pub async fn forward_events(
    mut events: roam_sdk::Events,
    mut ended: watch::Receiver<Option<String>>,
    sock: tokio::net::UnixStream,
) {
    loop {
        let (line, last) = tokio::select! {
            // The pump's word on how the session ended comes before the events' end.
            biased;
            r = ended.changed() => {
                let why = match r {
                    Ok(()) => ended.borrow().clone().unwrap_or_else(|| "closed".into()),
                    Err(_) => "the pump stopped (internal error)".into(),
                };
                (json::ended(&why), true)
            }
            e = events.next() => match e {
                Some(e) => (json::event(&e), false),
                None => (json::ended("closed"), true),
            },
            r = sock.readable() => {
                // The app never writes here: readable means it closed its end.
                let mut b = [0u8; 64];
                match (r, sock.try_read(&mut b)) {
                    (Ok(()), Ok(n)) if n > 0 => continue,
                    (Ok(()), Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    _ => return,
                }
            }
        };
        let mut text = line.to_string();
        text.push('\n');
        if send_all(&sock, text.as_bytes()).await.is_err() || last {
            return;
        }
    }
}

/// Writes all of `buf` to the library's end of a descriptor, as `send(MSG_NOSIGNAL)`: an app
/// that closed its end gets no `SIGPIPE` (C programs do not ignore it as Rust ones do), the
/// write fails with `EPIPE` instead.
pub async fn send_all(stream: &tokio::net::UnixStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_io(Interest::WRITABLE, || sock::send(stream.as_raw_fd(), buf)) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

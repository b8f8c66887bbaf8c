//! The listening side of the protocol: accept, identify the peer (`SO_PEERCRED`), read frames,
//! write frames. What a request means, and who may make it, is decided by the core
//! (`roam_agent_core::clients`); this file only moves frames and drops a connection that breaks the protocol.
use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::config::{Config, resolve_group};
use crate::core::ClientId;
use roam_ipc::proto::{self, FrameError, Reply, Request, VERSION};

/// Who is on the other end of a connection: the core's type, since what a peer may do is the
/// core's decision (`roam_agent_core::clients`).
pub use crate::core::Peer;

/// How many connections the clients' thread accepts before it lets them run.
const ACCEPT_BATCH: ClientId = 16;

/// How long a new connection has to say hello.
pub const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How many frames may wait for a slow client (beyond what its socket buffer holds) before
/// it is dropped.
pub const CLIENT_QUEUE: usize = 256;

/// What the connections tell the daemon.
#[derive(Debug)]
pub enum FromClient {
    /// A client said hello with a version we speak.
    Connected {
        /// Its id.
        client: ClientId,
        /// Who it is.
        peer: Peer,
        /// Where its frames go.
        out: Outbox,
        /// Stops its reader (the daemon drops a client that does not read its frames).
        reader: AbortHandle,
    },
    /// A well-formed request.
    Request {
        /// From whom.
        client: ClientId,
        /// What.
        request: Request,
    },
    /// The client went away or broke the protocol.
    Gone {
        /// Who.
        client: ClientId,
    },
}

/// Binds the socket at `path`: creates its directory, replaces a stale socket left by a dead
/// agent (but refuses to steal one a live agent answers on), and opens it to every local user
/// (who may do what is decided per request from `SO_PEERCRED`, not by file modes). The
/// listener is [`ClientThread::start`]'s to serve.
pub fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{}: another roamd is listening there; stop it or pass another --socket",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// The clients' side of roamd, on a thread and tokio runtime of its own: accepting, the hello,
/// reading requests, and writing what did not fit in a client's socket at once. The daemon's
/// loop (the kernel's notifications, the core, the pushes) runs on the main thread and hears
/// clients through the channel; so a flood of local connections (accepted, identified, read
/// and closed as fast as a hostile client can make them) keeps this thread busy, not the one
/// that turns a link's failure into decisions: the kernel wakes that one as soon as the
/// netlink socket is readable, instead of it waiting its turn behind the flood's tasks.
#[derive(Debug)]
pub struct ClientThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClientThread {
    /// Serves `listener` (from [`bind`]) until [`ClientThread::stop`]: every connection gets an
    /// id and a task, and what it says goes to `to_daemon`. `identify` turns peer credentials
    /// (uid, gid, pid) into a [`Peer`].
    pub fn start(
        listener: std::os::unix::net::UnixListener,
        identify: Arc<dyn Fn(u32, u32, Option<i32>) -> Peer + Send + Sync>,
        to_daemon: mpsc::Sender<FromClient>,
    ) -> io::Result<ClientThread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name("roamd-clients".into())
            .spawn(move || {
                let _span = span.entered();
                crate::priority::lower_the_clients();
                rt.block_on(async move {
                    let listener = match UnixListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "the client socket cannot be served");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = accept_loop(listener, identify, to_daemon) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime ends every connection's task and closes its socket.
            })?;
        Ok(ClientThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops accepting and drops every connection; returns once the thread has ended.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ClientThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How a connection's credentials become a [`Peer`]: the config names its app, and root or a
/// member of the config's `admin_group` (primary or supplementary group) is admin. The group
/// is looked up in `/etc/group` once, now.
pub fn identify(config: &Config) -> Arc<dyn Fn(u32, u32, Option<i32>) -> Peer + Send + Sync> {
    let admin_gid = config.admin_group.as_ref().and_then(|g| {
        let etc = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let gid = resolve_group(g, &etc);
        if gid.is_none() {
            tracing::warn!(group = ?g, "admin_group not found in /etc/group; only root is admin");
        }
        gid
    });
    let config = config.clone();
    Arc::new(move |uid: u32, gid: u32, pid: Option<i32>| Peer {
        uid,
        gid,
        pid,
        app: config.app_of(uid),
        admin: uid == 0
            || admin_gid.is_some_and(|g| gid == g || supplementary_groups(pid).contains(&g)),
    })
}

/// Supplementary groups of a process, from `/proc/PID/status`, for the admin-group check. Read
/// at connect time: the group list of a live peer that connected a moment ago.
fn supplementary_groups(pid: Option<i32>) -> Vec<u32> {
    let Some(pid) = pid.filter(|p| *p > 0) else {
        return Vec::new();
    };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Removes the socket file when dropped: when roamd stops, also on an error after binding.
#[derive(Debug)]
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Accepts connections for ever, giving each an id and a task. `identify` turns peer
/// credentials (uid, gid, pid) into a [`Peer`].
async fn accept_loop(
    listener: UnixListener,
    identify: Arc<dyn Fn(u32, u32, Option<i32>) -> Peer + Send + Sync>,
    to_daemon: mpsc::Sender<FromClient>,
) {
    let mut next_id: ClientId = 1;
    loop {
        // A few connections per turn of the runtime, then the ones accepted get to run (a
        // connect-and-drop flood is read, refused and freed) before more are taken: without
        // this a flood is accepted faster than its tasks end, and they pile up (measured:
        // 17 MB of waiting tasks under `load-bench`'s flood).
        if next_id.is_multiple_of(ACCEPT_BATCH) {
            tokio::task::yield_now().await;
        }
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off through the runtime, never spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "SO_PEERCRED failed; connection refused");
                continue;
            }
        };
        let peer = identify(cred.uid(), cred.gid(), cred.pid());
        let client = next_id;
        next_id += 1;
        let span = tracing::info_span!("client", id = client, uid = peer.uid, app = %peer.app);
        let tx = to_daemon.clone();
        tokio::spawn(connection(Arc::new(stream), client, peer, tx).instrument(span));
    }
}

/// One connection until it said hello (or failed to): a connection that connects and drops,
/// or never speaks, costs this task and its socket only (no writer, no queue), so a flood of
/// them takes as little as possible from the subscribers' decisions.
async fn connection(
    stream: Arc<UnixStream>,
    client: ClientId,
    peer: Peer,
    to_daemon: mpsc::Sender<FromClient>,
) {
    let out = Outbox::new(stream.clone());
    // A connection that never says hello would hold its task for ever.
    let first = match tokio::time::timeout(HELLO_TIMEOUT, read_request(&stream)).await {
        Ok(r) => r,
        Err(_) => {
            refuse(
                &out,
                "bad_request",
                format!("no hello within {HELLO_TIMEOUT:?}"),
            );
            return;
        }
    };
    let hello = match first {
        Ok(Request::Hello { version }) if version == VERSION => version,
        Ok(Request::Hello { version }) => {
            refuse(
                &out,
                "version",
                format!(
                    "this agent speaks protocol version {VERSION}, not {version}; upgrade the client or the agent"
                ),
            );
            return;
        }
        Ok(_) => {
            refuse(
                &out,
                "bad_request",
                "the first message must be hello".into(),
            );
            return;
        }
        Err(e) => {
            refuse_frame(&out, e);
            return;
        }
    };
    tracing::debug!(version = hello, pid = peer.pid, "hello");
    let _ = out.send(
        proto::encode(&Reply::Hello {
            version: VERSION,
            agent: agent_name(),
            app: peer.app.clone(),
            uid: peer.uid,
            admin: peer.admin,
        })
        .into(),
    );

    // The reader runs as its own task so the daemon can stop it (a client that does not read
    // what it is sent is dropped whole).
    let reader_out = out.clone();
    let daemon = to_daemon.clone();
    let reader = tokio::spawn(
        async move {
            loop {
                match read_request(&stream).await {
                    Ok(Request::Hello { .. }) => {
                        refuse(&reader_out, "bad_request", "hello was already said".into());
                        break;
                    }
                    Ok(request) => {
                        if daemon
                            .send(FromClient::Request { client, request })
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(FrameError::Closed) => break,
                    Err(e) => {
                        refuse_frame(&reader_out, e);
                        break;
                    }
                }
            }
            let _ = daemon.send(FromClient::Gone { client }).await;
        }
        .in_current_span(),
    );
    let _ = to_daemon
        .send(FromClient::Connected {
            client,
            peer,
            out,
            reader: reader.abort_handle(),
        })
        .await;
}

/// `roamd VERSION`.
pub fn agent_name() -> String {
    format!("roamd {}", env!("CARGO_PKG_VERSION"))
}

fn refuse(out: &Outbox, code: &str, message: String) {
    tracing::info!(code, %message, "closing connection");
    let _ = out.send(
        proto::encode(&Reply::Error {
            id: None,
            code: code.into(),
            message,
        })
        .into(),
    );
}

fn refuse_frame(out: &Outbox, e: FrameError) {
    match e {
        FrameError::Closed | FrameError::Io(_) => {}
        FrameError::BadLength(_) => refuse(out, "bad_frame", e.to_string()),
        FrameError::BadMessage(_) => refuse(out, "bad_request", e.to_string()),
    }
}

async fn read_request(stream: &UnixStream) -> Result<Request, FrameError> {
    let mut prefix = [0; 4];
    match read_exact(stream, &mut prefix).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = proto::check_len(prefix)?;
    let mut body = vec![0; len];
    read_exact(stream, &mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// `read_exact` on a shared stream (the [`Outbox`] writes through the same one).
async fn read_exact(stream: &UnixStream, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        stream.readable().await?;
        match stream.try_read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Why a frame was not taken for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// [`CLIENT_QUEUE`] frames already wait for it: it does not read what it is sent.
    Full,
    /// Its connection is closed or broken (or [`Outbox::close`] was called).
    Closed,
}

/// Where a client's frames go. A frame is written at once, from the caller, when the socket
/// has room for it (the usual case: no task hop, no wait, so the first subscriber of a
/// decision has it before the next one's is even written); what does not fit waits in a
/// queue of at most [`CLIENT_QUEUE`] frames that a writer task of this client's own sends as
/// the client reads. So one client that does not read never holds up another: its queue
/// fills and [`Outbox::send`] says [`SendError::Full`].
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The stream's descriptor, written to directly when nothing waits (kept open by
    /// `stream`): one `send` and nothing else, not even tokio's readiness, whose memory is
    /// one more cache miss per client in a fan-out to a thousand.
    fd: std::os::fd::RawFd,
    stream: Arc<UnixStream>,
    /// The runtime the stream is registered with, where the writer task runs: the outbox is
    /// written to from the daemon's thread, and its stream belongs to [`ClientThread`]'s.
    runtime: tokio::runtime::Handle,
    queue: std::sync::Mutex<Queue>,
    /// Wakes the writer when the outbox is closed.
    closed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Arc<[u8]>>,
    /// Bytes of the front frame already written.
    written: usize,
    /// Whether a writer task is under way (it is while `frames` is not empty).
    writer: bool,
    closed: bool,
}

impl Outbox {
    /// The outbox of `stream`. Must be called within the tokio runtime `stream` is registered
    /// with: a frame that does not fit at once is written by a task on it.
    pub fn new(stream: Arc<UnixStream>) -> Outbox {
        Outbox {
            shared: Arc::new(Shared {
                fd: std::os::fd::AsRawFd::as_raw_fd(&*stream),
                stream,
                runtime: tokio::runtime::Handle::current(),
                queue: std::sync::Mutex::new(Queue::default()),
                closed: tokio::sync::Notify::new(),
            }),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `frame` (written now if the socket takes it, else queued). May be called from
    /// any thread: a writer task, when one is needed, runs on the stream's own runtime.
    pub fn send(&self, frame: Arc<[u8]>) -> Result<(), SendError> {
        let mut q = self.queue();
        if q.closed {
            return Err(SendError::Closed);
        }
        if !q.frames.is_empty() {
            if q.frames.len() >= CLIENT_QUEUE {
                return Err(SendError::Full);
            }
            q.frames.push_back(frame);
            return Ok(());
        }
        let written = match send_now(self.shared.fd, &frame) {
            Ok(n) if n == frame.len() => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                tracing::debug!(error = %e, "client write failed");
                q.closed = true;
                return Err(SendError::Closed);
            }
        };
        q.frames.push_back(frame);
        q.written = written;
        if !q.writer {
            q.writer = true;
            self.shared
                .runtime
                .spawn(flush(self.shared.clone()).in_current_span());
        }
        Ok(())
    }

    /// Drops what is queued and stops the writer; later sends fail. The socket closes when
    /// its reader is gone too.
    pub fn close(&self) {
        let mut q = self.queue();
        q.closed = true;
        q.frames.clear();
        drop(q);
        self.shared.closed.notify_one();
    }

    /// Frames waiting for the client to read.
    pub fn queued(&self) -> usize {
        self.queue().frames.len()
    }
}

/// One `send(2)` of `buf` on `fd`, never blocking and never raising SIGPIPE: the bytes the
/// socket took, or `WouldBlock` when it has no room (the writer task then waits through
/// tokio, whose first `try_write` finds the same and arms the readiness). An interrupted call
/// took nothing and counts as no room.
fn send_now(fd: std::os::fd::RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `fd` is the descriptor of a stream the caller's `Shared` holds open, and `buf`
    // is valid for `buf.len()` bytes for the duration of the call.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    match io::Error::last_os_error() {
        e if e.kind() == io::ErrorKind::Interrupted => Err(io::ErrorKind::WouldBlock.into()),
        e => Err(e),
    }
}

/// The writer: sends the queue as the socket makes room, until it is empty (then ends; the
/// next frame that does not fit starts another) or the outbox is closed.
async fn flush(shared: Arc<Shared>) {
    loop {
        let ready = tokio::select! {
            r = shared.stream.writable() => r,
            _ = shared.closed.notified() => return,
        };
        let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.closed {
            return;
        }
        if let Err(e) = ready {
            tracing::debug!(error = %e, "client write failed");
            q.closed = true;
            q.frames.clear();
            return;
        }
        while let Some(front) = q.frames.front().cloned() {
            match shared.stream.try_write(&front[q.written..]) {
                Ok(n) => {
                    q.written += n;
                    if q.written == front.len() {
                        q.frames.pop_front();
                        q.written = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "client write failed");
                    q.closed = true;
                    q.frames.clear();
                    return;
                }
            }
        }
        if q.frames.is_empty() {
            q.writer = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn pair() -> (Outbox, UnixStream) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        (Outbox::new(Arc::new(a)), b)
    }

    fn frame(i: u32, len: usize) -> Arc<[u8]> {
        let mut f = vec![(i % 251) as u8; len];
        f[..4].copy_from_slice(&i.to_be_bytes());
        f.into()
    }

    /// A client that does not read fills its socket, then its queue, and is refused with
    /// `Full`, while another client's frames keep going out at once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_client_that_does_not_read_is_full_and_holds_up_no_other() {
        let (stuck, _stuck_peer) = pair();
        let (live, mut live_peer) = pair();
        let mut sent = 0u32;
        let full = loop {
            match stuck.send(frame(sent, 4096)) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(live.send(frame(sent, 64)).is_ok());
            let mut got = [0u8; 64];
            // The live client has each frame at once: nothing queued behind the stuck one.
            assert_eq!(live.queued(), 0);
            live_peer.read_exact(&mut got).await.expect("live frame");
            assert_eq!(got[..4], sent.to_be_bytes());
            assert!(sent < 100_000, "never full");
        };
        assert_eq!(full, SendError::Full);
        assert_eq!(stuck.queued(), CLIENT_QUEUE);
    }

    /// What does not fit in the socket is queued and reaches a client that reads late, whole
    /// and in order.
    #[tokio::test(flavor = "current_thread")]
    async fn queued_frames_arrive_in_order_when_the_client_reads() {
        let (out, mut peer) = pair();
        let n = 200u32;
        for i in 0..n {
            out.send(frame(i, 8192)).expect("queued");
        }
        assert!(
            out.queued() > 0,
            "the socket took 1.6 MB: test proves nothing"
        );
        for i in 0..n {
            let mut got = vec![0u8; 8192];
            peer.read_exact(&mut got).await.expect("frame");
            assert_eq!(got[..], frame(i, 8192)[..], "frame {i}");
        }
        assert_eq!(out.queued(), 0);
    }

    /// A closed outbox drops its queue and refuses more; the client sees end of stream once
    /// the socket's last owner is gone.
    #[tokio::test(flavor = "current_thread")]
    async fn close_drops_the_queue_and_the_writer() {
        let (out, mut peer) = pair();
        let mut sent = 0;
        while out.queued() == 0 {
            out.send(frame(0, 8192)).expect("queued");
            sent += 8192;
        }
        out.close();
        assert_eq!(out.queued(), 0);
        assert_eq!(out.send(frame(1, 8)), Err(SendError::Closed));
        // Let the writer see the close and let go of the socket.
        tokio::task::yield_now().await;
        drop(out);
        let mut rest = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            peer.read_to_end(&mut rest),
        )
        .await
        .expect("the socket was not closed")
        .expect("read");
        assert!(rest.len() < sent, "the queue was sent after all");
    }
}

//! roam's C ABI (`libroam.so`, `libroam.a`, `roam.h`): name-based file descriptors whose
//! sessions survive handover.
//!
//! `roam_connect("chat.example.com:443", NULL)` returns a descriptor the app reads, writes,
//! polls and closes like a connected stream socket. It is one end of an `AF_UNIX`
//! `SOCK_STREAM` socketpair; the library pumps the other end to and from a roam
//! [`roam_sdk::Session`], which moves between the device's interfaces as the policy says. Every
//! event loop that speaks descriptors (epoll, kqueue, libuv, asyncio, Java NIO) can use it.
//!
//! - [`roam_connect`], [`roam_listen`], [`roam_accept`]: descriptors for sessions and
//!   listeners; options as JSON (unknown keys are errors).
//! - [`roam_paths`]: a session's paths (the multipath getsockname/getpeername);
//!   [`roam_events_fd`]: a descriptor with one JSON line per session event.
//! - [`roam_last_error`]: what the calling thread's last failing call said.
//!
//! Every entry point returns `-1` with `errno` set and a message naming the cause on failure,
//! never unwinds a panic into C (one guard, [`guard::entry`]), and is thread-safe. The
//! library runs one tokio runtime per process, started by the first call; its threads make
//! every socket, so they live in the network namespace of the thread that made the first call.
//!
//! Fork: the child of `fork(2)` has none of the runtime's threads. A child that calls roam gets
//! a runtime and a descriptor table of its own on its first call; descriptors inherited from
//! the parent are not roam descriptors there (`EBADF` from `roam_paths`, `roam_events_fd`,
//! `roam_accept`), while reading and writing them still reaches the parent's session (the
//! socket is shared, as any socket is across fork) and the session lasts until every copy is
//! closed. Every descriptor is close-on-exec, so an exec'd child holds none. Fork while
//! another thread is inside a roam call only from a thread that will exec (the library's
//! locks may be held in the child).
//!
//! Layout: [`guard`] (errors, errno, the panic guard), [`options`] (the JSON), `runtime` (the
//! one runtime), `registry` (which descriptors are roam's), `sock` (socketpairs), `pump`
//! (descriptor ⇄ session), `listen` (listener descriptors), `json` (what descriptors say).

use std::ffi::{CStr, c_char, c_int};
use std::os::fd::RawFd;
use std::time::Duration;

pub mod guard;
mod json;
mod listen;
pub mod options;
mod pump;
mod registry;
mod runtime;
mod sock;

use guard::{FfiError, entry};
use options::{ConnectOptions, ListenOptions};
use registry::Kind;

/// How long past its connect timeout `roam_connect` waits for the SDK before it gives up
/// itself: the SDK's own timeout covers resolving, racing and the handshake.
const CONNECT_GRACE: Duration = Duration::from_secs(2);

/// How long `roam_paths` and `roam_events_fd` wait for the session's pump to answer.
const PUMP_ANSWER: Duration = Duration::from_secs(5);

/// The text behind `p`: `None` for NULL, `EINVAL` when it is not UTF-8.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the call.
unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, FfiError> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map(Some)
        .map_err(|e| FfiError::invalid(format!("`{what}` is not UTF-8: {e}")))
}

/// Copies `s` and a NUL into the app's buffer; returns `s`'s length. A NULL buffer of length 0
/// asks for the length only.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes of writing.
unsafe fn copy_out(s: &str, buf: *mut c_char, len: usize, what: &str) -> Result<c_int, FfiError> {
    let n = c_int::try_from(s.len())
        .map_err(|_| FfiError::new(libc::EOVERFLOW, format!("`{what}` would be too long")))?;
    if buf.is_null() {
        if len == 0 {
            return Ok(n);
        }
        return Err(FfiError::invalid(format!(
            "`{what}` is NULL with a length of {len}"
        )));
    }
    if s.len() + 1 > len {
        return Err(FfiError::new(
            libc::ERANGE,
            format!("`{what}` holds {len} bytes; {} are needed", s.len() + 1),
        ));
    }
    // SAFETY: `buf` is valid for `len` > `s.len()` bytes (the caller's contract, checked above).
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), s.len());
        *buf.add(s.len()) = 0;
    }
    Ok(n)
}

/// Runs `fut` on the runtime and waits for it on this (the app's) thread.
fn wait<T: Send + 'static>(
    h: &tokio::runtime::Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, FfiError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    h.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| {
        FfiError::new(
            libc::EIO,
            "internal error: the runtime dropped the call (a panic inside roam)",
        )
    })
}

/// Opens a session to `name_port` (`host:port`, `[v6]:port`) and returns a descriptor for
/// it: read, write, poll and close it like a connected stream socket; the session moves
/// between interfaces underneath. Blocks until connected or failed (at most the connect
/// timeout and 2 s).
///
/// `options_json`: NULL for the defaults, or a JSON object with any of: `transport` (`auto`,
/// `quic`, `mptcp`, `tcp-resume`), `ca` (a PEM file of CAs to trust instead of the system's),
/// `app` (the app id), `policy` (policy text) or `policy_file`, `alpn` (a list of app
/// protocols), `multipath` (`off`, `handover`, `interactive`, `aggregate`),
/// `decision_source` (`auto`, `embedded`, `roamd`), `roamd_socket`, `server_name` (the name
/// the certificate must carry), `connect_timeout_ms` (default 10000). Unknown keys are
/// errors.
///
/// Returns the descriptor, or -1 with `errno` (`EINVAL` bad input, `ENOENT` the name does
/// not resolve, `ECONNREFUSED`, `ETIMEDOUT`, `EPROTO` TLS, `ENETUNREACH` no permitted path,
/// ...) and `roam_last_error()` saying what failed.
///
/// Closing the descriptor ends the session: bytes written before are still sent; for the
/// peer's last bytes, `shutdown(fd, SHUT_WR)` and read to the end first. Writing after the
/// session ended raises `SIGPIPE`, as on any socket: ignore it, or write with
/// `send(fd, ..., MSG_NOSIGNAL)`, and handle `EPIPE`.
///
/// # Safety
/// `name_port` and `options_json` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn roam_connect(
    name_port: *const c_char,
    options_json: *const c_char,
) -> c_int {
    entry("roam_connect", || {
        // SAFETY: the caller's contract.
        let target = unsafe { text(name_port, "name_port") }?
            .ok_or_else(|| FfiError::invalid("`name_port` is NULL; pass \"host:port\""))?
            .to_owned();
        // SAFETY: the caller's contract.
        let opts = ConnectOptions::parse(unsafe { text(options_json, "options_json") }?)?;
        let builder = opts.builder()?;
        let h = runtime::handle()?;
        let limit = opts.connect_timeout + CONNECT_GRACE;
        let t = target.clone();
        let r = wait(&h, async move {
            tokio::time::timeout(limit, builder.connect(&t)).await
        })?;
        let session = match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let e = FfiError::from(e);
                return Err(FfiError::new(
                    e.errno,
                    format!("connecting to `{target}`: {}", e.message),
                ));
            }
            Err(_) => {
                return Err(FfiError::new(
                    libc::ETIMEDOUT,
                    format!("connecting to `{target}` took longer than {limit:?}"),
                ));
            }
        };
        pump::start(&h, session)
    })
}

/// Listens on `addr_port` (an IP address and port: `0.0.0.0:4433`, `[::]:4433`; port 0 picks
/// one) for roam sessions, QUIC on UDP and MPTCP/TCP on the same TCP port, and returns a
/// descriptor that is readable while sessions wait for `roam_accept`. Closing it stops the
/// listener and drops the sessions no one took.
///
/// `options_json`: `cert` (a PEM file, the certificate chain, leaf first) and `key` (a PEM
/// file, its private key) are required; `alpn` (a list of app protocols) is optional.
///
/// # Safety
/// `addr_port` and `options_json` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn roam_listen(
    addr_port: *const c_char,
    options_json: *const c_char,
) -> c_int {
    entry("roam_listen", || {
        // SAFETY: the caller's contract.
        let a = unsafe { text(addr_port, "addr_port") }?
            .ok_or_else(|| FfiError::invalid("`addr_port` is NULL; pass \"0.0.0.0:4433\""))?;
        let addr: std::net::SocketAddr = a.parse().map_err(|_| {
            FfiError::invalid(format!(
                "`{a}` is not an IP address and port; write 0.0.0.0:4433 or [::]:4433"
            ))
        })?;
        // SAFETY: the caller's contract.
        let opts = ListenOptions::parse(unsafe { text(options_json, "options_json") }?)?;
        let tls = opts.server_tls()?;
        let h = runtime::handle()?;
        let listener =
            wait(&h, async move { roam_sdk::Listener::bind(addr, tls) })?.map_err(|e| {
                let e = FfiError::from(e);
                FfiError::new(e.errno, format!("listening on {addr}: {}", e.message))
            })?;
        listen::start(&h, listener)
    })
}

/// Takes the next session from the listener descriptor `listen_fd`: blocks until one arrives
/// (or, when `listen_fd` is non-blocking, fails with `EAGAIN`), and returns its descriptor.
///
/// `peer_json` (may be NULL) receives the peer as JSON, NUL-terminated:
/// `{"peer_addrs":["198.18.0.2:40000"],"app":"com.example.chat","transport":"quic"}`. When
/// it is too short the call fails with `ERANGE`, saying the size needed, and the session
/// stays waiting.
///
/// # Safety
/// `peer_json` is NULL or valid for `len` bytes of writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn roam_accept(
    listen_fd: c_int,
    peer_json: *mut c_char,
    len: usize,
) -> c_int {
    entry("roam_accept", || {
        let shared = match registry::lookup(listen_fd)? {
            Kind::Listener(s) => s,
            Kind::Session(_) | Kind::Finished(_) => {
                return Err(FfiError::invalid(format!(
                    "descriptor {listen_fd} is a session, not a listener"
                )));
            }
        };
        let (session, _) = listen::accept(listen_fd, &shared, |peer| {
            if peer_json.is_null() {
                return Ok(());
            }
            // SAFETY: the caller's contract.
            unsafe { copy_out(peer, peer_json, len, "peer_json") }.map(|_| ())
        })?;
        pump::start(&runtime::handle()?, session)
    })
}

/// The session's current paths as JSON in `json` (NUL-terminated); returns its length. With
/// `json` NULL and `len` 0, returns the length only. `ERANGE` when `len` is too small. After
/// both directions of the session ended (and until the descriptor is closed): its last paths.
///
/// `{"transport":"quic","local_addrs":["198.18.0.2:40000"],"peer_addrs":["198.19.0.1:4433"],
/// "paths":[{"id":0,"local":...,"remote":...,"interface":"wlan0","backup":false,
/// "rtt_us":800,"bytes_sent":...,"bytes_acked":null,"bytes_received":...}]}`: for MPTCP one
/// entry per subflow (AF_MULTIPATH's address lists).
///
/// # Safety
/// `json` is NULL or valid for `len` bytes of writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn roam_paths(fd: c_int, json: *mut c_char, len: usize) -> c_int {
    entry("roam_paths", || {
        let text: String = match registry::lookup(fd)? {
            Kind::Finished(paths) => paths.to_string(),
            _ => {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                match ask(fd, pump::Request::Paths(tx)).and_then(|()| answer(fd, rx)) {
                    Ok(text) => text,
                    // The session finished while the request was on its way.
                    Err(e) => match registry::lookup(fd)? {
                        Kind::Finished(paths) => paths.to_string(),
                        _ => return Err(e),
                    },
                }
            }
        };
        // SAFETY: the caller's contract.
        unsafe { copy_out(&text, json, len, "json") }
    })
}

/// A new descriptor that becomes readable with one JSON line per event of the session behind
/// `fd`: `{"event":"path_changed","from":{"interface":"wlan0","local":"198.18.0.2"},
/// "to":{...},"reason":"link lost"}`, `degraded`, `recovered`, `decision_updated`,
/// `transport_chosen`, ... The connect-time events come first; the last line is
/// `{"event":"session_ended","why":...}`, then end-of-stream. Close it when done; each call
/// gives an independent descriptor.
#[unsafe(no_mangle)]
pub extern "C" fn roam_events_fd(fd: c_int) -> c_int {
    entry("roam_events_fd", || {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        ask(fd, pump::Request::Events(tx))?;
        let (events, ended) = answer(fd, rx)?;
        let h = runtime::handle()?;
        let (app, lib) = sock::pair()?;
        let lib = {
            let _in_runtime = h.enter();
            tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(lib))
                .map_err(|e| FfiError::os("registering the events descriptor", &e))?
        };
        h.spawn(pump::forward_events(events, ended, lib));
        Ok(std::os::fd::IntoRawFd::into_raw_fd(app))
    })
}

/// What the calling thread's last failing roam call said (`roam: <call>: <cause>`), or an
/// empty string. Never NULL; valid until the thread's next failing roam call. A successful
/// call leaves it as it was (as with `errno`).
#[unsafe(no_mangle)]
pub extern "C" fn roam_last_error() -> *const c_char {
    guard::last_error()
}

/// Sends `req` to the pump of the session behind `fd`.
fn ask(fd: RawFd, req: pump::Request) -> Result<(), FfiError> {
    match registry::lookup(fd)? {
        Kind::Session(tx) => tx.send(req).map_err(|_| ended(fd)),
        Kind::Finished(_) => Err(ended(fd)),
        Kind::Listener(_) => Err(FfiError::invalid(format!(
            "descriptor {fd} is a listener, not a session"
        ))),
    }
}

/// The pump's answer to a request about `fd`.
fn answer<T>(fd: RawFd, rx: std::sync::mpsc::Receiver<T>) -> Result<T, FfiError> {
    rx.recv_timeout(PUMP_ANSWER).map_err(|e| match e {
        std::sync::mpsc::RecvTimeoutError::Timeout => FfiError::new(
            libc::ETIMEDOUT,
            format!("descriptor {fd}: the session did not answer within {PUMP_ANSWER:?}"),
        ),
        std::sync::mpsc::RecvTimeoutError::Disconnected => ended(fd),
    })
}

fn ended(fd: RawFd) -> FfiError {
    FfiError::new(
        libc::EBADF,
        format!("descriptor {fd}: its session has ended (both directions)"),
    )
}

/// How many roam descriptors (sessions and listeners whose pumps run) the process holds: for
/// leak checks from Rust.
pub fn live_descriptors() -> usize {
    registry::len()
}

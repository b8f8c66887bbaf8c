//! A blocking client of the protocol, for `roamctl` and tests; [`crate::tokio_client`] is the
//! async one the SDK uses.
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::proto::{self, FrameError, Reply, Request, VERSION};

pub use crate::{DEFAULT_SOCKET, socket_path};

/// What went wrong talking to roamd, phrased for the person running the command.
#[derive(Debug)]
pub enum ClientError {
    /// No agent answers at that path.
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The agent refused the request.
    Refused {
        /// Machine-readable code.
        code: String,
        /// The agent's message.
        message: String,
    },
    /// The connection broke or the agent sent something unexpected.
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { path, source } => write!(
                f,
                "cannot connect to roamd at {}: {source}; is roamd running? (--socket PATH or \
                 ROAM_SOCKET choose another socket)",
                path.display()
            ),
            ClientError::Refused { code, message } => {
                write!(f, "roamd refused: {message} ({code})")
            }
            ClientError::Protocol(m) => write!(f, "talking to roamd: {m}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Protocol(match e {
            FrameError::Closed => "roamd closed the connection".into(),
            other => other.to_string(),
        })
    }
}

impl From<ClientError> for io::Error {
    fn from(e: ClientError) -> io::Error {
        io::Error::other(e.to_string())
    }
}

/// One connection to roamd, after the hello.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    next_id: u64,
    pending: VecDeque<Reply>,
    /// The agent's hello: who it thinks we are.
    pub hello: Reply,
}

impl Client {
    /// Connects and says hello. Replies wait at most `timeout` (none: for ever).
    pub fn connect(path: &Path, timeout: Option<Duration>) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        stream
            .set_read_timeout(timeout)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut c = Client {
            stream,
            next_id: 1,
            pending: VecDeque::new(),
            hello: Reply::Ok { id: 0 },
        };
        c.send(&Request::Hello { version: VERSION })?;
        c.hello = expect_hello(c.read()?)?;
        Ok(c)
    }

    /// Sends one request (built around a fresh id) and waits for its reply; `update` events
    /// that arrive meanwhile are kept for [`Client::next_event`]. An `error` reply is returned
    /// as [`ClientError::Refused`].
    pub fn call(&mut self, build: impl FnOnce(u64) -> Request) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&build(id))?;
        loop {
            let reply = self.read()?;
            match reply {
                Reply::Update(_) => self.pending.push_back(reply),
                Reply::Error { code, message, .. } => {
                    return Err(ClientError::Refused { code, message });
                }
                r if r.id() == Some(id) => return Ok(r),
                other => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected reply to request {id}: {other:?}"
                    )));
                }
            }
        }
    }

    /// The next pushed event (an `update`, or an `error` before the agent closes).
    pub fn next_event(&mut self) -> Result<Reply, ClientError> {
        match self.pending.pop_front() {
            Some(r) => Ok(r),
            None => self.read(),
        }
    }

    /// The connection's socket: `try_clone` it to `shutdown` the connection from another
    /// thread while this client waits in [`Client::next_event`] (which then fails).
    pub fn socket(&self) -> &UnixStream {
        &self.stream
    }

    /// Changes how long a read may wait (none: for ever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        proto::write_frame(&mut self.stream, req).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn read(&mut self) -> Result<Reply, ClientError> {
        proto::read_frame(&mut self.stream).map_err(|e| match e {
            FrameError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                ClientError::Protocol("roamd did not answer in time".into())
            }
            other => other.into(),
        })
    }
}

/// The agent's first reply must be its hello; an error there is a refusal.
pub(crate) fn expect_hello(first: Reply) -> Result<Reply, ClientError> {
    match first {
        h @ Reply::Hello { .. } => Ok(h),
        Reply::Error { code, message, .. } => Err(ClientError::Refused { code, message }),
        other => Err(ClientError::Protocol(format!(
            "expected hello, got {other:?}"
        ))),
    }
}

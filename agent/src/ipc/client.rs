//! A blocking client of the protocol, for `roamctl` and tests. (The SDK has its own async one.)
use std::collections::VecDeque;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::proto::{self, FrameError, Reply, Request, VERSION};

/// Where roamd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/roam/roamd.sock";

/// The socket path: the flag, else `ROAM_SOCKET`, else [`DEFAULT_SOCKET`].
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ROAM_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// What went wrong talking to roamd, phrased for the person running the command.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent answers at that path.
    #[error(
        "cannot connect to roamd at {path}: {source}; is roamd running? (--socket PATH or ROAM_SOCKET choose another socket)"
    )]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The agent refused the request.
    #[error("roamd refused: {message} ({code})")]
    Refused {
        /// Machine-readable code.
        code: String,
        /// The agent's message.
        message: String,
    },
    /// The connection broke or the agent sent something unexpected.
    #[error("talking to roamd: {0}")]
    Protocol(String),
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
        c.hello = match c.read()? {
            h @ Reply::Hello { .. } => h,
            Reply::Error { code, message, .. } => {
                return Err(ClientError::Refused { code, message });
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected hello, got {other:?}"
                )));
            }
        };
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
                r if reply_id(&r) == Some(id) => return Ok(r),
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

fn reply_id(r: &Reply) -> Option<u64> {
    match r {
        Reply::Ok { id }
        | Reply::Subscribed { id, .. }
        | Reply::Status { id, .. }
        | Reply::Links { id, .. }
        | Reply::Decision { id, .. }
        | Reply::Reloaded { id, .. } => Some(*id),
        Reply::Error { id, .. } => *id,
        Reply::Hello { .. } | Reply::Update(_) => None,
    }
}

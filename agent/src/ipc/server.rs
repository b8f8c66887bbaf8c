//! The listening side of the protocol: accept, identify the peer (`SO_PEERCRED`), read frames,
//! write frames. What a request means, and who may make it, is decided by the core
//! (`roam_agent_core::clients`); this file only moves frames and drops a connection that breaks the protocol.
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
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

/// How long a new connection has to say hello.
pub const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How many frames may wait for a slow client before it is dropped.
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
        tx: mpsc::Sender<Arc<[u8]>>,
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
/// (who may do what is decided per request from `SO_PEERCRED`, not by file modes).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
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
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
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
pub async fn accept_loop(
    listener: UnixListener,
    identify: Arc<dyn Fn(u32, u32, Option<i32>) -> Peer + Send + Sync>,
    to_daemon: mpsc::Sender<FromClient>,
) {
    let mut next_id: ClientId = 1;
    loop {
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
        tokio::spawn(connection(stream, client, peer, tx).instrument(span));
    }
}

async fn connection(
    stream: UnixStream,
    client: ClientId,
    peer: Peer,
    to_daemon: mpsc::Sender<FromClient>,
) {
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Arc<[u8]>>(CLIENT_QUEUE);
    tokio::spawn(writer(wr, rx).in_current_span());

    // A connection that never says hello would hold its task for ever.
    let first = match tokio::time::timeout(HELLO_TIMEOUT, read_request(&mut rd)).await {
        Ok(r) => r,
        Err(_) => {
            refuse(
                &tx,
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
                &tx,
                "version",
                format!(
                    "this agent speaks protocol version {VERSION}, not {version}; upgrade the client or the agent"
                ),
            );
            return;
        }
        Ok(_) => {
            refuse(&tx, "bad_request", "the first message must be hello".into());
            return;
        }
        Err(e) => {
            refuse_frame(&tx, e);
            return;
        }
    };
    tracing::debug!(version = hello, pid = peer.pid, "hello");
    let _ = tx.try_send(
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
    let reader_tx = tx.clone();
    let daemon = to_daemon.clone();
    let reader = tokio::spawn(
        async move {
            loop {
                match read_request(&mut rd).await {
                    Ok(Request::Hello { .. }) => {
                        refuse(&reader_tx, "bad_request", "hello was already said".into());
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
                        refuse_frame(&reader_tx, e);
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
            tx,
            reader: reader.abort_handle(),
        })
        .await;
}

/// `roamd VERSION`.
pub fn agent_name() -> String {
    format!("roamd {}", env!("CARGO_PKG_VERSION"))
}

fn refuse(tx: &mpsc::Sender<Arc<[u8]>>, code: &str, message: String) {
    tracing::info!(code, %message, "closing connection");
    let _ = tx.try_send(
        proto::encode(&Reply::Error {
            id: None,
            code: code.into(),
            message,
        })
        .into(),
    );
}

fn refuse_frame(tx: &mpsc::Sender<Arc<[u8]>>, e: FrameError) {
    match e {
        FrameError::Closed | FrameError::Io(_) => {}
        FrameError::BadLength(_) => refuse(tx, "bad_frame", e.to_string()),
        FrameError::BadMessage(_) => refuse(tx, "bad_request", e.to_string()),
    }
}

async fn read_request(rd: &mut OwnedReadHalf) -> Result<Request, FrameError> {
    let mut prefix = [0; 4];
    match rd.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = proto::check_len(prefix)?;
    let mut body = vec![0; len];
    rd.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

async fn writer(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Arc<[u8]>>) {
    while let Some(frame) = rx.recv().await {
        if let Err(e) = wr.write_all(&frame).await {
            tracing::debug!(error = %e, "client write failed");
            return;
        }
    }
    let _ = wr.shutdown().await;
}

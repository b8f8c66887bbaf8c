//! An async client of the protocol (tokio). Reading is cancel-safe: [`AsyncClient::next`] can
//! sit in a `select!` next to other work (a channel of path reports) without losing half a
//! frame when the other branch wins.
use std::collections::VecDeque;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::client::ClientError;
use crate::proto::{self, FrameError, Reply, Request, VERSION};

/// One connection to roamd, after the hello.
#[derive(Debug)]
pub struct AsyncClient {
    stream: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
    pending: VecDeque<Reply>,
    /// The agent's hello: who it thinks we are (app id from our uid).
    pub hello: Reply,
}

impl AsyncClient {
    /// Connects to `path` and says hello.
    pub async fn connect(path: &Path) -> Result<AsyncClient, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let mut c = AsyncClient {
            stream,
            buf: Vec::with_capacity(4096),
            next_id: 1,
            pending: VecDeque::new(),
            hello: Reply::Ok { id: 0 },
        };
        c.write(&Request::Hello { version: VERSION }).await?;
        c.hello = crate::client::expect_hello(c.read().await?)?;
        Ok(c)
    }

    /// Sends one request built around a fresh id and returns the id without waiting: its
    /// reply comes through [`AsyncClient::next`].
    pub async fn send(&mut self, build: impl FnOnce(u64) -> Request) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.write(&build(id)).await?;
        Ok(id)
    }

    /// Sends one request and waits for its reply; `update`s and replies to other requests
    /// that arrive meanwhile are kept for [`AsyncClient::next`]. An `error` reply to this
    /// request is [`ClientError::Refused`].
    pub async fn call(&mut self, build: impl FnOnce(u64) -> Request) -> Result<Reply, ClientError> {
        let id = self.send(build).await?;
        // Bounded: the agent answers in request order, so at most what was already in flight
        // plus the updates pushed meanwhile (it drops a client with 256 frames queued).
        for _ in 0..4096 {
            match self.read().await? {
                // An error without an id comes before the agent closes the connection.
                Reply::Error {
                    id: eid,
                    code,
                    message,
                } if eid.is_none() || eid == Some(id) => {
                    return Err(ClientError::Refused { code, message });
                }
                r if r.id() == Some(id) => return Ok(r),
                other => self.pending.push_back(other),
            }
        }
        Err(ClientError::Protocol(format!(
            "no reply to request {id} among 4096 frames"
        )))
    }

    /// The next frame the agent sent that nobody waited for: a pushed `update`, the reply to
    /// a request made with [`AsyncClient::send`], or an `error` before the agent closes.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Result<Reply, ClientError> {
        match self.pending.pop_front() {
            Some(r) => Ok(r),
            None => self.read().await,
        }
    }

    async fn write(&mut self, req: &Request) -> Result<(), ClientError> {
        self.stream
            .write_all(&proto::encode(req))
            .await
            .map_err(|e| ClientError::Protocol(format!("sending to roamd: {e}")))
    }

    /// Cancel-safe: bytes read are kept in `buf` until a whole frame is there.
    async fn read(&mut self) -> Result<Reply, ClientError> {
        loop {
            if let Some(r) = proto::take_frame(&mut self.buf)? {
                return Ok(r);
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(FrameError::from)?;
            if n == 0 {
                return Err(FrameError::Closed.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Update;
    use roam_policy::{Decision, MultipathMode};
    use tokio::net::UnixListener;

    /// A one-connection agent that answers hello, then pushes an update before the reply to
    /// the first request, in two halves with a pause between.
    #[tokio::test]
    async fn replies_and_pushed_updates_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("roam-ipc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let agent = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let next = async |s: &mut UnixStream, buf: &mut Vec<u8>| loop {
                if let Some(r) = proto::take_frame::<Request>(buf).unwrap() {
                    return r;
                }
                assert!(s.read_buf(buf).await.unwrap() > 0);
            };
            assert_eq!(next(&mut s, &mut buf).await, Request::Hello { version: 1 });
            let hello = Reply::Hello {
                version: 1,
                agent: "test".into(),
                app: "uid:0".into(),
                uid: 0,
                admin: true,
            };
            s.write_all(&proto::encode(&hello)).await.unwrap();
            let Request::Status { id } = next(&mut s, &mut buf).await else {
                panic!("expected status")
            };
            let update = proto::encode(&Reply::Update(Update {
                decision: Decision {
                    app: None,
                    multipath: MultipathMode::Handover,
                    paths: vec![],
                    explain: vec![],
                },
                interfaces: vec![],
                flow_thresholds: None,
            }));
            let (a, b) = update.split_at(7);
            s.write_all(a).await.unwrap();
            s.flush().await.unwrap();
            tokio::task::yield_now().await;
            s.write_all(b).await.unwrap();
            s.write_all(&proto::encode(&Reply::Ok { id }))
                .await
                .unwrap();
        });
        let mut c = AsyncClient::connect(&path).await.unwrap();
        assert!(matches!(c.hello, Reply::Hello { .. }));
        let r = c.call(|id| Request::Status { id }).await.unwrap();
        assert_eq!(r, Reply::Ok { id: 1 });
        assert!(matches!(c.next().await.unwrap(), Reply::Update(_)));
        agent.await.unwrap();
        assert!(matches!(
            c.next().await,
            Err(ClientError::Protocol(m)) if m.contains("closed")
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

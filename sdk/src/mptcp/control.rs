//! Subflow control through roamd: opening, closing and re-prioritising MPTCP subflows needs
//! CAP_NET_ADMIN (the userspace path manager, generic netlink `mptcp_pm`, by connection
//! token), so an app asks the agent. [`PathControl`] is the seam; [`Roamd`] speaks roamd's IPC
//! protocol (agent/PROTOCOL.md: 4-byte big-endian length, one JSON object per frame).
//!
//! The requests (new in protocol version 1, for roamd to implement; roamd must accept them only
//! for tokens the same client registered with `register_mptcp`):
//!
//! | type | fields | reply |
//! | --- | --- | --- |
//! | `mptcp_subflow_create` | `id`, `token` (u32), `local` (`"ip:port"`, port 0: any), `remote` (`"ip:port"`), `backup` (bool) | `ok {id}` |
//! | `mptcp_subflow_destroy` | `id`, `token`, `local` (`"ip:port"`), `remote` (`"ip:port"`) | `ok {id}` |
//! | `mptcp_subflow_set_backup` | `id`, `token`, `local`, `remote`, `backup` (bool) | `ok {id}` |
//!
//! Errors: `denied` (not this client's token), `not_found` (no such connection or subflow),
//! `failed` (the kernel refused; `message` has its errno).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::error::{Error, Result};

/// roamd's default socket (`ROAM_SOCKET` overrides it).
pub const DEFAULT_SOCKET: &str = "/run/roam/roamd.sock";

/// One change to an MPTCP connection's subflows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathRequest {
    /// Open a subflow from `local` to `remote` (`ip mptcp subflow` by the userspace PM).
    Open {
        /// The connection token ([`crate::Session::mptcp_token`]).
        token: u32,
        /// The local address (port 0: the kernel picks).
        local: SocketAddr,
        /// The remote address.
        remote: SocketAddr,
        /// Open it as a backup (MP_PRIO).
        backup: bool,
    },
    /// Close the subflow with these addresses.
    Close {
        /// The connection token.
        token: u32,
        /// Its local address and port.
        local: SocketAddr,
        /// Its remote address and port.
        remote: SocketAddr,
    },
    /// Set or clear the backup flag of the subflow with these addresses.
    SetBackup {
        /// The connection token.
        token: u32,
        /// Its local address and port.
        local: SocketAddr,
        /// Its remote address and port.
        remote: SocketAddr,
        /// The new flag.
        backup: bool,
    },
}

impl PathRequest {
    /// roamd's request `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            PathRequest::Open { .. } => "mptcp_subflow_create",
            PathRequest::Close { .. } => "mptcp_subflow_destroy",
            PathRequest::SetBackup { .. } => "mptcp_subflow_set_backup",
        }
    }

    /// The request as roamd's JSON object with request id `id`.
    pub fn to_json(&self, id: u64) -> Value {
        match self {
            PathRequest::Open {
                token,
                local,
                remote,
                backup,
            } => json!({"type": self.kind(), "id": id, "token": token,
                        "local": local.to_string(), "remote": remote.to_string(), "backup": backup}),
            PathRequest::Close {
                token,
                local,
                remote,
            } => json!({"type": self.kind(), "id": id, "token": token,
                        "local": local.to_string(), "remote": remote.to_string()}),
            PathRequest::SetBackup {
                token,
                local,
                remote,
                backup,
            } => json!({"type": self.kind(), "id": id, "token": token,
                        "local": local.to_string(), "remote": remote.to_string(), "backup": backup}),
        }
    }
}

/// A future a [`PathControl`] returns.
pub type ControlFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Something that can change an MPTCP connection's subflows on the app's behalf.
pub trait PathControl: Send + Sync + std::fmt::Debug + 'static {
    /// Carries out `req`.
    fn request(&self, req: PathRequest) -> ControlFuture<'_>;
}

/// roamd over its Unix socket, one connection per request.
#[derive(Debug, Clone)]
pub struct Roamd {
    socket: PathBuf,
}

impl Default for Roamd {
    fn default() -> Self {
        Roamd::from_env()
    }
}

impl Roamd {
    /// The socket named by `ROAM_SOCKET`, else [`DEFAULT_SOCKET`].
    pub fn from_env() -> Roamd {
        Roamd {
            socket: std::env::var_os("ROAM_SOCKET")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        }
    }

    /// roamd at `socket`.
    pub fn at(socket: impl Into<PathBuf>) -> Roamd {
        Roamd {
            socket: socket.into(),
        }
    }

    /// Registers an MPTCP connection token with roamd (`register_mptcp`).
    pub async fn register_mptcp(&self, token: u32) -> Result<()> {
        self.call(
            "register_mptcp",
            json!({"type": "register_mptcp", "id": 1, "token": token}),
        )
        .await
    }

    async fn call(&self, what: &str, req: Value) -> Result<()> {
        let path = self.socket.display().to_string();
        let needed = |detail: String| Error::AgentRequired {
            what: what.to_owned(),
            detail,
        };
        let mut s = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| needed(format!("no roamd at {path}: {e}")))?;
        let io = |e: std::io::Error| needed(format!("talking to roamd at {path}: {e}"));
        send(&mut s, &json!({"type": "hello", "version": 1}))
            .await
            .map_err(io)?;
        let hello = recv(&mut s).await.map_err(io)?;
        if hello["type"] != "hello" {
            return Err(needed(format!(
                "roamd at {path} did not say hello: {hello}"
            )));
        }
        send(&mut s, &req).await.map_err(io)?;
        // Pushed updates may come first; bounded by what one request can provoke.
        for _ in 0..16 {
            let reply = recv(&mut s).await.map_err(io)?;
            match reply["type"].as_str() {
                Some("ok") => return Ok(()),
                Some("update") => continue,
                Some("error") => {
                    let code = reply["code"].as_str().unwrap_or("?").to_owned();
                    let message = reply["message"].as_str().unwrap_or("").to_owned();
                    if code == "bad_request" {
                        return Err(needed(format!(
                            "roamd at {path} does not know `{what}` ({message}); it needs the \
                             request documented in roam::mptcp::control"
                        )));
                    }
                    return Err(Error::Agent {
                        what: what.to_owned(),
                        code,
                        message,
                    });
                }
                _ => return Err(needed(format!("unexpected reply from roamd: {reply}"))),
            }
        }
        Err(needed("roamd sent no reply".into()))
    }
}

impl PathControl for Roamd {
    fn request(&self, req: PathRequest) -> ControlFuture<'_> {
        Box::pin(async move { self.call(req.kind(), req.to_json(1)).await })
    }
}

async fn send(s: &mut UnixStream, v: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(v)?;
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too long"))?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(&body).await
}

async fn recv(s: &mut UnixStream) -> std::io::Result<Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > 65536 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("roamd frame of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_fields_roamd_needs() {
        let r = PathRequest::SetBackup {
            token: 0xdead_beef,
            local: "198.18.1.2:40000".parse().unwrap(),
            remote: "198.19.0.1:4433".parse().unwrap(),
            backup: true,
        };
        assert_eq!(
            r.to_json(7),
            json!({"type": "mptcp_subflow_set_backup", "id": 7, "token": 3735928559u32,
                   "local": "198.18.1.2:40000", "remote": "198.19.0.1:4433", "backup": true})
        );
    }

    #[tokio::test]
    async fn without_roamd_the_error_says_roamd_is_needed() {
        let dir = std::env::temp_dir().join(format!("roam-no-agent-{}", std::process::id()));
        let e = Roamd::at(dir.join("roamd.sock"))
            .request(PathRequest::Close {
                token: 1,
                local: "198.18.0.2:1".parse().unwrap(),
                remote: "198.19.0.1:2".parse().unwrap(),
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::AgentRequired { .. }), "{e}");
        assert!(e.to_string().contains("needs roamd"), "{e}");
    }
}

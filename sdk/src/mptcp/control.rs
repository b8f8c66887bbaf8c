//! Subflow control through roamd: opening, closing and re-prioritising MPTCP subflows needs
//! CAP_NET_ADMIN (the userspace path manager, generic netlink `mptcp_pm`, by connection
//! token), so an app asks the agent. [`PathControl`] is the seam; [`Roamd`] sends roamd's
//! `mptcp_subflow_create`, `mptcp_subflow_destroy` and `mptcp_subflow_set_backup` requests
//! (crate `roam-ipc`, `ipc/PROTOCOL.md`).
//!
//! [`PathRequest::OpenWith`] adds TCP options for the new subflow alone (`options` of
//! `mptcp_subflow_create`); a roamd from before them answers `bad_request`, told as
//! [`Error::AgentRequired`] naming the request.
//!
//! roamd accepts them only for connections registered (`register_mptcp`) by the same app (the
//! same uid, from `SO_PEERCRED`) on a connection that is still open; a session following roamd
//! registers its connection itself. Errors: `denied` (not this app's connection),
//! `not_found` (no such connection or subflow), `failed` (the kernel refused, or roamd does not
//! run the userspace path manager; `message` says which).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use roam_ipc::client::ClientError;
use roam_ipc::proto::{Reply, Request, TcpOptions};
use roam_ipc::tokio_client::AsyncClient;

use crate::error::{Error, Result};

/// roamd's default socket (`ROAM_SOCKET` overrides it).
pub use roam_ipc::DEFAULT_SOCKET;

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
    /// Open a subflow as [`PathRequest::Open`] does, with TCP options of its own, which
    /// roamd's sock_ops program sets on it as it connects.
    OpenWith {
        /// The connection token.
        token: u32,
        /// The local address (port 0: the kernel picks).
        local: SocketAddr,
        /// The remote address.
        remote: SocketAddr,
        /// Open it as a backup (MP_PRIO).
        backup: bool,
        /// The subflow's options.
        options: TcpOptions,
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
            PathRequest::Open { .. } | PathRequest::OpenWith { .. } => "mptcp_subflow_create",
            PathRequest::Close { .. } => "mptcp_subflow_destroy",
            PathRequest::SetBackup { .. } => "mptcp_subflow_set_backup",
        }
    }

    /// The request as roamd's protocol message with request id `id`.
    pub fn to_request(&self, id: u64) -> Request {
        match *self {
            PathRequest::Open {
                token,
                local,
                remote,
                backup,
            } => Request::MptcpSubflowCreate {
                id,
                token,
                local,
                remote,
                backup,
                options: None,
            },
            PathRequest::OpenWith {
                token,
                local,
                remote,
                backup,
                ref options,
            } => Request::MptcpSubflowCreate {
                id,
                token,
                local,
                remote,
                backup,
                options: Some(options.clone()),
            },
            PathRequest::Close {
                token,
                local,
                remote,
            } => Request::MptcpSubflowDestroy {
                id,
                token,
                local,
                remote,
            },
            PathRequest::SetBackup {
                token,
                local,
                remote,
                backup,
            } => Request::MptcpSubflowSetBackup {
                id,
                token,
                local,
                remote,
                backup,
            },
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
            socket: roam_ipc::socket_path(None),
        }
    }

    /// roamd at `socket`.
    pub fn at(socket: impl Into<PathBuf>) -> Roamd {
        Roamd {
            socket: socket.into(),
        }
    }

    /// Registers an MPTCP connection token with roamd (`register_mptcp`) on a connection of
    /// its own, which ends when this returns: roamd forgets the token with it. Sessions that
    /// follow roamd register on their subscribed connection instead, which lives as long as
    /// they do.
    pub async fn register_mptcp(&self, token: u32) -> Result<()> {
        self.call("register_mptcp", |id| Request::RegisterMptcp { id, token })
            .await
    }

    async fn call(&self, what: &str, build: impl FnOnce(u64) -> Request) -> Result<()> {
        let path = self.socket.display().to_string();
        let needed = |detail: String| Error::AgentRequired {
            what: what.to_owned(),
            detail,
        };
        let mut c = AsyncClient::connect(&self.socket)
            .await
            .map_err(|e| match e {
                ClientError::Connect { source, .. } => {
                    needed(format!("no roamd at {path}: {source}"))
                }
                other => needed(format!("talking to roamd at {path}: {other}")),
            })?;
        match c.call(build).await {
            Ok(Reply::Ok { .. }) => Ok(()),
            Ok(other) => Err(needed(format!("unexpected reply from roamd: {other:?}"))),
            Err(ClientError::Refused { code, message }) if code == "bad_request" => {
                Err(needed(format!(
                    "roamd at {path} does not know `{what}` ({message}); it needs a roamd that \
                     speaks the subflow requests of roam-ipc"
                )))
            }
            Err(ClientError::Refused { code, message }) => Err(Error::Agent {
                what: what.to_owned(),
                code,
                message,
            }),
            Err(other) => Err(needed(format!("talking to roamd at {path}: {other}"))),
        }
    }
}

impl PathControl for Roamd {
    fn request(&self, req: PathRequest) -> ControlFuture<'_> {
        Box::pin(async move { self.call(req.kind(), |id| req.to_request(id)).await })
    }
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
            serde_json::to_value(r.to_request(7)).unwrap(),
            serde_json::json!({"type": "mptcp_subflow_set_backup", "id": 7, "token": 3735928559u32,
                   "local": "198.18.1.2:40000", "remote": "198.19.0.1:4433", "backup": true})
        );
    }

    #[test]
    fn a_subflow_with_options_carries_them_and_one_without_sends_none() {
        let (local, remote) = (
            "198.18.1.2:0".parse().unwrap(),
            "198.19.0.1:4433".parse().unwrap(),
        );
        let with = PathRequest::OpenWith {
            token: 1,
            local,
            remote,
            backup: false,
            options: TcpOptions::new().congestion("reno"),
        };
        assert_eq!(with.kind(), "mptcp_subflow_create");
        assert_eq!(
            serde_json::to_value(with.to_request(3)).unwrap()["options"],
            serde_json::json!({"congestion": "reno"})
        );
        // Without options the field is left out, so an older roamd still takes the request.
        let plain = PathRequest::Open {
            token: 1,
            local,
            remote,
            backup: false,
        };
        assert!(
            serde_json::to_value(plain.to_request(4))
                .unwrap()
                .get("options")
                .is_none()
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

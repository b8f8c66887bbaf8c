//! TCP options of a session's connection ([`Session::set_tcp_options`]) and of one MPTCP
//! subflow ([`Session::open_path_with`]).
//!
//! Connection-wide options need no agent: Linux takes `TCP_NODELAY`, `SO_KEEPALIVE`,
//! `TCP_KEEPIDLE`/`TCP_KEEPINTVL`/`TCP_KEEPCNT`, `TCP_CONGESTION` and `TCP_NOTSENT_LOWAT` on
//! an MPTCP socket and copies them to every subflow, present and future
//! (`net/mptcp/sockopt.c`). Options that differ between subflows have no userspace setter; roamd
//! sets them with a BPF sock_ops program as the subflow connects.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

pub use roam_ipc::proto::{Keepalive, TcpOptions};

use super::Session;
use crate::error::{Error, Result};
use crate::mptcp::control::PathRequest;
use crate::transport::Stream;
use crate::vocab::{SessionEvent, Subflow};

impl Session {
    /// Sets TCP options on an MPTCP session's connection: on the MPTCP socket, which the
    /// kernel applies to every subflow it has and every one it opens later. Options left
    /// `None` are not touched. An MPTCP session that fell back to TCP (and a plain TCP one)
    /// gets them on its one connection. QUIC and tcp-resume (whose connection is replaced on
    /// every move): [`Error::NotOnThisTransport`].
    ///
    /// An option the kernel refuses stops the call with an [`Error::Io`] naming it and the
    /// value; the options before it stay set. Options that need no privilege: all of these,
    /// except a congestion control outside `net.ipv4.tcp_allowed_congestion_control` (it needs
    /// CAP_NET_ADMIN).
    pub fn set_tcp_options(&self, options: &TcpOptions) -> Result<()> {
        options.check().map_err(|e| {
            Error::io(
                "set_tcp_options",
                io::Error::new(io::ErrorKind::InvalidInput, e),
            )
        })?;
        let Stream::Mptcp(s) = &self.conn.stream else {
            return Err(Error::NotOnThisTransport {
                what: "set_tcp_options",
                transport: self.conn.transport.as_str(),
            });
        };
        apply(s.socket().as_fd(), options, self.conn.transport.as_str())
    }

    /// Opens an MPTCP subflow from `local` to `remote` (as [`Session::open_path`]) whose TCP
    /// options differ from the connection's: roamd records them for that subflow's addresses
    /// and its sock_ops program sets them (`bpf_setsockopt`) when the subflow sends its SYN.
    /// `Ok` means roamd created the subflow and the kernel took every option.
    ///
    /// Per subflow: `nodelay`, `keepalive` and `congestion` (a congestion control the kernel
    /// has loaded). `notsent_lowat` belongs to the connection ([`Session::set_tcp_options`]):
    /// the kernel keeps it on the MPTCP socket. A later [`Session::set_tcp_options`] of the
    /// same option sets it on every subflow, this one too.
    ///
    /// Needs a roamd that runs the userspace path manager and can load BPF (CAP_BPF and
    /// CAP_NET_ADMIN, a cgroup v2 holding the app); otherwise [`Error::Agent`] with code
    /// `failed` says why (also when the kernel refused an option for the new subflow: the
    /// message names it, and the subflow stays open with the connection's options). An older
    /// roamd that does not know per-subflow options: [`Error::AgentRequired`]. To change the
    /// options of an existing subflow, open a new one with them, then [`Session::close_path`]
    /// the old one.
    pub async fn open_path_with(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        options: &TcpOptions,
    ) -> Result<()> {
        options.check().map_err(|e| {
            Error::io(
                "open_path_with",
                io::Error::new(io::ErrorKind::InvalidInput, e),
            )
        })?;
        let (s, token) = self.mptcp_control("open_path_with")?;
        s.control
            .request(PathRequest::OpenWith {
                token,
                local,
                remote,
                backup: false,
                options: options.clone(),
            })
            .await
    }

    /// Changes the TCP options of the MPTCP subflow `id` (see [`Session::paths`]), make
    /// before break: opens a new subflow with `options` between the same addresses (through
    /// roamd, as [`Session::open_path_with`]), waits until it is established, then closes
    /// subflow `id` ([`Session::close_path`]). Linux has no way to change one subflow's options
    /// in place.
    ///
    /// If the new subflow is not established within 5 seconds, the old one is
    /// kept and the error says so. Client sessions only (the server side has no subflow
    /// watcher to see the new subflow come up).
    pub async fn set_path_options(&self, id: u32, options: &TcpOptions) -> Result<()> {
        let (local, remote) = self.subflow("set_path_options", id)?;
        let mut events = self.events();
        let before: Vec<SocketAddr> = self.paths().iter().filter_map(|p| p.local).collect();
        self.open_path_with(SocketAddr::new(local.ip(), 0), remote, options)
            .await?;
        let up = |v: &[Subflow]| {
            v.iter().any(|p| {
                p.local
                    .is_some_and(|l| l.ip() == local.ip() && !before.contains(&l))
                    && p.remote == Some(remote)
                    && !p.rtt.is_zero()
            })
        };
        let wait = async {
            loop {
                match events.next().await {
                    Some(SessionEvent::SubflowsChanged(v)) if up(&v) => return true,
                    Some(_) => {}
                    None => return false,
                }
            }
        };
        let came = up(&self.paths())
            || tokio::time::timeout(PATH_OPTIONS_TIMEOUT, wait)
                .await
                .unwrap_or(false);
        if !came {
            return Err(Error::Timeout {
                what: format!(
                    "set_path_options: the new subflow {} -> {remote} to replace subflow {id} \
                     (kept; the new one may still come up)",
                    local.ip()
                ),
                limit: PATH_OPTIONS_TIMEOUT,
            });
        }
        self.close_path(id).await
    }
}

/// How long [`Session::set_path_options`] waits for the new subflow.
const PATH_OPTIONS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sets each option given on `fd`, in an order where each one's meaning is complete
/// (keepalive on before its timings).
fn apply(fd: BorrowedFd<'_>, o: &TcpOptions, transport: &str) -> Result<()> {
    let set = |level,
               name: libc::c_int,
               label: &str,
               value: &dyn std::fmt::Display,
               bytes: &[u8]| {
        setsockopt(fd, level, name, bytes).map_err(|e| {
            let hint = hint(label, &e);
            Error::io(
                format!("setting {label} = {value} on the {transport} socket (the kernel refused it{hint})"),
                e,
            )
        })
    };
    let int = |v: i32| v.to_ne_bytes();
    if let Some(on) = o.nodelay {
        set(
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            "TCP_NODELAY",
            &on,
            &int(on.into()),
        )?;
    }
    if let Some(k) = o.keepalive {
        set(
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            "SO_KEEPALIVE",
            &1,
            &int(1),
        )?;
        for (name, label, v) in [
            (libc::TCP_KEEPIDLE, "TCP_KEEPIDLE", k.idle_secs),
            (libc::TCP_KEEPINTVL, "TCP_KEEPINTVL", k.interval_secs),
            (libc::TCP_KEEPCNT, "TCP_KEEPCNT", k.count),
        ] {
            // check() bounded them far below i32::MAX.
            set(libc::IPPROTO_TCP, name, label, &v, &int(v as i32))?;
        }
    }
    if let Some(cc) = &o.congestion {
        set(
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            "TCP_CONGESTION",
            cc,
            cc.as_bytes(),
        )?;
    }
    if let Some(n) = o.notsent_lowat {
        set(
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            "TCP_NOTSENT_LOWAT",
            &n,
            &int(n as i32),
        )?;
    }
    Ok(())
}

/// What a person can do about the kernel's refusal.
fn hint(label: &str, e: &io::Error) -> &'static str {
    match (label, e.raw_os_error()) {
        ("TCP_CONGESTION", Some(libc::ENOENT)) => {
            ": no such congestion control; see /proc/sys/net/ipv4/tcp_available_congestion_control \
             or load its module"
        }
        ("TCP_CONGESTION", Some(libc::EPERM)) => {
            ": it is not in net.ipv4.tcp_allowed_congestion_control, which only CAP_NET_ADMIN may \
             bypass"
        }
        (_, Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP)) => {
            ": this kernel's MPTCP does not take the option; a newer kernel does"
        }
        _ => "",
    }
}

fn setsockopt(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    v: &[u8],
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(v.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "option value too large"))?;
    // SAFETY: `v` is valid for reads of `len` bytes for the whole call; the fd is borrowed and
    // stays open.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, v.as_ptr().cast(), len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

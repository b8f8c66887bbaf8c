//! Stock peers: servers nobody on the project wrote, run as separate programs in the server
//! namespace, for a roam session to meet what most servers are.
//!
//! * MPTCP: `mptcpize run socat OPENSSL-LISTEN:... STDIO` (Debian packages `mptcpize` and
//!   `socat`): socat's TLS over a socket `mptcpize` makes MPTCP; the kernel's MPTCP is the
//!   only thing on the server side that knows about paths.
//! * QUIC: an aioquic server (`pip install aioquic==1.7.2`; the script is
//!   `stock_aioquic.py` beside this file), its own migration, acknowledgement and
//!   retransmission.
//! * tcp-resume has none: resumption needs a server that speaks roam/1, i.e. a roam Listener.
//!
//! Each relays the session's one stream to its standard input and output: the harness writes
//! what the server sends (direction down) into stdin and reads what it receives (up) from
//! stdout, timestamping each read there, so the gap is measured as the receiving program sees
//! it. `scripts/common.sh` (`roam_install_stock_peers`) installs them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{ServerCtx, Task, Transport, read_messages, send_then_hold};
use crate::tls::{ALPN, TestPki};

/// The aioquic server script, passed to Python with `-c`.
const AIOQUIC_SCRIPT: &str = include_str!("stock_aioquic.py");

/// Where `scripts/common.sh` installs aioquic when the `python3` on PATH lacks it (a virtual
/// environment); `ROAM_PEER_PYTHON` names another interpreter.
pub const PEER_VENV: &str = "/var/cache/roam-tests/venv";

/// The Python that runs the aioquic peer: `$ROAM_PEER_PYTHON`, else [`PEER_VENV`]'s when it
/// exists, else `python3` on PATH.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ROAM_PEER_PYTHON") {
        return p.into();
    }
    let venv = Path::new(PEER_VENV).join("bin/python3");
    if venv.exists() {
        return venv;
    }
    "python3".into()
}

/// Why `transport` has no stock peer, if it has none.
pub fn missing(transport: Transport) -> Option<&'static str> {
    match transport {
        Transport::TcpResume => Some(
            "tcp-resume has no stock peer: resuming needs a server that speaks roam/1 \
             (a roam Listener)",
        ),
        Transport::Quic | Transport::Mptcp => None,
    }
}

/// A stock server's certificate files, in a directory removed on drop.
#[derive(Debug)]
pub struct StockFiles {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl StockFiles {
    /// Writes `pki`'s server certificate and key to a new scratch directory.
    pub fn write(pki: &TestPki) -> Result<StockFiles> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("roam-stock-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (cert, key) = pki.write_pem(&dir)?;
        Ok(StockFiles { dir, cert, key })
    }
}

impl Drop for StockFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The command line of `transport`'s stock server on `service`:`port`.
fn command(
    transport: Transport,
    files: &StockFiles,
    service: IpAddr,
    port: u16,
    ctx_timeout: std::time::Duration,
) -> Result<(tokio::process::Command, &'static str)> {
    match transport {
        Transport::Mptcp => {
            let bind = match service {
                IpAddr::V4(a) => format!("bind={a}"),
                IpAddr::V6(a) => format!("bind=[{a}],pf=ip6"),
            };
            let mut c = tokio::process::Command::new("mptcpize");
            // -d -d: socat says "listening on" once bound, which is the ready signal. nodelay:
            // a streaming server would set it; without it Nagle holds the paced messages.
            // fork: the parent keeps listening, as every server does. Without it socat closes
            // its listening socket once it accepted, and Linux answers an MP_JOIN only through
            // the listener: the handset's backup subflow was reset (SF_CLOSED error=111, the
            // server's TcpOutRsts, no MPJoinSynRx) and the session died with wlan0.
            c.args(["run", "socat", "-d", "-d"]).arg(format!(
                "OPENSSL-LISTEN:{port},{bind},reuseaddr,fork,nodelay,cert={},key={},verify=0",
                files.cert.display(),
                files.key.display()
            ));
            c.arg("STDIO");
            Ok((c, "socat under mptcpize"))
        }
        Transport::Quic => {
            let mut c = tokio::process::Command::new(python());
            c.args(["-c", AIOQUIC_SCRIPT, "--host"])
                .arg(service.to_string())
                .arg("--port")
                .arg(port.to_string())
                .arg("--cert")
                .arg(&files.cert)
                .arg("--key")
                .arg(&files.key)
                .arg("--alpn")
                .arg(String::from_utf8_lossy(ALPN).as_ref())
                .arg("--idle-timeout")
                .arg(format!("{:.1}", ctx_timeout.as_secs_f64().max(1.0)));
            Ok((c, "aioquic"))
        }
        Transport::TcpResume => bail!("{}", missing(transport).unwrap_or_default()),
    }
}

/// What to do when a stock server does not start.
fn install_hint(transport: Transport) -> String {
    match transport {
        Transport::Mptcp => "install them: apt-get install mptcpize socat (or sudo scripts/test, \
                             whose scripts/common.sh installs them)"
            .into(),
        _ => format!(
            "install aioquic: pip install aioquic==1.7.2 for {} (or sudo scripts/test, whose \
             scripts/common.sh installs it into {PEER_VENV}; ROAM_PEER_PYTHON names another \
             Python)",
            python().display()
        ),
    }
}

/// The stock server of `transport` on `port` as a harness task: it starts the program, says
/// ready once it listens, then feeds what the program receives into the recorder (up) or what
/// the application produces into the program (down).
pub(crate) fn server(transport: Transport, files: &StockFiles, port: u16, ctx: ServerCtx) -> Task {
    let cmd = command(transport, files, ctx.service, port, ctx.timeout);
    Box::pin(async move {
        let (mut cmd, name) = cmd?;
        let sends = ctx.seqs.is_some();
        // Stdin stays open in both directions: its end would end the session.
        cmd.stdin(Stdio::piped())
            .stdout(if sends { Stdio::null() } else { Stdio::piped() })
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name}; {}", install_hint(transport)))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let mut said = Vec::new();
        loop {
            match lines.next_line().await? {
                Some(l) if l.contains("listening on") || l.trim() == "ready" => break,
                Some(l) => said.push(l),
                None => {
                    let status = child.wait().await?;
                    bail!(
                        "{name} ended before listening ({status}): {}; {}",
                        said.join(" / "),
                        install_hint(transport)
                    );
                }
            }
        }
        let _ = ctx.ready.send(());
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::debug!(peer = name, "{l}");
            }
        });
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        match ctx.seqs {
            Some(mut seqs) => {
                tokio::select! {
                    r = send_then_hold(&mut stdin, &mut seqs) => r,
                    status = child.wait() => Err(anyhow!("{name} exited: {}", status?)),
                }
            }
            None => {
                let mut out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
                read_messages(&mut out, &ctx.recorder).await?;
                let status = child.wait().await?;
                drop(stdin);
                Err(anyhow!("{name} ended the session ({status})"))
            }
        }
    })
}

//! What the SDK's namespace tests share: the test PKI and roamd of roam-tests, the server and
//! the client as threads in their namespaces ([`Run`]: a session carrying a hashed stream), and
//! waits on their events with deadlines (no sleeps).
#![allow(dead_code)] // each test binary uses a part

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use roam::path::LocalPath;
use roam::{Listener, SessionEvent};
use roam_tests::agent::{AgentExe, Roamd};
use roam_tests::topology::{SERVICE_V4, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use roam_tests::tls::{SERVER_NAME, TestPki};

pub const PORT: u16 = 4433;
/// How long any one expected event may take.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// WiFi preferred over cellular; a returning link must stay up 1 s before it is primary.
pub const POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                          default {\n  prefer wifi over cell\n  hold 1s\n}\n";

/// The app every session here is.
pub const APP: &str = "com.example.chat";

/// The name of the helper test that runs roamd and its reflector in a test binary that starts
/// them ([`start_roamd`]); its body is `roam_tests::agent::test_helper_main`.
pub const ROAMD_HELPER: &str = "roamd_helper";

/// A blocking TLS connection to a roam Listener at `peer` (ALPN roam/1, trusting `pki`'s CA),
/// for tests that speak the session wire format by hand (sdk/RESUME.md).
pub fn raw_tls(
    pki: &TestPki,
    peer: SocketAddr,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone())?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"roam/1".to_vec()];
    let name = roam_tests::tls::SERVER_NAME.try_into()?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name)?;
    let sock = std::net::TcpStream::connect_timeout(&peer, EVENT_TIMEOUT)?;
    sock.set_read_timeout(Some(EVENT_TIMEOUT))?;
    Ok(rustls::StreamOwned::new(conn, sock))
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// `builder` as [`APP`] with [`POLICY`] (as its embedded policy), trusting `pki`'s CA for
/// [`SERVER_NAME`].
pub fn chat(builder: roam::SessionBuilder, pki: &TestPki) -> roam::SessionBuilder {
    builder
        .app(APP)
        .policy(POLICY)
        .tls(pki.roam_client())
        .server_name(SERVER_NAME)
}

/// The program that runs roamd and its reflector for this test binary: itself, running the
/// helper test [`ROAMD_HELPER`].
pub fn roamd_exe() -> Result<AgentExe> {
    AgentExe::test_helper(ROAMD_HELPER)
}

/// roamd in the handset with `config` and `policy`, started and serving.
pub fn start_roamd(topo: &Topology, config: &str, policy: &str) -> Result<Roamd> {
    Roamd::start(topo.handset(), &roamd_exe()?, policy, config)
}

/// What the server reports while it runs.
#[derive(Debug)]
pub enum ServerNote {
    Listening,
    /// The client's address as the server sees it, each time it changes.
    Peer(SocketAddr),
    /// Another MiB arrived, the last read from this address.
    Received(SocketAddr),
}

/// What the server saw of the session.
#[derive(Debug)]
pub struct ServerSide {
    /// The longest pause between two reads (the client writes every millisecond).
    pub max_gap: Duration,
    pub bytes: u64,
    pub hash: u64,
    pub peers: Vec<SocketAddr>,
}

impl ServerSide {
    /// The longest delivery gap and the bytes, for `figure:` lines.
    pub fn summary(&self) -> String {
        format!(
            "longest delivery gap {:?}, {} bytes intact",
            self.max_gap, self.bytes
        )
    }

    /// The addresses the client was seen at, in order, as text.
    pub fn peer_ips(&self) -> Vec<String> {
        self.peers.iter().map(|p| p.ip().to_string()).collect()
    }
}

/// Starts the server (`start_server` with `pki`'s certificate) and waits until it listens;
/// returns its notes and the handle `finish` joins.
pub fn start_server_ready(
    topo: &Topology,
    pki: &TestPki,
) -> Result<(mpsc::Receiver<ServerNote>, JoinHandle<Result<ServerSide>>)> {
    let (server_tx, server_rx) = mpsc::channel();
    let server = start_server(topo, pki.roam_server()?, server_tx)?;
    wait_for(&server_rx, "the listener", |n| {
        matches!(n, ServerNote::Listening)
    })?;
    Ok((server_rx, server))
}

/// Starts a Listener on the service address in the server namespace; it takes one session,
/// hashes everything to the end of the stream, answers with its byte count and hash, and
/// waits for the client to close.
pub fn start_server(
    topo: &Topology,
    tls: rustls::ServerConfig,
    notes: mpsc::Sender<ServerNote>,
) -> Result<JoinHandle<Result<ServerSide>>> {
    topo.server()
        .spawn_async("roam-server", move || async move {
            let listener = Listener::bind(SocketAddr::new(SERVICE_V4.into(), PORT), tls)?;
            let _ = notes.send(ServerNote::Listening);
            let mut s = tokio::time::timeout(EVENT_TIMEOUT, listener.accept())
                .await
                .context("no session arrived")??;
            let mut h = std::hash::DefaultHasher::new();
            let mut bytes = 0u64;
            let mut peers = vec![s.path().remote];
            let _ = notes.send(ServerNote::Peer(peers[0]));
            let mut buf = vec![0u8; 64 * 1024];
            let mut last = Instant::now();
            let mut max_gap = Duration::ZERO;
            // Bounded by the client, which stops by itself; the idle timeout ends a dead one.
            loop {
                let n = s.read(&mut buf).await.context("server read")?;
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                max_gap = max_gap.max(now - last);
                last = now;
                h.write(&buf[..n]);
                let before = bytes;
                bytes += n as u64;
                let peer = s.path().remote;
                if peers.last() != Some(&peer) {
                    peers.push(peer);
                    let _ = notes.send(ServerNote::Peer(peer));
                }
                if before >> 20 != bytes >> 20 {
                    let _ = notes.send(ServerNote::Received(peer));
                }
            }
            let hash = h.finish();
            s.write_all(format!("{bytes} {hash}").as_bytes()).await?;
            s.shutdown().await?;
            let _ = tokio::time::timeout(EVENT_TIMEOUT, s.closed()).await;
            Ok(ServerSide {
                max_gap,
                bytes,
                hash,
                peers,
            })
        })
}

/// What the client reports while it runs.
#[derive(Debug)]
pub enum ClientNote {
    Connected(Option<String>),
    /// An event and when the client saw it.
    Event(Instant, SessionEvent),
}

/// What the client sent and what the server said it received.
#[derive(Debug)]
pub struct ClientSide {
    pub bytes: u64,
    pub hash: u64,
    pub server_said: String,
}

/// Starts a session from the handset to `target` (the service address, or a name the session
/// resolves) and sends a deterministic stream paced at 16 KiB per millisecond until `stop`
/// fires (or 60 s pass), then half-closes and reads the server's answer.
fn start_client_to(
    topo: &Topology,
    target: String,
    builder: roam::SessionBuilder,
    notes: mpsc::Sender<ClientNote>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<JoinHandle<Result<ClientSide>>> {
    topo.handset()
        .spawn_async("roam-client", move || async move {
            let mut s = builder.connect(&target).await?;
            let mut events = s.events();
            let _ = notes.send(ClientNote::Connected(s.path().interface));
            let fwd = notes.clone();
            tokio::spawn(async move {
                while let Some(e) = events.next().await {
                    let _ = fwd.send(ClientNote::Event(Instant::now(), e));
                }
            });
            let mut h = std::hash::DefaultHasher::new();
            let mut bytes = 0u64;
            let mut chunk = vec![0u8; 16 * 1024];
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let deadline = tokio::time::sleep(Duration::from_secs(60));
            tokio::pin!(deadline, stop);
            for i in 0u64.. {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = &mut deadline => break,
                    _ = tick.tick() => {}
                }
                // Numbered content: a lost, repeated or reordered chunk changes the hash.
                for (j, b) in chunk.iter_mut().enumerate() {
                    *b = (i as usize).wrapping_mul(31).wrapping_add(j) as u8;
                }
                chunk[..8].copy_from_slice(&i.to_be_bytes());
                s.write_all(&chunk).await.context("client write")?;
                h.write(&chunk);
                bytes += chunk.len() as u64;
            }
            s.shutdown().await.context("client shutdown")?;
            let mut answer = String::new();
            tokio::time::timeout(EVENT_TIMEOUT, s.read_to_string(&mut answer))
                .await
                .context("no answer from the server")?
                .context("reading the server's answer")?;
            s.close_and_wait(0, b"done").await;
            Ok(ClientSide {
                bytes,
                hash: h.finish(),
                server_said: answer,
            })
        })
}

/// Waits for a note matching `pred`, skipping others, up to [`EVENT_TIMEOUT`].
pub fn wait_for<T: std::fmt::Debug>(
    rx: &mpsc::Receiver<T>,
    what: &str,
    mut pred: impl FnMut(&T) -> bool,
) -> Result<T> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(n) if pred(&n) => return Ok(n),
            Ok(other) => tracing::debug!(?other, "while waiting for {what}"),
            Err(e) => bail!("waiting for {what}: {e}"),
        }
    }
}

/// A move the client made.
#[derive(Debug)]
pub struct Moved {
    pub at: Instant,
    pub from: Option<LocalPath>,
    pub to: LocalPath,
    pub reason: roam::path::MigrationReason,
}

/// Waits for the client to move to `iface`.
pub fn wait_moved(rx: &mpsc::Receiver<ClientNote>, iface: &str) -> Result<Moved> {
    let n = wait_for(
        rx,
        &format!("the session moving to {iface}"),
        |n| matches!(n, ClientNote::Event(_, SessionEvent::PathChanged { to, .. }) if to.interface == iface),
    )?;
    match n {
        ClientNote::Event(at, SessionEvent::PathChanged { from, to, reason }) => Ok(Moved {
            at,
            from,
            to,
            reason,
        }),
        other => bail!("unexpected {other:?}"),
    }
}

/// Waits until the server sees the client at `ip` and at least 1 MiB more arrives from there.
pub fn wait_server_sees(rx: &mpsc::Receiver<ServerNote>, ip: IpAddr) -> Result<()> {
    let what = format!("1 MiB from the client at {ip}");
    // Two MiB boundaries crossed from `ip`: at least one whole MiB came from there.
    for _ in 0..2 {
        wait_for(
            rx,
            &what,
            |n| matches!(n, ServerNote::Received(p) if p.ip() == ip),
        )?;
    }
    Ok(())
}

/// A running session from the handset and the server it sends its hashed stream to.
pub struct Run {
    pub client_rx: mpsc::Receiver<ClientNote>,
    pub server_rx: mpsc::Receiver<ServerNote>,
    stop: tokio::sync::oneshot::Sender<()>,
    client: JoinHandle<Result<ClientSide>>,
    server: JoinHandle<Result<ServerSide>>,
}

impl Run {
    /// Starts the server, waits until it listens, then starts a session to `target` (`None`:
    /// the service address) with `builder`; returns at once.
    pub fn spawn(
        topo: &Topology,
        pki: &TestPki,
        builder: roam::SessionBuilder,
        target: Option<String>,
    ) -> Result<Run> {
        Run::connect(topo, start_server_ready(topo, pki)?, builder, target)
    }

    /// Starts a session to `target` (`None`: the service address) with `builder`, to the
    /// server `start_server_ready` started; returns at once.
    pub fn connect(
        topo: &Topology,
        (server_rx, server): (mpsc::Receiver<ServerNote>, JoinHandle<Result<ServerSide>>),
        builder: roam::SessionBuilder,
        target: Option<String>,
    ) -> Result<Run> {
        let (client_tx, client_rx) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let target = target.unwrap_or_else(|| format!("{SERVICE_V4}:{PORT}"));
        let client = start_client_to(topo, target, builder, client_tx, stop_rx)?;
        Ok(Run {
            client_rx,
            server_rx,
            stop,
            client,
            server,
        })
    }

    /// [`Run::spawn`], and returns once the session is on wlan0 and the server has 1 MiB from
    /// it there.
    pub fn start(
        topo: &Topology,
        pki: &TestPki,
        builder: roam::SessionBuilder,
        target: Option<String>,
    ) -> Result<Run> {
        let run = Run::spawn(topo, pki, builder, target)?;
        let connected = wait_for(&run.client_rx, "the session", |n| {
            matches!(n, ClientNote::Connected(_))
        })?;
        ensure!(
            matches!(&connected, ClientNote::Connected(Some(i)) if i == "wlan0"),
            "the session did not start on the preferred link: {connected:?}"
        );
        run.wait_server_sees(topo.link("wlan0")?.handset_v4.into())?;
        Ok(run)
    }

    /// Waits until the server sees the client at `ip` and at least 1 MiB more arrives from
    /// there.
    pub fn wait_server_sees(&self, ip: IpAddr) -> Result<()> {
        wait_server_sees(&self.server_rx, ip)
    }

    /// Waits for the client to move to `iface`.
    pub fn wait_moved(&self, iface: &str) -> Result<Moved> {
        wait_moved(&self.client_rx, iface)
    }

    /// Stops the client and checks both ends (every byte delivered once, in order, no error);
    /// returns what the server saw.
    pub fn finish(self) -> Result<ServerSide> {
        finish(self.stop, self.client, self.server)
    }
}

/// Stops the client and checks both ends: every byte delivered once, in order, no error.
fn finish(
    stop: tokio::sync::oneshot::Sender<()>,
    client: JoinHandle<Result<ClientSide>>,
    server: JoinHandle<Result<ServerSide>>,
) -> Result<ServerSide> {
    let _ = stop.send(());
    let c = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))?
        .context("client session")?;
    let s = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))?
        .context("server session")?;
    assert!(
        c.bytes > 1_000_000,
        "the client sent only {} bytes",
        c.bytes
    );
    assert_eq!(s.bytes, c.bytes, "bytes lost or duplicated");
    assert_eq!(s.hash, c.hash, "the stream was corrupted");
    assert_eq!(c.server_said, format!("{} {}", s.bytes, s.hash));
    Ok(s)
}

/// Bytes the server received over `link`'s path.
pub fn rx_bytes(topo: &Topology, link: &str) -> Result<u64> {
    topo.server_stats()?
        .into_iter()
        .find(|(n, _)| n == link)
        .map(|(_, s)| s.rx_bytes)
        .with_context(|| format!("no stats for {link}"))
}

/// The two-link handset of the transport tests: `wlan0` (WiFi, preferred) and `rmnet0`.
pub fn two_links() -> Result<Topology> {
    init_tracing();
    Topology::builder()
        .link("wlan0", roam_policy::LinkKind::Wifi)
        .link("rmnet0", roam_policy::LinkKind::Cellular)
        .build()
}

/// A middlebox on `link`'s path that strips MPTCP: in the server namespace, the MPTCP option
/// (TCP option kind 30) of every SYN arriving over that path becomes NOPs
/// (`reset tcp option mptcp`), so the server answers as plain TCP.
pub fn strip_mptcp(topo: &Topology, link: &str) -> Result<()> {
    let dev = topo.link(link)?.server_dev.clone();
    topo.server().nft(&format!(
        "table inet roam_strip {{\n chain pre {{\n  type filter hook prerouting priority -150; policy accept;\n  \
         iifname \"{dev}\" tcp flags syn reset tcp option mptcp counter\n }}\n}}\n"
    ))
}

/// One established TCP subflow of port [`PORT`] as the handset's `ss -tnio` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SsSubflow {
    /// The local address, without ss's `%device`.
    pub local: SocketAddr,
    /// What follows `tcp-ulp-mptcp flags:` (`M`/`m` MP_CAPABLE from the remote/local end,
    /// `J`/`j` MP_JOIN, `B`/`b` backup asked by the remote/local end, `e` fully established);
    /// empty for a socket without the MPTCP ULP.
    pub flags: String,
    /// The smoothed RTT (`rtt:` in ms).
    pub rtt_ms: Option<f64>,
    /// Its `timer:(...)` field, e.g. `keepalive,44sec,0` (one timer per socket: while a segment
    /// waits for its ACK, the retransmission timer `on,...`).
    pub timer: Option<String>,
    /// The congestion control named in its detail lines (one of those the kernel has).
    pub congestion: Option<String>,
    /// The socket line and its detail lines, for messages.
    pub text: String,
}

impl SsSubflow {
    /// Whether its timer is the keepalive timer.
    pub fn keepalive(&self) -> bool {
        self.timer
            .as_deref()
            .is_some_and(|t| t.starts_with("keepalive,"))
    }
}

/// The handset's established TCP sockets to port [`PORT`] (`ss -tnioH state established`), with
/// their MPTCP subflow flags, timers and congestion controls: the kernel's own view of the
/// subflows.
pub fn ss_subflows(topo: &Topology) -> Result<Vec<SsSubflow>> {
    Ok(ss_subflows_text(topo)?.1)
}

/// [`ss_subflows`] with the text `ss` printed.
pub fn ss_subflows_text(topo: &Topology) -> Result<(String, Vec<SsSubflow>)> {
    let out = topo.handset().exec(
        "ss",
        &[
            "-tnioH",
            "state",
            "established",
            &format!("( dport = :{PORT} )"),
        ],
    )?;
    let ccs = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")?;
    let ccs: Vec<&str> = ccs.split_whitespace().collect();
    let v = parse_ss_subflows(&out, &ccs)?;
    Ok((out, v))
}

/// Parses `ss -tnioH state established` output: a socket line (`Recv-Q Send-Q Local Peer` and
/// its timer) followed by indented detail lines; a congestion control is one of `ccs`.
pub fn parse_ss_subflows(out: &str, ccs: &[&str]) -> Result<Vec<SsSubflow>> {
    let mut v: Vec<SsSubflow> = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        if !line.starts_with(char::is_whitespace) {
            let local = line
                .split_whitespace()
                .nth(2)
                .with_context(|| format!("no local address in ss line {line:?}"))?;
            // `198.18.0.2%wlan0:40000`: drop the device.
            let local = match (local.find('%'), local.rfind(':')) {
                (Some(p), Some(c)) if p < c => format!("{}{}", &local[..p], &local[c..]),
                _ => local.to_owned(),
            };
            v.push(SsSubflow {
                local: local
                    .parse()
                    .with_context(|| format!("ss local address {local:?}"))?,
                flags: String::new(),
                rtt_ms: None,
                timer: line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("timer:("))
                    .map(|t| t.trim_end_matches(')').to_owned()),
                congestion: None,
                text: line.to_owned(),
            });
        } else if let Some(last) = v.last_mut() {
            if let Some(rtt) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("rtt:"))
                .and_then(|r| r.split('/').next()?.parse().ok())
            {
                last.rtt_ms = Some(rtt);
            }
            if let Some(rest) = line.split("tcp-ulp-mptcp").nth(1) {
                last.flags = rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("flags:"))
                    .unwrap_or_default()
                    .to_owned();
            }
            if last.congestion.is_none() {
                last.congestion = line
                    .split_whitespace()
                    .find(|w| ccs.contains(w))
                    .map(str::to_owned);
            }
            last.text.push('\n');
            last.text.push_str(line);
        }
    }
    Ok(v)
}

/// Asserts that the server saw the client at exactly the addresses `want`, in order.
pub fn assert_peers(s: &ServerSide, want: &[&str]) {
    assert_eq!(s.peer_ips(), want, "{:?}", s.peers);
}

/// A flapper's changes, checked.
#[derive(Debug, Clone, Copy)]
pub struct Flaps {
    /// When the first change (down) was made.
    pub first: Instant,
    /// When the link was last brought up (the end of the flapping).
    pub last_up: Instant,
    /// The longest time the link stayed up before it went down again.
    pub longest_up: Duration,
}

/// Checks what a flapper of `cycles` down/up cycles did: every change ran, the last left the
/// link up, and no up phase lasted as long as `hold` (the premise of the flap tests: the link
/// never came back for long enough to be used again).
pub fn check_flaps(flaps: &[(Instant, bool)], cycles: u32, hold: Duration) -> Result<Flaps> {
    ensure!(
        flaps.len() == 2 * cycles as usize,
        "not every flap ran: {} changes",
        flaps.len()
    );
    let (last_up, up) = *flaps.last().context("no flap")?;
    ensure!(up, "the flapper did not leave the link up");
    // The longest time the link was up (as the harness started it) before it went down again.
    let longest_up = flaps
        .windows(2)
        .filter(|w| w[0].1 && !w[1].1)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .context("no up phase")?;
    ensure!(
        longest_up < hold,
        "an up phase lasted {longest_up:?}, longer than the hold: the test's premise is gone"
    );
    Ok(Flaps {
        first: flaps[0].0,
        last_up,
        longest_up,
    })
}

/// Joins a thread of the test, `what` naming it in the error if it panicked.
pub fn join<T>(h: JoinHandle<Result<T>>, what: &str) -> Result<T> {
    h.join().map_err(|_| anyhow::anyhow!("{what} panicked"))?
}

/// Runs `f` on a thread of its own as `nobody` (uid 65534), in the caller's network
/// namespace: SO_PEERCRED takes the connecting thread's credentials, and setresuid through the
/// raw system call changes only that thread's (glibc's wrapper would change every thread's).
pub fn as_nobody<R: Send>(f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: plain system call; it changes the credentials of this thread alone.
                let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
                if rc != 0 {
                    bail!("setresuid: {}", std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread running as nobody panicked"))?
    })
}

/// The next `SubflowsChanged` whose list satisfies `pred`, up to [`EVENT_TIMEOUT`].
pub async fn next_subflows(
    ev: &mut roam::Events,
    what: &str,
    pred: impl Fn(&[roam::Subflow]) -> bool,
) -> Result<Vec<roam::Subflow>> {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, ev.next()).await {
            Err(_) => bail!("waiting for {what}: no such subflow list within {EVENT_TIMEOUT:?}"),
            Ok(None) => bail!("the session's events ended while waiting for {what}"),
            Ok(Some(SessionEvent::SubflowsChanged(v))) if pred(&v) => return Ok(v),
            Ok(Some(_)) => {}
        }
    }
}

/// Ends a session cleanly: half-closes after a last word and reads the server's answer (what it
/// received), then closes.
pub async fn finish_session(mut s: roam::Session) -> Result<()> {
    s.write_all(b"done").await?;
    s.shutdown().await?;
    let mut answer = String::new();
    tokio::time::timeout(EVENT_TIMEOUT, s.read_to_string(&mut answer))
        .await
        .context("no answer from the server")??;
    s.close_and_wait(0, b"done").await;
    Ok(())
}

/// Registers the session's MPTCP connection with the roamd at `socket`, on a connection of its
/// own that must stay open as long as the registration should (the returned client); returns
/// it and the connection's token.
pub fn register_mptcp(
    socket: &std::path::Path,
    s: &roam::Session,
) -> Result<(roam_ipc::client::Client, u32)> {
    let token = s.mptcp_token().context("no MPTCP token")?;
    let mut reg = roam_ipc::client::Client::connect(socket, Some(EVENT_TIMEOUT))?;
    match reg.call(|id| roam_ipc::proto::Request::RegisterMptcp { id, token })? {
        roam_ipc::proto::Reply::Ok { .. } => Ok((reg, token)),
        other => bail!("register_mptcp: {other:?}"),
    }
}

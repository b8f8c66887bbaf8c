//! What the SDK's namespace tests share: a test PKI, the server and the client as threads in
//! their namespaces, and waits on their events with deadlines (no sleeps).
#![allow(dead_code)] // each test binary uses a part

pub mod helper;

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use roam::path::LocalPath;
use roam::{ClientTls, Listener, SessionEvent};
use roam_tests::topology::{SERVICE_V4, Topology};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const SERVER_NAME: &str = "server.roam.test";
pub const PORT: u16 = 4433;
/// How long any one expected event may take.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// WiFi preferred over cellular; a returning link must stay up 1 s before it is primary.
pub const POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                          default {\n  prefer wifi over cell\n  hold 1s\n}\n";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A CA and a server certificate it signs (roam_tests::tls::TestPki keeps its key private).
pub struct Pki {
    pub ca: CertificateDer<'static>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    pub fn generate() -> Result<Pki> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, &ca_key);
        let leaf_key = KeyPair::generate()?;
        let leaf =
            CertificateParams::new(vec![SERVER_NAME.to_owned()])?.signed_by(&leaf_key, &issuer)?;
        Ok(Pki {
            ca: ca_cert.der().clone(),
            chain: vec![leaf.der().clone()],
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        })
    }

    pub fn server_tls(&self) -> Result<rustls::ServerConfig> {
        Ok(roam::tls::server_config(
            self.chain.clone(),
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
            &[],
        )?)
    }

    pub fn client_tls(&self) -> ClientTls {
        ClientTls::Ca(vec![self.ca.clone()])
    }
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

/// Starts the server (`start_server` with `pki`'s certificate) and waits until it listens;
/// returns its notes and the handle `finish` joins.
pub fn start_server_ready(
    topo: &Topology,
    pki: &Pki,
) -> Result<(mpsc::Receiver<ServerNote>, JoinHandle<Result<ServerSide>>)> {
    let (server_tx, server_rx) = mpsc::channel();
    let server = start_server(topo, pki.server_tls()?, server_tx)?;
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
    topo.server().spawn("roam-server", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
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

/// Starts a session from the handset to the server's service address; see
/// [`start_client_to`].
pub fn start_client(
    topo: &Topology,
    builder: roam::SessionBuilder,
    notes: mpsc::Sender<ClientNote>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<JoinHandle<Result<ClientSide>>> {
    start_client_to(topo, format!("{SERVICE_V4}:{PORT}"), builder, notes, stop)
}

/// Starts a session from the handset to `target` (the service address, or a name the session
/// resolves) and sends a deterministic stream paced at 16 KiB per millisecond until `stop`
/// fires (or 60 s pass), then half-closes and reads the server's answer.
pub fn start_client_to(
    topo: &Topology,
    target: String,
    builder: roam::SessionBuilder,
    notes: mpsc::Sender<ClientNote>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<JoinHandle<Result<ClientSide>>> {
    topo.handset().spawn("roam-client", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
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

/// Stops the client and checks both ends: every byte delivered once, in order, no error.
pub fn finish(
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

/// One established TCP subflow of port [`PORT`] as the handset's `ss -tni` lists it.
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
}

/// The handset's established TCP sockets to port [`PORT`] (`ss -tniH state established`), with
/// their MPTCP subflow flags: the kernel's own view of the subflows.
pub fn ss_subflows(topo: &Topology) -> Result<Vec<SsSubflow>> {
    let out = topo.handset().exec(
        "ss",
        &[
            "-tniH",
            "state",
            "established",
            &format!("( dport = :{PORT} )"),
        ],
    )?;
    parse_ss_subflows(&out)
}

/// Parses `ss -tniH state established` output: a socket line (`Recv-Q Send-Q Local Peer`)
/// followed by indented detail lines.
pub fn parse_ss_subflows(out: &str) -> Result<Vec<SsSubflow>> {
    let mut v: Vec<SsSubflow> = Vec::new();
    for line in out.lines() {
        if line.trim().is_empty() {
            continue;
        }
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
            });
        } else if let Some(last) = v.last_mut() {
            last.rtt_ms = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("rtt:"))
                .and_then(|r| r.split('/').next()?.parse().ok());
            if let Some(rest) = line.split("tcp-ulp-mptcp").nth(1) {
                last.flags = rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("flags:"))
                    .unwrap_or_default()
                    .to_owned();
            }
        }
    }
    Ok(v)
}

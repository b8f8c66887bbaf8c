//! A session from the handset to the shared server (`common::start_server`), to any target
//! (a DNS name resolved by the session, say), started on the preferred link `wlan0` with data
//! flowing: the start of the resolution, flap and emulated-RTT tests.

use std::hash::Hasher;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use roam_tests::topology::Topology;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{
    ClientNote, ClientSide, EVENT_TIMEOUT, PORT, Pki, ServerNote, ServerSide, finish, start_server,
    wait_for, wait_server_sees,
};

/// A running session and its server.
pub struct Run {
    pub client_rx: mpsc::Receiver<ClientNote>,
    pub server_rx: mpsc::Receiver<ServerNote>,
    stop: tokio::sync::oneshot::Sender<()>,
    client: JoinHandle<Result<ClientSide>>,
    server: JoinHandle<Result<ServerSide>>,
}

impl Run {
    /// Starts the server, then a session to `target` (`None`: the service address) with
    /// `builder`, and returns once it is on wlan0 and the server has 1 MiB from it there.
    pub fn start(
        topo: &Topology,
        pki: &Pki,
        builder: roam::SessionBuilder,
        target: Option<String>,
    ) -> Result<Run> {
        let (server_tx, server_rx) = mpsc::channel();
        let server = start_server(topo, pki.server_tls()?, server_tx)?;
        wait_for(&server_rx, "the listener", |n| {
            matches!(n, ServerNote::Listening)
        })?;
        let (client_tx, client_rx) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let target =
            target.unwrap_or_else(|| format!("{}:{PORT}", roam_tests::topology::SERVICE_V4));
        let client = start_client_to(topo, target, builder, client_tx, stop_rx)?;
        let connected = wait_for(&client_rx, "the session", |n| {
            matches!(n, ClientNote::Connected(_))
        })?;
        ensure!(
            matches!(&connected, ClientNote::Connected(Some(i)) if i == "wlan0"),
            "the session did not start on the preferred link: {connected:?}"
        );
        wait_server_sees(&server_rx, topo.link("wlan0")?.handset_v4.into())?;
        Ok(Run {
            client_rx,
            server_rx,
            stop,
            client,
            server,
        })
    }

    /// Stops the client and checks both ends (`common::finish`).
    pub fn finish(self) -> Result<ServerSide> {
        finish(self.stop, self.client, self.server)
    }
}

/// `common::start_client` to any `target` (a name, say) rather than the service address:
/// a session from the handset sending a deterministic stream paced at 16 KiB per millisecond
/// until `stop` fires (or 60 s pass), then half-closing and reading the server's answer.
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

//! A session from the handset to the shared server (`common::start_server`), to any target
//! (a DNS name resolved by the session, say), started on the preferred link `wlan0` with data
//! flowing: the start of the resolution, flap and emulated-RTT tests.

use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{Result, ensure};
use roam_tests::topology::Topology;

use crate::common::{
    ClientNote, ClientSide, PORT, Pki, ServerNote, ServerSide, finish, start_client_to,
    start_server_ready, wait_for, wait_server_sees,
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
        let (server_rx, server) = start_server_ready(topo, pki)?;
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

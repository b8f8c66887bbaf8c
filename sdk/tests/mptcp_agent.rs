//! MPTCP steered by roamd (userspace path manager): the session registers its connection,
//! roamd opens a subflow on the decision's backup link ahead of time, and on link down it
//! promotes the backup and closes the dead subflow. The gap is the server's longest pause.
//!
//! roamd runs as a real process inside the handset: this test binary started again with the
//! filter `agent_process_helper` and `ROAM_SDK_TEST_AGENT` set, which runs the agent's own
//! shell (`roam_agent::daemon::run`) until it is killed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::*;
use roam_tests::privilege::require_netns;
use roam_tests::topology::Topology;

const AGENT_ENV: &str = "ROAM_SDK_TEST_AGENT_MPTCP";
const AGENT_CONFIG: &str =
    "[routing]\nenabled = false\n\n[mptcp]\nenabled = false\nuserspace = true\n";

/// Not a test of its own: the body of the agent process the tests start. Returns at once
/// unless `ROAM_SDK_TEST_AGENT` names a socket.
#[test]
fn agent_process_helper() {
    let Some(dir) = std::env::var_os(AGENT_ENV).map(PathBuf::from) else {
        return;
    };
    init_tracing();
    let config = roam_agent::config::Config::from_str("roamd.toml", AGENT_CONFIG)
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let socket = dir.join("roamd.sock");
    let opts = roam_agent::daemon::Options {
        config,
        policy_path: Some(dir.join("policy.roam")),
        socket: socket.clone(),
        dry_run: false,
        sysfs_root: PathBuf::from("/sys/class/net"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(roam_agent::daemon::run(opts, |_| {
        println!("agent-ready");
    }));
    r.expect("roamd failed");
}

/// roamd in the handset, killed (SIGKILL) on drop.
struct AgentProc {
    child: Child,
}

impl AgentProc {
    fn start(topo: &Topology, dir: &Path) -> Result<AgentProc> {
        let exe = std::env::current_exe()?;
        let mut cmd = topo.handset().command(exe.to_str().context("exe path")?);
        cmd.args([
            "agent_process_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(AGENT_ENV, dir)
        .env(
            "RUST_LOG",
            std::env::var("ROAM_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("starting roamd")?;
        let out = child.stdout.take().context("roamd stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("agent-ready") {
                    let _ = tx.send(());
                }
            }
        });
        let mut agent = AgentProc { child };
        if rx.recv_timeout(EVENT_TIMEOUT).is_err() {
            agent.kill();
            bail!("roamd did not become ready within {EVENT_TIMEOUT:?}");
        }
        Ok(agent)
    }

    fn kill(&mut self) {
        // `ip netns exec` execs the program: this pid is roamd's.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The handset's MPTCP subflows as `ss -tni` lists them: local addresses of ESTAB sockets to
/// the service port.
fn subflow_sources(topo: &Topology) -> Result<String> {
    let out = topo
        .handset()
        .command("ss")
        .args(["-tniH", "state", "established", "dport", "= :4433"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn roamd_makes_the_backup_subflow_ahead_and_moves_the_stream_on_link_down() -> Result<()> {
    if !require_netns("roamd_makes_the_backup_subflow_ahead_and_moves_the_stream_on_link_down") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let dir = std::env::temp_dir().join(format!("roam-sdk-mptcp-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("policy.roam"), POLICY)?;
    let socket = dir.join("roamd.sock");
    let _agent = AgentProc::start(&topo, &dir)?;

    let pki = Pki::generate()?;
    let (server_tx, server_rx) = mpsc::channel();
    let server = start_server(&topo, pki.server_tls()?, server_tx)?;
    wait_for(&server_rx, "the listener", |n| {
        matches!(n, ServerNote::Listening)
    })?;
    let (client_tx, client_rx) = mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let builder = roam::Session::builder()
        .app("com.example.chat")
        .roamd_socket(&socket)
        .transport(roam::TransportPreference::Mptcp)
        .tls(pki.client_tls())
        .server_name(SERVER_NAME);
    let client = start_client(&topo, builder, client_tx, stop_rx)?;
    let wlan = topo.link("wlan0")?.handset_v4;
    let rmnet = topo.link("rmnet0")?.handset_v4;
    wait_server_sees(&server_rx, wlan.into())?;
    // roamd opened the backup subflow from rmnet0 on its own (the kernel's endpoints are off).
    let mut seen = String::new();
    for _ in 0..100 {
        // Bounded: 100 x 20 ms.
        seen = subflow_sources(&topo)?;
        if seen.contains(&rmnet.to_string()) && seen.contains(&wlan.to_string()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        seen.contains(&rmnet.to_string()) && seen.contains(&wlan.to_string()),
        "no subflow on each link: {seen}"
    );
    let _ = client_rx.try_iter().count();
    let _ = server_rx.try_iter().count();
    topo.link_down("wlan0")?;
    // The server names an MPTCP peer by its first subflow's address whatever subflow carries
    // the data: 2 MiB boundaries crossed after wlan0 went down came over rmnet0.
    for _ in 0..2 {
        wait_for(&server_rx, "data after wlan0 went down", |n| {
            matches!(n, ServerNote::Received(_))
        })?;
    }
    let s = finish(stop, client, server)?;
    eprintln!(
        "figure: roamd userspace PM, wlan0 down, longest delivery gap {:?}",
        s.max_gap
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

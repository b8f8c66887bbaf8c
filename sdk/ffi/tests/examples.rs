//! The C examples as a user builds them: `server.c` listens in the server namespace through
//! `roam_listen`/`roam_accept` and echoes; `client.c` on the handset sends its message through
//! `roam_connect` and prints the answer. (The Python example runs in `handover.rs`.) A client
//! racing its two links may leave the server a second, abandoned session: the server serves
//! every session it accepts and survives the abandoned one.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::*;

#[test]
fn the_c_server_echoes_what_the_c_client_sends() -> Result<()> {
    let Some(_serial) =
        roam_tests::serial::netns_test("the_c_server_echoes_what_the_c_client_sends")
    else {
        return Ok(());
    };
    let dir = scratch("examples")?;
    let pki = Pki::generate(&dir)?;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let server_exe = cc(&examples.join("server.c"), &dir.join("server"))?;
    let client_exe = cc(&examples.join("client.c"), &dir.join("client"))?;
    let topo = two_links()?;

    let mut server = topo
        .server()
        .command(server_exe.to_str().context("path")?)
        .args([service(), pki.listen_options()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = Lines::of(server.stdout.take().context("stdout")?);
    let result = talk(&topo, &pki, &client_exe, &mut out);
    // The server serves until stopped; it must still be running (a crash shows here).
    let running = server.try_wait()?.is_none();
    let _ = server.kill();
    let status = server.wait()?;
    result?;
    ensure!(running, "the server ended by itself: {status}");
    Ok(())
}

fn talk(
    topo: &roam_tests::topology::Topology,
    pki: &Pki,
    client_exe: &Path,
    out: &mut Lines,
) -> Result<()> {
    out.wait_for("listening", Duration::from_secs(10))?
        .context("the server ended before listening")?;

    for msg in ["hello from C", "and once more"] {
        let o = topo
            .handset()
            .command(client_exe.to_str().context("path")?)
            .args([service(), pki.client_options(&[]), msg.into()])
            .output()?;
        let stderr = String::from_utf8_lossy(&o.stderr);
        ensure!(o.status.success(), "client failed: {stderr}");
        ensure!(
            String::from_utf8_lossy(&o.stdout) == msg,
            "echo of {msg:?}: {o:?}"
        );
        ensure!(
            stderr.contains("paths: {") && stderr.contains(r#""transport":"quic""#),
            "{stderr}"
        );
        let peer = out
            .wait_for("peer ", Duration::from_secs(10))?
            .context("the server ended")?;
        ensure!(peer.contains(r#""app":"com.example.ffi""#), "{peer}");
        ensure!(peer.contains("198.18.0.2"), "{peer}");
    }
    Ok(())
}

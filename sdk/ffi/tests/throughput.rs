//! Throughput through a roam descriptor against a Rust `Session` on the same path, in one run:
//! wlan0's path shaped to 500 Mbit/s each way (a tbf on both ends), 64 MiB uploaded to a roam
//! sink that answers with its byte count. It prints both figures and their ratio (the aim is
//! ≥ 90%); it asserts only that every byte arrived, not a speed: speed is for reading
//! (`cargo test --release -p roam-ffi --test throughput -- --nocapture` for real figures, the
//! debug build is CPU bound). One test: the library's runtime lives in the namespace of its
//! first call.

mod common;

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::*;
use roam_tests::topology::{SERVICE_V4, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BYTES: u64 = 64 * 1024 * 1024;
const MBIT: u32 = 500;
const CHUNK: usize = 64 * 1024;

/// A tbf of `mbit` on both ends of `link`'s path, its bucket 2 ms at the rate.
fn shape(topo: &Topology, link: &str, mbit: u32) -> Result<()> {
    let l = topo.link(link)?.clone();
    let burst = (u64::from(mbit) * 1_000_000 / 8 / 500)
        .max(4096)
        .to_string();
    let rate = format!("{mbit}mbit");
    for (ns, dev) in [(topo.handset(), &l.name), (topo.server(), &l.server_dev)] {
        ns.exec(
            "tc",
            &[
                "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst,
                "latency", "20ms",
            ],
        )
        .with_context(|| format!("shaping {dev}"))?;
    }
    Ok(())
}

/// A sink in the server namespace: each session is read to its end and answered with the
/// byte count, for `sessions` sessions (a racing client's abandoned session counts too).
fn sink(topo: &Topology, pki: &Pki) -> Result<std::thread::JoinHandle<Result<()>>> {
    let tls = pki.server_tls()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = topo.server().spawn("roam-sink", move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let l = roam_sdk_listener(SocketAddr::new(SERVICE_V4.into(), PORT), tls)?;
            let _ = ready_tx.send(());
            loop {
                let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(60), l.accept()).await
                else {
                    return Ok(());
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut n = 0u64;
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(k) => n += k as u64,
                            Err(_) => return,
                        }
                    }
                    let _ = s.write_all(n.to_string().as_bytes()).await;
                    let _ = s.shutdown().await;
                    let _ = tokio::time::timeout(Duration::from_secs(10), s.closed()).await;
                });
            }
        })
    })?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the sink did not listen")?;
    Ok(h)
}

fn roam_sdk_listener(addr: SocketAddr, tls: rustls::ServerConfig) -> Result<roam_sdk::Listener> {
    Ok(roam_sdk::Listener::bind(addr, tls)?)
}

fn mbit(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e6
}

/// Uploads through a Rust `Session`; returns the time to the sink's count.
async fn through_session(options: &Pki) -> Result<Duration> {
    let builder = roam_sdk::Session::builder()
        .app("com.example.ffi")
        .policy(POLICY)
        .use_roamd(false)
        .tls(roam_sdk::ClientTls::Ca(vec![options.ca_der()?]))
        .server_name(SERVER_NAME);
    let mut s = builder.connect(&service()).await?;
    let chunk = vec![7u8; CHUNK];
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < BYTES {
        s.write_all(&chunk).await?;
        sent += CHUNK as u64;
    }
    s.shutdown().await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await?;
    let took = t0.elapsed();
    ensure!(answer == BYTES.to_string(), "the sink got {answer} bytes");
    s.close_and_wait(0, b"done").await;
    Ok(took)
}

/// Uploads through a descriptor from `roam_connect`; returns the time to the sink's count.
fn through_descriptor(options: &str) -> Result<Duration> {
    let target = CString::new(service())?;
    let options = CString::new(options)?;
    let fd = unsafe { roam::roam_connect(target.as_ptr(), options.as_ptr()) };
    ensure!(fd >= 0, "connect: {}", std::io::Error::last_os_error());
    let mut s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    let chunk = vec![7u8; CHUNK];
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < BYTES {
        s.write_all(&chunk)?;
        sent += CHUNK as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let took = t0.elapsed();
    ensure!(answer == BYTES.to_string(), "the sink got {answer} bytes");
    Ok(took)
}

#[test]
fn throughput_through_the_descriptor_against_a_rust_session() -> Result<()> {
    let Some(_serial) =
        roam_tests::serial::netns_test("throughput_through_the_descriptor_against_a_rust_session")
    else {
        return Ok(());
    };
    let dir = scratch("throughput")?;
    let pki = Pki::generate(&dir)?;
    let topo = two_links()?;
    shape(&topo, "wlan0", MBIT)?;
    let _sink = sink(&topo, &pki)?;
    let options = pki.client_options(&[]);
    let (rust, fd) = topo.handset().run(|| -> Result<(Duration, Duration)> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        // Each twice, interleaved, the better of the two kept: the first of a kind warms up.
        let mut rust = Duration::MAX;
        let mut fd = Duration::MAX;
        for _ in 0..2 {
            rust = rust.min(rt.block_on(through_session(&pki))?);
            fd = fd.min(through_descriptor(&options)?);
        }
        Ok((rust, fd))
    })??;
    let (r, f) = (mbit(BYTES, rust), mbit(BYTES, fd));
    eprintln!(
        "figure: {} MiB up wlan0 shaped to {MBIT} Mbit/s ({} build): Rust Session {r:.0} Mbit/s, \
         descriptor {f:.0} Mbit/s, descriptor/Session {:.0}%",
        BYTES >> 20,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        100.0 * f / r
    );
    Ok(())
}

//! A name that does not resolve and a server that is not there, from the handset: -1 with
//! errno and a message naming the cause, within the configured connect timeout (and the 2 s
//! the library allows past it), never a hang. One test: the library's runtime lives in the
//! namespace of its first call, so this file makes one topology.

mod common;

use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::*;
use roam::{roam_connect, roam_last_error};

/// Connects with `options` and returns how long it took, errno and the message.
fn fails(target: &str, options: &str) -> Result<(Duration, i32, String)> {
    let t = CString::new(target)?;
    let o = CString::new(options)?;
    let t0 = Instant::now();
    let r = unsafe { roam_connect(t.as_ptr(), o.as_ptr()) };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let took = t0.elapsed();
    ensure!(r == -1, "connecting to {target} succeeded (fd {r})");
    let msg = unsafe { CStr::from_ptr(roam_last_error()) }
        .to_string_lossy()
        .into_owned();
    eprintln!("{target}: {took:?} errno {errno}: {msg}");
    Ok((took, errno, msg))
}

#[test]
fn unresolvable_names_and_refused_connections_fail_within_the_timeout() -> Result<()> {
    let Some(_serial) = roam_tests::serial::netns_test(
        "unresolvable_names_and_refused_connections_fail_within_the_timeout",
    ) else {
        return Ok(());
    };
    let dir = scratch("refused")?;
    let pki = Pki::generate(&dir)?;
    let topo = two_links()?;
    let timeout = Duration::from_millis(1500);
    let limit = timeout + Duration::from_millis(2500);
    let opts = |transport: &str| {
        pki.client_options(&[
            ("transport", transport.into()),
            ("connect_timeout_ms", 1500.into()),
        ])
    };
    topo.handset().run(|| -> Result<()> {
        // No nameserver answers on the handset's links: after the resolver's 2 s the name does
        // not resolve, inside a 5 s connect timeout.
        let long = pki.client_options(&[("connect_timeout_ms", 5000.into())]);
        let (took, errno, msg) = fails("nowhere.roam.invalid:4433", &long)?;
        ensure!(took < Duration::from_secs(5), "took {took:?}");
        ensure!(errno == libc::ENOENT, "errno {errno}: {msg}");
        ensure!(
            msg.contains("`nowhere.roam.invalid` does not resolve"),
            "{msg}"
        );

        // Nothing listens on the server: TCP is refused at once.
        let (took, errno, msg) = fails(&service(), &opts("tcp-resume"))?;
        ensure!(took < limit, "took {took:?}");
        ensure!(errno == libc::ECONNREFUSED, "errno {errno}: {msg}");
        ensure!(msg.contains(&service()), "{msg}");

        // QUIC hears nothing back: it gives up at the connect timeout.
        let (took, errno, msg) = fails(&service(), &opts("quic"))?;
        ensure!(took < limit, "took {took:?}");
        ensure!(
            errno == libc::ETIMEDOUT || errno == libc::ECONNREFUSED,
            "errno {errno}: {msg}"
        );
        ensure!(msg.contains(&service()), "{msg}");
        Ok(())
    })??;
    Ok(())
}

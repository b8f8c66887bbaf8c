//! 1,000 connect/close cycles through the C ABI from the handset to a roam echo server: the
//! process's open descriptors come back to where they started, every registry entry is gone,
//! and the resident memory, once level after a warm-up, grows by less than 8 MiB. One test: the
//! library's runtime lives in the namespace of its first call.

mod common;

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::*;
use roam::{live_descriptors, roam_connect};

const CYCLES: usize = 1000;
/// Cycles before the baseline: the runtime, the TLS roots and the allocator's arenas settle
/// (the resident set climbs over the first ~100 cycles, then stays level).
const WARMUP: usize = 150;
/// A leak of 8 KiB per cycle would pass this bound; the pump's two 256 KiB buffers, a
/// session or a runtime task per cycle would not.
const RSS_BOUND: u64 = 8 * 1024 * 1024;

fn open_fds() -> Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

/// The resident set, after glibc gave back the free memory it can (so that memory freed
/// but kept in the allocator's arenas does not count).
fn rss() -> Result<u64> {
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe { libc::malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

/// One cycle: connect, one byte there and back, both ends of the stream, close.
fn cycle(target: &CString, options: &CString) -> Result<()> {
    let fd = unsafe { roam_connect(target.as_ptr(), options.as_ptr()) };
    ensure!(fd >= 0, "connect: {}", std::io::Error::last_os_error());
    let mut s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"x")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    ensure!(&b == b"x", "echo {b:?}");
    // Both ends of the stream, then the close: the server's echo ends cleanly.
    s.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    ensure!(rest.is_empty(), "{} more bytes after the echo", rest.len());
    drop(s);
    Ok(())
}

/// Waits until every session's pump has ended and the open descriptors have stayed level for
/// 3 s (a closed session lingers up to 2 s for its peer's close): returns the live sessions
/// and the open descriptors then.
fn settle() -> Result<(usize, usize)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut level_since = Instant::now();
    let mut last = open_fds()?;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let (live, open) = (live_descriptors(), open_fds()?);
        if open != last || live != 0 {
            level_since = Instant::now();
            last = open;
        }
        if level_since.elapsed() >= Duration::from_secs(3) || Instant::now() > deadline {
            return Ok((live, open));
        }
    }
}

#[test]
fn a_thousand_connect_close_cycles_leave_no_descriptor_and_no_memory_behind() -> Result<()> {
    let Some(_serial) = roam_tests::serial::netns_test(
        "a_thousand_connect_close_cycles_leave_no_descriptor_and_no_memory_behind",
    ) else {
        return Ok(());
    };
    let dir = scratch("cycles")?;
    let pki = Pki::generate(&dir)?;
    let topo = two_links()?;
    let server = EchoServer::start(&topo, &pki)?;
    let target = CString::new(service())?;
    let options = CString::new(pki.client_options(&[]))?;
    // Two rounds of CYCLES: the first takes the allocator to its high-water mark (ended
    // sessions linger up to 2 s, so hundreds are alive at the peak, and glibc keeps some of
    // what they freed as fragments); a leak grows with every cycle, so it shows in the second
    // round too, while the high-water mark does not grow again.
    let trimmed_rss = || -> Result<u64> {
        // SAFETY: malloc_trim only hands free heap pages back to the kernel; no pointer is
        // touched.
        unsafe { libc::malloc_trim(0) };
        rss()
    };
    let (fds0, rss0, rounds) = topo.handset().run(|| -> Result<_> {
        for _ in 0..WARMUP {
            cycle(&target, &options)?;
        }
        let (_, fds0) = settle()?;
        let rss0 = trimmed_rss()?;
        let mut rounds = Vec::new();
        for round in 0..2 {
            let t0 = Instant::now();
            for i in 0..CYCLES {
                cycle(&target, &options).with_context(|| format!("round {round}, cycle {i}"))?;
                if i % 250 == 249 {
                    eprintln!("RSS after {} cycles: {} KiB", i + 1, rss()? / 1024);
                }
            }
            let (live, fds) = settle()?;
            let rss = trimmed_rss()?;
            eprintln!(
                "figure: round {round}: {CYCLES} connect/echo/close cycles in {:?}; \
                 descriptors {fds0} -> {fds}, live sessions {live}, RSS {} -> {} KiB",
                t0.elapsed(),
                rss0 / 1024,
                rss / 1024
            );
            rounds.push((live, fds, rss));
        }
        Ok((fds0, rss0, rounds))
    })??;
    // The echo server runs in this process too.
    let echoed = server.finish()?;
    for (round, (live, fds, _)) in rounds.iter().enumerate() {
        ensure!(
            *live == 0,
            "round {round}: {live} sessions still registered"
        );
        ensure!(*fds <= fds0, "round {round}: descriptors {fds0} -> {fds}");
    }
    let (first, second) = (rounds[0].2, rounds[1].2);
    ensure!(
        second < first + RSS_BOUND,
        "RSS grew by {} KiB over the second {CYCLES} cycles (after {} KiB over the first)",
        second.saturating_sub(first) / 1024,
        first.saturating_sub(rss0) / 1024
    );
    ensure!(echoed.bytes == (WARMUP + 2 * CYCLES) as u64, "{echoed:?}");
    Ok(())
}

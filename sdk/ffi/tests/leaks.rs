//! A leak check of the C ABI under valgrind's memcheck: a C program on the handset runs
//! connect/echo/close cycles through `libroam.so` against a roam echo server, waits until its
//! descriptors are back where they started (every session's pump ended), and exits; memcheck
//! must find no block definitely lost. First, the same check on a C program that leaks on
//! purpose must fail, so the harness can see a leak at all.
//!
//! Only "definitely lost" counts: the library's runtime is a process-wide static whose worker
//! threads are alive at exit, so what they hold is reachable by design (the crate's docs and
//! README: one runtime per process, started by the first call). Uninitialised-value checks are off: the TLS library's hand-written assembly
//! trips them without a fault of ours, and they would bury the leak report.

mod common;

use std::path::Path;
use std::process::Output;

use anyhow::{Context, Result, bail, ensure};
use common::*;

/// Cycles the C program runs: enough that a per-session leak shows as many blocks, few enough
/// for memcheck's slowdown (each cycle is a QUIC handshake under emulation).
const CYCLES: u32 = 20;

/// The C side: CYCLES connect/echo/close cycles, then waits (bounded) for the descriptors the
/// library opened to be closed, so that ended sessions are gone before memcheck looks.
const CYCLES_C: &str = r#"
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "roam.h"

static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int cycles = atoi(argv[3]);
    int base = -1;
    for (int i = 0; i < cycles; i++) {
        int fd = roam_connect(argv[1], argv[2]);
        if (fd < 0) {
            fprintf(stderr, "cycle %d: connect: %s\n", i, roam_last_error());
            return 1;
        }
        if (write(fd, "x", 1) != 1) { perror("write"); return 1; }
        shutdown(fd, SHUT_WR);
        char b[16];
        ssize_t n, got = 0;
        while ((n = read(fd, b, sizeof b)) > 0) got += n;
        if (n < 0 || got != 1) { fprintf(stderr, "cycle %d: echo %zd\n", i, got); return 1; }
        close(fd);
        /* The runtime's own descriptors exist after the first cycle. */
        if (i == 0) {
            struct timespec t = {1, 0};
            nanosleep(&t, NULL);
            base = open_fds();
        }
    }
    /* Ended sessions linger up to 2 s for the peer's close: wait (30 s at most) until the
     * descriptors are back to the level after the first cycle. */
    for (int w = 0; w < 300 && open_fds() > base; w++) {
        struct timespec t = {0, 100 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    int left = open_fds();
    printf("cycles %d descriptors %d -> %d\n", cycles, base, left);
    return left > base ? 3 : 0;
}
"#;

/// Leaks 40 blocks of 100 bytes on purpose.
const LEAKY_C: &str = r#"
#include <stdlib.h>
#include <string.h>
#include "roam.h"
int main(void) {
    for (int i = 0; i < 40; i++) {
        char *p = malloc(100);
        memset(p, i, 100);
        p = NULL;
    }
    return roam_last_error() == NULL ? 0 : 1;
}
"#;

/// memcheck's leak-only settings; a definite leak exits 99.
fn memcheck_args(log: &Path) -> Vec<String> {
    vec![
        "--tool=memcheck".into(),
        "--leak-check=full".into(),
        "--show-leak-kinds=definite".into(),
        "--errors-for-leak-kinds=definite".into(),
        "--undef-value-errors=no".into(),
        "--error-exitcode=99".into(),
        "--fair-sched=yes".into(),
        format!("--log-file={}", log.display()),
    ]
}

/// The bytes memcheck says were definitely lost, from its summary.
fn definitely_lost(log: &str) -> Result<u64> {
    let line = log
        .lines()
        .find(|l| l.contains("definitely lost:"))
        .context("memcheck printed no leak summary")?;
    let n = line
        .split("definitely lost:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .context("no byte count")?;
    Ok(n.replace(',', "").parse()?)
}

fn run(out: Output, log: &Path) -> Result<(Output, String)> {
    let text = std::fs::read_to_string(log)
        .with_context(|| format!("reading memcheck's log {}", log.display()))?;
    Ok((out, text))
}

#[test]
fn connect_close_cycles_under_memcheck_lose_no_memory() -> Result<()> {
    let Some(_serial) =
        roam_tests::serial::netns_test("connect_close_cycles_under_memcheck_lose_no_memory")
    else {
        return Ok(());
    };
    if std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var_os("CI").is_some() {
            bail!("valgrind is not installed (scripts/test installs it)");
        }
        eprintln!("skipped: valgrind is not installed (scripts/test installs it)");
        return Ok(());
    }
    let dir = scratch("leaks")?;
    let pki = Pki::generate(&dir)?;

    // The harness sees a leak: 4,000 bytes in 40 blocks.
    let leaky = cc_text(&dir, "leaky", LEAKY_C)?;
    let log = dir.join("leaky.log");
    let (out, text) = run(
        std::process::Command::new("valgrind")
            .args(memcheck_args(&log))
            .arg(&leaky)
            .output()?,
        &log,
    )?;
    ensure!(
        out.status.code() == Some(99) && definitely_lost(&text)? == 4000,
        "memcheck did not report the planted leak ({:?}):\n{text}",
        out.status
    );

    let exe = cc_text(&dir, "cycles", CYCLES_C)?;
    let topo = two_links()?;
    let server = EchoServer::start(&topo, &pki)?;
    let log = dir.join("cycles.log");
    let (out, text) = run(
        topo.handset()
            .command("valgrind")
            .args(memcheck_args(&log))
            .arg(&exe)
            .args([service(), pki.client_options(&[]), CYCLES.to_string()])
            .output()?,
        &log,
    )?;
    let echoed = server.finish()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("figure: under memcheck: {}", stdout.trim());
    let lost = definitely_lost(&text)?;
    ensure!(
        out.status.success() && lost == 0,
        "{CYCLES} cycles under memcheck: {:?}, {lost} bytes definitely lost; stdout {stdout}\n\
         stderr {}\nmemcheck's log:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(echoed.bytes == u64::from(CYCLES), "{echoed:?}");
    Ok(())
}

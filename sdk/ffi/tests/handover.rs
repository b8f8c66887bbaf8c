//! A descriptor from `roam_connect` on the two-link handset carries 6 MB to a roam echo server
//! and back while wlan0 goes down mid-stream: every byte returns intact, the descriptor never
//! fails, and the session says it moved to rmnet0. Once from a plain C client written here
//! (write(2), read(2), poll(2)), once from the Python example (ctypes).

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::*;
use roam_tests::topology::Topology;

/// 6 MB, paced at 2 MB/s so that the link goes down with the stream in full flow.
const SIZE: u64 = 6 * 1024 * 1024;
const RATE: u64 = 2 * 1024 * 1024;

/// The C client: writes SIZE bytes of a pattern at RATE bytes/s through the descriptor with
/// write(2) and poll(2), reads the echo and checks each byte, prints the session's events; any
/// error of the descriptor ends it with a non-zero status.
const C_CLIENT: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "roam.h"

static uint8_t pat(uint64_t i) { return (uint8_t)((i * 2654435761u) >> 24); }
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}
#define FAIL(...) do { printf("error "); printf(__VA_ARGS__); printf("\n"); fflush(stdout); return 1; } while (0)

int main(int argc, char **argv) {
    if (argc != 5) FAIL("usage: target options size rate");
    uint64_t size = strtoull(argv[3], NULL, 10), rate = strtoull(argv[4], NULL, 10);
    int fd = roam_connect(argv[1], argv[2]);
    if (fd < 0) FAIL("connect errno %d: %s", errno, roam_last_error());
    int ev = roam_events_fd(fd);
    if (ev < 0) FAIL("events errno %d: %s", errno, roam_last_error());
    if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0) FAIL("fcntl %s", strerror(errno));
    static uint8_t out[16384], in[65536];
    char evbuf[65536];
    size_t evlen = 0;
    uint64_t sent = 0, got = 0;
    int shut = 0, ev_open = 1;
    double start = now();
    printf("connected\n");
    fflush(stdout);
    while (got < size) {
        uint64_t allowed = (uint64_t)((now() - start) * (double)rate) + sizeof out;
        if (allowed > size) allowed = size;
        struct pollfd p[2] = {{fd, POLLIN | (sent < allowed ? POLLOUT : 0), 0}, {ev, POLLIN, 0}};
        int n = poll(p, ev_open ? 2 : 1, 5);
        if (n < 0 && errno != EINTR) FAIL("poll %s", strerror(errno));
        if (n <= 0) continue;
        if (p[0].revents & (POLLERR | POLLNVAL)) FAIL("descriptor revents %#x", p[0].revents);
        if ((p[0].revents & POLLOUT) && sent < allowed) {
            size_t k = (size_t)(allowed - sent < sizeof out ? allowed - sent : sizeof out);
            for (size_t j = 0; j < k; j++) out[j] = pat(sent + j);
            ssize_t w = write(fd, out, k);
            if (w < 0 && errno != EAGAIN && errno != EINTR) FAIL("write errno %d %s", errno, strerror(errno));
            if (w > 0) sent += (uint64_t)w;
            if (sent == size && !shut) {
                if (shutdown(fd, SHUT_WR) != 0) FAIL("shutdown %s", strerror(errno));
                shut = 1;
            }
        }
        if (p[0].revents & (POLLIN | POLLHUP)) {
            ssize_t r = read(fd, in, sizeof in);
            if (r < 0 && errno != EAGAIN && errno != EINTR) FAIL("read errno %d %s", errno, strerror(errno));
            if (r == 0) FAIL("end of stream after %llu of %llu bytes", (unsigned long long)got, (unsigned long long)size);
            for (ssize_t j = 0; j < r; j++)
                if (in[j] != pat(got + (uint64_t)j)) FAIL("corrupted at byte %llu", (unsigned long long)(got + (uint64_t)j));
            if (r > 0) {
                if ((got >> 20) != ((got + (uint64_t)r) >> 20)) printf("received %llu\n", (unsigned long long)(got + (uint64_t)r));
                got += (uint64_t)r;
                fflush(stdout);
            }
        }
        if (ev_open && (p[1].revents & (POLLIN | POLLHUP))) {
            ssize_t r = read(ev, evbuf + evlen, sizeof evbuf - 1 - evlen);
            if (r <= 0) ev_open = 0;
            else {
                evlen += (size_t)r;
                char *nl;
                while ((nl = memchr(evbuf, '\n', evlen))) {
                    *nl = 0;
                    printf("event %s\n", evbuf);
                    evlen -= (size_t)(nl + 1 - evbuf);
                    memmove(evbuf, nl + 1, evlen);
                }
                fflush(stdout);
            }
        }
    }
    /* The echo ended with ours: the next read is the end of the stream. */
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) FAIL("no end of stream");
    ssize_t r = read(fd, in, sizeof in);
    if (r != 0) FAIL("expected end of stream, read %zd", r);
    char paths[8192];
    if (roam_paths(fd, paths, sizeof paths) < 0) FAIL("paths errno %d: %s", errno, roam_last_error());
    printf("paths %s\n", paths);
    close(ev);
    if (close(fd) != 0) FAIL("close %s", strerror(errno));
    printf("ok %llu bytes echoed intact\n", (unsigned long long)got);
    fflush(stdout);
    return 0;
}
"#;

/// Runs `child` (a client on the handset), takes wlan0 down once 1 MB has come back, and
/// checks what it printed; then the server's count.
fn through_handover(topo: &Topology, server: EchoServer, mut child: Child) -> Result<()> {
    let mut lines = Lines::of(child.stdout.take().context("stdout")?);
    let mut errors = Lines::of(child.stderr.take().context("stderr")?);
    let result = (|| -> Result<()> {
        lines
            .wait_for("received", Duration::from_secs(20))?
            .context("the client ended before 1 MB came back")?;
        topo.link_down("wlan0")?;
        eprintln!("wlan0 is down");
        lines.rest(Duration::from_secs(60))?;
        Ok(())
    })();
    let status = match child.wait_timeout_or_kill(Duration::from_secs(30)) {
        Ok(s) => s,
        Err(e) => return Err(e.context(format!("output: {:?}", lines.seen))),
    };
    errors.rest(Duration::from_secs(5))?;
    result?;
    let seen = format!(
        "{}\n--- stderr:\n{}",
        lines.seen.join("\n"),
        errors.seen.join("\n")
    );
    ensure!(status.success(), "the client failed ({status}):\n{seen}");
    ensure!(
        seen.contains(&format!("ok {SIZE} bytes echoed intact")),
        "{seen}"
    );
    let moved = lines.seen.iter().any(|l| {
        l.starts_with("event ")
            && l.contains(r#""event":"path_changed""#)
            && l.contains(r#""to":{"interface":"rmnet0""#)
    });
    ensure!(moved, "the session never said it moved to rmnet0:\n{seen}");
    let paths = lines
        .seen
        .iter()
        .find(|l| l.starts_with("paths "))
        .context("no paths line")?;
    ensure!(
        paths.contains(r#""interface":"rmnet0""#),
        "the session's path is not rmnet0 at the end: {paths}"
    );
    let echoed = server.finish()?;
    ensure!(
        echoed.bytes == SIZE,
        "the server echoed {} bytes",
        echoed.bytes
    );
    Ok(())
}

trait WaitTimeout {
    fn wait_timeout_or_kill(&mut self, limit: Duration) -> Result<std::process::ExitStatus>;
}

impl WaitTimeout for Child {
    fn wait_timeout_or_kill(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = self.kill();
                let _ = self.wait();
                anyhow::bail!("the client did not end within {limit:?}; killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_c_client_writes_6_mb_through_the_descriptor_across_wlan0_going_down() -> Result<()> {
    let Some(_serial) = roam_tests::serial::netns_test(
        "a_c_client_writes_6_mb_through_the_descriptor_across_wlan0_going_down",
    ) else {
        return Ok(());
    };
    let dir = scratch("handover-c")?;
    let pki = Pki::generate(&dir)?;
    let exe = cc_text(&dir, "handover_client", C_CLIENT)?;
    let topo = two_links()?;
    let server = EchoServer::start(&topo, &pki)?;
    let child = topo
        .handset()
        .command(exe.to_str().context("path")?)
        .args([
            service(),
            pki.client_options(&[]),
            SIZE.to_string(),
            RATE.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    through_handover(&topo, server, child)
}

#[test]
fn the_python_example_does_the_same_through_ctypes() -> Result<()> {
    let Some(_serial) =
        roam_tests::serial::netns_test("the_python_example_does_the_same_through_ctypes")
    else {
        return Ok(());
    };
    let dir = scratch("handover-py")?;
    let pki = Pki::generate(&dir)?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/echo_client.py");
    let topo = two_links()?;
    let server = EchoServer::start(&topo, &pki)?;
    let child = topo
        .handset()
        .command("python3")
        .arg(&script)
        .args([
            service(),
            pki.client_options(&[]),
            SIZE.to_string(),
            RATE.to_string(),
        ])
        .env("ROAM_LIB", lib_dir()?.join("libroam.so"))
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    through_handover(&topo, server, child)
}

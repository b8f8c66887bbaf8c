//! `roam connect`: a session to a listener, like netcat, or a checked transfer against an echo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roam::{ClientTls, Session, TransportPreference};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Result;
use crate::events::{Narrator, Printer, sentence, t_ms};
use crate::pattern::{self, EchoClock};

/// Largest write of the pattern.
const CHUNK: usize = 64 * 1024;
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long the end of the echo may take once everything came back.
const END_WAIT: Duration = Duration::from_secs(5);

/// `roam connect --help`.
pub const LONG_ABOUT: &str = "Open a session to HOST:PORT and keep it alive while links come and go.\n\n\
    Without --bytes, like netcat: standard input goes into the session and the session to \
    standard output; the command ends when both directions have ended. With --bytes N it sends \
    N bytes of a counter pattern (byte p is byte p % 8 of the little-endian p / 8) and checks \
    every byte of the echo (run the server with `roam serve --echo`).\n\n\
    Sentences (path changes, a progress line each second) go to standard error. --json prints \
    one JSON object per line per session event instead, with t_ms since the session was \
    established (to standard output with --bytes, else to standard error), and with --bytes a \
    last line {\"event\":\"done\",\"bytes_sent\":N,\"bytes_echoed\":N,\"intact\":true,\
    \"max_echo_gap_ms\":X}; max_echo_gap_ms is the longest pause in the echo while sent data \
    was waiting for it: what an app felt, whichever direction stalled. Every path the session \
    starts or stops using is a path_added or path_removed line with its interface (MPTCP \
    subflows; for a session on one path, its first path and each move).\n\n\
    Exit status 0 only when everything sent came back intact (--bytes) or the session ended \
    cleanly (netcat mode); 1 otherwise, 2 for a usage error.\n\n\
    Decisions come from roamd when its socket answers (ROAM_SOCKET, else \
    /run/roam/roamd.sock), else from an embedded link monitor and the built-in policy or \
    --policy.";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server, as host:port ([v6]:port for an IPv6 address).
    #[arg(value_name = "HOST:PORT")]
    target: String,
    /// auto (QUIC and TCP raced, QUIC first), quic, mptcp or tcp-resume.
    #[arg(long, default_value = "auto", value_name = "TRANSPORT")]
    transport: TransportPreference,
    /// Trust only the CA certificates in this PEM file (default: the system's trust store).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not HOST (an IP address, say).
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// The app id the policy's `app "..."` blocks match, sent to the server.
    #[arg(long, value_name = "ID")]
    app: Option<String>,
    /// A policy file (the roam policy language) for the embedded decisions. Flow-size rules
    /// apply: with `start on cell then add wifi after 1MB` the session starts on cellular and
    /// WiFi is added once it has carried 1 MB both ways.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// An application protocol (ALPN) offered after roam/1, to talk to any server that speaks
    /// it (one that echoes, with --bytes), not only a roam listener.
    #[arg(long, value_name = "P")]
    alpn: Option<String>,
    /// Send this many bytes of the counter pattern and check the echo (suffixes k, M, G:
    /// powers of 1000).
    #[arg(long, value_name = "N", value_parser = parse_size)]
    bytes: Option<u64>,
    /// Pace the sending at this many Mbit/s (default: as fast as the session takes it).
    #[arg(long, value_name = "MBIT", requires = "bytes")]
    rate: Option<f64>,
    /// One JSON object per line per session event.
    #[arg(long)]
    json: bool,
}

/// `N`, `Nk`, `NM` or `NG` (powers of 1000).
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1_000),
        Some((i, 'M')) => (&s[..i], 1_000_000),
        Some((i, 'G')) => (&s[..i], 1_000_000_000),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a byte count (e.g. 1000, 64k, 10M, 1G)"))
}

/// Connects and runs netcat mode or the checked transfer.
pub async fn run(args: Args) -> Result<ExitCode> {
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(format!("--rate {r}: give a positive number of Mbit/s").into());
    }
    let mut b = Session::builder().transport(args.transport);
    if let Some(ca) = &args.ca {
        b = b.tls(ClientTls::Ca(crate::pki::certificates("--ca", ca)?));
    }
    if let Some(name) = &args.server_name {
        b = b.server_name(name);
    }
    if let Some(app) = &args.app {
        b = b.app(app);
    }
    if let Some(p) = &args.policy {
        let text = crate::pki::read("--policy", p)?;
        let text = String::from_utf8(text)
            .map_err(|_| format!("--policy {}: not UTF-8 text", p.display()))?;
        b = b.policy(text);
    }
    if let Some(alpn) = &args.alpn {
        b = b.alpn(alpn.as_bytes());
    }
    let session = b.connect(&args.target).await?;
    let start = Instant::now();
    let out = Printer {
        json: args.json,
        stdout_busy: args.bytes.is_none(),
    };
    let path = session.path();
    let on = Arc::new(Mutex::new(path.interface.clone()));
    out.json(&json!({
        "event": "connected", "t_ms": 0, "transport": session.transport().as_str(),
        "interface": path.interface, "local": path.local.map(|a| a.to_string()),
        "remote": path.remote.to_string(), "alpn": String::from_utf8_lossy(session.alpn()),
    }));
    out.say(&format!(
        "connected to {} over {} on {}",
        path.remote,
        session.transport(),
        path.interface.as_deref().unwrap_or("an unknown interface")
    ));
    let mut narrator = Narrator::default();
    out.json(&narrator.connected(&path));
    let mut events = session.events();
    let watched = on.clone();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if let roam::SessionEvent::PathChanged { to, .. } = &e {
                *lock(&watched) = Some(to.interface.clone());
            }
            for v in narrator.json(&e, t_ms(start)) {
                out.json(&v);
            }
            if let Some(text) = sentence(&e) {
                out.say(&format!("{:>8.3} s  {text}", start.elapsed().as_secs_f64()));
            }
        }
    });
    match args.bytes {
        None => netcat(session, out).await,
        Some(n) => transfer(session, n, args.rate, out, on, start).await,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Standard input into the session, the session to standard output, until both ended.
async fn netcat(session: Session, out: Printer) -> Result<ExitCode> {
    let (mut rx, mut tx) = tokio::io::split(session);
    let up = async {
        tokio::io::copy(&mut tokio::io::stdin(), &mut tx).await?;
        tx.shutdown().await?;
        Ok::<_, std::io::Error>(())
    };
    let down = async {
        let mut stdout = tokio::io::stdout();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = rx.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            stdout.write_all(&buf[..n]).await?;
            stdout.flush().await?;
        }
    };
    let ended = {
        tokio::pin!(up, down);
        // The peer's end of the stream ends the command, even while standard input is open;
        // the end of standard input ends this direction only.
        tokio::select! {
            r = &mut down => r,
            r = &mut up => match r {
                Ok(()) => down.await,
                Err(e) => Err(e),
            },
        }
    };
    let session = rx.unsplit(tx);
    match ended {
        Ok(()) => {
            out.json(&json!({"event": "done", "clean": true}));
            session.close_and_wait(0, b"done").await;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(format!("the session failed: {e}").into()),
    }
}

/// Sends `total` bytes of the pattern (paced at `rate` Mbit/s), checks the echo, and prints
/// the `done` line.
async fn transfer(
    session: Session,
    total: u64,
    rate: Option<f64>,
    out: Printer,
    on: Arc<Mutex<Option<String>>>,
    start: Instant,
) -> Result<ExitCode> {
    let clock = Arc::new(Mutex::new(EchoClock::default()));
    let (mut rx, mut tx) = tokio::io::split(session);
    let progress = tokio::spawn(progress(clock.clone(), total, out, on, start));
    let (sent, echoed) = tokio::join!(
        send(&mut tx, total, rate, &clock),
        check(&mut rx, total, &clock)
    );
    progress.abort();
    let (bytes_sent, bytes_echoed, gap) = {
        let mut c = lock(&clock);
        c.finish(Instant::now());
        (c.sent, c.echoed, c.max_gap)
    };
    let mismatch = echoed.as_ref().ok().copied().flatten();
    let intact = sent.is_ok()
        && echoed.is_ok()
        && mismatch.is_none()
        && bytes_sent == total
        && bytes_echoed == total;
    let gap_ms = (gap.as_secs_f64() * 10_000.0).round() / 10.0;
    out.json(&json!({
        "event": "done", "bytes_sent": bytes_sent, "bytes_echoed": bytes_echoed,
        "intact": intact, "max_echo_gap_ms": gap_ms,
    }));
    let why = match (&sent, &echoed, mismatch) {
        (Err(e), _, _) => Some(format!("sending failed: {e}")),
        (_, Err(e), _) => Some(format!("reading the echo failed: {e}")),
        (_, _, Some(at)) => Some(format!("the echo differs from what was sent at byte {at}")),
        _ if bytes_echoed < total => Some(format!(
            "the echo ended after {bytes_echoed} of {total} bytes (is the server echoing?)"
        )),
        _ => None,
    };
    out.say(&format!(
        "{:>8.3} s  done: {bytes_sent} bytes sent, {bytes_echoed} echoed, {}; longest pause in \
         the echo {gap_ms} ms",
        start.elapsed().as_secs_f64(),
        if intact {
            "every byte intact"
        } else {
            "NOT intact"
        }
    ));
    let session = rx.unsplit(tx);
    session.close_and_wait(0, b"done").await;
    match why {
        None => Ok(ExitCode::SUCCESS),
        Some(why) => {
            eprintln!("roam connect: {why}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Writes `total` bytes of the pattern, paced when `rate` is given, then ends the stream.
async fn send<W: AsyncWrite + Unpin>(
    tx: &mut W,
    total: u64,
    rate: Option<f64>,
    clock: &Mutex<EchoClock>,
) -> std::io::Result<()> {
    let bytes_per_s = rate.map(|r| r * 1e6 / 8.0);
    // Paced: a chunk is 10 ms worth of the rate (at least 1 kB), so the pacing is smooth.
    let chunk = bytes_per_s.map_or(CHUNK, |b| ((b / 100.0) as usize).clamp(1024, CHUNK));
    let mut buf = vec![0u8; chunk];
    let begun = Instant::now();
    let mut offset = 0u64;
    while offset < total {
        let n = chunk.min((total - offset) as usize);
        if let Some(b) = bytes_per_s {
            let due = begun + Duration::from_secs_f64((offset + n as u64) as f64 / b);
            tokio::time::sleep_until(due.into()).await;
        }
        pattern::fill(&mut buf[..n], offset);
        tx.write_all(&buf[..n]).await?;
        offset += n as u64;
        lock(clock).wrote(n as u64, Instant::now());
    }
    tx.flush().await?;
    tx.shutdown().await
}

/// Reads the echo to its end, checking every byte; returns the first offset that differs.
async fn check<R: AsyncRead + Unpin>(
    rx: &mut R,
    total: u64,
    clock: &Mutex<EchoClock>,
) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    let mut mismatch = None;
    loop {
        // Once everything came back, the end of the stream is only waited for a while.
        let n = if offset >= total {
            match tokio::time::timeout(END_WAIT, rx.read(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => return Ok(mismatch),
            }
        } else {
            rx.read(&mut buf).await?
        };
        if n == 0 {
            return Ok(mismatch);
        }
        let now = Instant::now();
        if mismatch.is_none() {
            mismatch = pattern::first_mismatch(&buf[..n], offset);
        }
        offset += n as u64;
        lock(clock).echoed(n as u64, now);
    }
}

/// A line on standard error each second: how far the transfer is and on which interface.
async fn progress(
    clock: Arc<Mutex<EchoClock>>,
    total: u64,
    out: Printer,
    on: Arc<Mutex<Option<String>>>,
    start: Instant,
) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    let mut last = (Instant::now(), 0u64);
    loop {
        tick.tick().await;
        let (sent, echoed) = {
            let c = lock(&clock);
            (c.sent, c.echoed)
        };
        let now = Instant::now();
        let mbit = (echoed - last.1) as f64 * 8.0 / (now - last.0).as_secs_f64() / 1e6;
        last = (now, echoed);
        out.say(&format!(
            "{:>8.3} s  {:.1} of {:.1} MB sent, {:.1} MB echoed, {mbit:.1} Mbit/s, on {}",
            start.elapsed().as_secs_f64(),
            sent as f64 / 1e6,
            total as f64 / 1e6,
            echoed as f64 / 1e6,
            lock(&on).as_deref().unwrap_or("?")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_decimal_suffixes() {
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("64k"), Ok(64_000));
        assert_eq!(parse_size("10M"), Ok(10_000_000));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert!(parse_size("10MB").is_err());
        assert!(parse_size("").is_err());
    }
}

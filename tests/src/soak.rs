//! The soak: long-lived sessions through many handovers in a row, and what a long run costs
//! (memory, descriptors) in the processes that live through it.
//!
//! The failures cycle through [`Step::CYCLE`], each one a handover: the preferred link goes
//! down and returns, loses its addresses and gets them back, goes silent and speaks again, and
//! flaps. Every step leaves the topology in a state the next one starts from. The client runs
//! in a process of its own ([`client_main`]) so that its memory and descriptors are its own.

use std::fmt;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use roam::TransportPreference;

use crate::scenario::{FLAP_CYCLES, FLAP_PERIOD};
use crate::system::Transport;
use crate::topology::{Direction, Topology};

/// The first argument that makes a soak binary the client process ([`client_main`]).
pub const CLIENT_ARG: &str = "__soak-client";
/// The line the client prints once its session is connected.
pub const CONNECTED: &str = "soak-client: connected";
/// The prefix of the line the client prints once it stopped sending: `SENT` then the count.
pub const SENT: &str = "soak-client: sent ";
/// The prefix of the line the client prints when its session failed.
pub const FAILED: &str = "soak-client: failed: ";

/// One handover of the soak: what is done to the preferred link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// `ip link set LINK down`.
    LinkDown,
    /// The link comes back up with its addresses and routes (the preferred link returning).
    LinkReturn,
    /// The link loses its addresses and stays up.
    AddrRemove,
    /// The link gets its addresses back.
    AddrReturn,
    /// Everything on the link is dropped silently, both ways.
    Blackhole,
    /// The blackhole is lifted.
    BlackholeClear,
    /// The link goes down and up [`FLAP_CYCLES`] times, [`FLAP_PERIOD`] each way, and stays up.
    Flap,
}

impl Step {
    /// The order the steps repeat in; the link is whole again after each full cycle.
    pub const CYCLE: [Step; 7] = [
        Step::LinkDown,
        Step::LinkReturn,
        Step::AddrRemove,
        Step::AddrReturn,
        Step::Blackhole,
        Step::BlackholeClear,
        Step::Flap,
    ];

    /// The `n`th step of a soak (0-based).
    pub fn nth(n: u64) -> Step {
        Step::CYCLE[(n % Step::CYCLE.len() as u64) as usize]
    }

    /// The word in the soak's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::LinkDown => "link-down",
            Step::LinkReturn => "link-return",
            Step::AddrRemove => "addr-remove",
            Step::AddrReturn => "addr-return",
            Step::Blackhole => "blackhole",
            Step::BlackholeClear => "blackhole-clear",
            Step::Flap => "flap",
        }
    }

    /// Does it to `link`; returns once the kernel shows it (a flap: once it is over).
    pub fn inject(self, topo: &Arc<Topology>, link: &str) -> Result<()> {
        match self {
            Step::LinkDown => topo.link_down(link),
            Step::LinkReturn => topo.link_up(link),
            Step::AddrRemove => topo.remove_addresses(link),
            Step::AddrReturn => topo.restore_addresses(link),
            Step::Blackhole => topo.blackhole(link, Direction::Both),
            Step::BlackholeClear => topo.clear_blackhole(link, Direction::Both),
            Step::Flap => topo
                .flap(link, FLAP_PERIOD, FLAP_PERIOD, FLAP_CYCLES)?
                .wait()
                .map(drop),
        }
        .with_context(|| format!("{} on {link}", self.as_str()))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Descriptors process `pid` has open (entries of `/proc/PID/fd`).
pub fn open_fds(pid: u32) -> Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .count() as u64)
}

/// Raises this process's limit of open files to at least `want`, for benches that hold many
/// connections: the soft limit, and the hard one too when it is lower (that needs root).
pub fn raise_nofile(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if lim.rlim_cur >= want {
            return Ok(());
        }
        let hard = lim.rlim_max;
        lim.rlim_cur = want;
        // Root (CAP_SYS_RESOURCE) may raise the hard limit too, up to fs.nr_open.
        lim.rlim_max = lim.rlim_max.max(want);
        if hard < want && libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!(
                "{want} open files needed but the hard limit is {hard} and cannot be raised \
                 ({}; raising it needs root); ask for fewer connections",
                std::io::Error::last_os_error()
            );
        }
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

/// The longest pause in delivery that each event caused: for event `i` at `events[i]`, the
/// longest time without an arrival (of the sorted `arrivals`) between the event and the next
/// event (or `end`, for the last). A pause running from before the event counts from the event;
/// one still running at the next event is charged up to it, the rest to the next event.
pub fn pauses_after(arrivals: &[Instant], events: &[Instant], end: Instant) -> Vec<Duration> {
    events
        .iter()
        .enumerate()
        .map(|(i, &from)| {
            let to = events.get(i + 1).copied().unwrap_or(end).max(from);
            let first = arrivals.partition_point(|t| *t <= from);
            let last = arrivals.partition_point(|t| *t < to).max(first);
            let mut prev = from;
            let mut longest = Duration::ZERO;
            for &t in arrivals[first..last].iter().chain(std::iter::once(&to)) {
                longest = longest.max(t.saturating_duration_since(prev));
                prev = t;
            }
            longest
        })
        .collect()
}

/// What the soak client is asked to do (its command line after [`CLIENT_ARG`]).
#[derive(Debug, Clone)]
pub struct ClientArgs {
    /// The transport asked for.
    pub transport: Transport,
    /// The roam listener.
    pub target: SocketAddr,
    /// The test CA's certificate (DER), the only one trusted.
    pub ca: PathBuf,
    /// roamd's socket, whose decisions the session follows.
    pub roamd: PathBuf,
    /// One message every `interval`.
    pub interval: Duration,
    /// The session's connect and idle timeouts.
    pub timeout: Duration,
}

impl ClientArgs {
    /// The arguments that make a binary calling [`client_main`] run this client.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            CLIENT_ARG.to_owned(),
            self.transport.as_str().to_owned(),
            self.target.to_string(),
            self.ca.display().to_string(),
            self.roamd.display().to_string(),
            self.interval.as_micros().to_string(),
            self.timeout.as_millis().to_string(),
        ]
    }

    fn parse(args: &[String]) -> Result<ClientArgs> {
        let [transport, target, ca, roamd, interval_us, timeout_ms] = args else {
            bail!("expected TRANSPORT TARGET CA ROAMD INTERVAL_US TIMEOUT_MS, got {args:?}");
        };
        Ok(ClientArgs {
            transport: transport.parse().map_err(anyhow::Error::msg)?,
            target: target.parse()?,
            ca: ca.into(),
            roamd: roamd.into(),
            interval: Duration::from_micros(interval_us.parse()?),
            timeout: Duration::from_millis(timeout_ms.parse()?),
        })
    }
}

/// When this process was started as the soak client (`EXE __soak-client ...`, see
/// [`ClientArgs::to_args`]), runs it and returns its exit code; otherwise `None`.
///
/// The client connects a roam session that follows roamd, prints [`CONNECTED`], writes numbered
/// messages ([`crate::traffic`]) at a steady pace until its standard input closes, prints
/// [`SENT`] with the count, and keeps the session open until it is killed. A failed session
/// prints [`FAILED`] with the error and exits with 1.
pub fn client_main() -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some(CLIENT_ARG) {
        return None;
    }
    let r = ClientArgs::parse(&args[1..]).and_then(|a| run_client(&a));
    Some(match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{FAILED}{e:#}");
            ExitCode::FAILURE
        }
    })
}

fn run_client(a: &ClientArgs) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = std::fs::read(&a.ca).with_context(|| format!("reading {}", a.ca.display()))?;
    let preference = match a.transport {
        Transport::Quic => TransportPreference::Quic,
        Transport::Mptcp => TransportPreference::Mptcp,
        Transport::TcpResume => TransportPreference::TcpResume,
    };
    let builder = roam::Session::builder()
        .app(crate::system::roam::APP)
        .policy(crate::system::roam::POLICY)
        .transport(preference)
        .tls(roam::ClientTls::Ca(vec![ca.into()]))
        .server_name(crate::tls::SERVER_NAME)
        .connect_timeout(a.timeout)
        .idle_timeout(a.timeout)
        .roamd_socket(&a.roamd);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let interval = a.interval;
    let target = a.target.to_string();
    rt.block_on(async move {
        let mut s = builder.connect(&target).await.context("connecting")?;
        println!("{CONNECTED}");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let pacer = crate::traffic::pace(
            "soak-pacer",
            Instant::now(),
            interval,
            Duration::MAX,
            tx,
            stop.clone(),
        )?;
        // Standard input closing is the harness saying "stop sending".
        std::thread::Builder::new()
            .name("soak-stdin".into())
            .spawn(move || {
                for _ in std::io::stdin().lock().lines() {}
                stop.store(true, Ordering::Relaxed);
            })?;
        crate::system::write_messages(&mut s, &mut rx)
            .await
            .context("the session failed while sending")?;
        s.flush().await.context("flushing")?;
        let sent = pacer.join().map_err(|_| anyhow!("pacer panicked"))?;
        println!("{SENT}{sent}");
        std::io::stdout().flush()?;
        // The server never writes: a read ends only with the session, which the harness ends
        // by killing this process once everything arrived.
        let mut sink = Vec::new();
        match s.read_to_end(&mut sink).await {
            Ok(_) => bail!("the server ended the session"),
            Err(e) => Err(anyhow!(e).context("the session failed after sending")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_of_the_cycle_is_named_once_and_the_cycle_repeats() {
        let names: std::collections::HashSet<_> = Step::CYCLE.iter().map(|s| s.as_str()).collect();
        assert_eq!(names.len(), Step::CYCLE.len());
        assert_eq!(Step::nth(0), Step::LinkDown);
        assert_eq!(Step::nth(7), Step::LinkDown);
        assert_eq!(Step::nth(13), Step::Flap);
    }

    #[test]
    fn a_pause_is_charged_to_the_event_it_follows() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Steady every 1 ms, a 50 ms hole after the event at 10, steady again, then a 20 ms
        // hole spanning the second event at 100 (from 95 to 115).
        let mut arrivals: Vec<Instant> = (0..=12).map(ms).collect();
        arrivals.extend((62..=95).map(ms));
        arrivals.extend((115..=130).map(ms));
        let events = [ms(10), ms(100)];
        let p = pauses_after(&arrivals, &events, ms(130));
        assert_eq!(p, [Duration::from_millis(50), Duration::from_millis(15)]);
        // Nothing after an event: the pause runs to the end.
        let p = pauses_after(&arrivals, &[ms(200)], ms(300));
        assert_eq!(p, [Duration::from_millis(100)]);
    }

    #[test]
    fn client_arguments_survive_the_command_line() {
        let a = ClientArgs {
            transport: Transport::TcpResume,
            target: "198.19.0.1:4443".parse().unwrap(),
            ca: "/tmp/ca.der".into(),
            roamd: "/tmp/roamd.sock".into(),
            interval: Duration::from_micros(1500),
            timeout: Duration::from_secs(8),
        };
        let args = a.to_args();
        assert_eq!(args[0], CLIENT_ARG);
        let b = ClientArgs::parse(&args[1..]).unwrap();
        assert_eq!(b.transport, a.transport);
        assert_eq!(b.target, a.target);
        assert_eq!(b.interval, a.interval);
        assert_eq!(b.timeout, a.timeout);
        assert!(ClientArgs::parse(&args[2..]).is_err());
    }

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(open_fds(me).unwrap() >= 3);
    }
}

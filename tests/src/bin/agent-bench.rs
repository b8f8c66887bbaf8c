//! `agent-bench`: what roamd costs and how fast it answers, measured on a real agent in a
//! handset namespace built for the run (`wlan0` WiFi preferred, `rmnet0`, `bnep0`).
//!
//! ```text
//! agent-bench --json agent-bench.json
//! agent-bench --flaps 10 --subscribers 50 --idle-secs 2
//! ```
//!
//! - idle: roamd with no subscriber; context switches of all its threads and its CPU time from
//!   `/proc` over `--idle-secs` (the one sleep here is the window being measured).
//! - RSS: `VmRSS` after that idle window.
//! - reaction: `ip link set wlan0 down` in the handset, `--flaps` times; latency to the decision
//!   without `wlan0` arriving at a subscriber, from the kernel's own link notification as a
//!   netlink socket in the handset read it (t0), and from just before the `ip` command.
//! - fan-out: `--subscribers` clients on one tokio runtime; one decision, from the kernel's
//!   notification to the last client's receipt, over `--fanout-repeats` changes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use roam_ipc::proto::{Reply, Request};
use roam_ipc::tokio_client::AsyncClient;
use roam_tests::agent::{Agent, AgentExe, StampedSubscriber};
use roam_tests::netlink::LinkWatcher;
use roam_tests::netns::Netns;
use roam_tests::soak::raise_nofile;
use roam_tests::stats::{ms, percentile, round_to, sorted};
use roam_tests::system::roam::POLICY;
use roam_tests::topology::Topology;
use serde::Serialize;

/// The link that fails: the policy's preferred one.
const DEV: &str = "wlan0";
/// The longest wait for any one notification or decision.
const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(about = "Measure roamd's reaction latency, idle cost, memory and fan-out")]
struct Args {
    /// Link-down changes to time.
    #[arg(long, default_value_t = 200)]
    flaps: u32,
    /// Clients that receive one decision at once.
    #[arg(long, default_value_t = 1000)]
    subscribers: u32,
    /// Changes pushed to all subscribers.
    #[arg(long, default_value_t = 5)]
    fanout_repeats: u32,
    /// Length of the idle window, in seconds.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    /// The agent's program (`roamd` when built beside this binary).
    agent: String,
    reaction_ms: Reaction,
    idle: Idle,
    rss_mib: f64,
    /// What the idle RSS is made of.
    rss_kib: RssParts,
    fanout_ms: Fanout,
}

/// Idle RSS by mapping (`/proc/PID/smaps`), KiB.
#[derive(Debug, Default, Serialize)]
struct RssParts {
    /// The agent's own program: its code (`r-xp`).
    program_code: u64,
    /// The agent's program: read-only data, relocations and writable data.
    program_data: u64,
    /// Shared libraries (libc, libm, the loader...).
    libraries: u64,
    /// `[heap]` and anonymous mappings (malloc arenas, thread stacks other than the main one).
    heap_and_anon: u64,
    /// The main thread's `[stack]`.
    stack: u64,
    /// Everything else (vdso, vvar).
    other: u64,
}

/// Sums `Rss:` of every mapping of `pid` into [`RssParts`].
fn rss_parts(pid: u32) -> Result<RssParts> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let program = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    let program = program.to_string_lossy();
    let mut parts = RssParts::default();
    let mut slot: Option<&mut u64> = None;
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Rss:") {
            let kib: u64 = kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            if let Some(s) = slot.take() {
                *s += kib;
            }
            continue;
        }
        // A mapping's header: "start-end perms offset dev inode [name]".
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || !f[0].contains('-') || f[0].ends_with(':') {
            continue;
        }
        let (perms, name) = (f[1], f.get(5).copied().unwrap_or(""));
        slot = Some(match name {
            n if n == program && perms.contains('x') => &mut parts.program_code,
            n if n == program => &mut parts.program_data,
            "[heap]" | "" => &mut parts.heap_and_anon,
            "[stack]" => &mut parts.stack,
            n if n.starts_with('/') => &mut parts.libraries,
            _ => &mut parts.other,
        });
    }
    Ok(parts)
}

#[derive(Debug, Serialize)]
struct Reaction {
    /// From the kernel's link notification (read by a netlink socket in the handset).
    p50: f64,
    p99: f64,
    max: f64,
    samples: usize,
    /// The same changes timed from just before the `ip` command was started.
    from_command: Stats,
    t0: &'static str,
}

#[derive(Debug, Serialize)]
struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Idle {
    wakeups_per_s: f64,
    cpu_pct: f64,
    seconds: f64,
    context_switches: u64,
    threads: usize,
}

#[derive(Debug, Serialize)]
struct Fanout {
    subscribers: u32,
    p50: f64,
    max: f64,
    repeats: usize,
}

fn main() -> ExitCode {
    // Re-executed inside the handset as the agent.
    if let Some(code) = roam_tests::agent::agent_main() {
        return code;
    }
    let args = Args::parse();
    if let Err(code) = roam_tests::binary::start("agent-bench", "sudo ./target/release/agent-bench")
    {
        return code;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if args.flaps == 0 || args.subscribers == 0 || args.fanout_repeats == 0 {
        bail!("--flaps, --subscribers and --fanout-repeats must be at least 1");
    }
    raise_nofile(u64::from(args.subscribers) + 256)?;
    let topo = Topology::phone().build()?;
    let hs = topo.handset();
    let exe = AgentExe::shipped_or_current()?;
    let agent = Agent::start_unsubscribed(hs, &exe, POLICY)?;
    let pid = agent.pid();
    let program = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    if program.file_name() != exe.program().file_name() {
        bail!(
            "process {pid} is not the agent: /proc says it runs {}",
            program.display()
        );
    }
    eprintln!("agent: {}", exe.program().display());

    let idle = measure_idle(pid, Duration::from_secs(args.idle_secs))?;
    let rss_mib = vm_rss_kib(pid)? as f64 / 1024.0;
    let rss_parts = rss_parts(pid)?;
    eprintln!(
        "idle: {} context switches in {:.1} s; RSS {rss_mib:.2} MiB",
        idle.context_switches, idle.seconds
    );

    let watcher = LinkWatcher::start(hs, DEV)?;
    let reaction = measure_reaction(hs, agent.socket(), &watcher, args.flaps)?;
    eprintln!(
        "reaction: p50 {:.3} ms over {} flaps",
        reaction.p50, reaction.samples
    );
    let fanout = measure_fanout(
        hs,
        agent.socket(),
        &watcher,
        args.subscribers,
        args.fanout_repeats,
    )?;
    let rss_busy = vm_rss_kib(pid)? as f64 / 1024.0;
    drop(watcher);

    let report = Report {
        agent: exe.program().display().to_string(),
        reaction_ms: reaction,
        idle,
        rss_mib: round3(rss_mib),
        rss_kib: rss_parts,
        fanout_ms: fanout,
    };
    print!("{}", table(&report, rss_busy));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("json: {}", path.display());
    }
    Ok(())
}

/// Context switches and CPU time of every thread of `pid` over `window`, with no subscriber.
fn measure_idle(pid: u32, window: Duration) -> Result<Idle> {
    let (cs0, threads) = context_switches(pid)?;
    let cpu0 = cpu_ticks(pid)?;
    let t0 = Instant::now();
    // The window itself is what is measured.
    std::thread::sleep(window);
    let seconds = t0.elapsed().as_secs_f64();
    let (cs1, _) = context_switches(pid)?;
    let cpu1 = cpu_ticks(pid)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let context_switches = cs1.saturating_sub(cs0);
    Ok(Idle {
        wakeups_per_s: round3(context_switches as f64 / seconds),
        cpu_pct: round3(cpu1.saturating_sub(cpu0) as f64 / hz / seconds * 100.0),
        seconds: round3(seconds),
        context_switches,
        threads,
    })
}

/// Voluntary plus involuntary context switches summed over `/proc/PID/task/*/status`, and how
/// many threads there are.
fn context_switches(pid: u32) -> Result<(u64, usize)> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    let mut threads = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let status = std::fs::read_to_string(entry?.path().join("status"))?;
        threads += 1;
        for key in ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"] {
            total += status_field(&status, key)?;
        }
    }
    Ok((total, threads))
}

/// utime + stime of the whole process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are counted from its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/PID/stat without ')'")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state), so field N is f[N - 3].
    let tick = |i: usize| -> Result<u64> {
        f.get(i - 3)
            .context("/proc/PID/stat is too short")?
            .parse()
            .context("parsing /proc/PID/stat")
    };
    Ok(tick(14)? + tick(15)?)
}

fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_field(&status, "VmRSS:")
}

fn status_field(status: &str, key: &str) -> Result<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key} in /proc status"))
}

fn updown(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

fn measure_reaction(
    hs: &Netns,
    socket: &Path,
    watcher: &LinkWatcher,
    flaps: u32,
) -> Result<Reaction> {
    let sub = StampedSubscriber::connect(socket, DEV, WAIT)?;
    sub.wait(true, WAIT).context("the first decision")?;
    let mut from_kernel = Vec::new();
    let mut from_command = Vec::new();
    for flap in 1..=flaps {
        sub.drain();
        watcher.drain();
        let before = Instant::now();
        hs.ip(&["link", "set", DEV, "down"])?;
        let decided = sub
            .wait(false, WAIT)
            .with_context(|| format!("flap {flap}: down"))?;
        let kernel = watcher.first(false, WAIT)?;
        from_kernel.push(ms(decided.saturating_duration_since(kernel)));
        from_command.push(ms(decided - before));
        hs.ip(&["link", "set", DEV, "up"])?;
        sub.wait(true, WAIT)
            .with_context(|| format!("flap {flap}: back up"))?;
    }
    let k = sorted(from_kernel);
    let c = sorted(from_command);
    Ok(Reaction {
        p50: round3(percentile(&k, 50.0)),
        p99: round3(percentile(&k, 99.0)),
        max: round3(percentile(&k, 100.0)),
        samples: k.len(),
        from_command: Stats {
            p50: round3(percentile(&c, 50.0)),
            p99: round3(percentile(&c, 99.0)),
            max: round3(percentile(&c, 100.0)),
        },
        t0: "kernel RTM_NEWLINK read by a netlink socket in the handset",
    })
}

/// Connects `n` clients on one tokio runtime, then times `repeats` changes from the kernel's
/// notification to the last client's receipt.
fn measure_fanout(
    hs: &Netns,
    socket: &Path,
    watcher: &LinkWatcher,
    n: u32,
    repeats: u32,
) -> Result<Fanout> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ns = hs.name().to_owned();
    let mut samples = rt.block_on(async {
        let mut clients = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut c = AsyncClient::connect(socket)
                .await
                .with_context(|| format!("connecting client {i}"))?;
            c.call(|id| Request::Subscribe {
                id,
                app: None,
                flow: None,
            })
            .await
            .with_context(|| format!("subscribing client {i}"))?;
            clients.push(c);
        }
        let mut clients = receive_all(clients, true).await?.0;
        let mut samples = Vec::new();
        for _ in 0..repeats {
            watcher.drain();
            let (after, last) = change_all(&ns, clients, false).await?;
            let kernel = watcher.first(false, WAIT)?;
            samples.push(ms(last.saturating_duration_since(kernel)));
            clients = change_all(&ns, after, true).await?.0;
        }
        anyhow::Ok(samples)
    })?;
    samples.sort_by(f64::total_cmp);
    Ok(Fanout {
        subscribers: n,
        p50: round3(percentile(&samples, 50.0)),
        max: round3(percentile(&samples, 100.0)),
        repeats: samples.len(),
    })
}

/// Sets [`DEV`] up or down while every client waits for the matching decision; returns the
/// clients and the last receipt.
async fn change_all(
    ns: &str,
    clients: Vec<AsyncClient>,
    up: bool,
) -> Result<(Vec<AsyncClient>, Instant)> {
    let waiting = tokio::spawn(receive_all(clients, up));
    // Async, so the runtime's one thread keeps reading while `ip` runs.
    let status = tokio::process::Command::new("ip")
        .args(["-n", ns, "link", "set", DEV, updown(up)])
        .status()
        .await?;
    if !status.success() {
        bail!("ip -n {ns} link set {DEV} {}: {status}", updown(up));
    }
    waiting.await?
}

/// Every client's next decision with [`DEV`] primary (or not): the clients and the last
/// receipt.
async fn receive_all(
    clients: Vec<AsyncClient>,
    primary: bool,
) -> Result<(Vec<AsyncClient>, Instant)> {
    let mut set = tokio::task::JoinSet::new();
    for mut c in clients {
        set.spawn(async move {
            let got = tokio::time::timeout(WAIT, async {
                loop {
                    if let Reply::Update(u) = c.next().await? {
                        let at = Instant::now();
                        if u.decision.primary().is_some_and(|p| p.interface == DEV) == primary {
                            return anyhow::Ok(at);
                        }
                    }
                }
            })
            .await;
            match got {
                Ok(Ok(at)) => Ok((c, at)),
                Ok(Err(e)) => Err(e),
                Err(_) => bail!("a client saw no decision within {WAIT:?}"),
            }
        });
    }
    let mut out = Vec::with_capacity(set.len());
    let mut last = Instant::now();
    let mut first = true;
    while let Some(r) = set.join_next().await {
        let (c, at) = r??;
        if first || at > last {
            last = at;
            first = false;
        }
        out.push(c);
    }
    Ok((out, last))
}

fn round3(x: f64) -> f64 {
    round_to(x, 3)
}

fn table(r: &Report, rss_busy: f64) -> String {
    let x = &r.reaction_ms;
    let c = &x.from_command;
    let i = &r.idle;
    let f = &r.fanout_ms;
    let rows = [
        (
            "reaction, kernel notification -> subscriber".to_owned(),
            format!(
                "p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  ({} flaps)",
                x.p50, x.p99, x.max, x.samples
            ),
        ),
        (
            "reaction, before `ip link set down` -> subscriber".to_owned(),
            format!(
                "p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
                c.p50, c.p99, c.max
            ),
        ),
        (
            "idle, no subscriber".to_owned(),
            format!(
                "{:.2} wakeups/s  {:.2} % CPU  ({} switches, {} threads, {:.1} s)",
                i.wakeups_per_s, i.cpu_pct, i.context_switches, i.threads, i.seconds
            ),
        ),
        (
            "RSS".to_owned(),
            format!(
                "{:.2} MiB idle, {rss_busy:.2} MiB with {} subscribers",
                r.rss_mib, f.subscribers
            ),
        ),
        (
            "idle RSS by mapping".to_owned(),
            format!(
                "program code {} KiB, program data {} KiB, libraries {} KiB, heap and anon {} KiB, stack {} KiB, other {} KiB",
                r.rss_kib.program_code,
                r.rss_kib.program_data,
                r.rss_kib.libraries,
                r.rss_kib.heap_and_anon,
                r.rss_kib.stack,
                r.rss_kib.other
            ),
        ),
        (
            format!("one decision -> all {} subscribers", f.subscribers),
            format!(
                "p50 {:.3} ms  max {:.3} ms  ({} changes)",
                f.p50, f.max, f.repeats
            ),
        ),
    ];
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<w$}  {v}\n"));
    }
    out.push_str("t0 of the reaction and fan-out: the kernel's RTM_NEWLINK as read by a netlink socket in the handset\n");
    out
}

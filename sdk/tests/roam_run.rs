//! `roam run`: unmodified programs (plain Python, written here; nothing links roam) whose TCP
//! sockets the LD_PRELOAD shim makes MPTCP, steered by roamd by their uid alone.
//!
//! The stream: a Python TCP client sends 4 MiB (4 KiB a millisecond) of a known pattern to a
//! stock Python MPTCP echo server (`IPPROTO_MPTCP = 262`) at the service address, checks every
//! echoed byte, and reports every pause between two reads of the echo from half-way on; the
//! test takes wlan0 down as the client reports half-way. Three systems: `roam run` with
//! roamd (userspace path manager, `[mptcp] userspace = true`); `roam run` without roamd, the
//! kernel's path manager with rmnet0 a `subflow backup` endpoint (what `mptcpize` gives); and
//! the program alone (plain TCP), the control, which must die. Two figures per system: the
//! longest pause (what the program felt) and the pause at the cut (the longest under way
//! while `ip link set wlan0 down` ran, or begun within 10 ms after: the handover's own). A third
//! row, `roam run` with no cut, is the floor: on a loaded machine the Python programs' own
//! scheduling pauses them for tens of milliseconds anywhere in the stream, which is no
//! handover's doing.
//!
//! roamd and the reflector run as real processes: this test binary started again to run the
//! helper test `roamd_helper`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{POLICY, start_roamd, strip_mptcp, two_links};
use roam_tests::agent::{REFLECT_PORT, Reflector, Roamd, probe_section};
use roam_tests::privilege::require_netns;
use roam_tests::stats::{ms, percentile_duration};
use roam_tests::topology::{SERVICE_V4, Topology};

/// The echo server's port.
const PORT: u16 = 5301;
/// Repeats per system.
const REPEATS: usize = 10;
/// An unprivileged uid the programs run as (under the policy's default block).
const UID: u32 = 40002;

/// Not a test of its own: roamd or its reflector in the process the tests start (returns at
/// once otherwise).
#[test]
fn roamd_helper() {
    roam_tests::agent::test_helper_main(|| {});
}

/// The shim, built for this test in a target folder of its own (a cdylib is no dependency a
/// test can name; `cargo build` in the test's own target folder would wait for the lock the
/// running `cargo test` holds).
fn preload() -> Result<PathBuf> {
    let roam = PathBuf::from(env!("CARGO_BIN_EXE_roam"));
    let target = roam
        .parent()
        .and_then(|d| d.parent())
        .context("the roam binary's target folder")?
        .join("roam-preload");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "-p", "roam-preload", "--target-dir"])
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .context("running cargo build -p roam-preload")?;
    ensure!(
        out.status.success(),
        "cargo build -p roam-preload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(target.join("debug/libroam_preload.so"))
}

/// The stock MPTCP echo server, in the server namespace.
struct EchoServer(Child);

impl EchoServer {
    fn start(topo: &Topology) -> Result<EchoServer> {
        let script = format!(
            "import socket,threading\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_STREAM,262)\n\
             s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('{SERVICE_V4}',{PORT})); s.listen(8); print('ready',flush=True)\n\
             def echo(c):\n  \
               while True:\n    b=c.recv(65536)\n    if not b: break\n    c.sendall(b)\n  \
               c.close()\n\
             while True:\n  c,_=s.accept(); threading.Thread(target=echo,args=(c,),daemon=True).start()\n"
        );
        let mut child = topo
            .server()
            .command("/usr/bin/python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().context("stdout")?).read_line(&mut line)?;
        ensure!(line.trim() == "ready", "echo server: {line:?}");
        Ok(EchoServer(child))
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The client: prints `proto N` once connected, `half` when half the echo is back, then
/// `PAUSES AT:MS ...` (every pause of 2 ms or more between two reads after half-way: when it
/// began, `time.monotonic()`, the clock of [`monotonic`], and how long it was) and `DONE ok
/// GOT GAP_MS`, or `DEAD GOT WHY` (no echo for 5 s).
fn client_script() -> String {
    format!(
        "import socket,sys,time,threading\n\
         N=4*1024*1024; CH=4096; PACE=0.001\n\
         pat=bytes(i%251 for i in range(251+65536))\n\
         def chunk(off,n): return pat[off%251:off%251+n]\n\
         s=socket.socket(); s.settimeout(5); s.connect(('{SERVICE_V4}',{PORT}))\n\
         print('proto',s.getsockopt(socket.SOL_SOCKET,socket.SO_PROTOCOL),flush=True)\n\
         def send():\n  \
           off=0; t=time.monotonic()\n  \
           while off<N:\n    \
             n=min(CH,N-off); s.sendall(chunk(off,n)); off+=n; t+=PACE; d=t-time.monotonic()\n    \
             if d>0: time.sleep(d)\n\
         threading.Thread(target=send,daemon=True).start()\n\
         got=0; ok=True; last=None; gap=0.0; ps=[]\n\
         try:\n  \
           while got<N:\n    \
             b=s.recv(65536)\n    \
             if not b: break\n    \
             now=time.monotonic()\n    \
             if b!=chunk(got,len(b)): ok=False\n    \
             got+=len(b)\n    \
             if last is None and got>=N//2: print('half',flush=True); last=now\n    \
             elif last is not None:\n      \
               gap=max(gap,now-last)\n      \
               if now-last>=0.002: ps.append('%.6f:%.3f'%(last,(now-last)*1000))\n      \
               last=now\n\
         except OSError as e:\n  print('DEAD',got,e,flush=True); sys.exit(2)\n\
         print('PAUSES',*ps,flush=True)\n\
         print('DONE' if got==N else 'DEAD', 'ok' if ok else 'corrupt', got, gap*1000, flush=True)\n"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    /// `roam run`, roamd's userspace path manager steering by uid.
    RoamRun,
    /// `roam run` without roamd: MPTCP under the kernel's path manager, rmnet0 a backup
    /// endpoint (as mptcpize).
    KernelPm,
    /// The program alone: plain TCP.
    Plain,
}

/// `CLOCK_MONOTONIC` in seconds: Python's `time.monotonic()`, so the client's times and the
/// test's compare.
fn monotonic() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// One run's pauses of the echo after half-way.
#[derive(Debug, Clone, Copy)]
struct Gap {
    /// The longest pause: what the program felt, the machine's own scheduling included.
    gap: Duration,
    /// The longest pause under way while `ip link set wlan0 down` ran (from just before the
    /// command to the link seen down) or begun up to [`AT_CUT`] after: the handover's own
    /// (zero when none of 2 ms or more was).
    at_cut: Duration,
}

/// How long after the link was seen down a pause still counts as the handover's: the echo
/// stops within a round trip of the link going (microseconds on veth).
const AT_CUT: Duration = Duration::from_millis(10);

/// What one run gave: the gap, or `None` when the stream died. With `cut` false wlan0 stays
/// up: the pause is the machine's own (scheduling of the Python client, the echo server and
/// the shim's program), the floor under every gap measured with a cut.
fn run_once(system: System, shim: &PathBuf, cut: bool) -> Result<Option<Gap>> {
    let topo = two_links()?;
    let rmnet = topo.link("rmnet0")?.handset_v4.to_string();
    let mut roamd: Option<(Roamd, Reflector)> = None;
    match system {
        System::RoamRun => {
            let reflector_at = std::net::SocketAddr::new(SERVICE_V4.into(), REFLECT_PORT);
            let reflector = Reflector::start(topo.server(), &common::roamd_exe()?, reflector_at)?;
            let config = format!(
                "[routing]\nenabled = false\n\n[mptcp]\nenabled = false\nuserspace = true\n\n{}",
                probe_section(&[reflector_at])
            );
            roamd = Some((start_roamd(&topo, &config, POLICY)?, reflector));
        }
        System::KernelPm => {
            topo.handset().ip(&[
                "mptcp", "endpoint", "add", &rmnet, "dev", "rmnet0", "subflow", "backup",
            ])?;
        }
        System::Plain => {}
    }
    let _server = EchoServer::start(&topo)?;
    let mut cmd = topo.handset().command("setpriv");
    cmd.args([
        &format!("--reuid={UID}"),
        &format!("--regid={UID}"),
        "--clear-groups",
    ]);
    if system != System::Plain {
        cmd.arg(env!("CARGO_BIN_EXE_roam"))
            .args(["run", "--"])
            .env("ROAM_PRELOAD", shim);
        if let Some((r, _)) = &roamd {
            cmd.env("ROAM_SOCKET", r.socket());
        } else {
            cmd.env("ROAM_SOCKET", "/nonexistent/roamd.sock");
        }
    }
    let mut client = cmd
        .args(["/usr/bin/python3", "-c", &client_script()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut lines = BufReader::new(client.stdout.take().context("stdout")?).lines();
    let mut next = || -> Result<String> { Ok(lines.next().context("the client ended")??) };
    let proto = next()?;
    let want = if system == System::Plain { 6 } else { 262 };
    ensure!(proto == format!("proto {want}"), "{system:?}: {proto}");
    ensure!(next()? == "half", "{system:?}: no half-way line");
    let cut_at = monotonic();
    if cut {
        topo.link_down("wlan0")?;
    }
    // Starting `ip` alone can take tens of milliseconds on a loaded machine.
    let cut_done = monotonic();
    let mut end = next()?;
    let mut pauses: Vec<(f64, f64)> = Vec::new();
    if let Some(list) = end.strip_prefix("PAUSES") {
        for p in list.split_whitespace() {
            let (at, len) = p.split_once(':').context("a pause without its length")?;
            pauses.push((at.parse()?, len.parse()?));
        }
        end = next()?;
    }
    let _ = client.wait();
    let words: Vec<&str> = end.split_whitespace().collect();
    match words.as_slice() {
        ["DONE", ok, got, gap] => {
            ensure!(
                *ok == "ok",
                "{system:?}: the echo differs from what was sent"
            );
            ensure!(*got == (4 << 20).to_string(), "{system:?}: {end}");
            let gap: f64 = gap.parse()?;
            // A pause in progress when the link went down counts from its start.
            let at_cut = pauses
                .iter()
                .filter(|(at, len)| {
                    *at + len / 1000.0 > cut_at && *at < cut_done + AT_CUT.as_secs_f64()
                })
                .map(|(_, len)| *len)
                .fold(0.0, f64::max);
            Ok(Some(Gap {
                gap: Duration::from_secs_f64(gap / 1000.0),
                at_cut: Duration::from_secs_f64(at_cut / 1000.0),
            }))
        }
        ["DEAD", ..] => {
            if let Some((r, _)) = &roamd {
                eprintln!("roamd's log:\n{}", r.log());
            }
            Ok(None)
        }
        _ => bail!("{system:?}: client said {end:?}"),
    }
}

#[test]
fn an_unmodified_program_survives_wifi_loss_under_roam_run() -> Result<()> {
    if !require_netns("an_unmodified_program_survives_wifi_loss_under_roam_run") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let shim = preload()?;
    // The control first: the same program without roam run dies with wlan0.
    ensure!(
        run_once(System::Plain, &shim, true)?.is_none(),
        "plain TCP survived the loss of its only path"
    );
    let mut gaps = [Vec::new(), Vec::new(), Vec::new()];
    let mut at_cut = [Vec::new(), Vec::new(), Vec::new()];
    let mut dead = [0usize, 0, 0];
    // roam run through the cut, the kernel path manager through it, and roam run without a
    // cut: the floor, what the loaded machine alone costs the same program.
    let runs = [
        (System::RoamRun, true),
        (System::KernelPm, true),
        (System::RoamRun, false),
    ];
    for _ in 0..REPEATS {
        for (k, (system, cut)) in runs.into_iter().enumerate() {
            match run_once(system, &shim, cut)? {
                Some(g) => {
                    gaps[k].push(g.gap);
                    at_cut[k].push(g.at_cut);
                }
                None => dead[k] += 1,
            }
        }
    }
    // The figures mean little without the machine's load beside them.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "figure: roam run: load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut p99 = Vec::new();
    for (k, (system, cut)) in runs.into_iter().enumerate() {
        let label = if cut {
            format!("link-down {system:?}")
        } else {
            format!("no loss (the floor) {system:?}")
        };
        gaps[k].sort();
        let (p50, p99k, max) = if gaps[k].is_empty() {
            (Duration::ZERO, Duration::MAX, Duration::MAX)
        } else {
            (
                percentile_duration(&gaps[k], 50.0),
                percentile_duration(&gaps[k], 99.0),
                percentile_duration(&gaps[k], 100.0),
            )
        };
        println!(
            "figure: roam run {label}: echo gap_ms p50 {:.1} p99 {:.1} max {:.1} over {} repeats, {} dead",
            ms(p50),
            ms(p99k),
            ms(max),
            REPEATS,
            dead[k]
        );
        let each: Vec<String> = gaps[k].iter().map(|g| format!("{:.1}", ms(*g))).collect();
        println!("figure: roam run {label}: every gap_ms {}", each.join(" "));
        at_cut[k].sort();
        if cut && !at_cut[k].is_empty() {
            let each: Vec<String> = at_cut[k].iter().map(|g| format!("{:.1}", ms(*g))).collect();
            println!(
                "figure: roam run {label}: the pause at the cut (under way while `ip` took the link down, or begun within {} ms after) p50 {:.1} p99 {:.1}; every one {}",
                AT_CUT.as_millis(),
                ms(percentile_duration(&at_cut[k], 50.0)),
                ms(percentile_duration(&at_cut[k], 99.0)),
                each.join(" ")
            );
        }
        p99.push(p99k);
    }
    assert_eq!(dead[0], 0, "a stream under roam run died");
    // Steered by roamd, the worst pause at the cut beats the kernel path manager's median
    // one (the aim, p99 <= 10 ms, is read from the figure: a loaded machine must not fail
    // the test), and the longest pause stays below it too.
    let kernel_p50 = percentile_duration(&at_cut[1], 50.0);
    let roam_p99 = percentile_duration(&at_cut[0], 99.0);
    assert!(
        roam_p99 < kernel_p50,
        "roam run's p99 pause at the cut {roam_p99:?} is not below the kernel path manager's p50 {kernel_p50:?}"
    );
    assert!(
        p99[0] < kernel_p50,
        "roam run's p99 gap {:?} is not below the kernel path manager's p50 pause at the cut {kernel_p50:?}",
        p99[0]
    );
    Ok(())
}

#[test]
fn a_peer_without_mptcp_falls_back_to_tcp_under_roam_run() -> Result<()> {
    if !require_netns("a_peer_without_mptcp_falls_back_to_tcp_under_roam_run") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let shim = preload()?;
    let topo = two_links()?;
    strip_mptcp(&topo, "wlan0")?;
    let _server = EchoServer::start(&topo)?;
    let script = format!(
        "import socket\n\
         s=socket.socket(); s.settimeout(5); s.connect(('{SERVICE_V4}',{PORT}))\n\
         s.sendall(b'hello'); print(s.recv(5).decode(), s.getsockopt(socket.SOL_SOCKET,socket.SO_PROTOCOL))\n"
    );
    let out = topo
        .handset()
        .command(env!("CARGO_BIN_EXE_roam"))
        .args(["run", "--", "/usr/bin/python3", "-c", &script])
        .env("ROAM_PRELOAD", &shim)
        .env("ROAM_SOCKET", "/nonexistent/roamd.sock")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The socket is MPTCP, the connection plain TCP underneath: the echo comes back.
    assert_eq!(
        text.trim(),
        "hello 262",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// UDP, IPv6-only, non-blocking connect, a listener, fork and exec: each works under
/// `roam run`, with MPTCP exactly where TCP was asked for. Loopback only.
#[test]
fn other_programs_work_unchanged_under_roam_run() -> Result<()> {
    if !require_netns("other_programs_work_unchanged_under_roam_run") {
        return Ok(());
    }
    let shim = preload()?;
    let ns = roam_tests::netns::Netns::new("run")?;
    let script = "import socket,os,select,subprocess,sys\n\
         P=lambda s: s.getsockopt(socket.SOL_SOCKET,socket.SO_PROTOCOL)\n\
         u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(('127.0.0.1',0))\n\
         u.sendto(b'x',u.getsockname()); print('udp',P(u),u.recv(1).decode())\n\
         l=socket.socket(socket.AF_INET6); l.bind(('::1',0)); l.listen(1)\n\
         c=socket.socket(socket.AF_INET6); c.setblocking(False)\n\
         e=c.connect_ex(l.getsockname()[:2]); select.select([],[c],[],5)\n\
         a,_=l.accept(); c.setblocking(True); c.sendall(b'y')\n\
         print('v6', P(l), P(c), e in (0,115), a.recv(1).decode())\n\
         sys.stdout.flush()\n\
         if os.fork()==0:\n  print('fork',P(socket.socket()),flush=True); os._exit(0)\n\
         os.wait()\n\
         r=subprocess.run([sys.executable,'-c','import socket;print(\"exec\",socket.socket().getsockopt(socket.SOL_SOCKET,socket.SO_PROTOCOL))'],capture_output=True,text=True)\n\
         print(r.stdout.strip())\n";
    let out = ns
        .command(env!("CARGO_BIN_EXE_roam"))
        .args(["run", "--", "/usr/bin/python3", "-c", script])
        .env("ROAM_PRELOAD", &shim)
        .env("ROAM_SOCKET", "/nonexistent/roamd.sock")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["udp 17 x", "v6 262 262 True y", "fork 262", "exec 262"]
    );
    Ok(())
}

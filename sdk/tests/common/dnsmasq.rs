//! A real DNS server for namespace tests: Debian's dnsmasq, run in a namespace the test made,
//! authoritative for `roam.test` from the records the test gives it, forwarding nothing.
//!
//! It logs every query to its standard error (`--log-queries --log-facility=-`), which the
//! test reads: the "started" line is the ready signal (dnsmasq binds its sockets before it
//! logs it), and the query lines say who asked what from which address, the server's view of
//! where a name was resolved. Killed and reaped on drop.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use roam_tests::netns::Netns;

/// The zone dnsmasq answers for by itself; a name under it without a record is NXDOMAIN.
pub const ZONE: &str = "roam.test";
/// How long dnsmasq may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running dnsmasq; see the module's documentation.
pub struct Dnsmasq {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
}

impl Dnsmasq {
    /// Starts dnsmasq in `ns` on port 53 of each of `listen`, answering `name` with
    /// `addrs` (A and AAAA records by family), and returns once its sockets are bound.
    pub fn start(ns: &Netns, listen: &[IpAddr], name: &str, addrs: &[IpAddr]) -> Result<Dnsmasq> {
        if !name.ends_with(&format!(".{ZONE}")) {
            bail!("{name} is not under {ZONE}");
        }
        let mut cmd = ns.command("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--user=root",
            "--bind-interfaces",
            "--port=53",
            "--cache-size=0",
            "--log-queries",
            "--log-facility=-",
        ]);
        cmd.arg(format!("--local=/{ZONE}/"));
        let record: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
        cmd.arg(format!("--host-record={name},{}", record.join(",")));
        for a in listen {
            cmd.arg(format!("--listen-address={a}"));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting dnsmasq (is Debian's dnsmasq-base installed?)")?;
        let stderr = child.stderr.take().context("dnsmasq's standard error")?;
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("dnsmasq-log".into())
            .spawn(move || {
                // Ends when dnsmasq exits and the pipe closes.
                for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })?;
        let mut d = Dnsmasq {
            child,
            lines,
            seen: Vec::new(),
        };
        d.wait_line("dnsmasq to start", |l| l.contains("started, version"))?;
        Ok(d)
    }

    /// Waits for a log line matching `pred`, keeping every line read.
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Ok(line);
                    }
                }
                Err(e) => bail!(
                    "waiting for {what}: {e}; dnsmasq said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The `query[TYPE] NAME from ADDR` lines logged so far, as (type, name, from).
    pub fn queries(&mut self) -> Vec<(String, String, IpAddr)> {
        self.seen.extend(self.lines.try_iter());
        self.seen
            .iter()
            .filter_map(|l| {
                let q = &l[l.find("query[")? + 6..];
                let (qtype, rest) = q.split_once("] ")?;
                let (name, from) = rest.split_once(" from ")?;
                Some((qtype.to_owned(), name.to_owned(), from.trim().parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // `ip netns exec` execs dnsmasq, so this is dnsmasq's own pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

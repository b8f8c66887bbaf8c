//! Failures injected into a [`Topology`] the way a phone meets them.
//!
//! Each call returns once the kernel shows the new state (waited for by netlink event where the
//! state is a link's), so a measurement can take its failure timestamp right before the call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::netlink::OperState;
use crate::topology::{Direction, LINK_TIMEOUT, Topology};

/// The nftables table holding blackholes; inside the handset namespace only.
const NFT_TABLE: &str = "roam_fault";

impl Topology {
    /// `ip link set DEV down` on the handset side; returns when the link reports down.
    pub fn link_down(&self, name: &str) -> Result<()> {
        let l = self.link(name)?;
        self.handset().ip(&["link", "set", &l.name, "down"])?;
        self.wait_link(self.handset(), &l.name, LINK_TIMEOUT, |i| {
            i.operstate == OperState::Down
        })?;
        Ok(())
    }

    /// Brings a handset link back up with its addresses and routes; returns when it is up. This
    /// is also "the preferred link returning" when `name` is the first link.
    pub fn link_up(&self, name: &str) -> Result<()> {
        let l = self.link(name)?.clone();
        self.handset().ip(&["link", "set", &l.name, "up"])?;
        self.wait_link(self.handset(), &l.name, LINK_TIMEOUT, |i| {
            i.operstate == OperState::Up
        })?;
        self.configure_link(&l)
    }

    /// Carrier loss seen from the handset: the far end of the link's veth goes down (the access
    /// point vanished); the handset's interface stays administratively up, its routes stay.
    pub fn far_side_down(&self, name: &str) -> Result<()> {
        let l = self.link(name)?;
        self.far_ns(l.far_in_emulator)?
            .ip(&["link", "set", &l.far_dev, "down"])?;
        self.wait_link(self.handset(), &l.name, LINK_TIMEOUT, |i| {
            i.operstate != OperState::Up
        })?;
        Ok(())
    }

    /// Restores the far end after [`Topology::far_side_down`]; returns when the carrier is back.
    pub fn far_side_up(&self, name: &str) -> Result<()> {
        let l = self.link(name)?.clone();
        let far = self.far_ns(l.far_in_emulator)?;
        far.ip(&["link", "set", &l.far_dev, "up"])?;
        // Both ends must be up: until the kernel's linkwatch has run, a device drops what it
        // is given.
        self.wait_link(far, &l.far_dev, LINK_TIMEOUT, |i| {
            i.operstate == OperState::Up
        })?;
        self.wait_link(self.handset(), &l.name, LINK_TIMEOUT, |i| {
            i.operstate == OperState::Up
        })?;
        if !l.far_in_emulator {
            // Downing the server's end flushed its IPv6 address.
            self.configure_server_path(&l)?;
        }
        self.configure_link(&l)
    }

    /// Removes the handset's global addresses (IPv4 and IPv6) from a link that stays up, as a
    /// DHCP lease loss does. The kernel drops the link's IPv4 routes with its last address.
    pub fn remove_addresses(&self, name: &str) -> Result<()> {
        let l = self.link(name)?;
        self.handset().ip(&[
            "addr",
            "del",
            &format!("{}/24", l.handset_v4),
            "dev",
            &l.name,
        ])?;
        self.handset().ip(&[
            "addr",
            "del",
            &format!("{}/64", l.handset_v6),
            "dev",
            &l.name,
        ])?;
        Ok(())
    }

    /// Gives a link its addresses and routes back after [`Topology::remove_addresses`].
    pub fn restore_addresses(&self, name: &str) -> Result<()> {
        let l = self.link(name)?.clone();
        self.configure_link(&l)
    }

    /// A silent blackhole: nftables in the handset drops every frame of `dir` at the device
    /// (netdev `egress`/`ingress` hooks) while the link stays up with its addresses and routes.
    /// `Up` drops what the handset sends, `Down` what it receives. Dropping at the device rather
    /// than in the IP output hook keeps it silent: sockets see no error, as with a dead radio.
    pub fn blackhole(&self, name: &str, dir: Direction) -> Result<()> {
        let l = self.link(name)?;
        let mut script = format!("add table netdev {NFT_TABLE}\n");
        for (d, hook) in [(Direction::Up, "egress"), (Direction::Down, "ingress")] {
            if dir == d || dir == Direction::Both {
                let chain = chain_name(&l.name, d);
                script += &format!(
                    "add chain netdev {NFT_TABLE} {chain} {{ type filter hook {hook} device \"{}\" priority 0; policy accept; }}\n\
                     flush chain netdev {NFT_TABLE} {chain}\n\
                     add rule netdev {NFT_TABLE} {chain} counter drop\n",
                    l.name
                );
            }
        }
        self.handset().nft(&script)
    }

    /// Lifts the blackhole of `dir` on a link.
    pub fn clear_blackhole(&self, name: &str, dir: Direction) -> Result<()> {
        let l = self.link(name)?;
        let mut script = String::new();
        for d in [Direction::Up, Direction::Down] {
            if dir == d || dir == Direction::Both {
                let chain = chain_name(&l.name, d);
                let exists = self
                    .handset()
                    .exec("nft", &["list", "chain", "netdev", NFT_TABLE, &chain])
                    .is_ok();
                if exists {
                    script += &format!(
                        "flush chain netdev {NFT_TABLE} {chain}\ndelete chain netdev {NFT_TABLE} {chain}\n"
                    );
                }
            }
        }
        if script.is_empty() {
            return Ok(());
        }
        self.handset().nft(&script)
    }

    /// Packets the blackhole of `dir` (`Up` or `Down`) on a link dropped so far.
    pub fn blackhole_drops(&self, name: &str, dir: Direction) -> Result<u64> {
        let l = self.link(name)?;
        let chain = chain_name(&l.name, dir);
        let out = self
            .handset()
            .exec("nft", &["list", "chain", "netdev", NFT_TABLE, &chain])?;
        let packets = out
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .context("no counter in the blackhole chain")?;
        Ok(packets)
    }

    /// Rate collapse: a tbf qdisc at `rate_kbit` on the link's egress in `dir` (`Up`: the
    /// handset's interface, `Down`: the server's, `Both`: both).
    pub fn rate_limit(&self, name: &str, dir: Direction, rate_kbit: u32) -> Result<()> {
        let rate = format!("{rate_kbit}kbit");
        for (ns, dev) in self.egress(name, dir)? {
            ns.exec(
                "tc",
                &[
                    "qdisc", "replace", "dev", &dev, "root", "tbf", "rate", &rate, "burst", "4kb",
                    "latency", "100ms",
                ],
            )?;
        }
        Ok(())
    }

    /// Removes the rate limit of [`Topology::rate_limit`].
    pub fn clear_rate_limit(&self, name: &str, dir: Direction) -> Result<()> {
        for (ns, dev) in self.egress(name, dir)? {
            ns.exec("tc", &["qdisc", "del", "dev", &dev, "root"])?;
        }
        Ok(())
    }

    /// Flapping: starts a thread that takes the link down for `down`, then up for `up`, `cycles`
    /// times, and leaves it up. Bounded: it ends by itself, or early when the handle drops.
    pub fn flap(
        self: &Arc<Self>,
        name: &str,
        down: Duration,
        up: Duration,
        cycles: u32,
    ) -> Result<Flapper> {
        self.link(name)?;
        let topo = Arc::clone(self);
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let name = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("flap-{name}"))
            .spawn(move || {
                let mut events = Vec::new();
                for _ in 0..cycles {
                    if st.load(Ordering::Relaxed) {
                        break;
                    }
                    events.push((Instant::now(), false));
                    topo.link_down(&name)?;
                    // The pause is the injected behaviour itself.
                    std::thread::sleep(down);
                    events.push((Instant::now(), true));
                    topo.link_up(&name)?;
                    std::thread::sleep(up);
                }
                Ok(events)
            })?;
        Ok(Flapper {
            stop,
            thread: Some(thread),
        })
    }

    fn far_ns(&self, in_emulator: bool) -> Result<&crate::netns::Netns> {
        if in_emulator {
            self.emulator_ns()
                .context("link is emulated but there is no emulator namespace")
        } else {
            Ok(self.server())
        }
    }

    fn egress(&self, name: &str, dir: Direction) -> Result<Vec<(&crate::netns::Netns, String)>> {
        let l = self.link(name)?;
        let mut out = Vec::new();
        if matches!(dir, Direction::Up | Direction::Both) {
            out.push((self.handset(), l.name.clone()));
        }
        if matches!(dir, Direction::Down | Direction::Both) {
            out.push((self.server(), l.server_dev.clone()));
        }
        Ok(out)
    }
}

fn chain_name(link: &str, dir: Direction) -> String {
    let d = if dir == Direction::Down { "in" } else { "out" };
    format!("{}_{d}", link.replace(['-', '.'], "_"))
}

/// When each flap transition started; `true` is the link coming up.
pub type FlapEvents = Vec<(Instant, bool)>;

/// A running flap; see [`Topology::flap`].
#[derive(Debug)]
pub struct Flapper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<FlapEvents>>>,
}

impl Flapper {
    /// Waits for the last cycle and returns when each transition was started (`true`: up).
    pub fn wait(mut self) -> Result<FlapEvents> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("flap thread panicked"))?,
            None => Ok(Vec::new()),
        }
    }
}

impl Drop for Flapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

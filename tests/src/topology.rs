//! The handset topology: a handset namespace whose links are named as on a phone, each reaching
//! a server namespace over a path of its own.
//!
//! Addressing (link `i`, counting from 0 in the order the links were added):
//!
//! | what | IPv4 | IPv6 |
//! | --- | --- | --- |
//! | path subnet | `198.18.i.0/24` | `2001:db8:0:i::/64` |
//! | handset end | `198.18.i.2` | `2001:db8:0:i::2` |
//! | server end (one per path) | `198.18.i.1` | `2001:db8:0:i::1` |
//! | service address (server loopback, reachable over every path) | `198.19.0.1` | `2001:db8:ffff::1` |
//!
//! MAC addresses are fixed too: the handset's end of link `i` is `02:72:6f:00:i:02`, the
//! server's `02:72:6f:00:i:01` (locally administered), so either end's neighbour entry can be
//! written without asking the other.
//!
//! The handset has one default route per link, metric `100 * (i + 1)`, so the first link is
//! preferred and traffic to the service address moves when a link's routes go. Source routing
//! (`ip rule from ADDR table 100+i`, [`SOURCE_RULE_PREF`]) sends a socket bound to a link's address out of that link,
//! and only that link: when its routes are gone, such a socket gets "unreachable".
//! Both namespaces get `ip mptcp limits set subflows 8 add_addr_accepted 8`. IPv6 addresses are
//! added with `nodad`, so they are usable at once.
//!
//! With [`TopologyBuilder::emulated`], each path runs through a [`LinkEmulator`] in a third
//! namespace; without it, a path is a plain veth pair (round-trip time about zero).
//!
//! Emulated paths resolve no neighbours: both ends get permanent ARP and NDP entries for each
//! other ([`Topology::configure_link`], [`Topology::configure_server_path`]). The emulator
//! delays every frame, ARP and NDP included, so without them each first packet to a neighbour
//! (and every one after a link's return, which flushes the table) waits a round trip of the
//! emulated path for resolution, and the kernel's unresolved-neighbour queue
//! (`unres_qlen_bytes`) drops what does not fit meanwhile: datagrams a transport replays onto
//! a link that just came back were lost that way. No real handset link behaves so: a cellular
//! interface (`rmnet`) is raw IP with no neighbour resolution at all, and a WiFi station keeps
//! its gateway's entry from association on. Plain veth paths resolve as usual (in microseconds).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use roam_policy::LinkKind;

use crate::emulator::{EmulatorHandle, LinkEmulator, PathConfig};
use crate::netlink::{LinkInfo, LinkStats, OperState, Rtnl};
use crate::netns::Netns;

/// The server's address reachable over every path (IPv4).
pub const SERVICE_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The server's address reachable over every path (IPv6).
pub const SERVICE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

/// Priority of link `i`'s source rule (`ip rule from ADDR table 100+i pref 20000+i`): after
/// roamd's own source and per-app rules (10000 and 11000 on, its defaults), so a roamd that
/// runs policy routing in the handset, as it ships, is the one whose tables a bound socket
/// uses (with the route metrics roamd sets), and these rules only stand in where roamd has
/// none (no roamd, or roamd's routing off).
pub const SOURCE_RULE_PREF: u32 = 20000;

/// Priority of link `i`'s `from ADDR unreachable` rule, right after the source rules.
pub const UNREACHABLE_RULE_PREF: u32 = 21000;

/// How long a link may take to change state before the topology gives up.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(5);

/// A direction of traffic on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Handset to server (uplink).
    Up,
    /// Server to handset (downlink).
    Down,
    /// Both directions.
    Both,
}

/// One of the handset's links and its path to the server.
#[derive(Debug, Clone)]
pub struct Link {
    /// Interface name in the handset (`wlan0`).
    pub name: String,
    /// What kind of link it stands for.
    pub kind: LinkKind,
    /// Position among the links; picks the subnet and routing table.
    pub index: u8,
    /// The handset's IPv4 address on this link.
    pub handset_v4: Ipv4Addr,
    /// The server's IPv4 address on this path.
    pub server_v4: Ipv4Addr,
    /// The handset's IPv6 address on this link.
    pub handset_v6: Ipv6Addr,
    /// The server's IPv6 address on this path.
    pub server_v6: Ipv6Addr,
    /// The MAC address of the handset's interface.
    pub handset_mac: Mac,
    /// The MAC address of the server's interface of this path.
    pub server_mac: Mac,
    /// The server-namespace interface of this path.
    pub server_dev: String,
    /// The far end of the handset's veth: taking it down is carrier loss as the handset sees it.
    pub far_dev: String,
    /// Whether `far_dev` lives in the emulator namespace (else in the server namespace).
    pub far_in_emulator: bool,
    /// Metric of this link's default route in the handset.
    pub metric: u32,
    /// The source-routing table of this link.
    pub table: u32,
    /// Whether the path runs through the emulator: then both ends have permanent neighbour
    /// entries for each other (see the module's documentation).
    pub emulated: bool,
}

/// A MAC address, written `02:72:6f:00:00:02` by `Display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The fixed address of one end of link `index`: `end` 1 is the server's, 2 the handset's.
    fn of_link(index: u8, end: u8) -> Mac {
        // 02: locally administered unicast; 72:6f is "ro".
        Mac([0x02, 0x72, 0x6f, 0x00, index, end])
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Link {
    /// The handset address of this link in the family of `peer`.
    pub fn handset_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.handset_v6.into()
        } else {
            self.handset_v4.into()
        }
    }
}

/// Builds a [`Topology`].
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    links: Vec<(String, LinkKind)>,
    emulated: Option<(PathConfig, PathConfig)>,
    seed: u64,
}

impl TopologyBuilder {
    /// Adds a handset link; the first one added is the preferred one.
    pub fn link(mut self, name: &str, kind: LinkKind) -> Self {
        self.links.push((name.to_owned(), kind));
        self
    }

    /// Routes every path through the link emulator, starting with `up` towards the server and
    /// `down` towards the handset.
    pub fn emulated(mut self, up: PathConfig, down: PathConfig) -> Self {
        self.emulated = Some((up, down));
        self
    }

    /// Seed of the emulators' loss and jitter draws (link `i` uses `seed + i`).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Makes the namespaces, links, addresses and routes, and returns once every link is up.
    pub fn build(self) -> Result<Topology> {
        if self.links.is_empty() {
            bail!("a topology needs at least one link");
        }
        if self.links.len() > 200 {
            bail!("at most 200 links");
        }
        let handset = Netns::new("h")?;
        let server = Netns::new("s")?;
        let emu_ns = match self.emulated {
            Some(_) => Some(Netns::new("e")?),
            None => None,
        };
        for ns in [&handset, &server] {
            for (k, v) in [
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_ra", "0"),
                ("net.ipv6.conf.default.router_solicitations", "0"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ] {
                ns.sysctl(k, v)?;
            }
            ns.ip(&[
                "mptcp",
                "limits",
                "set",
                "subflows",
                "8",
                "add_addr_accepted",
                "8",
            ])?;
        }
        if let Some(e) = &emu_ns {
            // The emulator is a wire: it must not answer, route or chatter.
            e.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
            e.sysctl("net.ipv4.ip_forward", "0")?;
        }
        server.ip(&["addr", "add", &format!("{SERVICE_V4}/32"), "dev", "lo"])?;
        server.ip(&["addr", "add", &format!("{SERVICE_V6}/128"), "dev", "lo"])?;

        let mut links = Vec::new();
        for (i, (name, kind)) in self.links.iter().enumerate() {
            let i = i as u8;
            if name.len() > 12 {
                bail!("link name {name} is longer than 12 characters");
            }
            let server_dev = format!("s-{name}");
            let handset_mac = Mac::of_link(i, 2);
            let server_mac = Mac::of_link(i, 1);
            let (far_dev, far_in_emulator) = match &emu_ns {
                None => {
                    veth(
                        (&handset, name, Some(handset_mac)),
                        (&server, &server_dev, Some(server_mac)),
                    )?;
                    (server_dev.clone(), false)
                }
                Some(e) => {
                    let eh = format!("eh-{name}");
                    let es = format!("es-{name}");
                    veth((&handset, name, Some(handset_mac)), (e, &eh, None))?;
                    veth((&server, &server_dev, Some(server_mac)), (e, &es, None))?;
                    (eh, true)
                }
            };
            links.push(Link {
                name: name.clone(),
                kind: *kind,
                index: i,
                handset_v4: Ipv4Addr::new(198, 18, i, 2),
                server_v4: Ipv4Addr::new(198, 18, i, 1),
                handset_v6: Ipv6Addr::new(0x2001, 0xdb8, 0, i as u16, 0, 0, 0, 2),
                server_v6: Ipv6Addr::new(0x2001, 0xdb8, 0, i as u16, 0, 0, 0, 1),
                handset_mac,
                server_mac,
                server_dev,
                far_dev,
                far_in_emulator,
                metric: 100 * (i as u32 + 1),
                table: 100 + i as u32,
                emulated: emu_ns.is_some(),
            });
        }

        let mut emulators = Vec::new();
        if let (Some(e), Some((up, down))) = (&emu_ns, self.emulated) {
            for l in &links {
                let eh = format!("eh-{}", l.name);
                let es = format!("es-{}", l.name);
                // Frames must reach the emulator no larger than the MTU and with final checksums.
                let offloads = [
                    "tx", "off", "sg", "off", "tso", "off", "gso", "off", "gro", "off",
                ];
                for (ns, dev) in [
                    (&handset, &l.name),
                    (&server, &l.server_dev),
                    (e, &eh),
                    (e, &es),
                ] {
                    let mut args = vec!["-K", dev.as_str()];
                    args.extend(offloads);
                    ns.exec("ethtool", &args)
                        .context("turning veth offloads off (is ethtool installed?)")?;
                }
                for dev in [&eh, &es] {
                    e.ip(&["link", "set", dev, "promisc", "on", "up"])?;
                }
                emulators.push((
                    l.name.clone(),
                    LinkEmulator::start(
                        e,
                        &l.name,
                        &eh,
                        &es,
                        up,
                        down,
                        self.seed.wrapping_add(l.index as u64),
                    )?,
                ));
            }
        }

        let topo = Topology {
            emulators,
            links,
            emulator_ns: emu_ns,
            server,
            handset,
        };
        for l in &topo.links {
            topo.server.ip(&["link", "set", &l.server_dev, "up"])?;
            topo.configure_server_path(l)?;
            topo.handset.ip(&["link", "set", &l.name, "up"])?;
            topo.configure_link(l)?;
            for (fam, addr) in [
                ("-4", IpAddr::from(l.handset_v4)),
                ("-6", IpAddr::from(l.handset_v6)),
            ] {
                let addr = addr.to_string();
                let table = l.table.to_string();
                let pref = (SOURCE_RULE_PREF + l.index as u32).to_string();
                topo.handset.ip(&[
                    fam, "rule", "add", "from", &addr, "table", &table, "pref", &pref,
                ])?;
                // A dead link's address must not leak out of another link (a carrier drops
                // such packets as spoofed): with the link's table empty, lookups fail here.
                let pref = (UNREACHABLE_RULE_PREF + l.index as u32).to_string();
                topo.handset.ip(&[
                    fam,
                    "rule",
                    "add",
                    "from",
                    &addr,
                    "pref",
                    &pref,
                    "unreachable",
                ])?;
            }
        }
        for l in &topo.links {
            topo.wait_link(&topo.handset, &l.name, LINK_TIMEOUT, |i| {
                i.operstate == OperState::Up
            })?;
            topo.wait_link(&topo.server, &l.server_dev, LINK_TIMEOUT, |i| {
                i.operstate == OperState::Up
            })?;
            if let Some(e) = &topo.emulator_ns {
                // The emulator transmits on these; until they are up they drop frames.
                for dev in [format!("eh-{}", l.name), format!("es-{}", l.name)] {
                    topo.wait_link(e, &dev, LINK_TIMEOUT, |i| i.operstate == OperState::Up)?;
                }
            }
        }
        tracing::info!(
            handset = topo.handset.name(),
            server = topo.server.name(),
            links = ?topo.links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            emulated = topo.emulator_ns.is_some(),
            "topology ready"
        );
        Ok(topo)
    }
}

/// A handset, a server and the paths between them; all namespaces go away on drop.
#[derive(Debug)]
pub struct Topology {
    // Field order is drop order: emulator threads stop before their namespace goes.
    emulators: Vec<(String, LinkEmulator)>,
    links: Vec<Link>,
    emulator_ns: Option<Netns>,
    server: Netns,
    handset: Netns,
}

impl Topology {
    /// Starts a builder with no links.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder {
            links: Vec::new(),
            emulated: None,
            seed: 1,
        }
    }

    /// The usual phone: `wlan0` (WiFi, preferred), `rmnet0` (cellular), `bnep0` (Bluetooth).
    pub fn phone() -> TopologyBuilder {
        Self::builder()
            .link("wlan0", LinkKind::Wifi)
            .link("rmnet0", LinkKind::Cellular)
            .link("bnep0", LinkKind::Bluetooth)
    }

    /// The handset namespace.
    pub fn handset(&self) -> &Netns {
        &self.handset
    }

    /// The server namespace.
    pub fn server(&self) -> &Netns {
        &self.server
    }

    /// The emulator namespace, when paths are emulated.
    pub fn emulator_ns(&self) -> Option<&Netns> {
        self.emulator_ns.as_ref()
    }

    /// Every link, preferred first.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The link named `name`.
    pub fn link(&self, name: &str) -> Result<&Link> {
        self.links
            .iter()
            .find(|l| l.name == name)
            .with_context(|| format!("the topology has no link {name}"))
    }

    /// The emulator of link `name`, when paths are emulated.
    pub fn emulator(&self, name: &str) -> Option<EmulatorHandle> {
        self.emulators
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.handle())
    }

    /// Waits by netlink event until `dev` in `ns` satisfies `pred`.
    pub fn wait_link(
        &self,
        ns: &Netns,
        dev: &str,
        timeout: Duration,
        pred: impl Fn(&LinkInfo) -> bool + Send,
    ) -> Result<LinkInfo> {
        ns.run(|| Rtnl::open()?.wait_link(dev, timeout, pred))
            .and_then(|r| r.with_context(|| format!("waiting for {dev} in {}", ns.name())))
    }

    /// Counters of the server-side interface of every path, by handset link name.
    pub fn server_stats(&self) -> Result<Vec<(String, LinkStats)>> {
        let infos = self.server.run(|| Rtnl::open()?.links())??;
        Ok(self
            .links
            .iter()
            .map(|l| {
                let s = infos
                    .iter()
                    .find(|i| i.name == l.server_dev)
                    .and_then(|i| i.stats)
                    .unwrap_or_default();
                (l.name.clone(), s)
            })
            .collect())
    }

    /// (Re)applies the server's addresses on a path; idempotent.
    pub fn configure_server_path(&self, l: &Link) -> Result<()> {
        let s = &self.server;
        s.ip(&[
            "addr",
            "replace",
            &format!("{}/24", l.server_v4),
            "dev",
            &l.server_dev,
        ])?;
        s.ip(&[
            "addr",
            "replace",
            &format!("{}/64", l.server_v6),
            "dev",
            &l.server_dev,
            "nodad",
        ])?;
        if l.emulated {
            for a in [IpAddr::from(l.handset_v4), IpAddr::from(l.handset_v6)] {
                pin_neighbour(s, &l.server_dev, a, l.handset_mac)?;
            }
        }
        Ok(())
    }

    /// (Re)applies a handset link's addresses, neighbour entries (emulated paths) and routes;
    /// idempotent. Routes through a link go away when it goes down, and IPv6 addresses too, and
    /// the kernel flushes even permanent neighbour entries when a link goes down or loses its
    /// last IPv4 address, so a returning link needs this. The entries go in before the routes:
    /// no packet finds a route without its neighbour.
    pub fn configure_link(&self, l: &Link) -> Result<()> {
        let h = &self.handset;
        h.ip(&[
            "addr",
            "replace",
            &format!("{}/24", l.handset_v4),
            "dev",
            &l.name,
        ])?;
        h.ip(&[
            "addr",
            "replace",
            &format!("{}/64", l.handset_v6),
            "dev",
            &l.name,
            "nodad",
        ])?;
        if l.emulated {
            for a in [IpAddr::from(l.server_v4), IpAddr::from(l.server_v6)] {
                pin_neighbour(h, &l.name, a, l.server_mac)?;
            }
        }
        let metric = l.metric.to_string();
        let table = l.table.to_string();
        for gw in [IpAddr::from(l.server_v4), IpAddr::from(l.server_v6)] {
            let gw = gw.to_string();
            h.ip(&[
                "route", "replace", "default", "via", &gw, "dev", &l.name, "metric", &metric,
            ])?;
            h.ip(&[
                "route", "replace", "default", "via", &gw, "dev", &l.name, "table", &table,
            ])?;
        }
        Ok(())
    }
}

/// One end of a veth pair: its namespace, its name and its MAC address (`None`: the kernel's
/// random one).
type VethEnd<'a> = (&'a Netns, &'a str, Option<Mac>);

/// A veth pair with one end `a` in `a_ns` and the other `b` in `b_ns`, made from inside `a_ns`
/// (`ip -n A link add A [address MAC] type veth peer name B [address MAC] netns B_NS`): never
/// in the root namespace.
fn veth((a_ns, a, a_mac): VethEnd<'_>, (b_ns, b, b_mac): VethEnd<'_>) -> Result<()> {
    let (a_mac, b_mac) = (a_mac.map(|m| m.to_string()), b_mac.map(|m| m.to_string()));
    let mut args = vec!["link", "add", a];
    if let Some(m) = &a_mac {
        args.extend(["address", m.as_str()]);
    }
    args.extend(["type", "veth", "peer", "name", b]);
    if let Some(m) = &b_mac {
        args.extend(["address", m.as_str()]);
    }
    args.extend(["netns", b_ns.name()]);
    a_ns.ip(&args)?;
    Ok(())
}

/// `ip neigh replace ADDR lladdr MAC dev DEV nud permanent` in `ns`: `addr` is reached at `mac`
/// without ARP or NDP, and the entry never expires (see the module's documentation for why
/// emulated paths want it).
fn pin_neighbour(ns: &Netns, dev: &str, addr: IpAddr, mac: Mac) -> Result<()> {
    let (addr, mac) = (addr.to_string(), mac.to_string());
    ns.ip(&[
        "neigh",
        "replace",
        &addr,
        "lladdr",
        &mac,
        "dev",
        dev,
        "nud",
        "permanent",
    ])?;
    Ok(())
}

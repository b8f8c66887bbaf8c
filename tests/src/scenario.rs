//! The handover scenarios of the benchmark: what happens to the preferred link (`wlan0`, the
//! first link) while a session runs.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::inject::Flapper;
use crate::topology::{Direction, Topology};

/// One failure, as the benchmark's `scenario` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// The preferred link goes down (`ip link set wlan0 down`).
    LinkDown,
    /// The preferred link loses its addresses but stays up.
    AddrRemove,
    /// Everything on the preferred link is dropped silently, both ways; it stays up.
    Blackhole,
    /// The session starts with the preferred link down; the link comes back.
    LinkReturn,
    /// The preferred link goes down and up [`FLAP_CYCLES`] times, [`FLAP_PERIOD`] each way.
    Flap,
}

/// Down and up time of each flap.
pub const FLAP_PERIOD: Duration = Duration::from_millis(100);
/// Number of down/up cycles of a flap.
pub const FLAP_CYCLES: u32 = 3;

impl Scenario {
    /// Every scenario, in table order.
    pub const ALL: [Scenario; 5] = [
        Scenario::LinkDown,
        Scenario::AddrRemove,
        Scenario::Blackhole,
        Scenario::LinkReturn,
        Scenario::Flap,
    ];

    /// The word in the benchmark's JSON and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::LinkDown => "link-down",
            Scenario::AddrRemove => "addr-remove",
            Scenario::Blackhole => "blackhole",
            Scenario::LinkReturn => "link-return",
            Scenario::Flap => "flap",
        }
    }

    /// Puts the topology in the state the session starts in.
    pub fn before(self, topo: &Topology, link: &str) -> Result<()> {
        if self == Scenario::LinkReturn {
            topo.link_down(link)?;
        }
        Ok(())
    }

    /// Injects the failure; a flap keeps going on its own thread until its handle is waited for
    /// or dropped.
    pub fn inject(self, topo: &Arc<Topology>, link: &str) -> Result<Option<Flapper>> {
        match self {
            Scenario::LinkDown => topo.link_down(link)?,
            Scenario::AddrRemove => topo.remove_addresses(link)?,
            Scenario::Blackhole => topo.blackhole(link, Direction::Both)?,
            Scenario::LinkReturn => topo.link_up(link)?,
            Scenario::Flap => {
                return Ok(Some(topo.flap(
                    link,
                    FLAP_PERIOD,
                    FLAP_PERIOD,
                    FLAP_CYCLES,
                )?));
            }
        }
        Ok(None)
    }

    /// A few words for a person: what was done to the link.
    pub fn describe(self, link: &str) -> String {
        match self {
            Scenario::LinkDown => format!("{link} went down"),
            Scenario::AddrRemove => format!("{link} lost its addresses"),
            Scenario::Blackhole => format!("{link} went silent (blackhole both ways)"),
            Scenario::LinkReturn => format!("{link} came back"),
            Scenario::Flap => format!("{link} flapped {FLAP_CYCLES} times"),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            format!("unknown scenario `{s}`; expected link-down, addr-remove, blackhole, link-return or flap")
        })
    }
}

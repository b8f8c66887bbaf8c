//! WiFi facts through nl80211: the SSID a station interface is associated with
//! (`NL80211_CMD_GET_INTERFACE`) and the signal of its access point (`NL80211_CMD_GET_STATION`),
//! what `iw dev IF info` and `iw dev IF station dump` show. Asked only for interfaces sysfs
//! calls wireless; an interface that is not associated has neither, and they stay unknown.
use std::io;

use roam_link::netlink::nl80211::{self, Command, Interface, Station};

use crate::genl::{Family, GenlSocket};

#[derive(Debug)]
struct Nl80211Family;

impl Family for Nl80211Family {
    const NAME: &'static str = nl80211::FAMILY_NAME;
    const VERSION: u8 = nl80211::VERSION;
}

/// What nl80211 says about one interface.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wireless {
    /// The network name, when associated.
    pub ssid: Option<String>,
    /// The access point's signal, in dBm, when associated.
    pub signal_dbm: Option<f64>,
}

/// An nl80211 socket.
#[derive(Debug)]
pub struct Nl80211(GenlSocket<Nl80211Family>);

impl Nl80211 {
    /// Opens the socket. `ErrorKind::NotFound` when the kernel has no cfg80211 (no WiFi at all).
    pub fn open() -> io::Result<Nl80211> {
        GenlSocket::open().map(Nl80211)
    }

    /// Asks for interface `index`'s SSID and signal.
    pub fn query(&mut self, index: u32) -> io::Result<Wireless> {
        let req = nl80211::ifindex_attrs(index);
        let ssid = self
            .0
            .query(Command::GetInterface.into(), req.clone(), false)?
            .iter()
            .find_map(|a| Interface::parse(a).ssid_text());
        // A station interface has one station: its access point.
        let signal_dbm = match self.0.query(Command::GetStation.into(), req, true) {
            Ok(replies) => replies.iter().find_map(|a| Station::parse(a).signal_dbm()),
            // Not associated (or not a station): no signal to tell.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOLINK | libc::EOPNOTSUPP)
                ) =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Wireless { ssid, signal_dbm })
    }
}

/// Asks nl80211 off the loop (a generic netlink request can wait behind another family's slow
/// one), on tokio's blocking pool; the answers come back on a channel as (index, facts).
#[derive(Debug, Clone)]
pub struct WirelessAsker {
    socket: std::sync::Arc<std::sync::Mutex<Nl80211>>,
    answers: tokio::sync::mpsc::Sender<(u32, Wireless)>,
}

impl WirelessAsker {
    /// `None` (logged) when the kernel has no cfg80211: SSIDs and signals stay unknown.
    pub fn open(answers: tokio::sync::mpsc::Sender<(u32, Wireless)>) -> Option<WirelessAsker> {
        match Nl80211::open() {
            Ok(n) => Some(WirelessAsker {
                socket: std::sync::Arc::new(std::sync::Mutex::new(n)),
                answers,
            }),
            Err(e) => {
                tracing::debug!(error = %e, "no nl80211: WiFi SSID and signal stay unknown");
                None
            }
        }
    }

    /// Asks about interface `index`; the answer (if any: a failed query is logged) is sent
    /// on the channel. Must be called within a tokio runtime.
    pub fn ask(&self, index: u32) {
        let (nl, tx) = (self.socket.clone(), self.answers.clone());
        tokio::task::spawn_blocking(move || {
            let answer = match nl.lock() {
                Ok(mut nl) => nl.query(index),
                Err(_) => return,
            };
            match answer {
                Ok(w) => {
                    let _ = tx.blocking_send((index, w));
                }
                Err(e) => tracing::debug!(index, error = %e, "nl80211 query failed"),
            }
        });
    }
}

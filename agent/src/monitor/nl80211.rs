//! WiFi facts through nl80211: the SSID a station interface is associated with
//! (`NL80211_CMD_GET_INTERFACE`) and the signal of its access point (`NL80211_CMD_GET_STATION`),
//! what `iw dev IF info` and `iw dev IF station dump` show. Asked only for interfaces sysfs
//! calls wireless; an interface that is not associated has neither, and they stay unknown.
use std::io;

use crate::genl::{Family, GenlSocket, attrs, put};

const CMD_GET_INTERFACE: u8 = 5;
const CMD_GET_STATION: u8 = 17;
const ATTR_IFINDEX: u16 = 3;
const ATTR_STA_INFO: u16 = 21;
const ATTR_SSID: u16 = 52;
const STA_INFO_SIGNAL: u16 = 7;
const STA_INFO_SIGNAL_AVG: u16 = 13;

#[derive(Debug)]
struct Nl80211Family;

impl Family for Nl80211Family {
    const NAME: &'static str = "nl80211";
    const VERSION: u8 = 1;
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
        let mut req = Vec::new();
        put(&mut req, ATTR_IFINDEX, &index.to_ne_bytes());
        let ssid = self
            .0
            .query(CMD_GET_INTERFACE, req.clone(), false)?
            .iter()
            .find_map(|a| ssid_of(a));
        // A station interface has one station: its access point.
        let signal_dbm = match self.0.query(CMD_GET_STATION, req, true) {
            Ok(replies) => replies.iter().find_map(|a| signal_of(a)),
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

/// The SSID in a `GET_INTERFACE` reply; bytes that are not UTF-8 are shown with replacement
/// characters rather than dropped (SSIDs are octets, policies compare text).
fn ssid_of(reply: &[u8]) -> Option<String> {
    attrs(reply)
        .into_iter()
        .find(|(k, v)| *k == ATTR_SSID && !v.is_empty())
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// The signal in a `GET_STATION` reply: the average when the driver gives one, else the last.
fn signal_of(reply: &[u8]) -> Option<f64> {
    let (_, info) = attrs(reply)
        .into_iter()
        .find(|(k, _)| *k == ATTR_STA_INFO)?;
    let info = attrs(info);
    let get = |kind: u16| {
        info.iter()
            .find(|(k, v)| *k == kind && v.len() == 1)
            .map(|(_, v)| f64::from(v[0] as i8))
    };
    get(STA_INFO_SIGNAL_AVG).or_else(|| get(STA_INFO_SIGNAL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genl::NLA_F_NESTED;

    #[test]
    fn ssid_and_signal_are_read_from_replies() {
        let mut iface = Vec::new();
        put(&mut iface, ATTR_IFINDEX, &3u32.to_ne_bytes());
        put(&mut iface, ATTR_SSID, b"HomeNet");
        assert_eq!(ssid_of(&iface).as_deref(), Some("HomeNet"));
        let mut bare = Vec::new();
        put(&mut bare, ATTR_IFINDEX, &3u32.to_ne_bytes());
        assert_eq!(ssid_of(&bare), None, "not associated: no SSID");

        let mut info = Vec::new();
        put(&mut info, STA_INFO_SIGNAL, &[(-71i8) as u8]);
        let mut sta = Vec::new();
        put(&mut sta, ATTR_STA_INFO | NLA_F_NESTED, &info);
        assert_eq!(signal_of(&sta), Some(-71.0));
        put(&mut info, STA_INFO_SIGNAL_AVG, &[(-68i8) as u8]);
        let mut sta = Vec::new();
        put(&mut sta, ATTR_STA_INFO | NLA_F_NESTED, &info);
        assert_eq!(signal_of(&sta), Some(-68.0), "the average wins");
        assert_eq!(signal_of(&bare), None);
    }
}

//! The part of nl80211 (`include/uapi/linux/nl80211.h`) roam uses: an interface's SSID
//! (`GET_INTERFACE`, what `iw dev IF info` shows) and the signal of a station interface's
//! access point (`GET_STATION` dump, what `iw dev IF station dump` shows).

use super::attr::{self, Attrs};

/// The family's name.
pub const FAMILY_NAME: &str = "nl80211";
/// The version requests carry.
pub const VERSION: u8 = 1;

kernel_enum! {
    /// nl80211 commands roam sends or reads (`NL80211_CMD_*`).
    pub enum Command: u8 {
        /// `GET_INTERFACE` (5).
        GetInterface = 5,
        /// `NEW_INTERFACE` (7): the answer to `GET_INTERFACE`.
        NewInterface = 7,
        /// `GET_STATION` (17).
        GetStation = 17,
        /// `NEW_STATION` (19): the answer to `GET_STATION`.
        NewStation = 19,
    }
}

/// Attribute types (`NL80211_ATTR_*`) roam reads or writes.
pub mod nl_attr {
    /// `IFINDEX`: u32.
    pub const IFINDEX: u16 = 3;
    /// `IFNAME`: string.
    pub const IFNAME: u16 = 4;
    /// `STA_INFO`: nested `NL80211_STA_INFO_*`.
    pub const STA_INFO: u16 = 21;
    /// `SSID`: the network name, octets.
    pub const SSID: u16 = 52;
}

/// Station info attribute types (`NL80211_STA_INFO_*`) inside [`nl_attr::STA_INFO`].
pub mod sta_info {
    /// `SIGNAL`: s8 dBm, the last frame's.
    pub const SIGNAL: u16 = 7;
    /// `SIGNAL_AVG`: s8 dBm, averaged by the driver.
    pub const SIGNAL_AVG: u16 = 13;
}

/// The attributes of a request about interface `index` (both of roam's questions carry only
/// that).
pub fn ifindex_attrs(index: u32) -> Vec<u8> {
    let mut out = Vec::new();
    attr::put(&mut out, nl_attr::IFINDEX, &index.to_ne_bytes());
    out
}

/// What a `NEW_INTERFACE` message says, as far as roam reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    /// Interface index.
    pub ifindex: Option<u32>,
    /// Interface name.
    pub ifname: Option<String>,
    /// The SSID when associated (octets; not always UTF-8).
    pub ssid: Option<Vec<u8>>,
}

impl Interface {
    /// Reads the message's attributes. An empty SSID counts as none.
    pub fn parse(attrs: &[u8]) -> Interface {
        let mut i = Interface::default();
        for a in Attrs::new(attrs) {
            match a.kind() {
                nl_attr::IFINDEX => i.ifindex = a.u32(),
                nl_attr::IFNAME => i.ifname = Some(a.string()),
                nl_attr::SSID if !a.value().is_empty() => i.ssid = Some(a.value().to_vec()),
                _ => {}
            }
        }
        i
    }

    /// The SSID as text; bytes that are not UTF-8 become replacement characters rather than
    /// being dropped (policies compare text).
    pub fn ssid_text(&self) -> Option<String> {
        self.ssid
            .as_deref()
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }
}

/// What a `NEW_STATION` message says of the station's signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Station {
    /// The last frame's signal, dBm.
    pub signal: Option<i8>,
    /// The driver's average, dBm.
    pub signal_avg: Option<i8>,
}

impl Station {
    /// Reads the message's attributes (the `STA_INFO` nest).
    pub fn parse(attrs: &[u8]) -> Station {
        let mut s = Station::default();
        if let Some(info) = Attrs::new(attrs).get(nl_attr::STA_INFO) {
            for a in info.nested() {
                match a.kind() {
                    sta_info::SIGNAL => s.signal = a.u8().map(|v| v as i8),
                    sta_info::SIGNAL_AVG => s.signal_avg = a.u8().map(|v| v as i8),
                    _ => {}
                }
            }
        }
        s
    }

    /// The signal in dBm: the average when the driver gives one, else the last.
    pub fn signal_dbm(&self) -> Option<f64> {
        self.signal_avg.or(self.signal).map(f64::from)
    }
}

#[cfg(test)]
mod tests {
    //! This kernel has no cfg80211, so nothing here is captured: the replies are built to the
    //! layout of `linux/nl80211.h` (an s8 dBm signal inside the `STA_INFO` nest).
    use super::*;

    #[test]
    fn ssid_and_signal_are_read_from_replies() {
        let mut iface = ifindex_attrs(3);
        attr::put(&mut iface, nl_attr::SSID, b"HomeNet");
        let i = Interface::parse(&iface);
        assert_eq!(
            (i.ifindex, i.ssid_text().as_deref()),
            (Some(3), Some("HomeNet"))
        );
        let mut odd = ifindex_attrs(3);
        attr::put(&mut odd, nl_attr::SSID, &[b'a', 0xff]);
        assert_eq!(
            Interface::parse(&odd).ssid_text().as_deref(),
            Some("a\u{fffd}")
        );
        assert_eq!(
            Interface::parse(&ifindex_attrs(3)).ssid,
            None,
            "not associated"
        );

        let mut sta = Vec::new();
        attr::put_nested(&mut sta, nl_attr::STA_INFO, |b| {
            attr::put(b, sta_info::SIGNAL, &[(-71i8) as u8])
        });
        assert_eq!(Station::parse(&sta).signal_dbm(), Some(-71.0));
        let mut sta = Vec::new();
        attr::put_nested(&mut sta, nl_attr::STA_INFO, |b| {
            attr::put(b, sta_info::SIGNAL, &[(-71i8) as u8]);
            attr::put(b, sta_info::SIGNAL_AVG, &[(-68i8) as u8]);
        });
        assert_eq!(
            Station::parse(&sta).signal_dbm(),
            Some(-68.0),
            "the average wins"
        );
        assert_eq!(Station::parse(&ifindex_attrs(3)).signal_dbm(), None);
    }

    #[test]
    fn commands_keep_unknown_values() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(Command::from(v)), v);
        }
    }
}

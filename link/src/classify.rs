//! What kind of link an interface is: config overrides, then the kernel's own word (sysfs),
//! then name rules, then the rtnetlink link kind.
//!
//! Order matters. The config beats everything because the person who wrote it knows the
//! device (a USB modem that calls itself `eth1`). The kernel's word (`DEVTYPE` in
//! `/sys/class/net/IF/uevent`, the `wireless/` directory) beats a name, because names are
//! free-form (`ip link set eth1 name wlan9`). Names come before the rtnetlink kind because
//! Android's CLAT interface `v4-rmnet_data0` is a `tun` device that carries cellular traffic.
//!
//! This file is the only place that knows interface-name conventions; roamd, the SDK's
//! embedded monitor and Android (for networks whose transport says nothing) all ask
//! [`classify`] or [`kind_from_name`].
#![forbid(unsafe_code)]

use roam_policy::LinkKind;

/// What sysfs says about an interface. All `None`/`false` when sysfs has no entry (another
/// namespace's sysfs mount, a container without `/sys`, Android without access).
///
/// Read with `SysfsFacts::read` (feature `socket`); the classifier itself only takes the
/// facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysfsFacts {
    /// `DEVTYPE=` from `uevent` (`wlan`, `wwan`, `bluetooth`, `gadget`, ...).
    pub devtype: Option<String>,
    /// `/sys/class/net/IF/wireless/` or `phy80211` exists (cfg80211 or wireless extensions).
    pub wireless: bool,
}

impl SysfsFacts {
    /// Whether sysfs says the interface is 802.11 (`DEVTYPE=wlan` or a `wireless/`
    /// directory): nl80211 can tell its SSID and signal.
    pub fn is_wireless(&self) -> bool {
        self.wireless || self.devtype.as_deref() == Some("wlan")
    }
}

/// One config override: interfaces whose name matches `pattern` (`*` and `?` globs) are of
/// `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindOverride {
    /// Glob on the interface name.
    pub pattern: String,
    /// The kind they are.
    pub kind: LinkKind,
}

/// Classifies interface `name`. `info_kind` is the rtnetlink link kind (`wireguard`, `tun`,
/// `veth`), when the driver gives one; `overrides` are tried in order and the first match wins
/// over everything else. A name no rule knows, with nothing else to go by, is
/// [`LinkKind::Other`].
pub fn classify(
    name: &str,
    sysfs: &SysfsFacts,
    info_kind: Option<&str>,
    overrides: &[KindOverride],
) -> LinkKind {
    if let Some(o) = overrides.iter().find(|o| glob_match(&o.pattern, name)) {
        return o.kind;
    }
    if let Some(k) = sysfs.devtype.as_deref().and_then(from_devtype) {
        return k;
    }
    if sysfs.is_wireless() {
        return LinkKind::Wifi;
    }
    if let Some(k) = from_name(name) {
        return k;
    }
    match info_kind {
        Some("wireguard" | "tun" | "ipip" | "gre" | "sit" | "xfrm" | "vti") => LinkKind::Vpn,
        _ => LinkKind::Other,
    }
}

/// The kind the interface name alone suggests ([`LinkKind::Other`] when no rule knows it):
/// for callers with no sysfs facts, no rtnetlink kind and no overrides.
pub fn kind_from_name(name: &str) -> LinkKind {
    from_name(name).unwrap_or(LinkKind::Other)
}

fn from_devtype(devtype: &str) -> Option<LinkKind> {
    match devtype {
        "wlan" => Some(LinkKind::Wifi),
        "wwan" => Some(LinkKind::Cellular),
        "bluetooth" => Some(LinkKind::Bluetooth),
        "gadget" => Some(LinkKind::Usb),
        _ => None,
    }
}

/// Android's 464XLAT (CLAT) puts an IPv4 interface `v4-IF` on top of the IPv6-only link `IF`;
/// traffic on it goes out through `IF`, so it is whatever `IF` is.
const CLAT_PREFIX: &str = "v4-";

/// Linux (systemd's predictable names and the classic ones) and Android naming conventions,
/// by kind. A name matches a rule when it starts with one of its prefixes.
const NAME_RULES: [(&[&str], LinkKind); 6] = [
    // wlp2s0/wlx..: systemd; wifi0/ath0: Atheros and Qualcomm drivers; swlan0: Android's
    // soft AP.
    (
        &["wlan", "wlp", "wlx", "wifi", "ath", "swlan"],
        LinkKind::Wifi,
    ),
    // rmnet: Qualcomm modems; ccmni: MediaTek; wwan/wwp: Linux WWAN; pdp: older Android.
    (
        &["rmnet", "ccmni", "wwan", "wwp", "pdp"],
        LinkKind::Cellular,
    ),
    (&["bnep", "bt-pan", "btpan"], LinkKind::Bluetooth),
    (&["usb", "rndis", "ncm"], LinkKind::Usb),
    (&["tun", "tap", "wg", "ppp", "ipsec", "vpn"], LinkKind::Vpn),
    // en covers systemd's enp/eno/ens/enx.
    (&["eth", "en"], LinkKind::Ethernet),
];

fn from_name(name: &str) -> Option<LinkKind> {
    let base = name.strip_prefix(CLAT_PREFIX).unwrap_or(name);
    NAME_RULES
        .iter()
        .find(|(prefixes, _)| prefixes.iter().any(|p| base.starts_with(p)))
        .map(|(_, k)| *k)
}

/// `*` matches any run of characters, `?` exactly one; everything else itself: the policy
/// language's globs (`roam_policy::glob`), so a config override and a policy's interface
/// pattern read the same.
pub use roam_policy::glob::matches as glob_match;

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(devtype: Option<&str>, wireless: bool) -> SysfsFacts {
        SysfsFacts {
            devtype: devtype.map(str::to_owned),
            wireless,
        }
    }

    #[test]
    fn every_name_rule() {
        for (name, kind) in [
            ("wlan0", LinkKind::Wifi),
            ("wlp2s0", LinkKind::Wifi),
            ("wlx00c0ca", LinkKind::Wifi),
            ("wifi0", LinkKind::Wifi),
            ("ath0", LinkKind::Wifi),
            ("swlan0", LinkKind::Wifi),
            ("rmnet_data0", LinkKind::Cellular),
            ("ccmni1", LinkKind::Cellular),
            ("wwan0", LinkKind::Cellular),
            ("wwp0s20", LinkKind::Cellular),
            ("pdp0", LinkKind::Cellular),
            ("v4-rmnet_data0", LinkKind::Cellular),
            ("v4-wlan0", LinkKind::Wifi),
            ("bnep0", LinkKind::Bluetooth),
            ("bt-pan", LinkKind::Bluetooth),
            ("btpan0", LinkKind::Bluetooth),
            ("usb0", LinkKind::Usb),
            ("rndis0", LinkKind::Usb),
            ("ncm0", LinkKind::Usb),
            ("tun0", LinkKind::Vpn),
            ("tap0", LinkKind::Vpn),
            ("wg0", LinkKind::Vpn),
            ("ppp0", LinkKind::Vpn),
            ("ipsec0", LinkKind::Vpn),
            ("vpn0", LinkKind::Vpn),
            ("eth0", LinkKind::Ethernet),
            ("enp3s0", LinkKind::Ethernet),
            ("eno1", LinkKind::Ethernet),
            ("ens33", LinkKind::Ethernet),
            ("enx0050b6", LinkKind::Ethernet),
            ("lo", LinkKind::Other),
            ("s-wlan0", LinkKind::Other),
            ("v4-", LinkKind::Other),
            ("veth9", LinkKind::Other),
        ] {
            assert_eq!(kind_from_name(name), kind, "{name}");
            assert_eq!(
                classify(name, &SysfsFacts::default(), None, &[]),
                kind,
                "{name}"
            );
        }
    }

    #[test]
    fn overrides_then_sysfs_then_names_then_rtnetlink_kind() {
        let none = SysfsFacts::default();
        let usb_modem = [
            KindOverride {
                pattern: "eth1".into(),
                kind: LinkKind::Cellular,
            },
            KindOverride {
                pattern: "modem?".into(),
                kind: LinkKind::Cellular,
            },
        ];
        type Case<'a> = (
            &'a str,
            SysfsFacts,
            Option<&'a str>,
            &'a [KindOverride],
            LinkKind,
        );
        let cases: &[Case<'_>] = &[
            (
                "mullvad",
                none.clone(),
                Some("wireguard"),
                &[],
                LinkKind::Vpn,
            ),
            ("veth9", none.clone(), Some("veth"), &[], LinkKind::Other),
            // The CLAT device is a tun: its name says what it carries.
            (
                "v4-rmnet0",
                none.clone(),
                Some("tun"),
                &[],
                LinkKind::Cellular,
            ),
            (
                "eth3",
                facts(Some("wlan"), false),
                None,
                &[],
                LinkKind::Wifi,
            ),
            ("eth4", facts(None, true), None, &[], LinkKind::Wifi),
            (
                "usb0",
                facts(Some("wwan"), false),
                None,
                &[],
                LinkKind::Cellular,
            ),
            (
                "x0",
                facts(Some("bluetooth"), false),
                None,
                &[],
                LinkKind::Bluetooth,
            ),
            ("x1", facts(Some("gadget"), false), None, &[], LinkKind::Usb),
            // An unknown DEVTYPE says nothing; the name decides.
            (
                "wlan1",
                facts(Some("vlan"), false),
                None,
                &[],
                LinkKind::Wifi,
            ),
            (
                "eth1",
                facts(Some("wlan"), true),
                None,
                &usb_modem,
                LinkKind::Cellular,
            ),
            ("eth2", none.clone(), None, &usb_modem, LinkKind::Ethernet),
            ("modem1", none.clone(), None, &usb_modem, LinkKind::Cellular),
            ("modem12", none.clone(), None, &usb_modem, LinkKind::Other),
        ];
        for (name, sysfs, info_kind, overrides, want) in cases {
            assert_eq!(
                classify(name, sysfs, *info_kind, overrides),
                *want,
                "{name} {sysfs:?} {info_kind:?}"
            );
        }
    }
}

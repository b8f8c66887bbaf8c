//! What kind of link an interface is: sysfs first, then name rules, then config overrides.
//!
//! Order matters. The kernel's own word (`DEVTYPE` in `/sys/class/net/IF/uevent`, the
//! `wireless/` directory) beats a name, because names are free-form (`ip link set eth1 name
//! wlan9`). The config beats both, because the person who wrote it knows the device (a USB
//! modem that calls itself `eth1`).
use std::path::Path;

use roam_policy::LinkKind;

/// What sysfs says about an interface. All `None`/`false` when sysfs has no entry (another
/// namespace's sysfs mount, a container without `/sys`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysfsFacts {
    /// `DEVTYPE=` from `uevent` (`wlan`, `wwan`, `bluetooth`, `gadget`, ...).
    pub devtype: Option<String>,
    /// `/sys/class/net/IF/wireless/` exists (cfg80211 or wireless extensions).
    pub wireless: bool,
}

impl SysfsFacts {
    /// Reads the facts for interface `name` below `root` (normally `/sys/class/net`).
    /// Missing files are not errors: they mean "sysfs does not say".
    pub fn read(root: &Path, name: &str) -> SysfsFacts {
        // A name with a slash or `..` would leave the directory: no kernel name has one.
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return SysfsFacts::default();
        }
        let dir = root.join(name);
        let devtype = std::fs::read_to_string(dir.join("uevent"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("DEVTYPE="))
                    .map(|v| v.trim().to_owned())
            });
        SysfsFacts {
            devtype,
            wireless: dir.join("wireless").is_dir() || dir.join("phy80211").exists(),
        }
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

/// Classifies interface `name`. `info_kind` is the rtnetlink link kind (`wireguard`, `tun`);
/// `overrides` are tried in order and the first match wins over everything else.
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
    if sysfs.wireless {
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

fn from_devtype(devtype: &str) -> Option<LinkKind> {
    match devtype {
        "wlan" => Some(LinkKind::Wifi),
        "wwan" => Some(LinkKind::Cellular),
        "bluetooth" => Some(LinkKind::Bluetooth),
        "gadget" => Some(LinkKind::Usb),
        _ => None,
    }
}

/// Linux and Android naming conventions.
fn from_name(name: &str) -> Option<LinkKind> {
    const RULES: [(&str, LinkKind); 11] = [
        ("wlan", LinkKind::Wifi),
        ("rmnet", LinkKind::Cellular),
        ("ccmni", LinkKind::Cellular),
        ("wwan", LinkKind::Cellular),
        ("bnep", LinkKind::Bluetooth),
        ("usb", LinkKind::Usb),
        ("rndis", LinkKind::Usb),
        ("eth", LinkKind::Ethernet),
        ("en", LinkKind::Ethernet),
        ("tun", LinkKind::Vpn),
        ("wg", LinkKind::Vpn),
    ];
    RULES
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, k)| *k)
}

/// `*` matches any run of characters, `?` exactly one; everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point: linear in practice, no recursion to blow.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

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
    fn classification_table() {
        let none = SysfsFacts::default();
        let usb_modem = [KindOverride {
            pattern: "eth1".into(),
            kind: LinkKind::Cellular,
        }];
        type Case<'a> = (
            &'a str,
            SysfsFacts,
            Option<&'a str>,
            &'a [KindOverride],
            LinkKind,
        );
        let cases: &[Case<'_>] = &[
            ("wlan0", none.clone(), None, &[], LinkKind::Wifi),
            ("rmnet_data0", none.clone(), None, &[], LinkKind::Cellular),
            ("ccmni1", none.clone(), None, &[], LinkKind::Cellular),
            ("wwan0", none.clone(), None, &[], LinkKind::Cellular),
            ("bnep0", none.clone(), None, &[], LinkKind::Bluetooth),
            ("usb0", none.clone(), None, &[], LinkKind::Usb),
            ("rndis0", none.clone(), None, &[], LinkKind::Usb),
            ("eth0", none.clone(), None, &[], LinkKind::Ethernet),
            ("enp3s0", none.clone(), None, &[], LinkKind::Ethernet),
            ("tun0", none.clone(), None, &[], LinkKind::Vpn),
            ("wg0", none.clone(), None, &[], LinkKind::Vpn),
            (
                "mullvad",
                none.clone(),
                Some("wireguard"),
                &[],
                LinkKind::Vpn,
            ),
            ("veth9", none.clone(), Some("veth"), &[], LinkKind::Other),
            // sysfs beats the name
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
            // an unknown DEVTYPE says nothing; the name decides
            (
                "wlan1",
                facts(Some("vlan"), false),
                None,
                &[],
                LinkKind::Wifi,
            ),
            // the config beats both
            (
                "eth1",
                facts(Some("wlan"), true),
                None,
                &usb_modem,
                LinkKind::Cellular,
            ),
            ("eth2", none.clone(), None, &usb_modem, LinkKind::Ethernet),
        ];
        for (name, sysfs, info_kind, overrides, want) in cases {
            assert_eq!(
                classify(name, sysfs, *info_kind, overrides),
                *want,
                "{name} {sysfs:?} {info_kind:?}"
            );
        }
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("usb*", "usb0", true),
            ("usb*", "rndis0", false),
            ("*", "", true),
            ("w?an0", "wlan0", true),
            ("w?an0", "wlan10", false),
            ("*an*", "wlan0", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(glob_match(p, t), want, "{p} {t}");
        }
    }

    #[test]
    fn sysfs_reader_reads_devtype_and_wireless() {
        let root = std::env::temp_dir().join(format!("roam-sysfs-{}", std::process::id()));
        let dir = root.join("wlp2s0");
        std::fs::create_dir_all(dir.join("wireless")).unwrap();
        std::fs::write(
            dir.join("uevent"),
            "DEVTYPE=wlan\nINTERFACE=wlp2s0\nIFINDEX=3\n",
        )
        .unwrap();
        let f = SysfsFacts::read(&root, "wlp2s0");
        assert_eq!(f, facts(Some("wlan"), true));
        assert_eq!(SysfsFacts::read(&root, "nothere"), SysfsFacts::default());
        assert_eq!(SysfsFacts::read(&root, ".."), SysfsFacts::default());
        std::fs::remove_dir_all(&root).unwrap();
    }
}

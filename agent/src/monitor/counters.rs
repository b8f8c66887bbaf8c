//! An interface's packet counters, read from sysfs and procfs: evidence that a link carries
//! traffic, gathered without sending anything.
use std::path::Path;

/// One reading of an interface's packet counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Packets received (sysfs `statistics/rx_packets`).
    pub rx_packets: u64,
    /// Of those, multicast (`statistics/multicast`).
    pub rx_multicast: u64,
    /// Packets transmitted (`statistics/tx_packets`).
    pub tx_packets: u64,
    /// Of those, IPv6 multicast (`Ip6OutMcastPkts` of `/proc/net/dev_snmp6/<interface>`; 0
    /// when the interface has no IPv6). The kernel's router solicitations and MLD reports
    /// count here, and nothing answers them by unicast: without this, each made an idle link
    /// look like one that sends and hears nothing back, and cost it a probe burst.
    pub tx_multicast: u64,
}

/// Reads `interface`'s counters: three small sysfs reads and, for IPv6, one procfs file
/// (`snmp6_root` is `/proc/net/dev_snmp6`, of the network namespace roamd runs in). No packet.
pub fn read(sysfs_root: &Path, snmp6_root: &Path, interface: &str) -> std::io::Result<Counters> {
    let read = |what: &str| -> std::io::Result<u64> {
        let p = sysfs_root.join(interface).join("statistics").join(what);
        std::fs::read_to_string(&p)?.trim().parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", p.display()),
            )
        })
    };
    let tx_multicast = match std::fs::read_to_string(snmp6_root.join(interface)) {
        Ok(text) => snmp6_field(&text, "Ip6OutMcastPkts").unwrap_or(0),
        // IPv6 off on the interface (or in the kernel): none sent.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    Ok(Counters {
        rx_packets: read("rx_packets")?,
        rx_multicast: read("multicast")?,
        tx_packets: read("tx_packets")?,
        tx_multicast,
    })
}

/// The value of `name` in a `dev_snmp6` file (one `name value` pair per line, separated by
/// blanks), if it is there and a number.
fn snmp6_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next()? == name).then_some(())?;
        it.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of a veth's `/proc/net/dev_snmp6/<interface>` on Linux 6.18, two seconds
    /// after it came up (duplicate address detection and MLD reports sent).
    const CAPTURED: &str = "ifIndex                         \t2\n\
Ip6InReceives                   \t6\n\
Ip6InHdrErrors                  \t0\n\
Ip6OutRequests                  \t3\n\
Ip6InMcastPkts                  \t6\n\
Ip6OutMcastPkts                 \t3\n\
Ip6InOctets                     \t432\n\
Ip6OutMcastOctets               \t224\n\
Icmp6OutMsgs                    \t3\n\
Icmp6OutNeighborSolicits        \t1\n";

    #[test]
    fn ipv6_multicast_sent_is_read_from_dev_snmp6() {
        assert_eq!(snmp6_field(CAPTURED, "Ip6OutMcastPkts"), Some(3));
        // A prefix of another name is not that name.
        assert_eq!(snmp6_field(CAPTURED, "Ip6OutMcast"), None);
        assert_eq!(
            snmp6_field("Ip6OutMcastPkts\tlots\n", "Ip6OutMcastPkts"),
            None
        );
        assert_eq!(snmp6_field("", "Ip6OutMcastPkts"), None);
    }

    #[test]
    fn an_interface_without_ipv6_sent_no_ipv6_multicast() {
        let dir = std::env::temp_dir().join(format!("roam-counters-{}", std::process::id()));
        let stats = dir.join("sys").join("eth9").join("statistics");
        std::fs::create_dir_all(&stats).unwrap();
        for (f, v) in [
            ("rx_packets", "10\n"),
            ("multicast", "4\n"),
            ("tx_packets", "7\n"),
        ] {
            std::fs::write(stats.join(f), v).unwrap();
        }
        let snmp6 = dir.join("snmp6");
        std::fs::create_dir_all(&snmp6).unwrap();
        let c = read(&dir.join("sys"), &snmp6, "eth9").unwrap();
        assert_eq!(
            c,
            Counters {
                rx_packets: 10,
                rx_multicast: 4,
                tx_packets: 7,
                tx_multicast: 0
            }
        );
        std::fs::write(snmp6.join("eth9"), CAPTURED).unwrap();
        assert_eq!(
            read(&dir.join("sys"), &snmp6, "eth9").unwrap().tx_multicast,
            3
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

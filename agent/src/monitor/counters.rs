//! An interface's packet counters, read from sysfs: evidence that a link carries traffic,
//! gathered without sending anything.
use std::path::Path;

/// An interface's received, received multicast and transmitted packet counters, from sysfs
/// (`statistics/`, the kernel's rtnetlink stats): three small reads, no packet.
pub fn read(sysfs_root: &Path, interface: &str) -> std::io::Result<(u64, u64, u64)> {
    let read = |what: &str| -> std::io::Result<u64> {
        let p = sysfs_root.join(interface).join("statistics").join(what);
        std::fs::read_to_string(&p)?.trim().parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", p.display()),
            )
        })
    };
    Ok((read("rx_packets")?, read("multicast")?, read("tx_packets")?))
}
